"""A team's own table through the whole loop on real servers, as the README's own-data section
says to do it: a yearly survey (integer codes, gaps, a true/false outcome, no entity, a column
name with spaces) configured by its contract alone → `dvc repro` derives the gate's reference
→ the service scores requests with JSON integer codes and nulls exactly as offline → the later,
changed years drift → the Prefect server retrains on that event → the new champion serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.config import load_settings
from pipelines.core.dataset import conform
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import model_files, registry
from pipelines.sources import survey
from tests.conftest import ROOT, deep_update, make_repo, run, write_params
from tests.e2e.test_loop import (
    LOOP_PARAMS,
    retrained,
    run_drift_check,
    running_loop,
    wait_for,
)
from tests.integration.conftest import PrefectServer, Service

pytestmark = pytest.mark.e2e
FIRST_YEARS = (
    survey.START_YEAR + 7
)  # the source holds 2010-2016 at first; the world changes in 2017


def readme_params() -> dict:
    """The params block of the README's own-data section, as a user copies it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own data") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    return yaml.safe_load(block[: block.index("```")])


# The README's block, and what a test needs on top: a smaller model, the loop's free ports, fast
# flushes and checks (the card loop's), quality judged at the default floor (this model's normal
# is ~0.8).
PARAMS = deep_update(
    readme_params(),
    {
        "train": {"lightgbm": {"n_estimators": 120}},
        "evaluate": {"min_slice_rows": 50},
        "serving": LOOP_PARAMS["serving"],
        "deploy": {k: v for k, v in LOOP_PARAMS["deploy"].items() if k != "recent"},
        "drift": {**LOOP_PARAMS["drift"], "min_quality": 0.75},
    },
)


def own_table_repo(tmp_path: Path, table: pd.DataFrame) -> Path:
    """A repo whose params describe the survey by its contract only (the card example's gate
    keys removed), its source the first years of `table`."""
    repo = make_repo(tmp_path / "repo", PARAMS)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["validate"] = {}
    write_params(repo / "params.yaml", params)
    survey.write(table[table["interviewed"].dt.year < FIRST_YEARS], str(repo / "data/survey.csv"))
    for cmd in (
        ["dvc", "repro"],
        ["python", "-m", "pipelines", "promote", "latest", "--reason", "first model"],
    ):
        run(cmd, repo)
    return repo


def as_requests(rows: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: codes as JSON integers, gaps as null."""
    out = []
    for rec in rows.to_dict(orient="records"):
        rec["interviewed"] = rec["interviewed"].isoformat()
        out.append(
            {
                k: (None if pd.isna(v) else int(v) if isinstance(v, np.integer) else v)
                for k, v in rec.items()
                if k != "employed"
            }
        )
    return out


def assert_online_equals_offline(service: Service, repo: Path, rows: pd.DataFrame) -> None:
    answers = service.score(as_requests(rows)).raise_for_status().json()
    assert [a["person"] for a in answers] == rows["person"].astype(str).tolist()
    settings = load_settings(repo / "params.yaml").located(repo)
    spec = FeatureSpec.from_settings(settings)
    assert answers[0]["model_version"] == registry.champion_tag()
    # The champion is the newest training's model (promoted by hand, then by the retraining). Read
    # from the train stage's file, not the model store: importing BentoML here would pin this
    # test process to this repo's model store for every later test (BentoML reads its home once).
    _, model = model_files.chosen(settings)
    offline = model.predict_proba(build_features(conform(rows, settings.contract), spec))
    np.testing.assert_allclose([a["probability"] for a in answers], offline, rtol=0, atol=1e-12)
    assert all(a["unknown_categories"] == [] for a in answers)


def test_a_survey_table_runs_the_whole_loop_from_its_contract_alone(
    prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PARAMS["contract"] == survey.CONTRACT  # the README describes the generated table
    table = survey.generate(years=10, rows=1500, seed=0)
    repo = own_table_repo(tmp_path, table)
    reference = yaml.safe_load((repo / "gate_reference.yaml").read_text())
    assert reference["min_rows_per_period"] == 0 and {"COW", "hours per week"} <= set(
        reference["null_shares"]
    )
    monkeypatch.setenv("BENTOML_HOME", str(repo / ".bentoml"))
    year = table["interviewed"].dt.year
    with running_loop(prefect_server, repo, trained=True) as service:
        first = registry.champion_tag()
        # The skew test on the test year, gaps and integer codes included.
        probe = table[(year == FIRST_YEARS - 1).to_numpy()].iloc[:300]
        assert probe["COW"].isna().any() and probe["hours per week"].isna().any()
        assert_online_equals_offline(service, repo, probe)
        page = httpx.get(f"{service.url}/metrics").text  # the project's names, not the cards'
        assert "employment_decisions_total{" in page and not re.search("^fraud_", page, re.M)

        # The upstream lands the changed years; the service scores them as they come.
        survey.write(table, str(repo / "data/survey.csv"))
        later = table[(year >= FIRST_YEARS).to_numpy()]
        for start in range(0, len(later), 300):
            service.score(as_requests(later.iloc[start : start + 300])).raise_for_status()
        check = run_drift_check(prefect_server)
        assert check["state"]["name"] == "Drift confirmed", check["state"]
        settings = load_settings(repo / "params.yaml")
        summary = json.loads(
            max((repo / settings.drift.reports).glob("*/summary.json")).read_text()
        )
        assert summary["labelled"] >= 1000, summary  # the table's own target

        retrained(prefect_server, repo, check["id"])
        new = registry.champion_tag()
        assert new and new != first
        wait_for(
            "the service to serve the new champion",
            lambda: service.score(as_requests(later.iloc[:1])).json()[0]["model_version"] == new,
            30,
        )
        assert_online_equals_offline(service, repo, later.iloc[-200:])
