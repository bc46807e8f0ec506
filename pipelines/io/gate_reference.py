"""The gate's derived reference as a file (`paths.gate_reference`, YAML): written from the first
snapshot the gate sees (`core.reference.derive`), read by every later gate and by the service,
so a request is accepted at the edge exactly as its column was at the gate. A person reads and
edits it (commit it with the code); a key written in params.yaml's `validate` wins over it. The
file records the contract it was derived for: a reference of another contract is derived again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from pipelines.config import Contract, Settings
from pipelines.core import reference
from pipelines.io import storage

HEADER = (
    "# The data gate's reference, derived from the data (pipelines/core/reference.py says each\n"
    "# margin and why). Edit it freely; a key under `validate` in params.yaml wins over it.\n"
)


def fingerprint(contract: Contract) -> str:
    """A short digest of the contract a reference was derived for."""
    text = json.dumps(contract.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(settings: Settings) -> dict[str, Any] | None:
    """The saved reference for the settings' contract, or None (no file, or another contract's).

    Raises ValueError naming the file when it is not a YAML mapping."""
    url = settings.paths.gate_reference
    if not storage.exists(url):
        return None
    try:
        data = yaml.safe_load(storage.read_bytes(url))
    except yaml.YAMLError as err:
        raise ValueError(f"{url} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{url} must hold a mapping of validate keys")
    if data.get("contract") != fingerprint(settings.contract):
        return None
    return data


def load_or_derive(
    settings: Settings, table: Any, map_parts: reference.MapParts | None = None
) -> tuple[dict[str, Any], bool]:
    """The saved reference, else one derived from `table` (`core.reference.derive`, part by
    part through `map_parts` when given) and saved (atomically); and whether it was derived
    now. An empty table derives nothing ({}: the gate blocks it on volume)."""
    saved = load(settings)
    if saved is not None:
        return saved, False
    c = settings.contract
    try:
        values = reference.derive(table, c, settings.validate_.period, map_parts)
    except reference.NoRows:
        return {}, False
    derived = {"contract": fingerprint(c), **values}
    text = HEADER + yaml.safe_dump(derived, sort_keys=False, allow_unicode=True)
    storage.write_bytes(settings.paths.gate_reference, text.encode())
    return derived, True


def completed(settings: Settings) -> Settings:
    """`settings` with `validate` completed from the saved reference (unchanged without one)."""
    saved = load(settings)
    if saved is None:
        return settings
    return settings.model_copy(update={"validate_": reference.apply(settings.validate_, saved)})
