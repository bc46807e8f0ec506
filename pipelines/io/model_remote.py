"""The model store's remote: model versions, bentos and the champion pointer under one URL.

A CI runner starts with an empty BentoML store; without the champion of the previous run, the
gate would promote every challenger as a "first model". `pull` before a run and `push` after it
carry the registry between machines, like `dvc pull`/`dvc push` carry the data.

Layout under the URL (a local directory or `s3://bucket/prefix`):

    models/<name>/<version>.bentomodel    bentoml.models.export_model archives
    bentos/<name>/<version>.bento         bentoml.export_bento archives
    registry/champion.json                the champion pointer (registry.py's record)
    registry/history.jsonl                every promotion and refusal

Versions are immutable, so an archive already present is never written again. Archives go
first and the pointer last: a remote's champion always names an archive that is there. Every
object is written whole (temp + rename locally, one PUT on S3). Both directions merge rather
than overwrite: the newer champion record wins (by its `since`) and histories are unioned, so
a push from a stale clone loses nothing already recorded.
"""

from __future__ import annotations

import json
import lzma
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.io import registry, storage

MODEL_SUFFIX = ".bentomodel"
BENTO_SUFFIX = ".bento"
CHAMPION = "registry/champion.json"
HISTORY = "registry/history.jsonl"


@dataclass(frozen=True)
class Synced:
    """What one push or pull moved, and the champion after it."""

    models: list[str]
    bentos: list[str]
    champion: str | None

    def summary(self, verb: str, url: str) -> str:
        moved = f"{len(self.models)} model version(s), {len(self.bentos)} bento(s)"
        return f"registry {verb}: {moved}; champion {self.champion or 'none'} ({url})"


# --- pure rules ------------------------------------------------------------------------------


