"""Every model family on the default simulated data, side by side in one run.

    python bench/families.py [--days 90] [--seed 7] [--families lightgbm logistic ...]
                             [--serve 10] [--tune 12 --tune-families lightgbm xgboost]

The world of params.yaml (`simulate`, `--days` of it), features as the pipeline builds them, the
time split of the train stage: fit on the training window before its last `train.validation`,
score validation; then refit on the whole training window and score the test period (the last
`split.test`). Per family: validation and test ROC-AUC and AP, fit time (the refit), the size
of its portable artifact (`core.artifact`), and the in-process serving cost per record of
`predict_columns` (the service's model call, arrays in) at batch 1 and 64, the median of repeated
calls.

`--serve S`: each family in turn is promoted champion of one real service (a small trained repo,
bench/serving.py's, adaptive batching, one worker pinned to core 0) and wrk on core 1 sends
single-record requests at concurrency 64 for S seconds: req/s, p50, p99 and server CPU per
request. `--tune N`: Optuna (core/tuning.py, the tune stage's search) runs N trials per family in
`--tune-families` on the same fit/validation split; the table gives the params-as-written and
best validation scores, the test score of the refitted best, and the seconds the search took.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_settings  # noqa: E402
from pipelines.core import (
    metrics,  # noqa: E402
    tuning,  # noqa: E402
)
from pipelines.core.dataset import join_labels  # noqa: E402
from pipelines.core.families import FAMILIES  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.core.model import TabularModel, fit  # noqa: E402
from pipelines.io import model_files  # noqa: E402
from pipelines.sources import simulator  # noqa: E402


def per_record_us(model: TabularModel, X: pd.DataFrame, spec: FeatureSpec, batch: int) -> float:
    """Median µs per record of `predict_columns` on `batch` rows (single-threaded, as served)."""
    served = model.serving_copy()
    rows = X.iloc[:batch]
    columns = {
        c: rows[c].to_numpy(dtype=np.float64, na_value=np.nan)
        if c in spec.numeric
        else rows[c].astype(object).to_numpy()
        for c in spec.names
    }
    served.predict_columns(columns)  # warm
    times = []
    for _ in range(max(20, 2000 // batch)):
        t = time.perf_counter()
        served.predict_columns(columns)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / batch * 1e6


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--serve", type=int, default=0, help="seconds of wrk at c=64 per family")
    p.add_argument("--tune", type=int, default=0, help="Optuna trials per tuned family")
    p.add_argument("--tune-families", nargs="+", default=["lightgbm"], choices=list(FAMILIES))
    args = p.parse_args()
    s = load_settings(Path(__file__).resolve().parents[1] / "params.yaml")
    world = s.simulate.model_copy(update={"days": args.days, "seed": args.seed})
    tx, labels = simulator.generate(world)
    raw = join_labels(tx, labels, s.contract)
    spec = FeatureSpec.from_settings(s)
    feats = build_features(raw, spec)
    labelled = raw[s.contract.target].notna().to_numpy()
    ts = raw["ts"][labelled].reset_index(drop=True)
    X = feats[labelled].reset_index(drop=True)
    y = raw[s.contract.target][labelled].to_numpy(dtype=np.int64)
    end = pd.Timestamp(world.start) + pd.Timedelta(days=args.days)
    split = s.split.test.before(end)
    cut = s.train.validation.before(ts[ts < split].max())
    fit_rows, val_rows = (ts < cut).to_numpy(), ((ts >= cut) & (ts < split)).to_numpy()
    train_rows, test_rows = (ts < split).to_numpy(), (ts >= split).to_numpy()
    print(
        f"families: {len(X):,} labelled rows; fit {fit_rows.sum():,}, validation "
        f"{val_rows.sum():,} (from {cut}), train {train_rows.sum():,}, test {test_rows.sum():,} "
        f"(from {split})",
        flush=True,
    )
    a = s.evaluate.alert_rate
    rows = []
    models: dict[str, TabularModel] = {}
    for family in args.families:
        params = s.train.params_of(family)
        early = fit(family, X[fit_rows], y[fit_rows], spec, params, s.train.seed)
        val = metrics.summary(y[val_rows], early.predict_proba(X[val_rows]), a)
        t = time.perf_counter()
        model = fit(family, X[train_rows], y[train_rows], spec, params, s.train.seed)
        seconds = time.perf_counter() - t
        test = metrics.summary(y[test_rows], model.predict_proba(X[test_rows]), a)
        rows.append(
            {
                "family": family,
                "val ROC-AUC": val["roc_auc"],
                "val AP": val["average_precision"],
                "test ROC-AUC": test["roc_auc"],
                "test AP": test["average_precision"],
                "fit s": seconds,
                "artifact MB": len(model_files.to_bytes(model)) / 1e6,
                "µs/record @1": per_record_us(model, X[test_rows], spec, 1),
                "µs/record @64": per_record_us(model, X[test_rows], spec, 64),
            }
        )
        models[family] = model
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.4g"), flush=True)
    if args.serve:
        for row, served in zip(rows, serve_each(models, args.serve), strict=True):
            row.update(served)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".4g"))
    if args.tune:
        tuned = []
        for family in args.tune_families:
            split = tuning.Split(X[fit_rows], y[fit_rows], X[val_rows], y[val_rows])
            base = s.train.params_of(family)
            problem = tuning.Problem(
                family, split, spec, base, s.train.seed, "roc_auc", a, s.tune.prune_at
            )
            outcome, _ = tuning.search(
                problem,
                trials=args.tune,
                timeout=None,
                storage=None,
                study_name=family,
            )
            best = type(base).model_validate({**base.model_dump(), **outcome.best})
            refit = fit(family, X[train_rows], y[train_rows], spec, best, s.train.seed)
            test = metrics.summary(y[test_rows], refit.predict_proba(X[test_rows]), a)
            tuned.append(
                {
                    "family": family,
                    "trials": outcome.trials,
                    "pruned": outcome.pruned,
                    "val ROC-AUC as written": outcome.default_score,
                    "val ROC-AUC best": outcome.best_score,
                    "gain": outcome.best_score - outcome.default_score,
                    "test ROC-AUC best": test["roc_auc"],
                    "search s": outcome.seconds,
                }
            )
            print(pd.DataFrame(tuned[-1:]).to_string(index=False, float_format="%.4g"), flush=True)
        print()
        print(pd.DataFrame(tuned).to_markdown(index=False, floatfmt=".4g"))


def serve_each(models: dict[str, TabularModel], seconds: int) -> list[dict]:
    """Each model in turn as the champion of one real service: wrk at c=64 for `seconds`."""
    import serving  # bench/serving.py: the repo, the server and wrk, as its own bench runs them

    work = Path(tempfile.mkdtemp(prefix="bench-families-"))
    try:
        print("building a trained service repo ...", flush=True)
        repo = serving.build_repo(work / "repo")
        # BentoML fixes its store at first use: this process has not used it yet.
        os.environ["BENTOML_HOME"] = str(repo / ".bentoml")
        from pipelines.io import registry

        script = work / "families.lua"
        out = []
        for family, model in models.items():
            registry.promote(registry.save(model, {"purpose": "bench"}), f"bench: {family}")
            script.write_text(f'RUN = "{family}-{time.time_ns()}"\n' + serving.LUA)
            proc, url = serving.start("adaptive", repo, 1)
            try:
                r = serving.measure(url, 64, seconds, script, "adaptive", proc.pid)
            finally:
                serving.stop(proc)
            print(
                f"  {family:<24} c=64 {r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  p99 "
                f"{r['p99']:7.1f} ms  non-2xx {r['non2xx']}  CPU/req {r['cpu_us']:.0f} µs",
                flush=True,
            )
            out.append(
                {
                    "req/s @c64": r["rps"],
                    "p99 ms @c64": r["p99"],
                    "non-2xx": r["non2xx"],
                    "CPU µs/req": r["cpu_us"],
                }
            )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
