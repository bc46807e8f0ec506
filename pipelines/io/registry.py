"""The model registry: BentoML's model store plus a champion pointer.

Model versions live in the BentoML store (`BENTOML_HOME`), each with its lineage as metadata.
Which version is the champion is one small JSON file beside the store, replaced atomically
(write a temporary file, then rename): promotion is a single rename, a reader sees either the
old champion or the new one, and the running service watches that file to swap models in place.
Every promotion (and refused promotion) is appended to a history file with its reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipelines.core import artifact
from pipelines.core.model import TabularModel
from pipelines.io import model_files, storage

MODEL_NAME = "fraud-model"
ARTIFACT = "model.zip"  # core.artifact's portable archive
LEGACY_ARTIFACT = "model.pkl"  # versions saved before it: `migrate` converts them, load refuses
LINEAGE = "lineage.json"
DIGEST = "content_sha256"  # label: the artifact's SHA-256 at save time


def home() -> Path:
    """The model store's directory: $BENTOML_HOME, else ~/bentoml (BentoML's default)."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


def registry_dir() -> Path:
    """Where the champion pointer and the decision history live, beside the store."""
    return home() / "registry"


def champion_file() -> Path:
    """The champion pointer's file."""
    return registry_dir() / "champion.json"


def save(
    model: TabularModel, metadata: dict[str, Any], labels: dict[str, str] | None = None
) -> str:
    """Store a model version with its lineage; returns its tag (`fraud-model:<version>`).

    A version changes only when the model can: if a version with the same content (SHA-256 of the
    artifact) is already stored, its tag is returned and nothing is written (re-packaging after a
    serving-only change keeps the version the gate and the service know)."""
    import bentoml

    data = model_files.to_bytes(model)
    digest = hashlib.sha256(data).hexdigest()
    same = [str(r.tag) for r in _refs() if r.info.labels.get(DIGEST) == digest]
    if same:
        return same[0]
    with bentoml.models.create(
        MODEL_NAME,
        labels={"family": model.family, DIGEST: digest, **(labels or {})},
        metadata=_without_nulls(_jsonable(metadata)),
    ) as ref:
        with open(ref.path_of(ARTIFACT), "wb") as f:
            f.write(data)
        # The complete record, nulls included (BentoML metadata cannot hold None).
        with open(ref.path_of(LINEAGE), "w") as f:
            json.dump(_jsonable(metadata), f, indent=2)
    return str(ref.tag)


def load(tag: str) -> TabularModel:
    """The model of version `tag`, its artifact checked against the SHA-256 recorded at save time.

    A version saved before portable archives holds a pickle (`LEGACY_ARTIFACT`) and is refused
    with the fix named: `migrate` converts the store once. (The digest label travels with a
    version through `registry push/pull`, so it proves the bytes are whole, not who wrote them:
    nothing loaded from the store is ever unpickled.)

    Raises LookupError when the version is not in the store, ValueError naming the artifact when
    it is missing, a pickle, has no recorded digest, does not match it (tampered or truncated),
    or is not a model (`core.artifact.unpack`)."""
    import bentoml

    try:
        ref = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise LookupError(f"model {tag} is not in the model store at {home()}") from None
    path = Path(ref.path_of(ARTIFACT))
    if not path.exists() and Path(ref.path_of(LEGACY_ARTIFACT)).exists():
        raise ValueError(
            f"model {tag} was saved as a pickle before portable archives; convert the store once "
            "with `python -m pipelines registry migrate` (it is never unpickled on load)"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"model {tag}: its artifact {path} is missing") from None
    _verify(tag, path, data, ref.info.labels.get(DIGEST))
    return artifact.unpack(data, f"model {tag} ({path})")


def _verify(tag: str, path: Path, data: bytes, recorded: str | None) -> None:
    if recorded is None:
        raise ValueError(
            f"model {tag}: no SHA-256 was recorded for {path} when it was saved; refusing to load "
            "an artifact that cannot be verified"
        )
    if hashlib.sha256(data).hexdigest() != recorded:
        raise ValueError(
            f"model {tag}: {path} does not match the SHA-256 recorded when it was saved "
            "(tampered or truncated); refusing to load it"
        )


