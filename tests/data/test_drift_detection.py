"""The drift check on simulated traffic, with the DEFAULT drift parameters of params.yaml.

Each scenario is simulated over 30 days (800 cards, 3000 transactions a day); the scenario
starts on day 22. A LightGBM model (params.yaml hyper-parameters) is trained on the first 20
days (the reference) and scores both sides, as the champion does in production (the reference
is its own training data, so its predictions there are in-sample).
The current window is the last 7 days. Pre-scenario data is identical across scenarios for a
seed (simulator.py guarantees it), so one model per seed serves every scenario.

The parameters come from `Settings()`, which mirrors params.yaml: when a default is changed so
that one of these fails, the failure is the point.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings, parse_settings
from pipelines.core import drift
from pipelines.core.drift import DriftResult, columns_to_check
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.model import TabularModel, fit
from pipelines.io import source, storage
from pipelines.io.drift_report import check
from pipelines.io.prediction_log import PredictionLog
from pipelines.jobs import drift_check
from pipelines.sources import simulator

SETTINGS = Settings()
DRIFT = SETTINGS.drift
SPEC = FeatureSpec.from_settings(SETTINGS)
C = SETTINGS.contract
START = dt.date(2026, 1, 1)
# Big enough that the model clears deploy.floor on no-drift data, as a promoted champion does:
# with 400 cards x 1500 tx/day it does not (ROC-AUC 0.74-0.87 by seed), and quality "drifts" on
# no-drift data only because the model was never good.
SIZE = {
    "cards": 800,
    "days": 30,
    "tx_per_day": 3000,
    "start": START,
    "scenario_start": START + dt.timedelta(days=22),
}
REFERENCE_END = pd.Timestamp(START + dt.timedelta(days=20))
CURRENT_START = pd.Timestamp(START + dt.timedelta(days=23))
SEED = SETTINGS.simulate.seed
# "With margin": on no-drift data every distance stays below threshold / MARGIN and ROC-AUC
# stays QUALITY_MARGIN above the floor (the defaults are distances: higher means drift).
MARGIN, QUALITY_MARGIN = 1.5, 0.03
DISTANCES = {"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed", "emd"}


@functools.cache
def simulated(scenario: str, seed: int) -> pd.DataFrame:
    """Transactions with their features and (every) label."""
    cfg = SETTINGS.simulate.model_copy(update={**SIZE, "seed": seed, "scenario": scenario})
    tx, labels = simulator.generate(cfg)
    feats = build_features(tx, SPEC)
    table = pd.concat([tx[[C.id, C.timestamp, C.entity]], feats], axis=1)
    return table.merge(labels, on=C.id, how="left", validate="one_to_one")


@functools.cache
def champion(seed: int) -> TabularModel:
    ref = simulated("none", seed)
    ref = ref[ref[C.timestamp] < REFERENCE_END]
    return fit(
        "lightgbm",
        ref[SPEC.names],
        ref[C.target].to_numpy(),
        SPEC,
        SETTINGS.train.lightgbm,
        SETTINGS.train.seed,
    )


def frames(scenario: str, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current), both scored by the seed's model."""
    table, model = simulated(scenario, seed), champion(seed)
    ts = table[C.timestamp]
    out = []
    for part in (table[ts < REFERENCE_END], table[ts >= CURRENT_START]):
        out.append(
            part.assign(probability=model.predict_proba(part[SPEC.names])).reset_index(drop=True)
        )
    return out[0], out[1]


def checked(scenario: str, seed: int = SEED, labels: bool = True) -> DriftResult:
    reference, current = frames(scenario, seed)
    result, _ = check(
        reference, current, columns_to_check(SETTINGS), DRIFT, target=C.target if labels else None
    )
    return result


def scores(result: DriftResult) -> str:
    m = result.measurement
    assert m is not None
    cols = {k: round(v.score, 3) for k, v in m.columns.items()}
    pred = m.prediction and round(m.prediction.score, 3)
    return f"columns {cols}, prediction {pred}, quality {m.quality}, params {DRIFT}"


