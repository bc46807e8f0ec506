"""What a drift check costs on a large prediction log, and what it catches.

    python bench/drift_check.py [--sizes 100000 1000000] [--seed 7]

1. Cost: the drift-check job (`pipelines.jobs.drift_check.run`) on a prediction log holding N rows in the window (plus as many
   rows scored the day before, which it must skip), a 300k-row training table, 1M labels and a
   champion in a temporary BENTOML_HOME. Each size runs in a fresh process: wall time of the
   first check (cold: Evidently and BentoML are imported on first use), of a second check
   (warm: what a long-lived worker pays), and the process's peak RSS; each with the default
   `drift.read_rows` (a larger window is read as a sample of that many rows) and with no limit
   (the whole window read, as before the setting existed), side by side. Target: 1M rows < 10 s.
2. Verdicts: `core.drift.check` on each simulated scenario (800 cards, 30 days, 3000 tx/day;
   reference = first 20 days, current = the last 7, the scenario starts on day 22), with the
   params.yaml defaults and with the values recommended in the drift-check notes, side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import Drift, Settings, parse_settings  # noqa: E402
from pipelines.core.drift import CHECKS, DriftResult, columns_to_check  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.core.model import TabularModel, fit  # noqa: E402
from pipelines.io import source, storage  # noqa: E402
from pipelines.io.drift_report import check  # noqa: E402
from pipelines.sources import simulator  # noqa: E402

S = Settings()
C = S.contract
SPEC = FeatureSpec.from_settings(S)
START = dt.date(2026, 1, 1)
WORLD = {
    "cards": 800,
    "days": 30,
    "tx_per_day": 3000,
    "start": START,
    "scenario_start": START + dt.timedelta(days=22),
}
REFERENCE_END = pd.Timestamp(START + dt.timedelta(days=20))
CURRENT_START = pd.Timestamp(START + dt.timedelta(days=23))
RECOMMENDED = {"drift_share": 0.25, "num_threshold": 0.2}
REFERENCE_ROWS = 300_000
FILE_ROWS = 5000  # PredictionLog's flush_rows under load: one file per 5000 records


@functools.cache
def world(scenario: str, seed: int) -> pd.DataFrame:
    cfg = S.simulate.model_copy(update={**WORLD, "seed": seed, "scenario": scenario})
    tx, labels = simulator.generate(cfg)
    table = pd.concat([tx[[C.id, C.timestamp, C.entity]], build_features(tx, SPEC)], axis=1)
    return table.merge(labels, on=C.id, how="left", validate="one_to_one")


def split(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = table[C.timestamp]
    return table[ts < REFERENCE_END].reset_index(drop=True), table[ts >= CURRENT_START].reset_index(
        drop=True
    )


def train(reference: pd.DataFrame, seed: int) -> TabularModel:
    return fit(
        "lightgbm",
        reference[SPEC.names],
        reference[C.target].to_numpy(),
        SPEC,
        S.train.lightgbm,
        seed,
    )


# --- cost -------------------------------------------------------------------------------------


def tiled(frame: pd.DataFrame, n: int, tag: str) -> pd.DataFrame:
    """`n` rows cycled from `frame`, with fresh ids (so labels join one to one)."""
    out = frame.iloc[np.arange(n) % len(frame)].reset_index(drop=True)
    out[C.id] = pd.Series(np.strings.add(f"{tag}", np.arange(n).astype("U")), dtype="str")
    return out


def write_log(
    url: str,
    rows: pd.DataFrame,
    scored_from: dt.datetime,
    scored_to: dt.datetime,
    model: TabularModel,
) -> None:
    """PredictionLog's layout and names, written directly so the flush stamps can lie in the past."""
    n = len(rows)
    scored = scored_from + (scored_to - scored_from) * (np.arange(n) / max(n - 1, 1))
    log = pd.concat(
        [
            rows[[C.id, C.timestamp, C.entity, *SPEC.names]],
            pd.DataFrame(
                {
                    "probability": model.predict_proba(rows[SPEC.names]),
                    "decision": "approve",
                    "model_version": "fraud-model:bench",
                    "unknown_categories": "",
                    "batch_id": "b",
                    "scored_at": pd.Series(scored).astype("datetime64[us]"),
                }
            ),
        ],
        axis=1,
    )
    for lo in range(0, n, FILE_ROWS):
        part = log.iloc[lo : lo + FILE_ROWS]
        flushed = pd.Timestamp(part["scored_at"].max()) + pd.Timedelta(seconds=2)
        day = pd.Timestamp(part[C.timestamp].iloc[0]).date()
        name = (
            f"date={day}/part-{flushed:%Y%m%dT%H%M%S%f}Z-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        )
        storage.write_parquet(part, storage.join(url, name))


def champion(root: Path, seed: int) -> TabularModel:
    """Train on the reference days and promote in a BENTOML_HOME under `root`.

    BentoML fixes its store location on first use in a process, so there is one store per run.
    """
    from pipelines.io import registry

    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    model = train(split(world("covariate_shift", seed))[0], seed)
    registry.promote(registry.save(model, {"bench": True}), "bench")
    return model


def prepare(root: Path, n: int, seed: int, model: TabularModel) -> tuple[dict, dt.datetime]:
    """Everything a drift check reads, for a window of `n` logged rows; (params, now)."""
    reference, current = split(world("covariate_shift", seed))
    params = {
        "paths": {"source": str(root / "source"), "features": str(root / "features")},
        "serving": {"prediction_log": str(root / "predictions")},
        "drift": {"reports": str(root / "reports")},
    }
    settings = parse_settings(params)
    storage.write_parquet(
        tiled(reference, REFERENCE_ROWS, "r")[[C.id, C.timestamp, C.entity, C.target, *SPEC.names]],
        storage.join(settings.paths.features, "train.parquet"),
    )
    now = dt.datetime(2026, 2, 1, 12)
    window = tiled(current, n, "w")
    yesterday = tiled(current, n, "y")
    write_log(settings.serving.prediction_log, window, now - dt.timedelta(hours=23), now, model)
    write_log(
        settings.serving.prediction_log,
        yesterday,
        now - dt.timedelta(hours=50),
        now - dt.timedelta(hours=26),
        model,
    )
    labels = pd.concat([window, yesterday])[[C.id, C.target, C.label_timestamp]]
    for day, part in source.split_by_day(labels, C.label_timestamp).items():
        storage.write_partition(part, storage.join(settings.paths.source, source.LABELS), day)
    return params, now


def measure(params: dict, now: dt.datetime) -> dict:
    """In this (fresh) process: the imports a check pulls in, then two checks, and the peak RSS."""
    t0 = time.perf_counter()
    import bentoml  # noqa: F401  (registry.load imports it)
    import evidently.presets  # noqa: F401  (io.drift_report imports it on first use)

    from pipelines.jobs import drift_check

    settings = parse_settings(params)
    t1 = time.perf_counter()
    first = drift_check.run(settings, now)
    t2 = time.perf_counter()
    drift_check.run(settings, now + dt.timedelta(minutes=15))
    t3 = time.perf_counter()
    return {
        "import_s": t1 - t0,
        "first_s": t2 - t1,
        "warm_s": t3 - t2,
        "rows": first["rows"],
        "window_rows": first["window"]["rows"],
        "detected": first["detected"],
        "drifted": first["drifted_columns"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def cost(sizes: list[int], seed: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        model = champion(Path(tmp), seed)
        env = {**os.environ, "DO_NOT_TRACK": "1", "BENTOML_DO_NOT_TRACK": "true"}
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            params, now = prepare(root, n, seed, model)
            for limit in (S.drift.read_rows, UNLIMITED):
                limited = {**params, "drift": {**params["drift"], "read_rows": limit}}
                job = json.dumps({"params": limited, "now": now.isoformat()})
                out = subprocess.run(
                    [sys.executable, "-c", LAUNCHER, sys.executable, __file__, "--measure", job],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    raise SystemExit(f"measurement for {n:,} rows failed:\n{out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"logged_rows": n, "read_rows": limit, **result})
    return rows


UNLIMITED = 10**12  # drift.read_rows that no window reaches: the whole window is read
# Linux carries a process's peak RSS into the children it forks (the high-water mark of the
# copied address space survives exec), and this process holds the log it wrote: the measuring
# process is started by this small launcher, so its peak is its own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


# --- verdicts ---------------------------------------------------------------------------------


def verdicts(seed: int) -> list[dict]:
    base = S.drift
    recommended = Drift.model_validate({**base.model_dump(), **RECOMMENDED})
    cases = [
        ("none", seed),
        ("none", seed + 1),
        ("none", seed + 2),
        ("covariate_shift", seed),
        ("new_category", seed),
        ("concept_shift", seed),
    ]
    models: dict[int, TabularModel] = {}
    out = []
    for scenario, s in cases:
        reference, current = split(world(scenario, s))
        if s not in models:
            models[s] = train(split(world("none", s))[0], S.train.seed)
        m = models[s]
        reference = reference.assign(probability=m.predict_proba(reference[SPEC.names]))
        current = current.assign(probability=m.predict_proba(current[SPEC.names]))
        row: dict = {"scenario": scenario, "seed": s}
        for name, params in (("default", base), ("recommended", recommended)):
            res, _ = check(reference, current, columns_to_check(S), params, target=C.target)
            row[name] = res
        out.append(row)
    return out


def flags(r: DriftResult) -> str:
    kinds = [c.name.removesuffix("_drift") for c in CHECKS if r.found(c.name)]
    return ("DETECTED " + "+".join(kinds)) if r.detected else "-"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--seed", type=int, default=S.simulate.seed)
    p.add_argument("--measure", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        job = json.loads(a.measure)
        print(json.dumps(measure(job["params"], dt.datetime.fromisoformat(job["now"]))))
        return

    print(
        f"drift check cost (window rows + as many older rows skipped; reference {REFERENCE_ROWS:,} rows;"
        f" sample_rows {S.drift.sample_rows:,}; {os.cpu_count()} CPUs)"
    )
    print(
        f"{'logged rows':>12} {'read_rows':>10} {'imports s':>10} {'1st check s':>12}"
        f" {'cold total s':>13} {'warm s':>7} {'peak RSS MB':>12} {'rows in window':>15}"
        f" {'rows read':>10}  verdict"
    )
    for r in cost(a.sizes, a.seed):
        limit = "none" if r["read_rows"] == UNLIMITED else f"{r['read_rows']:,}"
        print(
            f"{r['logged_rows']:>12,} {limit:>10} {r['import_s']:>10.2f} {r['first_s']:>12.2f}"
            f" {r['import_s'] + r['first_s']:>13.2f} {r['warm_s']:>7.2f} {r['peak_rss_mb']:>12.0f}"
            f" {r['window_rows']:>15,} {r['rows']:>10,}"
            f"  {'detected ' + ','.join(r['drifted']) if r['detected'] else '-'}"
        )
    print(
        "target: 1M rows < 10 s. cold = a fresh process (importing Evidently alone takes 5-6 s here);"
        " warm = a long-lived worker's second check\n"
    )

    print(
        f"verdicts: defaults {S.drift.drift_share=}, {S.drift.num_threshold=}, {S.drift.min_quality=} vs recommended {RECOMMENDED}"
    )
    print(
        f"{'scenario':<16} {'seed':>4} {'amount':>7} {'categ':>6} {'country':>7} {'channel':>7} {'pred':>6} {'ROC-AUC':>8}"
        f"  {'default':<22} recommended"
    )
    for row in verdicts(a.seed):
        d, r = row["default"], row["recommended"]
        m = d.measurement
        assert m is not None
        sc = {k: v.score for k, v in m.columns.items()}
        auc = m.quality.roc_auc if m.quality else float("nan")
        pred = m.prediction.score if m.prediction else float("nan")
        print(
            f"{row['scenario']:<16} {row['seed']:>4} {sc['amount']:>7.3f} {sc['merchant_category']:>6.3f}"
            f" {sc['merchant_country']:>7.3f} {sc['channel']:>7.3f} {pred:>6.3f} {auc:>8.3f}  {flags(d):<22} {flags(r)}"
        )


if __name__ == "__main__":
    main()
