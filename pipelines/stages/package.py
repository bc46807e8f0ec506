"""package: the trained model into the BentoML model store, with lineage, and the bento built.

Lineage travels as model metadata: data window and hash, git commit, params, evaluation
metrics and feature list, so any served version can be traced back to what made it.
The bento is built offline (`lock_packages: false`): packaging never needs the network.
"""

from __future__ import annotations

import subprocess

from pipelines.config import Settings
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.io import manifest, model_files, registry, storage


def git_commit() -> str:
    """HEAD's sha, with `-dirty` if tracked files changed; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lineage(settings: Settings) -> dict:
    """What made the model: data window and hash, git commit, params, test metrics, features."""
    layout = Layout(settings)
    snapshot = manifest.read(settings)
    return {
        "data": {
            k: snapshot.get(k) for k in ("source", "start", "end", "label_cutoff", "rows", "sha256")
        },
        "git_commit": git_commit(),
        "params": settings.model_dump(
            mode="json", by_alias=True, include={"contract", "features", "split", "train"}
        ),
        "metrics": storage.read_json(layout.evaluation),
        "features": FeatureSpec.from_settings(settings).names,
    }


def run(settings: Settings) -> dict:
    """Save the chosen candidate's model (train's selection) with its lineage, build the bento,
    write package.json."""
    layout = Layout(settings)
    _, model = model_files.chosen(settings)
    meta = lineage(settings)
    tag = registry.save(model, meta)
    bento = registry.build_bento(settings.root)
    result = {
        "model_tag": tag,
        "bento_tag": bento,
        "family": model.family,
        "roc_auc": meta["metrics"].get("roc_auc"),
        "data_sha256": meta["data"]["sha256"],
    }
    storage.write_json(layout.package, result)
    print(f"package: model {tag} ({model.family}), bento {bento} in {registry.home()}")
    return result
