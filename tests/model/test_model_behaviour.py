"""Model tier: the data is worth modelling, history matters, and training is reproducible."""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Contract, Settings, parse_settings
from pipelines.core import metrics
from pipelines.core.dataset import join_labels
from pipelines.core.families import FAMILIES
from pipelines.core.features import FeatureSpec, build_features, features_for
from pipelines.core.model import TabularModel, fit
from pipelines.io.model_files import to_bytes
from pipelines.sources import simulator

pytestmark = pytest.mark.slow
START = dt.date(2026, 1, 1)


def settings_for(
    days: int, scenario: str = "none", shift_day: int | None = None, n_estimators: int = 150
) -> Settings:
    return parse_settings(
        {
            "simulate": {
                "seed": 11,
                "cards": 1500,
                "days": days,
                "tx_per_day": 3000,
                "start": str(START),
                "scenario": scenario,
                "scenario_start": str(START + dt.timedelta(days=shift_day)) if shift_day else None,
            },
            "train": {"lightgbm": {"n_estimators": n_estimators}},
        }
    )


@cache
def labelled(days: int, scenario: str, shift_day: int | None) -> pd.DataFrame:
    s = settings_for(days, scenario, shift_day)
    tx, labels = simulator.generate(s.simulate)
    return join_labels(tx, labels, s.contract)


def small_world(seed: int) -> tuple[Settings, FeatureSpec, pd.DataFrame, np.ndarray]:
    """Ten days of 200 cards: enough to fit both families in well under a second."""
    small = parse_settings(
        {"simulate": {"seed": seed, "cards": 200, "days": 10, "tx_per_day": 800}}
    )
    tx, labels = simulator.generate(small.simulate)
    raw = join_labels(tx, labels, small.contract)
    spec = FeatureSpec.from_settings(small)
    return small, spec, build_features(raw, spec), raw["is_fraud"].to_numpy(dtype=int)


def day(n: int) -> pd.Timestamp:
    return pd.Timestamp(START + dt.timedelta(days=n))


def auc_of(
    s: Settings,
    spec: FeatureSpec,
    raw: pd.DataFrame,
    train_until: int,
    test_from: int,
    test_until: int,
) -> float:
    feats = build_features(raw, spec)
    ts, y = raw["ts"], raw["is_fraud"]
    tr = (ts < day(train_until)).to_numpy()
    te = ((ts >= day(test_from)) & (ts < day(test_until))).to_numpy()
    model = fit(
        "lightgbm", feats[tr], y[tr].to_numpy(dtype=int), spec, s.train.lightgbm, s.train.seed
    )
    return metrics.summary(y[te].to_numpy(dtype=int), model.predict_proba(feats[te]), 0.01)[
        "roc_auc"
    ]


def test_history_features_carry_signal_and_the_task_is_learnable() -> None:
    s = settings_for(45)
    raw = labelled(45, "none", None)
    full = auc_of(s, FeatureSpec.from_settings(s), raw, 35, 35, 45)
    no_history = auc_of(
        s, FeatureSpec(Contract(entity=None, novelty=()), s.features.windows_hours), raw, 35, 35, 45
    )
    assert 0.8 < full < 0.99
    assert full - no_history >= 0.02, (full, no_history)