def migrate() -> dict[str, str]:
    """Convert every version stored as a pickle (saved before portable archives) into a new
    portable version with the same lineage plus `migrated_from`; the champion pointer moves to
    its converted version (a promotion recorded in the history). Returns old tag → new tag.

    This unpickles, so it runs only when a person asks for it, on their own store, after each
    pickle matched its recorded digest. Raises ValueError naming a version whose pickle does not
    match its digest, holds no model or has no portable form (a logistic model from before
    model families: retrain it), after converting every other one."""
    import pickle

    converted: dict[str, str] = {}
    failed: dict[str, str] = {}
    refs = _refs()
    done = {r.info.metadata.get("migrated_from") for r in refs}
    for ref in refs:
        legacy = Path(ref.path_of(LEGACY_ARTIFACT))
        tag = str(ref.tag)
        if Path(ref.path_of(ARTIFACT)).exists() or not legacy.exists() or tag in done:
            continue
        try:
            data = legacy.read_bytes()
            _verify(tag, legacy, data, ref.info.labels.get(DIGEST))
            model = pickle.loads(data)
            if not isinstance(model, TabularModel):
                raise ValueError(f"model {tag}: {legacy} holds no model")
            try:
                lineage = json.loads(Path(ref.path_of(LINEAGE)).read_text())
            except FileNotFoundError:
                lineage = dict(ref.info.metadata)
            labels = {k: v for k, v in ref.info.labels.items() if k not in (DIGEST, "family")}
            converted[tag] = save(model, {**lineage, "migrated_from": tag}, labels)
        except (ValueError, TypeError) as err:  # TypeError: a model with no portable form
            failed[tag] = str(err)
    champion_now = champion_tag()
    if champion_now in converted:
        promote(converted[champion_now], f"migrated from {champion_now} (portable archive)")
    if failed:
        raise ValueError(
            f"registry migrate converted {len(converted)} version(s) and could not convert "
            f"{len(failed)} (retrain those): {failed}"
        )
    return converted


def info(tag: str) -> dict[str, Any]:
    """A version's tag, labels, metadata (lineage) and creation time."""
    import bentoml

    ref = bentoml.models.get(tag)
    return {
        "tag": str(ref.tag),
        "labels": dict(ref.info.labels),
        "metadata": dict(ref.info.metadata),
        "created": ref.info.creation_time.isoformat(),
    }


def _refs() -> list[Any]:
    import bentoml

    try:
        return sorted(bentoml.models.list(MODEL_NAME), key=lambda r: r.info.creation_time)
    except bentoml.exceptions.NotFound:  # an empty store: no versions, not an error
        return []


def versions() -> list[str]:
    """Every stored version's tag, oldest first."""
    return [str(r.tag) for r in _refs()]


def champion() -> dict[str, Any] | None:
    """The current champion record (`tag`, `since`, `reason`), or None before the first promotion."""
    try:
        return json.loads(champion_file().read_text())
    except FileNotFoundError:
        return None


def champion_tag() -> str | None:
    """The champion's tag, or None before the first promotion."""
    record = champion()
    return record["tag"] if record else None


def promote(tag: str, reason: str, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make `tag` the champion in one atomic rename; the history keeps who was replaced and why."""
    load(tag)  # refuse to point at something that cannot be served
    previous = champion_tag()
    record = {
        "tag": tag,
        "since": _now(),
        "reason": reason,
        "previous": previous,
        "evidence": _jsonable(evidence or {}),
    }
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
    """Every recorded decision (promotions, refusals, retrainings), oldest first."""
    path = registry_dir() / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_bento(root: Path) -> str:
    """Build the service's bento from `root/bentofile.yaml` offline (`lock_packages: false`, no
    network); returns its tag. The service, imported by the build, bundles the champion."""
    import bentoml

    return str(
        bentoml.bentos.build_bentofile(str(root / "bentofile.yaml"), build_ctx=str(root)).tag
    )


def bento_models(tag: str) -> list[str]:
    """The model tags a built bento carries (BentoML 1.4 lists them under its services)."""
    import bentoml

    info = bentoml.get(tag).info
    return [str(m.tag) for m in info.models] + [
        str(m.tag) for svc in info.services for m in svc.models
    ]


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
