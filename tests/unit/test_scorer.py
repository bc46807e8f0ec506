"""The service's business logic without HTTP or storage: records → columns → features → scores →
decisions → the response and the prediction log's row."""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.config import Contract, Settings, parse_settings
from pipelines.core.dataset import as_text, join_labels
from pipelines.core.features import FeatureSpec, build_features, features_for, histories_of
from pipelines.core.model import TabularModel, fit
from pipelines.io.prediction_log import LogColumn
from pipelines.serving import schema, scorer
from pipelines.serving.schema import record_model
from pipelines.sources import simulator

SETTINGS = Settings()
SPEC = FeatureSpec.from_settings(SETTINGS)
POLICY = scorer.Policy.of(SETTINGS.serving.decisions, SETTINGS.serving.default_decision)
Transaction = record_model(SETTINGS)


@cache
def model() -> TabularModel:
    small = parse_settings(
        {
            "simulate": {"seed": 2, "cards": 150, "days": 8, "tx_per_day": 600},
            "train": {"lightgbm": {"n_estimators": 30}},
        }
    )
    tx, labels = simulator.generate(small.simulate)
    raw = join_labels(tx, labels, small.contract)
    return fit(
        "lightgbm",
        build_features(raw, SPEC),
        raw["is_fraud"].to_numpy(dtype=int),
        SPEC,
        small.train.lightgbm,
        1,
    ).serving_copy()


def records(*rows: dict) -> list:
    base = {
        "card_id": "c1",
        "amount": 20.0,
        "merchant_category": "grocery",
        "merchant_country": "US",
        "channel": "pos",
    }
    return [Transaction(**{**base, **row}) for row in rows]


def test_record_columns_turn_validated_records_into_feature_arrays() -> None:
    batch = scorer.record_columns(
        records(
            {"transaction_id": "a", "ts": "2026-03-01T10:00:00.123456Z", "amount": 1.5},
            {"transaction_id": "b", "ts": "2026-03-01T12:00:00+02:00", "card_id": "c2"},
        ),
        SPEC,
    )
    # UTC milliseconds, truncated like numpy's datetime64[ms]; the +02:00 offset converted.
    assert batch["ts"].tolist() == [
        pd.Timestamp("2026-03-01 10:00:00.123").value // 10**6,
        pd.Timestamp("2026-03-01 10:00:00").value // 10**6,
    ]
    assert batch["amount"].dtype == np.float64 and batch["amount"].tolist() == [1.5, 20.0]
    assert batch["card_id"].tolist() == ["c1", "c2"] and batch["transaction_id"].dtype == object


def test_the_store_is_asked_for_each_entity_once() -> None:
    batch = {"ts": np.array([30, 10, 20]), "card_id": np.array(["x", "y", "x"], dtype=object)}
    assert scorer.distinct_entities(batch, SPEC) == ["x", "y"]


def test_decisions_follow_the_thresholds_inclusively() -> None:
    p = np.array([0.0, 0.199, 0.2, 0.599, 0.6, 1.0])
    policy = scorer.Policy.of({"review": 0.2, "decline": 0.6}, "approve")
    assert policy.decide(p).tolist() == [
        "approve",
        "approve",
        "review",
        "review",
        "decline",
        "decline",
    ]
    assert policy.labels == ["approve", "decline", "review"]


def test_decision_labels_and_thresholds_are_the_configured_ones() -> None:
    """Any labels, any number of them, in any order in params: the highest threshold met wins."""
    policy = scorer.Policy.of({"hire": 0.7, "interview": 0.3, "phone screen": 0.5}, "pass")
    assert policy.decide(np.array([0.1, 0.3, 0.5, 0.69, 0.7])).tolist() == [
        "pass",
        "interview",
        "phone screen",
        "phone screen",
        "hire",
    ]
    assert scorer.Policy.of({}, "score only").decide(np.array([0.9])).tolist() == ["score only"]