def drifted(result: DriftResult) -> list[str]:
    finding = result.finding("data_drift")
    assert finding is not None
    return finding.facts["drifted_columns"]


# --- scenarios ----------------------------------------------------------------------------------


def test_covariate_shift_is_detected_and_names_the_shifted_columns() -> None:
    result = checked("covariate_shift")
    assert result.detected and result.found("data_drift"), scores(result)
    assert sorted(drifted(result)) == ["amount", "channel"], scores(result)


def test_new_category_is_detected_and_names_the_column() -> None:
    result = checked("new_category")
    assert drifted(result) == ["merchant_category"], scores(result)
    assert result.found("data_drift") and result.detected, (
        f"merchant_category drifted, but it is one of {len(result.measurement.columns)} columns, a share "
        f"< drift.drift_share {DRIFT.drift_share}: {scores(result)}"
    )


def test_concept_shift_is_detected_through_quality_once_labels_are_joined() -> None:
    """The inputs barely move (new-style fraud is ~0.5 % of traffic): only the labels tell."""
    result = checked("concept_shift")
    quality = result.measurement.quality
    assert not result.found("data_drift"), scores(result)
    assert result.found("quality_drift") and result.detected, scores(result)
    assert quality is not None and quality.roc_auc < DRIFT.min_quality - QUALITY_MARGIN, scores(
        result
    )
    unlabelled = checked("concept_shift", labels=False)
    assert unlabelled.measurement.quality is None and not unlabelled.found("quality_drift")


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_no_drift_is_not_detected(seed: int) -> None:
    result = checked("none", seed)
    assert result.sufficient and result.measurement.quality is not None
    assert not result.detected, scores(result)


@pytest.mark.parametrize("seed", [SEED, SEED + 1, SEED + 2])
def test_no_drift_stays_clear_of_the_thresholds(seed: int) -> None:
    """A false-alarm test that only just passes is a false alarm next week."""
    assert DRIFT.num_method in DISTANCES and DRIFT.cat_method in DISTANCES, (
        "margins assume distance methods"
    )
    result = checked("none", seed)
    m = result.measurement
    judged = [*m.columns.values(), *([m.prediction] if m.prediction else [])]
    close = [s for s in judged if s.score * MARGIN >= s.threshold]
    assert not close, f"within {MARGIN}x of the threshold: {close}; {scores(result)}"
    assert m.quality is not None and m.quality.roc_auc >= DRIFT.min_quality + QUALITY_MARGIN, (
        scores(result)
    )
    assert m.quality.roc_auc >= SETTINGS.deploy.floor, (
        "the test world's model would not be promoted"
    )


# --- the drift-check job end to end --------------------------------------------------------


def log_records(part: pd.DataFrame, model_version: str = "fraud-model:test") -> pd.DataFrame:
    """What the service logs per record (scorer.log_columns), scored 2 s after the event."""
    n = len(part)
    return pd.concat(
        [
            part[[C.id, C.timestamp, C.entity, *SPEC.names]].reset_index(drop=True),
            pd.DataFrame(
                {
                    "probability": part["probability"].to_numpy(),
                    "decision": np.where(
                        part["probability"].to_numpy() >= 0.6, "decline", "approve"
                    ),
                    "model_version": model_version,
                    "unknown_categories": "",
                    "batch_id": [f"b{i // 100}" for i in range(n)],
                    "scored_at": (part[C.timestamp] + pd.Timedelta(seconds=2))
                    .to_numpy()
                    .astype("datetime64[us]"),
                }
            ),
        ],
        axis=1,
    )


@pytest.fixture
def deployed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, pd.DataFrame, pd.DataFrame]:
    """A covariate-shift world on disk: training table, prediction log, labels feed; no champion."""
    return world_on_disk(tmp_path, monkeypatch, "covariate_shift")


