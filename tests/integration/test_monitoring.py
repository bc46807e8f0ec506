"""A real Prometheus (Debian's, unpacked by `make install`) scraping a real service and a real
Pushgateway, with the project's alert rules: faults make the matching alerts fire, and they
resolve once the fault is gone.

The project is not the card example's: the service and the drift check export `employment_*`
series, and the rules and the Prometheus config are `python -m pipelines monitoring`'s for that
project (as `make monitor` writes them). They run on a faster clock: every `for:` becomes 2 s and
every range window 10 s (the expressions are unchanged); `promtool test rules` covers the real
durations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pipelines import runtime
from pipelines.config import series
from pipelines.io import drift_metrics
from pipelines.serving import metrics
from tests.conftest import eventually, run
from tests.integration.conftest import Service, free_port, start_service, stop_group
from tests.integration.test_service import record

pytestmark = pytest.mark.integration
PROJECT = "employment"
OVERRIDES = {"PIPELINES_OVERRIDES": json.dumps({"project": PROJECT})}


def on_a_fast_clock(rules: str) -> str:
    return re.sub(r"\[\d+m\]", "[10s]", re.sub(r"for: \d+[mh]", "for: 2s", rules))


def wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    port, log = free_port(), tmp_path / "pushgateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [runtime.os_tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", proc, log)
        yield url
    finally:
        stop_group(proc)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def alerts(self, name: str) -> list[dict]:
        data = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [a for a in data if a["labels"]["alertname"] == name]

    def firing(self, name: str) -> list[dict]:
        return [a for a in self.alerts(name) if a["state"] == "firing"]


def start_prometheus(
    tmp_path: Path, repo: Path, service: Service, gateway: str
) -> tuple[Prometheus, subprocess.Popen]:
    """Prometheus with the monitoring files `python -m pipelines monitoring` writes for PROJECT,
    on a fast clock and aimed at `service` and `gateway`."""
    out = tmp_path / "monitoring"
    run(["python", "-m", "pipelines", "monitoring", "--out", str(out)], repo, env=OVERRIDES)
    rules = out / "alerts.yml"
    rules.write_text(on_a_fast_clock(rules.read_text()))
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {f"{PROJECT}-service", "pushgateway"}
    jobs[f"{PROJECT}-service"]["static_configs"] = [
        {"targets": [service.url.removeprefix("http://")]}
    ]
    jobs["pushgateway"]["static_configs"] = [{"targets": [gateway.removeprefix("http://")]}]
    (out / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), tmp_path / "prometheus.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                runtime.os_tool("prometheus"),
                f"--config.file={out / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=out,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready", proc, log)
    return Prometheus(url), proc


def test_faults_fire_their_alerts_in_a_real_prometheus_and_resolve(
    served_repo: Path, tmp_path: Path, pushgateway: str
) -> None:
    home = tmp_path / "bentoml"
    shutil.copytree(served_repo / ".bentoml", home)
    (home / "registry" / "champion.json").unlink()  # fault 1: no champion
    env = {"BENTOML_HOME": str(home), **OVERRIDES}
    service = start_service(served_repo, env=env, ready=False)
    prometheus, proc = start_prometheus(tmp_path, served_repo, service, pushgateway)
    try:
        page = httpx.get(f"{service.url}/metrics").text
        assert metrics.REQUESTS in page and metrics.LATENCY in page
        assert series(metrics.NOT_READY, PROJECT) in page and metrics.NOT_READY not in page
        eventually(lambda: prometheus.firing("EmploymentServiceNotReady"), 60)
        assert (
            prometheus.firing("EmploymentServiceNotReady")[0]["labels"]["reason"] == "no_champion"
        )
        run(
            ["python", "-m", "pipelines", "promote", "latest", "--reason", "test: alerts"],
            served_repo,
            env=env,
        )
        eventually(lambda: not prometheus.alerts("EmploymentServiceNotReady"), 60)

        # Fault 2: a burst of invalid records among valid ones, then only valid ones.
        with httpx.Client(base_url=service.url) as client:
            for i in range(40):  # over ~4 s: several scrapes see the counters rise
                client.post("/score", json={"records": [record(i) | {"amount": "lots"}]})
                client.post("/score", json={"records": [record(100 + i)]})
                time.sleep(0.1)
            eventually(lambda: prometheus.firing("EmploymentBadInputSpike"), 60)
            assert not prometheus.alerts("EmploymentScoringErrors")
            deadline = time.monotonic() + 60
            while prometheus.alerts("EmploymentBadInputSpike"):
                client.post("/score", json={"records": [record(999)]})
                assert time.monotonic() < deadline, prometheus.alerts("EmploymentBadInputSpike")
                time.sleep(0.2)

        # The drift check's verdict, pushed as a batch job does.
        summary = {
            "sufficient": True,
            "detected": True,
            "confirmed": True,
            "checked_at": "2026-12-01T00:00:00",
            "findings": [{"check": "quality_drift", "detected": True}],
            "rows": 5000,
            "labelled": 800,
            "quality": {"roc_auc": 0.61},
            "column_scores": {"amount": {"method": "wasserstein", "score": 0.1, "threshold": 0.2}},
        }
        drift_metrics.push_result(pushgateway, summary, 0.75, PROJECT)
        eventually(
            lambda: (
                prometheus.firing("EmploymentDriftConfirmed")
                and prometheus.firing("EmploymentQualityBelowFloor")
            ),
            60,
        )
        drift_metrics.push_result(
            pushgateway,
            summary | {"confirmed": False, "detected": False, "quality": {"roc_auc": 0.9}},
            0.75,
            PROJECT,
        )
        eventually(
            lambda: (
                not prometheus.alerts("EmploymentDriftConfirmed")
                and not prometheus.alerts("EmploymentQualityBelowFloor")
            ),
            60,
        )
    finally:
        stop_group(proc)
        service.stop()