def test_scores_equal_the_offline_features_scored_by_the_model() -> None:
    history = pd.DataFrame(
        {
            "transaction_id": ["h1", "h2"],
            "ts": pd.to_datetime(["2026-03-01 09:00", "2026-03-01 09:30"]),
            "card_id": ["c1", "c1"],
            "amount": [15.0, 25.0],
            "merchant_category": ["grocery", "fuel"],
            "merchant_country": ["US", "US"],
            "channel": ["pos", "pos"],
        }
    )
    recs = records(
        {"transaction_id": "a", "ts": "2026-03-01T10:00:00", "merchant_country": "GB"},
        {
            "transaction_id": "b",
            "ts": "2026-03-01T10:05:00",
            "card_id": "new",
            "merchant_category": "crypto",
        },
    )
    batch = scorer.record_columns(recs, SPEC)
    scored = scorer.score_columns(
        batch, histories_of(history[SPEC.history_columns], SPEC), model(), SPEC, POLICY
    )

    offline = features_for(pd.DataFrame([r.model_dump() for r in recs]), history, SPEC)
    for name in SPEC.numeric:
        np.testing.assert_allclose(
            scored.features[name], offline[name].to_numpy(dtype=float), rtol=0, atol=1e-12
        )
    assert (
        scored.features["hist_n_prior"].tolist() == [2.0, 0.0]
        and scored.features["hist_new_merchant_country"][0] == 1.0
    )
    np.testing.assert_allclose(
        scored.probability, model().predict_proba(offline), rtol=0, atol=1e-12
    )
    assert scored.unknown == [[], ["merchant_category"]]
    assert scored.decision.tolist() == POLICY.decide(scored.probability).tolist()
    assert scored.history.tolist() == ["live", "live"]


def test_without_the_store_a_batch_is_scored_on_its_request_level_features() -> None:
    """The store did not answer: every history feature is missing (not zero: a new card and an
    unknown history are different things), the rest is the usual, and the answer says so."""
    recs = records({"transaction_id": "a", "ts": "2026-03-01T10:00:00", "amount": 900.0})
    batch = scorer.record_columns(recs, SPEC)
    degraded = scorer.score_columns(batch, None, model(), SPEC, POLICY)
    new_card = scorer.score_columns(batch, {}, model(), SPEC, POLICY)
    assert all(np.isnan(degraded.features[n]).all() for n in SPEC.history_names)
    assert new_card.features["hist_n_prior"].tolist() == [0.0]
    for name in set(SPEC.numeric) - set(SPEC.history_names):
        np.testing.assert_array_equal(degraded.features[name], new_card.features[name])
    assert 0.0 <= degraded.probability[0] <= 1.0
    assert scorer.answers(batch, degraded, SPEC, "v")[0]["history"] == "unavailable"
    assert scorer.answers(batch, new_card, SPEC, "v")[0]["history"] == "live"


def test_the_answer_and_the_log_row_carry_the_same_outcome() -> None:
    version = "fraud-model:v1"
    recs = records(
        {"transaction_id": "a", "ts": "2026-03-01T10:00:00"},
        {"transaction_id": "b", "ts": "2026-03-01T10:01:00"},
    )
    batch = scorer.record_columns(recs, SPEC)
    scored = scorer.score_columns(batch, None, model(), SPEC, POLICY)
    answers = scorer.answers(batch, scored, SPEC, version)
    assert [a["transaction_id"] for a in answers] == ["a", "b"]
    assert {a["model_version"] for a in answers} == {version}
    now = np.datetime64(dt.datetime(2026, 3, 1, 10, 2), "us")
    row = scorer.log_columns(batch, scored, SPEC, version, "batch-1", now)
    assert set(row) == {
        "transaction_id",
        "ts",
        "card_id",
        *SPEC.names,
        LogColumn.PROBABILITY,
        LogColumn.DECISION,
        LogColumn.MODEL_VERSION,
        LogColumn.UNKNOWN,
        LogColumn.BATCH_ID,
        LogColumn.SCORED_AT,
        LogColumn.HISTORY,
    }
    assert all(len(v) == 2 for v in row.values())
    assert row[LogColumn.PROBABILITY].tolist() == [a["probability"] for a in answers]
    assert row[LogColumn.DECISION].tolist() == [a["decision"] for a in answers]
    assert row[LogColumn.HISTORY].tolist() == [a["history"] for a in answers]
    assert row[LogColumn.SCORED_AT].dtype == np.dtype("datetime64[us]") and row[
        "ts"
    ].dtype == np.dtype("datetime64[ms]")