def world_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> tuple[Settings, pd.DataFrame, pd.DataFrame]:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    settings = parse_settings(
        {
            "paths": {"source": str(tmp_path / "source"), "features": str(tmp_path / "features")},
            "serving": {"prediction_log": str(tmp_path / "predictions")},
            "drift": {"window": "7 days", "reports": str(tmp_path / "reports")},
        }
    )
    reference, current = frames(scenario)
    train = reference[[C.id, C.timestamp, C.entity, C.target, *SPEC.names]]
    storage.write_parquet(train, storage.join(settings.paths.features, "train.parquet"))
    log = PredictionLog(
        settings.serving.prediction_log,
        timestamp_column=C.timestamp,
        flush_rows=4000,
        flush_seconds=3600,
        spool_dir=tmp_path / "spool",
    )
    log.append(log_records(reference.tail(3000)))  # scored long before the window: must not count
    log.append(log_records(current))
    log.close()
    labels = pd.concat([reference, current])[[C.id, C.target, C.label_timestamp]]
    for day, part in source.split_by_day(labels, C.label_timestamp).items():
        storage.write_partition(part, storage.join(settings.paths.source, source.LABELS), day)
    return settings, reference, current


def test_drift_check_writes_report_summary_state_and_applies_persistence(deployed) -> None:
    settings, _, current = deployed
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    first = drift_check.run(settings, now)
    second = drift_check.run(settings, now + dt.timedelta(minutes=15))

    assert first["detected"] and not first["confirmed"]
    assert second["detected"] and second["confirmed"]
    assert sorted(second["drifted_columns"]) == ["amount", "channel"]
    assert second["message"].startswith("drift confirmed in 2 consecutive checks: ")
    assert "amount" in second["message"] and "channel" in second["message"]
    # the window: the current rows only, not the 3000 reference-period records logged earlier
    start = pd.Timestamp(now) - pd.Timedelta(hours=24 * 7)
    assert first["rows"] == int((current[C.timestamp] + pd.Timedelta(seconds=2) >= start).sum())
    # labels: only those that had arrived by `now`
    arrived = current[C.label_timestamp] <= pd.Timestamp(now)
    in_window = current[C.timestamp] + pd.Timedelta(seconds=2) >= start
    assert first["labelled"] == int((arrived & in_window).sum()) > 0
    assert (
        first["champion"] is None and first["prediction"] is None
    )  # no champion: no prediction drift

    for summary in (first, second):
        report, path = Path(summary["report"]), Path(summary["summary"])
        assert report.parent == path.parent and report.parent.parent == Path(settings.drift.reports)
        html = report.read_text()
        assert "<html" in html[:1000].lower() and '"column_name": "amount"' in html
        assert '<script src="http' not in html  # self-contained: opens without network
        on_disk = json.loads(path.read_text())
        assert (
            on_disk["confirmed"] == summary["confirmed"]
            and on_disk["message"] == summary["message"]
        )
        assert on_disk["window"]["end"] == summary["checked_at"]
    state = json.loads((Path(settings.drift.reports) / "state.json").read_text())
    assert state["consecutive"] == 0 and state["last_alarm_at"] == second["checked_at"]
    leftovers = [p for p in Path(settings.drift.reports).rglob("*") if ".tmp-" in p.name]
    assert not leftovers


@pytest.mark.parametrize("scenario", ["covariate_shift", "none"])
def test_a_window_past_read_rows_is_read_as_a_sample_with_the_whole_windows_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    """Quality is judged on the sample's labelled rows: here 5% of the rows are labelled, so a
    5,000-row sample holds fewer than drift.min_labelled and quality is not judged on it (a
    window's labelled share decides how large read_rows must be; README, drift check)."""
    settings, _, current = world_on_disk(tmp_path, monkeypatch, scenario)
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()

    def checked_reading(rows: int) -> dict:
        d = settings.drift.model_copy(
            update={"sample_rows": 3000, "read_rows": rows, "reports": str(tmp_path / str(rows))}
        )
        return drift_check.check(settings.model_copy(update={"drift": d}), now)

    whole, sampled = checked_reading(10**6), checked_reading(5000)
    assert whole["window"]["rows"] == sampled["window"]["rows"] == whole["rows"] > 4 * 5000
    assert sampled["rows"] == 5000 and 0 < sampled["labelled"] < whole["labelled"]
    verdicts = ("detected", "data_drift", "quality_drift", "drifted_columns")
    assert {k: sampled[k] for k in verdicts} == {k: whole[k] for k in verdicts}
    assert whole["detected"] == (scenario != "none")


