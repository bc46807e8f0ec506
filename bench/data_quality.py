"""Is the simulated data worth modelling? Prints the four acceptance numbers per seed.

    python bench/data_quality.py [--days 100] [--tx-per-day 4000] [--cards 4000] [--seeds 7 8]

1. ROC-AUC of LightGBM on a no-drift, time-based holdout (target 0.85-0.97);
2. what dropping the history features costs (target >= 0.03);
3. under concept_shift, how much a model trained before the shift loses on the new period,
   against the same model on the same days of the no-drift data (target >= 0.05);
4. the share of that loss a model retrained on the recent (post-shift) days wins back
   (target >= 0.5).

Features come from `pipelines.core.features` (the pipeline's own, point-in-time correct);
labels are the ground truth (no label delay), splits are by day only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from pipelines.config import Contract, Simulate  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.simulate import generate, scenario_start  # noqa: E402

PARAMS = dict(
    n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=50, subsample=0.8,
    subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0, n_jobs=2, verbose=-1,
)
WITH_HISTORY = FeatureSpec(Contract())
WITHOUT_HISTORY = FeatureSpec(Contract(entity=None))


def dataset(cfg: Simulate, spec: FeatureSpec) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(features, labels, day index) for a simulated period."""
    tx, labels = generate(cfg)
    y = tx[["transaction_id"]].merge(labels, on="transaction_id", how="left")["is_fraud"].to_numpy()
    X = build_features(tx, spec)
    day = ((tx["ts"] - pd.Timestamp(cfg.start)) // pd.Timedelta(days=1)).to_numpy()
    return X, y, day


class Model:
    def __init__(self, spec: FeatureSpec, X: pd.DataFrame, y: np.ndarray, seed: int) -> None:
        self.spec = spec
        self.levels = {c: sorted(X[c].dropna().unique()) for c in spec.categorical}
        self.est = lgb.LGBMClassifier(**PARAMS, random_state=seed).fit(self._prepare(X), y)

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X[self.spec.numeric].astype(np.float64)
        for c in self.spec.categorical:
            out[c] = pd.Categorical(X[c], categories=self.levels[c])
        return out

    def auc(self, X: pd.DataFrame, y: np.ndarray) -> float:
        return float(roc_auc_score(y, self.est.predict_proba(self._prepare(X))[:, 1]))


def no_drift(cfg: Simulate, test_days: int) -> dict[str, float]:
    X, y, day = dataset(cfg, WITH_HISTORY)
    train, test = day < cfg.days - test_days, day >= cfg.days - test_days
    full = Model(WITH_HISTORY, X[train], y[train], cfg.seed).auc(X[test], y[test])
    static = WITHOUT_HISTORY.names
    flat = Model(WITHOUT_HISTORY, X.loc[train, static], y[train], cfg.seed).auc(X.loc[test, static], y[test])
    return {"auc": full, "auc_no_history": flat, "history_gain": full - flat, "fraud_rate": y.mean(), "rows": len(y)}


def concept_shift(cfg: Simulate, test_days: int) -> dict[str, float]:
    shifted_cfg = cfg.model_copy(update={"scenario": "concept_shift"})
    shift_day = (scenario_start(shifted_cfg) - cfg.start).days
    Xn, yn, dn = dataset(cfg, WITH_HISTORY)
    Xs, ys, ds = dataset(shifted_cfg, WITH_HISTORY)
    # Before the shift both periods are the same data by construction.
    old = Model(WITH_HISTORY, Xs[ds < shift_day], ys[ds < shift_day], cfg.seed)
    test_n, test_s = dn >= cfg.days - test_days, ds >= cfg.days - test_days
    before = old.auc(Xn[test_n], yn[test_n])
    after = old.auc(Xs[test_s], ys[test_s])
    recent = (ds >= shift_day) & ~test_s
    retrained = Model(WITH_HISTORY, Xs[recent], ys[recent], cfg.seed).auc(Xs[test_s], ys[test_s])
    loss = before - after
    return {
        "old_on_no_drift": before, "old_on_shift": after, "shift_loss": loss,
        "retrained_on_shift": retrained, "recovered": (retrained - after) / loss if loss > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=100)
    p.add_argument("--tx-per-day", type=int, default=4000)
    p.add_argument("--cards", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    p.add_argument("--test-days", type=int, default=21, help="no-drift holdout: the last N days")
    p.add_argument("--shift-test-days", type=int, default=10, help="concept shift: evaluate on the last N days")
    a = p.parse_args(argv)

    rows = []
    for seed in a.seeds:
        t = time.perf_counter()
        cfg = Simulate(seed=seed, days=a.days, tx_per_day=a.tx_per_day, cards=a.cards, start=dt.date(2026, 1, 1))
        rows.append({"seed": seed, **no_drift(cfg, a.test_days), **concept_shift(cfg, a.shift_test_days),
                     "secs": time.perf_counter() - t})
    res = pd.DataFrame(rows).set_index("seed")
    shift_day = (scenario_start(Simulate(days=a.days)) - dt.date(2026, 1, 1)).days
    print(f"setup: {a.days} days x {a.tx_per_day} tx/day, {a.cards} cards; LightGBM {PARAMS['n_estimators']} trees, "
          f"lr {PARAMS['learning_rate']}, {PARAMS['num_leaves']} leaves")
    print(f"no drift: train days 0-{a.days - a.test_days - 1}, test the last {a.test_days} days")
    print(f"concept shift from day {shift_day}: old model trained on days 0-{shift_day - 1}, "
          f"retrained on days {shift_day}-{a.days - a.shift_test_days - 1}, test the last {a.shift_test_days} days")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(res)
    worst = {
        "1. AUC with history (0.85-0.97)": (res["auc"].min(), res["auc"].max()),
        "2. history gain (>= 0.03)": (res["history_gain"].min(),),
        "3. concept-shift loss (>= 0.05)": (res["shift_loss"].min(),),
        "4. share recovered by retraining (>= 0.5)": (res["recovered"].min(),),
    }
    print("\ncriterion                                   worst over seeds")
    for name, vals in worst.items():
        print(f"{name:<44}{' .. '.join(f'{v:.3f}' for v in vals)}")


if __name__ == "__main__":
    main()
