"""The Kubernetes manifests `make rollout` applies are valid objects, wired to the service the
project builds: readiness on /readyz, liveness on /livez, resource requests, the container port
the image listens on, and every variable the deployment needs."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipelines.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy/k8s").glob("*.yaml"))
K8S_VERSION = "1.33"


def objects() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("obj", objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_each_manifest_is_a_valid_object(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_deployment_probes_and_sizes_the_service() -> None:
    deployment = next(o for o in objects() if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["ports"][0]["containerPort"] == Settings().serving.port
    env = {e["name"] for e in container["env"]}
    assert {
        "BENTOML_HOST",
        "PIPELINES_OVERRIDES",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    } <= env
    service = next(o for o in objects() if o["kind"] == "Service")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_the_configmap_overrides_are_valid_settings_that_follow_the_remote(tmp_path: Path) -> None:
    config = next(o for o in objects() if o["kind"] == "ConfigMap")
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    settings = load_settings(params, config["data"]["overrides"])
    assert settings.serving.champion_source == "remote"
    assert settings.paths.model_remote.startswith("s3://")
    assert json.loads(config["data"]["overrides"])  # plain JSON, as the variable carries it


def test_the_bento_image_listens_on_every_interface_and_make_serve_on_loopback() -> None:
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["docker"]["env"]["BENTOML_HOST"] == "0.0.0.0"
    assert Settings().serving.host == "127.0.0.1"
