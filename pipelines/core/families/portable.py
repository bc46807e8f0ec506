"""scikit-learn objects as files without pickle: skops, made byte-stable and loaded under a trust
list.

skops (https://skops.readthedocs.io, "Secure persistence") writes a zip of a JSON schema and .npy
arrays and, on load, refuses any type not explicitly trusted, so a model file cannot run code the
way a pickle can. Two things are added here:

- **Stable bytes.** skops names arrays and shared references by `id()` of the saving process
  and stamps members with the wall clock, so the same model saved twice differs. `dumps`
  renumbers those ids in order of first appearance (JSON primitives each on their own: their
  sharing is interning, not structure), zeroes structured arrays' padding bytes (uninitialised
  memory) and writes the members with a fixed time: the same
  fitted model gives the same bytes, and so does that model loaded back (DVC no-op reruns, the
  registry's content dedup).
- **Trust.** `loads` accepts scikit-learn's, NumPy's and SciPy's own types and functions (what
  every family here saves: HistGradientBoosting's tree nodes, whose raw indices skops flags
  because a *crafted* file could crash `predict`, and its `partial(check_array, ...)`), plus the
  package of a team's own estimator when the operator's params name it (`trust`, called by
  `runtime.bootstrap` with `train.sklearn.estimator`'s package; never from the file). Anything
  else, `builtins` included (`exec`, `eval`), is refused with the type named.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable
from typing import Any

SKOPS_FILE = "estimator.skops"
TRUSTED_MODULES = ("sklearn", "numpy", "scipy")
# A partial is a container: skops audits the function and arguments it wraps as their own nodes.
TRUSTED_TYPES = ("functools.partial",)
_operator_trusted: tuple[str, ...] = ()  # set by `trust`, from params only
_NUMBERED = re.compile(r"^(\d+)(\.\w+)$")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def dumps(obj: Any) -> bytes:
    """`obj` as skops bytes, identical for identical objects across processes and times."""
    import skops.io as sio

    raw = zipfile.ZipFile(io.BytesIO(sio.dumps(obj)))
    schema = json.loads(raw.read("schema.json"))
    ids: dict[int, int] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            primitive = node.get("__loader__") == "JsonNode"
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int) and primitive:
                    # Whether two equal strings or ints are one object is CPython's interning,
                    # which differs between a fitted model and a loaded one; sharing an
                    # immutable value means nothing, so each gets its own number.
                    value = ids.setdefault(-1 - len(ids), len(ids))
                elif key == "__id__" and isinstance(value, int):
                    value = ids.setdefault(value, len(ids))
                elif key == "file" and isinstance(value, str) and _NUMBERED.match(value):
                    number, suffix = _NUMBERED.match(value).groups()  # type: ignore[union-attr]
                    value = f"{ids.setdefault(int(number), len(ids))}{suffix}"
                out[key] = renumber(value)
            return out
        if isinstance(node, list):
            return [renumber(v) for v in node]
        return node

    stable = renumber(schema)
    members = {"schema.json": json.dumps(stable, indent=2).encode()}
    for name in raw.namelist():
        match = _NUMBERED.match(name)
        if match:
            content = raw.read(name)
            if match[2] == ".npy":
                content = _zeroed_padding(content)
            members[f"{ids[int(match[1])]}{match[2]}"] = content
    return zip_members(members)


def _zeroed_padding(npy: bytes) -> bytes:
    """An .npy of a structured array with its padding bytes zeroed (a tree's node records: 57
    bytes of fields in 64, the rest whatever memory held); other arrays unchanged."""
    import numpy as np

    array = np.load(io.BytesIO(npy), allow_pickle=False)
    fields = array.dtype.fields
    if not fields or sum(f[0].itemsize for f in fields.values()) == array.dtype.itemsize:
        return npy
    clean = np.zeros(array.shape, dtype=array.dtype)
    for field in fields:
        clean[field] = array[field]
    out = io.BytesIO()
    np.save(out, clean, allow_pickle=False)
    return out.getvalue()


def trust(packages: Iterable[str]) -> None:
    """Also trust types from these top-level packages in every later `loads`: a team's own
    estimator package, named in the operator's params (`runtime.bootstrap` passes
    `train.sklearn.estimator`'s). Replaces the previous call's set."""
    global _operator_trusted
    _operator_trusted = tuple(sorted(set(packages) - set(TRUSTED_MODULES)))


def loads(data: bytes, name: str) -> Any:
    """The object in skops bytes `data` (called `name` in errors).

    Raises ValueError naming `name` and the types when the file holds a type outside
    `TRUSTED_MODULES`, `TRUSTED_TYPES` and the packages given to `trust`, or when it is not a
    skops file."""
    import skops.io as sio

    allowed = (*TRUSTED_MODULES, *_operator_trusted)
    try:
        found = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{name} is not a readable skops file: {err}") from None
    refused = [t for t in found if t.split(".", 1)[0] not in allowed and t not in TRUSTED_TYPES]
    if refused:
        raise ValueError(
            f"{name} holds types this project does not trust: {refused} (trusted: "
            f"{list(allowed)}; a team's own estimator package is trusted when "
            "train.sklearn.estimator names it); refusing to load it"
        )
    return sio.loads(data, trusted=found)


def zip_members(members: dict[str, bytes]) -> bytes:
    """A zip of `members` (name → content) in name order with a fixed time: same content, same
    bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for member in sorted(members):
            info = zipfile.ZipInfo(member, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, members[member])
    return buffer.getvalue()
