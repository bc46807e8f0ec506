"""The model registry: BentoML's model store plus a champion pointer.

Model versions live in the BentoML store (`BENTOML_HOME`), each with its lineage as metadata.
Which version is the champion is one small JSON file beside the store, replaced atomically
(write a temporary file, then rename): promotion is a single rename, a reader sees either the
old champion or the new one, and the running service watches that file to swap models in place.
Every promotion (and refused promotion) is appended to a history file with its reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
from pathlib import Path
from typing import Any

from pipelines.core.model import TabularModel
from pipelines.io import storage

MODEL_NAME = "fraud-model"
ARTIFACT = "model.pkl"
LINEAGE = "lineage.json"


def home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def registry_dir() -> Path:
    return home() / "registry"


def champion_file() -> Path:
    return registry_dir() / "champion.json"


def save(model: TabularModel, metadata: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """Store a model version; returns its tag (`fraud-model:<version>`)."""
    import bentoml

    with bentoml.models.create(MODEL_NAME, labels={"family": model.family, **(labels or {})},
                               metadata=_without_nulls(_jsonable(metadata))) as ref:
        with open(ref.path_of(ARTIFACT), "wb") as f:
            pickle.dump(model, f, protocol=5)
        # The complete record, nulls included (BentoML metadata cannot hold None).
        with open(ref.path_of(LINEAGE), "w") as f:
            json.dump(_jsonable(metadata), f, indent=2)
    return str(ref.tag)


def load(tag: str) -> TabularModel:
    import bentoml

    try:
        ref = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise LookupError(f"model {tag} is not in the model store at {home()}") from None
    with open(ref.path_of(ARTIFACT), "rb") as f:
        model = pickle.load(f)
    if not isinstance(model, TabularModel):
        raise TypeError(f"model {tag} does not hold a TabularModel")
    return model


def info(tag: str) -> dict[str, Any]:
    import bentoml

    ref = bentoml.models.get(tag)
    return {"tag": str(ref.tag), "labels": dict(ref.info.labels), "metadata": dict(ref.info.metadata),
            "created": ref.info.creation_time.isoformat()}


def versions() -> list[str]:
    import bentoml

    try:
        refs = sorted(bentoml.models.list(MODEL_NAME), key=lambda r: r.info.creation_time)
    except bentoml.exceptions.NotFound:  # an empty store: no versions, not an error
        return []
    return [str(r.tag) for r in refs]


def champion() -> dict[str, Any] | None:
    """The current champion record (`tag`, `since`, `reason`), or None before the first promotion."""
    try:
        return json.loads(champion_file().read_text())
    except FileNotFoundError:
        return None


def champion_tag() -> str | None:
    record = champion()
    return record["tag"] if record else None


def promote(tag: str, reason: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make `tag` the champion in one atomic rename; the history keeps who was replaced and why."""
    load(tag)  # refuse to point at something that cannot be served
    previous = champion_tag()
    record = {"tag": tag, "since": _now(), "reason": reason, "previous": previous,
              "evidence": _jsonable(evidence or {})}
    storage.write_json(str(champion_file()), record)  # temp file + rename: atomic
    record_decision({"event": "promoted", **record})
    return record


def record_decision(entry: dict[str, Any]) -> None:
    """Append to the decision history (promotions and refusals alike)."""
    registry_dir().mkdir(parents=True, exist_ok=True)
    line = json.dumps(_jsonable({"at": _now(), **entry}))
    with open(registry_dir() / "history.jsonl", "a") as f:
        f.write(line + "\n")


def history() -> list[dict[str, Any]]:
    path = registry_dir() / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _without_nulls(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_nulls(v) for v in obj if v is not None]
    return obj