def test_retraining_starts_the_cooldown(deployed) -> None:
    settings, _, current = deployed
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    drift_check.record_retrain(settings, now - dt.timedelta(hours=1))
    checks = [drift_check.run(settings, now + i * dt.timedelta(minutes=15)) for i in range(2)]
    assert all(c["detected"] and not c["confirmed"] for c in checks)
    assert "cooldown" in checks[-1]["message"]
    assert json.loads((Path(settings.drift.reports) / "state.json").read_text())["consecutive"] == 0


def test_an_empty_window_gives_no_verdict_and_keeps_the_state(deployed) -> None:
    settings, _, current = deployed
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    drift_check.run(settings, now)
    later = drift_check.run(settings, now + dt.timedelta(days=30))  # nothing scored in that window
    assert later["rows"] == 0 and not later["sufficient"] and not later["confirmed"]
    assert later["report"] is None and Path(later["summary"]).exists()
    assert later["message"].startswith("no verdict")
    assert json.loads((Path(settings.drift.reports) / "state.json").read_text())["consecutive"] == 1


def test_without_labels_the_inputs_are_still_judged(deployed) -> None:
    settings, _, current = deployed
    for part in Path(settings.paths.source, source.LABELS).glob("date=*/part-0.parquet"):
        part.unlink()
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    summary = drift_check.run(settings, now)
    assert summary["labelled"] == 0 and summary["quality"] is None and not summary["quality_drift"]
    assert summary["data_drift"] and sorted(summary["drifted_columns"]) == ["amount", "channel"]


def test_a_retraining_recorded_during_a_check_keeps_its_cooldown(
    deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _, current = deployed
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    drift_check.run(settings, now)  # one detection counted

    alarm = drift.alarm

    def retrained_meanwhile(*args, **kwargs):
        verdict = alarm(*args, **kwargs)
        drift_check.record_retrain(settings, now)
        return verdict

    monkeypatch.setattr(drift, "alarm", retrained_meanwhile)
    summary = drift_check.run(settings, now + dt.timedelta(minutes=15))
    assert summary["confirmed"]  # decided on the state it read: the second detection in a row
    state = json.loads((Path(settings.drift.reports) / "state.json").read_text())
    assert state["last_retrain_at"] == now.isoformat() and state["consecutive"] == 0


def test_the_report_of_a_quality_alarm_leads_with_the_verdict_and_shows_the_quality(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs barely move under concept shift: the alarm rests on the labelled quality, and the
    report a person opens must say so (Evidently's own classification metrics included)."""
    settings, _, current = world_on_disk(tmp_path, monkeypatch, "concept_shift")
    now = (current[C.timestamp].max() + pd.Timedelta(minutes=1)).to_pydatetime()
    checks = [
        drift_check.run(settings, now + i * dt.timedelta(minutes=15))
        for i in range(DRIFT.persistence)
    ]
    summary = checks[-1]
    assert summary["confirmed"] and summary["quality_drift"] and not summary["data_drift"]
    auc = summary["quality"]["roc_auc"]
    html = Path(summary["report"]).read_text()
    verdict_at = html.index("DRIFT CONFIRMED")
    assert verdict_at < html.index("Data drift and prediction drift")  # the verdict comes first
    assert f"quality drop (ROC-AUC {auc:.3f} < {DRIFT.min_quality}" in html
    assert f"{auc:.3f} (floor {DRIFT.min_quality})" in html
    assert "Model quality on the labelled rows" in html and "ROC AUC" in html
    assert f"{DRIFT.persistence} of {DRIFT.persistence}" in html