def test_concept_shift_hurts_the_old_model_and_retraining_recovers() -> None:
    s = settings_for(60, "concept_shift", 40)
    raw = labelled(60, "concept_shift", 40)
    spec = FeatureSpec.from_settings(s)
    before_shift = auc_of(s, spec, raw, 33, 33, 40)
    old_on_new = auc_of(s, spec, raw, 33, 50, 60)
    retrained_on_new = auc_of(s, spec, raw, 50, 50, 60)
    assert before_shift - old_on_new >= 0.03, (before_shift, old_on_new)
    assert retrained_on_new - old_on_new >= 0.5 * (before_shift - old_on_new), (
        old_on_new,
        retrained_on_new,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_same_data_and_params_give_the_same_model_bytes(family: str) -> None:
    s = settings_for(20, n_estimators=30)
    small, spec, feats, y = small_world(seed=3)
    params = s.train.params_of(family)
    a = to_bytes(fit(family, feats, y, spec, params, 42))
    b = to_bytes(fit(family, feats, y, spec, params, 42))
    assert a == b, family
    if family in ("lightgbm", "xgboost", "sklearn"):  # subsampling: the seed matters
        assert a != to_bytes(fit(family, feats, y, spec, params, 43))


def test_unseen_categories_are_flagged_and_still_scored() -> None:
    small, spec, feats, y = small_world(seed=4)
    for family in FAMILIES:
        model = fit(family, feats, y, spec, small.train.params_of(family), 1)
        probe = feats.head(5).copy()
        probe["merchant_category"] = ["crypto", *probe["merchant_category"].iloc[1:]]
        mask = model.unknown_mask(probe)
        assert mask[:, spec.categorical.index("merchant_category")].tolist() == [
            True,
            False,
            False,
            False,
            False,
        ]
        p = model.predict_proba(probe)
        assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()


def test_lightgbm_on_the_matrix_is_lightgbm_on_its_own_pandas_categoricals() -> None:
    """The family fits and scores the float matrix; LightGBM fitted the usual way, on a frame of
    pandas categoricals with the same levels, gives the same probabilities (unseen and missing
    values included): the matrix path changes no model."""
    import lightgbm as lgb

    small, spec, feats, y = small_world(seed=5)
    model = fit("lightgbm", feats, y, spec, small.train.lightgbm, 1)
    # The same estimator settings, fitted the usual way: on pandas categoricals.
    plain = lgb.LGBMClassifier(**model.estimator.estimator.get_params())
    plain.fit(model.prepare(feats), y)
    probe = feats.sample(300, random_state=0).copy()
    probe.loc[probe.index[:5], "merchant_category"] = "crypto"  # unseen
    probe.loc[probe.index[5:10], "merchant_country"] = None  # missing
    probe.loc[probe.index[10:15], "hist_secs_since_prev"] = np.nan
    reference = plain.predict_proba(model.prepare(probe))[:, 1]
    np.testing.assert_allclose(model.predict_proba(probe), reference, rtol=0, atol=1e-12)


# --- behavioural tests (invariance and direction, in the spirit of Made-With-ML's) ----------------


@cache
def trained_model() -> tuple[FeatureSpec, TabularModel]:
    """The 45-day world's LightGBM, trained on all its days."""
    s = settings_for(45)
    raw = labelled(45, "none", None)
    spec = FeatureSpec.from_settings(s)
    return spec, fit(
        "lightgbm",
        build_features(raw, spec),
        raw["is_fraud"].to_numpy(dtype=int),
        spec,
        s.train.lightgbm,
        s.train.seed,
    )


PROBE = {
    "card_id": "probe",
    "amount": 80.0,
    "merchant_category": "electronics",
    "merchant_country": "US",
    "channel": "online",
}


def events(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame([{**PROBE, **row} for row in rows])
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame


def score(record: dict, history: pd.DataFrame | None = None) -> float:
    spec, model = trained_model()
    batch = events(record)
    past = history if history is not None else batch.iloc[:0]
    return float(model.predict_proba(features_for(batch, past[spec.history_columns], spec))[0])


def test_invariance_the_id_and_a_shift_within_the_hour_do_not_change_a_score() -> None:
    base = score({"transaction_id": "a", "ts": "2026-03-02 14:05:00"})
    assert score({"transaction_id": "another-id-entirely", "ts": "2026-03-02 14:05:00"}) == base
    assert score({"transaction_id": "a", "ts": "2026-03-02 14:59:59"}) == base


def test_direction_a_cards_tenth_transaction_in_an_hour_scores_higher_than_its_first() -> None:
    burst = events(
        *({"transaction_id": f"b{i}", "ts": f"2026-03-02 14:{5 * i:02d}:00"} for i in range(9))
    )
    first = score({"transaction_id": "x", "ts": "2026-03-02 14:50:00"})
    tenth = score({"transaction_id": "x", "ts": "2026-03-02 14:50:00"}, history=burst)
    assert tenth > first, (first, tenth)


def test_an_infinite_feature_is_refused_by_name() -> None:
    small, spec, feats, y = small_world(seed=6)
    broken = feats.copy()
    broken.loc[broken.index[:3], "hist_amount_ratio"] = np.inf
    with pytest.raises(
        ValueError, match=r"infinite values \(count per column: \{'hist_amount_ratio': 3\}\)"
    ):
        fit("lightgbm", broken, y, spec, small.train.lightgbm, 1)
