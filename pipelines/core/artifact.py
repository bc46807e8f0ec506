"""A fitted model as one portable file: a zip of the family's own format plus a JSON contract.

    contract.json     format, family, feature order, categorical levels, info, the family's
                      state, and the SHA-256 of every other member
    lightgbm.txt | xgboost.ubj | estimator.skops     the family's files (`Family.files`)

Nothing in it is a pickle: loading builds only the framework's model and trusted types (see
`families.portable`), a model outlives the module that
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
import zipfile
import zlib

from pipelines.core.families import FAMILIES
from pipelines.core.families.portable import zip_members
from pipelines.core.model import TabularModel

FORMAT = "tabular-model/1"
CONTRACT = "contract.json"
_PICKLE = b"\x80"  # protocol 2+ pickles start with PROTO
_KEYS = {"format", "family", "numeric", "categorical", "categories", "info", "state", "files"}


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


def unpack(data: bytes, name: str) -> TabularModel:
    """The model in archive bytes `data` (`name` is how errors call it).

    Raises ValueError naming the file and member when the archive is unreadable, a pickle (never
    unpickled here: `io.registry.migrate` converts a store's old versions), of another format or
    an unknown family, a member does not match the contract's SHA-256, or the family cannot
    restore it."""
    if data[:1] == _PICKLE:
        raise ValueError(
            f"{name} is a pickled model from before portable archives; it is never unpickled on "
            "load (rerun `dvc repro` for models/; `python -m pipelines registry migrate` converts "
            "a model store once)"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        contract = json.loads(archive.read(CONTRACT))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError, zlib.error) as err:
        raise ValueError(f"{name} is not a readable model archive: {err}") from None
    if not isinstance(contract, dict) or contract.get("format") != FORMAT:
        found = contract.get("format") if isinstance(contract, dict) else type(contract).__name__
        raise ValueError(f"{name}: {CONTRACT} format {found!r}, expected {FORMAT!r}")
    lacking = sorted(_KEYS - contract.keys())
    if lacking:
        raise ValueError(f"{name}: {CONTRACT} lacks {lacking}")
    try:
        members = {m: archive.read(m) for m in contract["files"]}
    except (KeyError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise ValueError(f"{name}: a member its contract lists cannot be read: {err}") from None
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
    except (KeyError, TypeError, AttributeError) as err:  # a contract the family cannot read
        raise ValueError(
            f"{name}: the {contract['family']} model cannot be restored: {err!r}"
        ) from None
    return model


def describe(data: bytes) -> dict:
    """The contract of archive bytes `data` (what `unzip -p model.zip contract.json` shows).
    Raises ValueError when `data` is not a model archive."""
    try:
        return json.loads(zipfile.ZipFile(io.BytesIO(data)).read(CONTRACT))
    except (zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"not a model archive: {err}") from None
