"""Every model family on the default simulated data, side by side in one run.

    python bench/families.py [--days 90] [--seed 7] [--families lightgbm logistic ...]

The world of params.yaml (`simulate`, `--days` of it), features as the pipeline builds them, the
time split of the train stage: fit on the training window before its last `train.validation`,
score validation; then refit on the whole training window and score the test period (the last
`split.test`). Per family: validation and test ROC-AUC and AP, fit time (the refit), the pickled
artifact's size, and the in-process serving cost per record of `predict_columns` (the service's
model call, arrays in) at batch 1 and 64, the median of repeated calls.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_settings  # noqa: E402
from pipelines.core import metrics  # noqa: E402
from pipelines.core.dataset import join_labels  # noqa: E402
from pipelines.core.families import FAMILIES  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.core.model import TabularModel, fit  # noqa: E402
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
                "artifact MB": len(pickle.dumps(model, protocol=5)) / 1e6,
                "µs/record @1": per_record_us(model, X[test_rows], spec, 1),
                "µs/record @64": per_record_us(model, X[test_rows], spec, 64),
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.4g"), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
