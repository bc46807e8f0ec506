"""Real servers for integration tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipelines import runtime
from pipelines.config import Settings, load_settings
from pipelines.io import prefect_api
from pipelines.serving.schema import example_record
from tests.conftest import make_repo, train_for_serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal a server started with start_new_session=True and wait; kill the whole group if it
    hangs (and any stray child it left)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


@dataclass
class MotoServer:
    """A real S3 endpoint (`python -m moto.server`) that can be stopped and restarted on its port.

    Moto keeps everything in memory: after a restart the server is empty (no buckets).
    """

    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(
                    f"moto server exited on start; see {self.log}:\n{self.log.read_text()[-2000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"moto server not listening on {self.url} after {timeout} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=10)
            self.proc = None

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], MotoServer]]:
    """Factory: each call starts a new moto server on a free port; all are stopped at the end."""
    servers: list[MotoServer] = []

    def start() -> MotoServer:
        server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "server.log")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def s3(
    moto_server: Callable[[], MotoServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MotoServer]:
    """A fresh S3 server, and the standard AWS variables pointing every client (ours, DVC's,
    the servers' we start) at it."""
    server = moto_server()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    yield server
    server.stop()


@dataclass
class Service:
    """A real `bentoml serve` process group on 127.0.0.1."""

    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def score(self, records: list[dict], timeout: float = 30.0) -> httpx.Response:
        return httpx.post(f"{self.url}/score", json={"records": records}, timeout=timeout)

    def wait_ready(self, timeout: float = 120.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited ({self.proc.returncode}):\n{self.log.read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"service not ready after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def warm_up(self, settings: Settings, requests: int = 16) -> None:
        """Sequential requests first, as a rollout would: BentoML's batching dispatcher calibrates
        its latency model on its first batches and sheds concurrent load (503) until it has. The
        records are the contract's example (`schema.example_record`), each with its own id, of
        one entity of their own."""
        c = settings.contract
        for i in range(requests):
            rec = example_record(settings, dt.datetime(2026, 1, 1))
            rec[c.id] = f"warm-up-{i}-{time.monotonic_ns()}"
            if c.entity:
                rec[c.entity] = "warm-up"
            self.score([rec]).raise_for_status()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server (graceful by default) and wait; the whole group is killed if it hangs."""
        return stop_group(self.proc, sig, timeout)


def start_service(
    repo: Path,
    target: str = "pipelines.serving.service:FraudService",
    cwd: Path | None = None,
    env: dict | None = None,
    ready: bool = True,
) -> Service:
    """`bentoml serve` on a free port, `ready`: waited for and warmed up (else: alive only)."""
    port = free_port()
    log = repo / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd or repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "BENTOML_HOME": str(repo / ".bentoml"),
                "PIPELINES_PARAMS": str(repo / "params.yaml"),
                **(env or {}),
            },
        )
    service = Service(port, log, proc)
    if ready:
        service.wait_ready()
        given = env or {}
        params = given.get("PIPELINES_PARAMS", repo / "params.yaml")
        service.warm_up(load_settings(params, given.get("PIPELINES_OVERRIDES")))
    else:
        service.wait_ready(path="/livez")
    return service


# Long enough to have a test period after the training window, small enough for seconds.
SERVE_PARAMS = {
    "simulate": {"cards": 300, "days": 24, "tx_per_day": 1000, "start": "2026-01-01"},
    "ingest": {"start": "2026-01-01", "end": "2026-01-21"},
    "split": {"test": "6 days"},
    # LightGBM packaged whatever validation says: the lifecycle and readiness tests promote the
    # logistic model as a challenger that differs from the champion.
    "train": {"lightgbm": {"n_estimators": 40}, "validation": "4 days", "model": "lightgbm"},
    "serving": {"log_flush_seconds": 0.5, "reload_seconds": 0.2},
}


@pytest.fixture(scope="session")
def served_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo with a trained, packaged, promoted model and a seeded feature store."""
    return train_for_serving(make_repo(tmp_path_factory.mktemp("served") / "repo", SERVE_PARAMS))


@pytest.fixture(scope="module")
def service(served_repo: Path) -> Iterator[Service]:
    svc = start_service(served_repo)
    yield svc
    svc.stop()


@dataclass
class RedisServer:
    """A real redis-server (Debian's, unpacked by `make install`) on 127.0.0.1, its data in `dir`
    (append-only file: a restart keeps what was written, as a managed Redis would). `fsync`:
    Redis' appendfsync, `always` for the tests that stop it, `everysec` (managed Redis' usual)
    for the benchmarks."""

    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    fsync: str = "always"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                runtime.os_tool("redis-server"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=runtime.os_tool_env(),
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{(self.dir / 'redis.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering on {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class PrefectServer:
    """A real `prefect server start` (SQLite under its own PREFECT_HOME) on 127.0.0.1."""

    port: int
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }

    def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One API call, retried on a busy server's transient answers (`io.prefect_api`)."""
        return prefect_api.call(self.api_url, method, path, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        stop_group(self.proc)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    server = PrefectServer(port, home, proc)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"prefect server not healthy after 90 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield server
    server.stop()
