"""Tuning (core/tuning.py, stages/tune.py): the same seed gives the same trials and best
parameters; the params as written are trial 0, so the best never loses to them; a larger budget
resumes the SQLite study; the search never reads the test period; train fits what tune found."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest

from pipelines.config import parse_settings
from pipelines.core import tuning
from pipelines.core.dataset import validation_split
from pipelines.core.layout import Layout
from pipelines.core.span import Span
from pipelines.io import model_files, storage
from pipelines.stages import train, tune
from tests.model.test_families import SMALL, small_world

FAST = {"lightgbm": {"n_estimators": 30}, "validation": "3 days", "candidates": ["lightgbm"]}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Ten days of 200 cards as the featurize stage writes its training table."""
    spec, feats, y, raw = small_world()
    out = pd.concat([raw[["transaction_id", "ts", "card_id"]], feats], axis=1)
    return out.assign(is_fraud=y.astype("int8")).sort_values("ts", ignore_index=True)


def split_of(table: pd.DataFrame, spec):  # type: ignore[no-untyped-def]
    early, late, _ = validation_split(table, "ts", Span.parse("3 days"))
    return tuning.Split(
        early[spec.names],
        early["is_fraud"].to_numpy(),
        late[spec.names],
        late["is_fraud"].to_numpy(),
    )


def test_the_same_seed_gives_the_same_trials_and_the_best_never_loses_to_params_as_written(
    table: pd.DataFrame,
) -> None:
    # reg_lambda 0 is valid params but outside the log-scale search range: trial 0 fits it as is.
    settings = parse_settings(
        {**SMALL, "train": {**FAST, "lightgbm": {"n_estimators": 30, "reg_lambda": 0.0}}}
    )
    spec = small_world()[0]
    split = split_of(table, spec)
    runs = []
    for name in ("a", "b"):
        problem = tuning.Problem(
            "lightgbm", split, spec, settings.train.lightgbm, 7, "roc_auc", 0.01, 0.25
        )
        outcome, study = tuning.search(
            problem, trials=7, timeout=None, storage=None, study_name=name
        )
        runs.append((outcome, [(t.params, t.value, t.state, t.user_attrs) for t in study.trials]))
    (first, trials_a), (second, trials_b) = runs
    assert trials_a == trials_b and first.best == second.best
    assert first.best_score == second.best_score
    # Trial 0 fits the params as written (no draw); the rest are drawn, each differently.
    assert trials_a[0][0] == {} and trials_a[0][3] == {tuning.AS_WRITTEN: True}
    assert first.default_score == trials_a[0][1]
    drawn = [p for p, _, _, _ in trials_a[1:]]
    assert all(drawn) and len({tuple(sorted(p.items())) for p in drawn}) == len(drawn)
    assert first.best_score >= first.default_score and first.trials == 7
    complete = [v for _, v, s, _ in trials_a if s == optuna.trial.TrialState.COMPLETE]
    assert first.best_score == max(complete)


def tuned_repo(tmp_path: Path, table: pd.DataFrame, trials: int, **tune_extra):  # type: ignore[no-untyped-def]
    s = parse_settings(
        {
            **SMALL,
            "paths": {
                "features": str(tmp_path / "features"),
                "models": str(tmp_path / "models"),
                "metrics": str(tmp_path / "metrics"),
                "tuning": str(tmp_path / "tuning"),
            },
            "train": {**FAST, "candidates": ["lightgbm", "logistic"]},
            "tune": {"trials": trials, **tune_extra},
        }
    )
    layout = Layout(s)
    train_rows = table[table["ts"] < table["ts"].max() - pd.Timedelta(days=2)]
    storage.write_parquet(train_rows, layout.train_table)
    # The test period: garbage, so that any read of it fails the stage.
    storage.write_bytes(layout.test_table, b"not parquet: tune must never open the test period")
    return s, layout


def test_tune_never_reads_the_test_period_and_train_fits_what_it_found(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    s, layout = tuned_repo(tmp_path, table, trials=4)
    result = tune.run(s)
    tuned = json.loads(Path(layout.tuned).read_text())
    assert set(tuned) == {"lightgbm", "logistic"} == set(result["families"])
    assert pd.Timestamp(result["validation_from"]) < pd.read_parquet(layout.train_table)["ts"].max()
    for family, figures in result["families"].items():
        assert figures["trials"] == 4 and figures["gain"] >= 0
        assert figures["best"] == tuned[family]
        page = Path(layout.tuning_plot(family, "history")).read_text()
        assert 'src="plotly.min.js"' in page and "cdn.plot.ly" not in page  # offline, no CDN
    assert Path(layout.tuning_script).stat().st_size > 100_000
    assert json.loads(Path(layout.tuning_metrics).read_text()) == json.loads(json.dumps(result))

    train.run(s)
    model = model_files.load(layout.model("lightgbm"))
    for name, value in tuned["lightgbm"].items():
        assert model.info["params"][name] == value
    assert model.info["tuned"] == {"lightgbm": tuned["lightgbm"]}


def test_a_larger_budget_resumes_the_sqlite_study_and_zero_trials_uses_params_as_written(
    tmp_path: Path, table: pd.DataFrame
) -> None:
    s, layout = tuned_repo(tmp_path, table, trials=3, families=["lightgbm"])
    tune.run(s)

    def trials() -> list[tuple[int, str]]:
        with sqlite3.connect(layout.study) as db:
            return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()

    first = trials()
    assert len(first) == 3
    more = s.model_copy(update={"tune": s.tune.model_copy(update={"trials": 5})})
    result = tune.run(more)
    assert trials()[:3] == first and len(trials()) == 5  # continued, not restarted
    with sqlite3.connect(layout.study) as db:
        rows = db.execute("SELECT trial_id, param_name, param_value FROM trial_params").fetchall()
    draws: dict[int, list] = {}
    for trial, name, value in sorted(rows):
        draws.setdefault(trial, []).append((name, value))
    points = [tuple(v) for v in draws.values()]
    assert len(set(points)) == len(points) == 4  # the resumed run drew new points, no repeats
    assert result["families"]["lightgbm"]["trials"] == 5

    off = s.model_copy(update={"tune": s.tune.model_copy(update={"trials": 0})})
    assert tune.run(off)["families"] == {}
    assert json.loads(Path(layout.tuned).read_text()) == {}
    train.run(off)
    model = model_files.load(layout.model("lightgbm"))
    assert model.info["params"] == s.train.lightgbm.model_dump() and model.info["tuned"] is None


def test_bad_tuning_settings_are_named(tmp_path: Path, table: pd.DataFrame) -> None:
    s, _ = tuned_repo(tmp_path, table, trials=2, families=["sklearn"])
    with pytest.raises(ValueError, match="'sklearn', which is not in train.candidates"):
        tune.run(s)
    s = parse_settings(
        {
            "train": {"candidates": ["lightgbm", "sklearn"]},
            "tune": {"families": ["sklearn"], "trials": 2},
        }
    )
    with pytest.raises(ValueError, match="'sklearn', which has no search space"):
        tune.run(s)
    with pytest.raises(ValueError, match="timeout"):
        parse_settings({"tune": {"timeout": 30}})
    remote = parse_settings({"paths": {"tuning": "s3://bucket/tuning"}, "tune": {"trials": 2}})
    with pytest.raises(ValueError, match="paths.tuning .* must be a local directory"):
        tune.run(remote)
