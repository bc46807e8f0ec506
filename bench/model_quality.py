"""Is the simulated data worth modelling? The issue's four numbers, at the params.yaml scale.

    python bench/model_quality.py [--days 90] [--seed 7]

1. ROC-AUC of LightGBM (params.yaml hyper-parameters) on a no-drift holdout (last 21 days).
2. The same without history features (contract.entity = null): the cost of dropping them.
3. Concept shift from day `days - 30`: the old model on the last 14 days vs before the shift.
4. A model retrained on recent (post-shift) labelled data, on the same last 14 days.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_settings  # noqa: E402
from pipelines.core import metrics  # noqa: E402
from pipelines.core.dataset import join_labels  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.core.model import fit  # noqa: E402
from pipelines.sources import simulator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    base = load_settings(Path(__file__).resolve().parents[1] / "params.yaml")
    start = base.simulate.start
    day = lambda n: pd.Timestamp(start + dt.timedelta(days=n))  # noqa: E731
    shift = args.days - 30

    def data(scenario: str) -> tuple[pd.DataFrame, object]:
        cfg = base.simulate.model_copy(
            update={
                "days": args.days,
                "seed": args.seed,
                "scenario": scenario,
                "scenario_start": start + dt.timedelta(days=shift),
            }
        )
        tx, labels = simulator.generate(cfg)
        return join_labels(tx, labels, base.contract), cfg

    def aucs(
        raw: pd.DataFrame,
        feats: pd.DataFrame,
        spec: FeatureSpec,
        train: tuple[int, int],
        *tests: tuple[int, int],
    ) -> list[float]:
        """One model fitted on the `train` days, its ROC-AUC on each of the `tests` day ranges."""
        ts, y = raw[base.contract.timestamp], raw[base.contract.target]

        def days(span: tuple[int, int]) -> np.ndarray:
            return ((ts >= day(span[0])) & (ts < day(span[1]))).to_numpy()

        tr = days(train)
        model = fit(
            "lightgbm",
            feats[tr],
            y[tr].to_numpy(dtype=int),
            spec,
            base.train.lightgbm,
            base.train.seed,
        )
        return [
            metrics.summary(y[te].to_numpy(dtype=int), model.predict_proba(feats[te]), 0.01)[
                "roc_auc"
            ]
            for te in map(days, tests)
        ]

    t0 = time.perf_counter()
    spec = FeatureSpec.from_settings(base)
    no_history = FeatureSpec(
        base.contract.model_copy(update={"entity": None, "novelty": ()}), spec.windows_hours
    )
    none, _ = data("none")
    holdout = (args.days - 21, args.days)
    [full] = aucs(none, build_features(none, spec), spec, (0, args.days - 21), holdout)
    [flat] = aucs(none, build_features(none, no_history), no_history, (0, args.days - 21), holdout)

    shifted, _ = data("concept_shift")
    shifted_feats = build_features(shifted, spec)
    new = (args.days - 14, args.days)
    before, old_on_new = aucs(shifted, shifted_feats, spec, (0, shift - 7), (shift - 7, shift), new)
    [retrained] = aucs(shifted, shifted_feats, spec, (shift, args.days - 14), new)

    rate = none[base.contract.target].mean()
    print(
        f"\n{len(none):,} transactions over {args.days} days, fraud rate {rate:.2%}, seed {args.seed} "
        f"({time.perf_counter() - t0:.0f} s)\n"
    )
    rows = [
        ("LightGBM ROC-AUC, no-drift holdout (target 0.85-0.97)", f"{full:.4f}"),
        ("  without history features", f"{flat:.4f}"),
        ("  cost of dropping history (target >= 0.03)", f"{full - flat:+.4f}"),
        ("Concept shift: old model before the shift", f"{before:.4f}"),
        ("  old model on the new period", f"{old_on_new:.4f}"),
        ("  loss (target >= 0.05)", f"{before - old_on_new:+.4f}"),
        ("  model retrained on post-shift data, same period", f"{retrained:.4f}"),
        (
            "  share of the loss won back (target >= 0.5)",
            f"{(retrained - old_on_new) / max(before - old_on_new, 1e-9):.2f}",
        ),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