def test_the_answer_echoes_the_id_under_the_contracts_own_name() -> None:
    contract = Contract(id="person_id", entity=None, novelty=())
    answer = schema.score_model(contract)
    fields = set(answer.model_fields)
    assert "person_id" in fields and "transaction_id" not in fields
    body = {"person_id": "p1", "probability": 0.3, "decision": "no", "model_version": "m:1"}
    assert answer.model_validate(body).model_dump()["person_id"] == "p1"
    with pytest.raises(ValueError, match="contract.id 'decision' is the name of a field"):
        schema.score_model(Contract(id="decision"))


def test_integer_codes_become_the_text_ingest_makes_of_an_integer_column() -> None:
    """A table with integer-coded categories and ids (SCHL=21) is trained on their text; a
    request may send them as JSON integers and they must compare equal online."""
    sent = {
        "transaction_id": 1200,
        "ts": "2026-03-01T10:00:00",
        "card_id": -7,
        "amount": 3.0,
        "merchant_category": "grocery",
        "merchant_country": "US",
        "channel": 21,
    }
    rec = Transaction.model_validate(sent)
    offline = as_text(pd.Series([1200, -7, 21])).tolist()
    assert [rec.transaction_id, rec.card_id, rec.channel] == offline == ["1200", "-7", "21"]
    for refused in (True, 21.0, 2**63):
        with pytest.raises(ValueError, match="channel") as err:
            Transaction.model_validate(sent | {"channel": refused})
        assert "1 validation error" in str(err.value)


def test_text_fields_take_printable_text_only_and_say_why_not() -> None:
    sent = {
        "transaction_id": "t-1",
        "ts": "2026-03-01T10:00:00",
        "card_id": "c1",
        "amount": 3.0,
        "merchant_category": "grocery",
        "merchant_country": "Côte d'Ivoire",
        "channel": "pos",
    }
    assert Transaction.model_validate(sent).merchant_country == "Côte d'Ivoire"
    for value, why in (
        ("abc\n", "string_pattern_mismatch"),  # a final newline too, not only inside
        ("a\tb", "string_pattern_mismatch"),
        ("a\ud800", "string_unicode"),  # a lone surrogate
        ("", "string_too_short"),
        ("x" * 129, "string_too_long"),
    ):
        with pytest.raises(ValidationError) as err:
            Transaction.model_validate(sent | {"transaction_id": value})
        (problem,) = err.value.errors()
        assert (problem["loc"], problem["type"]) == (("transaction_id",), why), value
    with pytest.raises(ValidationError, match="at most 128 characters"):
        Transaction.model_validate(sent | {"transaction_id": "x" * 129})


def test_a_gap_is_missing_offline_and_online_and_never_an_unknown_category() -> None:
    """Columns the gate lets have gaps (validate.null_shares) may be null or left out of a
    request; the model sees them exactly as it sees the gaps of the training table."""
    gaps = parse_settings({"validate": {"null_shares": {"channel": 0.1, "merchant_country": 0.1}}})
    with_gaps = record_model(gaps)
    sent = {"transaction_id": "g", "ts": "2026-03-01T10:00:00", "card_id": "c9", "amount": 12.0}
    recs = [
        with_gaps.model_validate({**sent, "merchant_category": "fuel", "channel": None}),
        with_gaps.model_validate({**sent, "transaction_id": "h", "merchant_category": "travel"}),
    ]
    with pytest.raises(ValueError, match="merchant_category"):
        with_gaps.model_validate({**sent, "merchant_category": None})  # no gaps allowed there
    batch = scorer.record_columns(recs, SPEC)
    scored = scorer.score_columns(batch, {}, model(), SPEC, POLICY)
    frame = pd.DataFrame([r.model_dump() for r in recs]).astype(
        {"channel": "string", "merchant_country": "string"}
    )
    offline = features_for(frame, frame.iloc[:0], SPEC)
    assert offline["channel"].isna().all() and offline["merchant_country"].isna().all()
    np.testing.assert_allclose(
        scored.probability, model().predict_proba(offline), rtol=0, atol=1e-12
    )
    assert scored.unknown == [[], []] and scored.features["hist_new_merchant_country"].tolist() == [
        0.0,
        0.0,
    ]
