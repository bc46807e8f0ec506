"""Stopping, promoting and shipping the service: real `bentoml serve` processes throughout."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from pipelines.config import load_settings
from pipelines.io import model_files, registry, storage
from pipelines.io.prediction_log import read_log
from tests.conftest import eventually, run
from tests.integration.conftest import Service, start_service
from tests.integration.test_service import record

pytestmark = pytest.mark.integration


class Load:
    """Single-record requests from several threads until stopped; every outcome is kept."""

    def __init__(self, service: Service, threads: int = 8) -> None:
        self.service, self.stop_event = service, threading.Event()
        self.ok: list[tuple[float, str, str]] = []  # (finished at, transaction id, model version)
        self.failed: list[str] = []
        self.refused = 0  # connection refused/reset after the server went away
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.service.url, timeout=30) as client:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                rec = record(worker * 1_000_000 + n)
                try:
                    resp = client.post("/score", json={"records": [rec]})
                except httpx.TransportError:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
                with self.lock:
                    if resp.status_code == 200:
                        self.ok.append(
                            (
                                time.monotonic(),
                                rec["transaction_id"],
                                resp.json()[0]["model_version"],
                            )
                        )
                    else:
                        self.failed.append(f"{resp.status_code} {resp.text[:200]}")


def test_sigterm_under_load_loses_no_answered_record(served_repo: Path) -> None:
    service = start_service(served_repo)
    with Load(service) as load:
        time.sleep(2.0)
        signalled = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        service.proc.wait(timeout=60)
    service.stop()
    assert not load.failed, load.failed[:5]
    answered = {tid for _, tid, _ in load.ok}
    assert len(answered) > 20, "the load never got going"
    logged = read_log(
        str(served_repo / load_settings(served_repo / "params.yaml").serving.prediction_log)
    )
    missing = answered - set(logged["transaction_id"])
    assert not missing, f"{len(missing)} answered records are not in the prediction log"
    assert max(t for t, _, _ in load.ok) > signalled - 1.0  # requests were flowing up to the signal


def test_promotion_under_load_switches_version_without_a_failed_request(
    served_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(served_repo / ".bentoml"))
    before = registry.champion_tag()
    assert before is not None
    s = load_settings(served_repo / "params.yaml")
    challenger = registry.save(
        model_files.load(str(served_repo / s.paths.models / "logistic.zip")),
        {"purpose": "promotion-under-load test"},
    )
    service = start_service(served_repo)
    broken = None
    try:
        with Load(service) as load:
            time.sleep(1.5)
            registry.promote(challenger, "test: promotion under load")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                v == challenger for _, _, v in load.ok[-5:]
            ):
                time.sleep(0.1)
            time.sleep(1.0)
        assert not load.failed, load.failed[:5]
        assert load.refused == 0
        versions = [v for _, _, v in sorted(load.ok)]
        assert versions[0] == before and versions[-1] == challenger
        switched = versions.index(challenger)
        assert set(versions[switched + 20 :]) == {challenger}  # no flapping back after the switch
        metrics = httpx.get(f"{service.url}/metrics").text
        assert f'fraud_model_info{{model_version="{challenger}"}} 1.0' in metrics

        # A pointer naming a version whose artifact was edited after saving (a bad sync, a
        # tampered store): the service refuses it by its digest and keeps serving the champion.
        edited = model_files.load(str(served_repo / s.paths.models / "logistic.zip"))
        edited.info = {**edited.info, "purpose": "tampered-artifact test"}
        broken = registry.save(edited, {"purpose": "tampered-artifact test"})
        name, version = broken.split(":")
        artifact = served_repo / ".bentoml" / "models" / name / version / registry.ARTIFACT
        artifact.write_bytes(artifact.read_bytes()[:-50])
        pointer = {**(registry.champion() or {}), "tag": broken}
        storage.write_json(str(registry.champion_file()), pointer)
        with Load(service, threads=4) as load:
            eventually(lambda: f"cannot load model {broken}" in service.log.read_text(), 30)
            time.sleep(0.5)
        assert not load.failed and load.ok, load.failed[:5]
        assert {v for _, _, v in load.ok} == {challenger}
        assert "does not match the SHA-256" in service.log.read_text()
    finally:
        service.stop()
        registry.promote(before, "test: restore the champion")
        # The served repo's store is shared by later tests (`promote latest`): no broken version.
        if broken:
            run(["bentoml", "models", "delete", "-y", broken], served_repo)


def test_the_built_bento_serves_by_its_tag(served_repo: Path, tmp_path: Path) -> None:
    package = json.loads((served_repo / "reports/package.json").read_text())
    service = start_service(served_repo, target=package["bento_tag"], cwd=tmp_path)
    try:
        resp = service.score([record(7)])
        assert resp.status_code == 200, resp.text
        assert resp.json()[0]["model_version"].startswith("fraud-model:")
    finally:
        service.stop()
    name, version = package["bento_tag"].split(":")
    requirements = (
        (served_repo / ".bentoml/bentos" / name / version / "env/python/requirements.txt")
        .read_text()
        .lower()
    )
    assert "lightgbm" in requirements
    for heavy in ("prefect", "dvc", "great_expectations", "great-expectations", "evidently"):
        assert heavy not in requirements, heavy


def test_importing_the_service_imports_no_orchestration_or_monitoring(served_repo: Path) -> None:
    probe = (
        "import sys, pipelines.serving.service; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'prefect', 'dvc', 'great_expectations', 'evidently'}))"
    )
    out = run(
        [sys.executable, "-c", probe],
        served_repo,
        env={
            "BENTOML_HOME": str(served_repo / ".bentoml"),
            "PIPELINES_PARAMS": str(served_repo / "params.yaml"),
            "PYTHONPATH": str(served_repo),
        },
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
