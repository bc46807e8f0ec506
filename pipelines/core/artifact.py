"""A fitted model as one portable file: a zip of the family's own format plus a JSON contract.

    contract.json     format, family, feature order, categorical levels, info, the family's
                      state, and the SHA-256 of every other member
    lightgbm.txt | xgboost.ubj | estimator.skops     the family's files (`Family.files`)

Nothing in it is a pickle: loading runs no code from the file, a model outlives the module that
trained it, and any tool that reads zip, JSON and the framework's format can inspect it. The
bytes are stable (members in name order, fixed time), so the same model gives the same file.
Every member is checked against the contract's hash before the family reads it, so a truncated
or edited member is refused by name. (Whole-file integrity against a recorded digest is the
registry's job: `io.registry.load`.)
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
import zlib

from pipelines.core.families import FAMILIES
from pipelines.core.families.portable import zip_members
from pipelines.core.model import TabularModel

FORMAT = "tabular-model/1"
CONTRACT = "contract.json"
_PICKLE = b"\x80"  # protocol 2+ pickles start with PROTO


def pack(model: TabularModel) -> bytes:
    """`model` as the archive's bytes. Raises TypeError for a model that has no portable form
    (a legacy pickled one: retrain it)."""
    files = model.estimator.files()
    contract = {
        "format": FORMAT,
        "family": model.family,
        "numeric": model.numeric,
        "categorical": model.categorical,
        "categories": model.categories,
        "info": json.loads(json.dumps(model.info, default=str)),
        "state": model.estimator.state(),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    text = json.dumps(contract, indent=2, sort_keys=True).encode()
    return zip_members({CONTRACT: text, **files})


def unpack(data: bytes, name: str, allow_pickle: bool = False) -> TabularModel:
    """The model in archive bytes `data` (`name` is how errors call it).

    `allow_pickle` also reads a model pickled before portable archives; only a caller that has
    verified `data` against a digest recorded at save time may pass it (a pickle runs code).

    Raises ValueError naming the file and member when the archive is unreadable, of another
    format, of an unknown family, or a member does not match the contract's SHA-256."""
    if data[:1] == _PICKLE:
        if not allow_pickle:
            raise ValueError(
                f"{name} is a pickled model from before portable archives; refusing to unpickle "
                "a file that is not verified against a recorded digest (retrain: dvc repro train)"
            )
        model = pickle.loads(data)
        if not isinstance(model, TabularModel):
            raise ValueError(f"{name} does not hold a TabularModel")
        return model
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        contract = json.loads(archive.read(CONTRACT))
        members = {m: archive.read(m) for m in contract.get("files", {})}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError, zlib.error) as err:
        raise ValueError(f"{name} is not a readable model archive: {err}") from None
    if contract.get("format") != FORMAT:
        raise ValueError(f"{name}: format {contract.get('format')!r}, expected {FORMAT!r}")
    for member, digest in contract["files"].items():
        if hashlib.sha256(members[member]).hexdigest() != digest:
            raise ValueError(
                f"{name}: member {member} does not match the SHA-256 in its contract "
                "(tampered or truncated); refusing to load it"
            )
    family = FAMILIES.get(contract["family"])
    if family is None:
        raise ValueError(
            f"{name}: unknown model family {contract['family']!r}; expected one of {list(FAMILIES)}"
        )
    model = TabularModel(
        contract["family"],
        contract["numeric"],
        contract["categorical"],
        contract["categories"],
        None,  # type: ignore[arg-type]
        contract["info"],
    )
    try:
        model.estimator = family.restore(members, model.columns, contract["state"])
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    return model


def describe(data: bytes) -> dict:
    """The contract of archive bytes `data` (what `unzip -p model.zip contract.json` shows).
    Raises ValueError when `data` is not a model archive."""
    try:
        return json.loads(zipfile.ZipFile(io.BytesIO(data)).read(CONTRACT))
    except (zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"not a model archive: {err}") from None