def newer_champion(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The later of two champion records (ISO `since` timestamps compare as text)."""
    if a is None or b is None:
        return a or b
    return b if b["since"] > a["since"] else a


def merged_history(a: list[str], b: list[str]) -> list[str]:
    """Both histories' lines once each, in time order."""
    unique = {line: json.loads(line).get("at", "") for line in [*a, *b] if line.strip()}
    return sorted(unique, key=lambda line: unique[line])


def archive_key(tag: str, suffix: str) -> str:
    """The remote key of a tag's archive: `<name>/<version><suffix>`."""
    name, version = tag.split(":", 1)
    return f"{name}/{version}{suffix}"


def tag_of(key: str, suffix: str) -> str:
    """The tag an archive key names (`archive_key`'s inverse)."""
    name, file = key.rsplit("/", 2)[-2:]
    return f"{name}:{file[: -len(suffix)]}"


# --- I/O -------------------------------------------------------------------------------------


def url_of(remote: str | None, configured: str) -> str:
    """The remote to use: an explicit one, else $MODEL_REMOTE, else `paths.model_remote`."""
    return remote or os.environ.get("MODEL_REMOTE") or configured


def push(url: str) -> Synced:
    """Copy every local model version and bento missing from the remote, then merge the champion
    pointer (the newer record wins) and the history into it."""
    import bentoml

    models = _copy_missing(
        url,
        "models",
        MODEL_SUFFIX,
        [str(m.tag) for m in bentoml.models.list()],
        lambda tag, path: bentoml.models.export_model(tag, path),
    )
    bentos = _copy_missing(
        url,
        "bentos",
        BENTO_SUFFIX,
        [str(b.tag) for b in bentoml.list()],
        lambda tag, path: bentoml.export_bento(tag, path),
    )
    return Synced(models, bentos, _push_pointer(url))


def publish_champion(url: str) -> str | None:
    """After a promotion: the champion's archive (if the remote lacks it), then the pointer and the
    history, so that every replica following the remote serves it. Returns the champion's tag."""
    import bentoml

    champion = registry.champion_tag()
    if champion is not None:
        _copy_missing(
            url,
            "models",
            MODEL_SUFFIX,
            [champion],
            lambda tag, path: bentoml.models.export_model(tag, path),
        )
    return _push_pointer(url)


def _push_pointer(url: str) -> str | None:
    remote_champion = champion(url)
    merged = newer_champion(remote_champion, registry.champion())
    history = merged_history(
        _read_lines(storage.join(url, HISTORY)),
        _read_lines(str(registry.registry_dir() / "history.jsonl")),
    )
    if history:
        storage.write_text(storage.join(url, HISTORY), "\n".join(history) + "\n")
    if merged is not None and merged != remote_champion:  # archives first, the pointer last
        storage.write_json(storage.join(url, CHAMPION), merged)
    return merged["tag"] if merged else None


def champion(url: str) -> dict[str, Any] | None:
    """The remote's champion record (registry.py's form), or None before the first promotion."""
    return _read_json(storage.join(url, CHAMPION))


def fetch_model(url: str, tag: str) -> None:
    """Import model version `tag` from the remote into the local store, unless it is there.

    Raises FileNotFoundError naming the archive when the remote does not hold it."""
    import bentoml

    try:
        bentoml.models.get(tag)
        return
    except bentoml.exceptions.NotFound:
        pass
    _import(url, "models", tag, MODEL_SUFFIX, bentoml.models.import_model)


def pull(url: str) -> Synced:
    """Import every remote model version and bento missing locally, then merge the pointer (the
    newer record wins; it must name a model this store can load) and the history."""
    import bentoml

    local_models = {str(m.tag) for m in bentoml.models.list()}
    local_bentos = {str(b.tag) for b in bentoml.list()}
    models = [t for t in _remote_tags(url, "models", MODEL_SUFFIX) if t not in local_models]
    bentos = [t for t in _remote_tags(url, "bentos", BENTO_SUFFIX) if t not in local_bentos]
    for tag in models:
        _import(url, "models", tag, MODEL_SUFFIX, bentoml.models.import_model)
    for tag in bentos:
        _import(url, "bentos", tag, BENTO_SUFFIX, bentoml.import_bento)
    local_champion = registry.champion()
    newest = newer_champion(local_champion, champion(url))
    history_file = registry.registry_dir() / "history.jsonl"
    history = merged_history(
        _read_lines(str(history_file)), _read_lines(storage.join(url, HISTORY))
    )
    if history:
        storage.write_text(str(history_file), "\n".join(history) + "\n")
    if newest is not None and newest != local_champion:
        registry.load(newest["tag"])  # the pointer must name a model this store can serve
        storage.write_json(str(registry.champion_file()), newest)
    return Synced(models, bentos, newest["tag"] if newest else None)


def _remote_tags(url: str, kind: str, suffix: str) -> list[str]:
    base = storage.join(url, kind)
    fs, path = storage.filesystem(base)
    try:
        keys = fs.find(path)
    except FileNotFoundError:
        return []
    return sorted(tag_of(k, suffix) for k in keys if k.endswith(suffix))


def _copy_missing(url: str, kind: str, suffix: str, tags: list[str], export: Any) -> list[str]:
    present = set(_remote_tags(url, kind, suffix))
    copied = []
    with tempfile.TemporaryDirectory() as tmp:
        for tag in tags:
            if tag in present:
                continue
            file = str(Path(tmp) / f"archive{suffix}")
            export(tag, file)
            storage.write_bytes(
                storage.join(url, kind, archive_key(tag, suffix)), Path(file).read_bytes()
            )
            copied.append(tag)
    return copied


def _import(url: str, kind: str, tag: str, suffix: str, load: Any) -> None:
    """Import one archive. Raises ValueError naming it when it cannot be read (a truncated or
    corrupted upload): nothing of it enters the store."""
    key = storage.join(url, kind, archive_key(tag, suffix))
    data = storage.read_bytes(key)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"archive{suffix}"
        file.write_bytes(data)
        try:
            load(str(file))
        except (OSError, EOFError, ValueError, lzma.LZMAError, tarfile.TarError) as err:
            raise ValueError(f"remote archive {key} cannot be imported: {err}") from None


def _read_json(url: str) -> dict[str, Any] | None:
    try:
        return storage.read_json(url)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def _read_lines(url: str) -> list[str]:
    try:
        return storage.read_bytes(url).decode().splitlines()
    except FileNotFoundError:
        return []
