"""package: the trained model into the BentoML model store, with lineage, and the bento built.

Lineage travels as model metadata: data window and hash, git commit, params, evaluation
metrics and feature list, so any served version can be traced back to what made it.
The bento is built offline (`lock_packages: false`): packaging never needs the network.
"""

from __future__ import annotations

import subprocess

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.io import registry, storage
from pipelines.stages.train import load_model, model_url


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lineage(settings: Settings) -> dict:
    manifest = storage.read_json(storage.join(settings.paths.raw, "manifest.json"))
    return {
        "data": {k: manifest.get(k) for k in ("source", "start", "end", "label_cutoff", "rows", "sha256")},
        "git_commit": git_commit(),
        "params": settings.model_dump(mode="json", by_alias=True, include={"contract", "features", "split", "train"}),
        "metrics": storage.read_json(storage.join(settings.paths.metrics, "evaluate.json")),
        "features": FeatureSpec.from_settings(settings).names,
    }


def build_bento() -> str:
    import bentoml

    bento = bentoml.bentos.build_bentofile("bentofile.yaml", build_ctx=".")
    return str(bento.tag)


def run(settings: Settings) -> dict:
    model = load_model(model_url(settings, settings.train.model))
    meta = lineage(settings)
    tag = registry.save(model, meta)
    bento = build_bento()
    result = {"model_tag": tag, "bento_tag": bento, "family": model.family,
              "roc_auc": meta["metrics"].get("roc_auc"), "data_sha256": meta["data"]["sha256"]}
    storage.write_json(settings.paths.package, result)
    print(f"package: model {tag} ({model.family}), bento {bento} in {registry.home()}")
    return result
