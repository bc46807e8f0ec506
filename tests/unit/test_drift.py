"""Drift rules: when a check result becomes an alarm (alarm), what each check finds (judge), and
what a window measures (io.drift_report.check).

Every test sets the parameters it relies on explicitly, so a change of defaults in params.yaml
cannot make these pass or fail; tests/data/test_drift_detection.py covers the defaults.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Drift, Settings, parse_settings
from pipelines.core.drift import (
    CHECKS,
    CheckState,
    ColumnDrift,
    DriftResult,
    Finding,
    Measurement,
    Quality,
    alarm,
    columns_to_check,
    insufficient,
    judge,
    sample,
)
from pipelines.io.drift_report import check, html

T0 = dt.datetime(2026, 3, 1, 12, 0)
EVERY = dt.timedelta(minutes=15)
PARAMS = Drift(
    persistence=2,
    cooldown_hours=6,
    min_rows=500,
    sample_rows=5000,
    drift_share=0.3,
    num_method="wasserstein",
    num_threshold=0.1,
    cat_method="jensenshannon",
    cat_threshold=0.1,
    min_quality=0.75,
    min_labelled=300,
)


INPUTS = ("amount", "channel", "hour", "merchant_country", "merchant_category")


def result(
    detected: bool = True,
    sufficient: bool = True,
    columns: tuple[str, ...] = ("amount", "channel"),
    prediction_drift: bool = False,
    auc: float | None = None,
) -> DriftResult:
    """A judged window: `columns` of the five inputs drifted (if `detected`), and so on."""
    if not sufficient:
        return insufficient(10, 20000, PARAMS)
    scores = {
        c: ColumnDrift(
            "wasserstein",
            0.2 if detected and c in columns else 0.01,
            0.1,
            detected and c in columns,
        )
        for c in INPUTS
    }
    m = Measurement(
        rows=5000,
        reference_rows=20000,
        columns=scores,
        untestable={},
        prediction=ColumnDrift("wasserstein", 0.31, 0.1, prediction_drift),
        labelled=1234 if auc is not None else 0,
        quality=None if auc is None else Quality(roc_auc=auc, labelled=1234, positives=40),
    )
    return judge(m, PARAMS)


def run(
    results: list[DriftResult],
    state: CheckState | None = None,
    start: dt.datetime = T0,
    params: Drift = PARAMS,
) -> tuple[list[bool], CheckState, list[str]]:
    """Feed checks 15 minutes apart; (confirmed per check, final state, reasons)."""
    state = state or CheckState()
    confirmed, reasons = [], []
    for i, r in enumerate(results):
        verdict, state = alarm(r, state, start + i * EVERY, params)
        confirmed.append(verdict.confirmed)
        reasons.append(verdict.reason)
    return confirmed, state, reasons


# --- alarm ------------------------------------------------------------------------------------


def test_alarm_needs_drift_in_persistence_consecutive_checks() -> None:
    confirmed, state, reasons = run([result(), result()])
    assert confirmed == [False, True]
    assert "1 of 2" in reasons[0]
    assert (
        reasons[1]
        == "drift confirmed in 2 consecutive checks: amount, channel (share 0.40 >= 0.30)"
    )
    assert state.last_alarm_at == T0 + EVERY


def test_a_clean_check_in_between_breaks_the_run() -> None:
    confirmed, state, _ = run([result(), result(detected=False), result()])
    assert confirmed == [False, False, False]
    assert state.consecutive == 1


def test_an_insufficient_check_neither_counts_nor_resets() -> None:
    confirmed, _, reasons = run([result(), result(sufficient=False), result()])
    assert confirmed == [False, False, True]
    assert reasons[1].startswith("no verdict: 10 logged rows")
    only_insufficient, state, _ = run([result(sufficient=False)] * 3)
    assert only_insufficient == [False] * 3 and state == CheckState()


def test_the_counter_resets_after_an_alarm() -> None:
    confirmed, state, _ = run([result()] * 5)
    assert confirmed == [False, True, False, True, False]
    assert state.consecutive == 1 and state.last_alarm_at == T0 + 3 * EVERY


def test_persistence_of_one_alarms_at_once() -> None:
    confirmed, _, _ = run([result()], params=PARAMS.model_copy(update={"persistence": 1}))
    assert confirmed == [True]


def test_no_alarm_and_no_accumulation_during_the_cooldown() -> None:
    retrained = CheckState(consecutive=0, last_retrain_at=T0 - dt.timedelta(hours=1))
    # 20 checks cover T0 .. T0 + 4h45: all inside the 6 h cooldown that started at T0 - 1h.
    confirmed, state, reasons = run([result()] * 20, state=retrained)
    assert not any(confirmed) and state.consecutive == 0
    assert "cooldown" in reasons[-1]
    # Once the cooldown is over, persistence starts from zero: the drift seen during it did not count.
    after = T0 + dt.timedelta(hours=5)
    confirmed, _, _ = run([result(), result()], state=state, start=after)
    assert confirmed == [False, True]


def test_zero_cooldown_does_not_delay_an_alarm() -> None:
    retrained = CheckState(last_retrain_at=T0)
    confirmed, _, _ = run(
        [result(), result()],
        state=retrained,
        params=PARAMS.model_copy(update={"cooldown_hours": 0}),
    )
    assert confirmed == [False, True]


def test_the_reason_names_prediction_drift_and_a_quality_drop() -> None:
    r = result(columns=(), prediction_drift=True, auc=0.61)
    _, _, reasons = run([r, r])
    assert reasons[1].startswith("drift confirmed in 2 consecutive checks: ")
    assert "prediction drift (wasserstein 0.310" in reasons[1]
    assert "quality drop (ROC-AUC 0.610 < 0.75 on 1,234 labelled rows)" in reasons[1]


def test_state_round_trips_through_json_and_normalises_time_zones() -> None:
    state = CheckState(3, T0, T0 - dt.timedelta(days=1))
    assert CheckState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    aware = {
        "consecutive": 1,
        "last_alarm_at": "2026-03-01T13:00:00+01:00",
        "last_retrain_at": None,
    }
    assert CheckState.from_dict(aware) == CheckState(1, T0, None)
    assert CheckState.from_dict({}) == CheckState()


# --- helpers ----------------------------------------------------------------------------------


def test_columns_default_to_the_contract_inputs_unless_configured() -> None:
    assert columns_to_check(Settings()) == [
        "amount",
        "merchant_category",
        "merchant_country",
        "channel",
    ]
    chosen = parse_settings({"drift": {"columns": ["amount", "hour"]}})
    assert columns_to_check(chosen) == ["amount", "hour"]


def test_sample_is_seeded_ordered_and_keeps_small_frames_whole() -> None:
    df = pd.DataFrame({"x": np.arange(1000)})
    a, b, c = sample(df, 100, seed=1), sample(df, 100, seed=1), sample(df, 100, seed=2)
    assert len(a) == 100 and a.equals(b) and not a.equals(c)
    assert a["x"].is_monotonic_increasing and a["x"].is_unique
    assert sample(df, 1000, seed=1) is df


# --- check ------------------------------------------------------------------------------------


def frame(
    n: int,
    seed: int,
    amount_scale: float = 1.0,
    online: float = 0.3,
    informative: bool = True,
    prob_shift: float = 0.0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(np.int8)
    score = rng.beta(1, 30, n) + prob_shift
    if informative:
        score = np.where(y == 1, rng.beta(5, 2, n), score)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 0.7, n) * amount_scale,
            "hour": rng.integers(0, 24, n).astype(np.float64),
            "channel": rng.choice(["pos", "online"], n, p=[1 - online, online]),
            "merchant_country": rng.choice(["US", "GB", "DE"], n),
            "probability": np.clip(score, 0, 1),
            "is_fraud": y,
        }
    )


COLUMNS = ["amount", "hour", "channel", "merchant_country"]


def facts(res: DriftResult) -> dict:
    finding = res.finding("data_drift")
    assert finding is not None
    return finding.facts


def test_check_names_the_shifted_columns_with_their_type_methods() -> None:
    res, snapshot = check(
        frame(4000, 0), frame(3000, 1, amount_scale=1.6, online=0.6), COLUMNS, PARAMS
    )
    assert res.sufficient and res.detected and res.found("data_drift")
    assert facts(res)["drifted_columns"] == ["amount", "channel"] and facts(res)["share"] == 0.5
    assert res.measurement.columns["amount"].method == "wasserstein"
    assert res.measurement.columns["channel"].method == "jensenshannon"
    assert all(s.drifted == (s.score >= s.threshold) for s in res.measurement.columns.values())
    assert res.rows == 3000 and res.reference_rows == 4000
    assert snapshot is not None and "amount" in html(snapshot, "no drift", "", [])
    json.dumps(res.to_dict())  # the summary file holds it as is


def test_same_distribution_is_not_drift() -> None:
    res, _ = check(frame(4000, 0), frame(3000, 1), COLUMNS, PARAMS, target="is_fraud")
    assert not res.detected and facts(res)["drifted_columns"] == [] and facts(res)["share"] == 0.0
    assert not res.found("prediction_drift") and not res.found("quality_drift")
    assert res.measurement.quality is not None and res.measurement.quality.roc_auc > 0.9


def test_one_drifted_column_below_the_drift_share_is_not_data_drift() -> None:
    res, _ = check(frame(4000, 0), frame(3000, 1, online=0.6), COLUMNS, PARAMS)
    assert facts(res)["drifted_columns"] == ["channel"] and facts(res)["share"] == 0.25
    assert not res.found("data_drift") and not res.detected


def test_p_value_methods_are_read_from_the_test_verdict() -> None:
    """For KS a low score is drift: the verdict must come from Evidently, not from score >= threshold."""
    params = PARAMS.model_copy(update={"num_method": "ks", "num_threshold": 0.01})
    res, _ = check(frame(2000, 0), frame(2000, 1, amount_scale=1.6), ["amount", "hour"], params)
    assert facts(res)["drifted_columns"] == ["amount"]
    assert res.measurement.columns["amount"].score < 0.01 < res.measurement.columns["hour"].score


def test_prediction_drift_is_judged_apart_from_the_inputs() -> None:
    res, _ = check(frame(4000, 0), frame(3000, 1, prob_shift=0.15), COLUMNS, PARAMS)
    assert res.found("prediction_drift") and res.detected
    assert (
        res.measurement.prediction is not None
        and res.measurement.prediction.method == "wasserstein"
    )
    assert facts(res)["drifted_columns"] == [] and not res.found("data_drift")


def test_without_reference_predictions_quality_is_still_judged() -> None:
    reference = frame(4000, 0).drop(columns="probability")
    res, _ = check(reference, frame(3000, 1, informative=False), COLUMNS, PARAMS, target="is_fraud")
    assert res.measurement.prediction is None and not res.found("prediction_drift")
    assert res.measurement.quality is not None and res.measurement.quality.roc_auc < 0.75
    assert res.found("quality_drift") and res.detected


def test_quality_needs_enough_labelled_rows_of_both_classes() -> None:
    current = frame(3000, 1, informative=False)
    current["is_fraud"] = (
        current["is_fraud"].astype("Int8").mask(current.index >= 250)
    )  # 250 < 300 labelled
    res, _ = check(frame(4000, 0), current, COLUMNS, PARAMS, target="is_fraud")
    assert (
        res.measurement.labelled == 250
        and res.measurement.quality is None
        and not res.found("quality_drift")
    )
    one_class = frame(3000, 1, informative=False).assign(is_fraud=0)
    res, _ = check(frame(4000, 0), one_class, COLUMNS, PARAMS, target="is_fraud")
    assert res.measurement.labelled == 3000 and res.measurement.quality is None
    no_floor = PARAMS.model_copy(update={"min_quality": None})
    res, _ = check(
        frame(4000, 0), frame(3000, 1, informative=False), COLUMNS, no_floor, target="is_fraud"
    )
    assert res.measurement.quality is not None and not res.found("quality_drift")


def test_too_few_rows_give_no_verdict_and_no_report() -> None:
    res, snapshot = check(
        frame(4000, 0), frame(499, 1, amount_scale=3.0), COLUMNS, PARAMS, target="is_fraud"
    )
    assert snapshot is None
    assert not res.sufficient and not res.detected and res.rows == 499 and res.measurement is None


def test_large_windows_are_sampled_to_sample_rows() -> None:
    """Evidently sees the seeded samples, and the sizes reported are the real ones."""
    params = PARAMS.model_copy(update={"sample_rows": 1000})
    reference, current = frame(6000, 0), frame(5000, 1, amount_scale=1.6)
    res, _ = check(reference, current, COLUMNS, params)
    assert (
        res.rows == 5000
        and res.reference_rows == 6000
        and facts(res)["drifted_columns"] == ["amount"]
    )
    by_hand, _ = check(
        sample(reference, 1000, params.seed), sample(current, 1000, params.seed), COLUMNS, PARAMS
    )
    assert by_hand.measurement.columns == res.measurement.columns


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match=r"\['hour'\]"):
        check(frame(4000, 0).drop(columns="hour"), frame(3000, 1), COLUMNS, PARAMS)


def test_a_column_without_values_is_untestable_and_the_others_are_still_judged() -> None:
    current = frame(3000, 1, amount_scale=1.6, online=0.6)
    current["hour"] = np.nan  # e.g. a feature that was never filled in the window
    res, _ = check(frame(4000, 0), current, COLUMNS, PARAMS)
    assert res.measurement.untestable == {"hour": "no values in the current window"}
    assert facts(res)["drifted_columns"] == ["amount", "channel"] and res.found("data_drift")
    assert "not testable: hour (no values in the current window)" in res.describe()


def test_a_new_kind_of_check_is_one_class_the_decision_iterates_over() -> None:
    class LowVolume:
        name = "low_volume"

        def judge(self, m: Measurement, params: Drift) -> Finding:
            return Finding(self.name, m.rows < 10_000, f"only {m.rows} rows", {"rows": m.rows})

    base = result(detected=False)
    assert base.measurement is not None and not base.detected
    extended = judge(base.measurement, PARAMS, (*CHECKS, LowVolume()))
    assert extended.found("low_volume") and extended.detected
    verdict, _ = alarm(extended, CheckState(consecutive=1), T0, PARAMS)
    assert verdict.confirmed and verdict.reason.endswith("only 5000 rows")
    assert extended.to_dict()["low_volume"] is True
