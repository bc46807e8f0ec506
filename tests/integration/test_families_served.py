"""Serving is framework-blind: a champion of every family is scored by a real BentoML service
exactly as offline (the skew test, per family), and a promotion from LightGBM to XGBoost under
load fails no request."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_settings
from pipelines.core.families import FAMILIES
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import model_files
from pipelines.serving.metrics import served_version
from pipelines.sources import simulator
from tests.conftest import deep_update, make_repo, run, train_for_serving
from tests.integration.conftest import SERVE_PARAMS, Service, start_service
from tests.integration.test_service import as_records
from tests.integration.test_service_lifecycle import Load

pytestmark = pytest.mark.integration
SMALL_MODELS = {
    "candidates": list(FAMILIES),
    "lightgbm": {"n_estimators": 40},
    "xgboost": {"n_estimators": 40},
    "hist_gradient_boosting": {"max_iter": 40},
    "sklearn": {"params": {"n_estimators": 40, "min_samples_leaf": 20, "n_jobs": 1}},
}


@pytest.fixture(scope="module")
def family_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served repo whose train stage fitted every family."""
    params = deep_update(SERVE_PARAMS, {"train": SMALL_MODELS})
    return train_for_serving(make_repo(tmp_path_factory.mktemp("families") / "repo", params))


@pytest.fixture
def service(family_repo: Path) -> Iterator[Service]:
    svc = start_service(family_repo)
    yield svc
    svc.stop()


def stored(repo: Path, family: str) -> str:
    """`family`'s trained model saved to the repo's model store (in a subprocess: BentoML reads
    its home once per process); returns its tag."""
    code = (
        "from pipelines.io import model_files, registry; "
        f"print(registry.save(model_files.load('models/{family}.zip'), {{'purpose': 'test'}}))"
    )
    out = run([sys.executable, "-c", code], repo, env={"BENTOML_HOME": str(repo / ".bentoml")})
    return out.stdout.strip().splitlines()[-1]


def promote(repo: Path, service: Service, tag: str) -> None:
    run(
        ["python", "-m", "pipelines", "promote", tag, "--reason", "test: family"],
        repo,
        env={"BENTOML_HOME": str(repo / ".bentoml")},
    )
    deadline = time.monotonic() + 30
    while served_version(httpx.get(f"{service.url}/metrics").text) != tag:
        assert time.monotonic() < deadline, f"the service never served {tag}"
        time.sleep(0.2)


def test_every_family_as_champion_scores_online_what_it_scores_offline(
    family_repo: Path, service: Service
) -> None:
    s = load_settings(family_repo / "params.yaml")
    spec = FeatureSpec.from_settings(s)
    tx, _ = simulator.generate(s.simulate)
    future = tx[tx["ts"] >= pd.Timestamp(s.ingest.end)].sort_values("ts", kind="stable")
    raw = pd.read_parquet(family_repo / s.paths.raw / "transactions.parquet")
    history = raw[list(tx.columns)]
    for i, family in enumerate(FAMILIES):
        tag = stored(family_repo, family)
        promote(family_repo, service, tag)
        batch = future.iloc[i * 60 : (i + 1) * 60]
        answers = []
        for start in range(0, len(batch), 10):
            resp = service.score(as_records(batch.iloc[start : start + 10]))
            assert resp.status_code == 200, resp.text
            answers += resp.json()
        history = pd.concat([history, batch], ignore_index=True)
        offline = build_features(history, spec).iloc[-len(batch) :]
        model = model_files.load(str(family_repo / s.paths.models / f"{family}.zip"))
        assert model.family == family
        np.testing.assert_allclose(
            [a["probability"] for a in answers],
            model.predict_proba(offline),
            rtol=0,
            atol=1e-6,
            err_msg=family,
        )
        assert {a["model_version"] for a in answers} == {tag}


def test_a_promotion_from_lightgbm_to_xgboost_under_load_fails_no_request(
    family_repo: Path, service: Service
) -> None:
    lightgbm, xgboost = stored(family_repo, "lightgbm"), stored(family_repo, "xgboost")
    promote(family_repo, service, lightgbm)
    with Load(service) as load:
        time.sleep(1.5)
        promote(family_repo, service, xgboost)
        time.sleep(1.5)
    assert not load.failed, load.failed[:5]
    assert load.refused == 0
    versions = [v for _, _, v in sorted(load.ok)]
    assert versions[0] == lightgbm and versions[-1] == xgboost
    # No flapping back. (Answers are ordered by when each client thread got its response, which
    # can trail the server's order by a few in-flight requests: as in the lifecycle test.)
    switched = versions.index(xgboost)
    assert set(versions[switched + 20 :]) == {xgboost} and len(versions) > switched + 40
