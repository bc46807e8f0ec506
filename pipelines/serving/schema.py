"""Request and response models, derived from the dataset contract: the OpenAPI document says
exactly what the service accepts, and the service accepts exactly that.

Validation at the edge: a missing or extra field, a wrong type (a boolean or a string is not a
number), a non-finite number, an amount outside the data gate's `validate.amount_range`, text
with control characters, a timestamp that is not ISO 8601 within 1971-2099: pydantic names the
field and the service answers 400. What JSON Schema says and the validators check is one
definition (the timestamp's pattern below serves both). A category value the model never saw is
*valid* input (new merchants happen); the scorer flags it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from pipelines.config import Contract, Settings

# Printable text only: control characters cannot be stored or logged, and no real id or category
# contains them. Lone surrogates (a JSON \\ud800 escape without its pair) are no Unicode text at
# all: pydantic refuses them as strings (`string_unicode`) before any constraint. The pattern
# runs on pydantic's Rust engine, whose `$` is the end of the text (Python's also matches
# before a final newline, so "abc\n" passed).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


_INT64 = (-(2**63), 2**63 - 1)


def _code(value: object) -> object:
    """An integer code (`SCHL: 21`) as the text ingest makes of an integer column ("21"), so a
    record compares equal offline and online; text as it is. Booleans, fractions and integers
    beyond int64 (no table column holds them) are refused."""
    if isinstance(value, bool | float):
        raise ValueError("must be text or an integer code")
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError("an integer code must fit in 64 bits")
        return str(value)
    return value


def code_type(max_length: int) -> Any:
    """Text of 1 to `max_length` printable characters, or an integer code (as its text)."""
    text = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": PRINTABLE}
    # The constraints before the validators: pydantic then checks them in its core, on the
    # string `_code` returns (after it, they ran as Python around it: twice the cost per record).
    return Annotated[
        str,
        Field(min_length=1, max_length=max_length, pattern=PRINTABLE),
        BeforeValidator(_code),
        WithJsonSchema(
            {
                "anyOf": [
                    text,
                    {"type": "integer", "minimum": _INT64[0], "maximum": _INT64[1]},
                ],
                "description": "text, or an integer code",
            }
        ),
    ]


# ISO 8601 date-times from 1971 to 2099, calendar-exact (29 February in leap years only), with an
# optional UTC offset up to 13:59 or Z; without one the time is UTC. Bounded so that a timestamp
# never stretches the history features' int64 time keys, and so that JSON Schema can say it.
_YEAR = r"(?:197[1-9]|19[89][0-9]|20[0-9]{2})"
_LEAP_YEAR = r"(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26]))"
_MONTH_DAY = (
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
TIMESTAMP_PATTERN = (
    rf"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def _timestamp(value: object) -> dt.datetime:
    """An ISO 8601 string matching TIMESTAMP_PATTERN, as naive UTC."""
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise ValueError(
            "must be an ISO 8601 date-time from 1971 to 2099, e.g. 2026-04-01T12:00:00Z"
        )
    parsed = dt.datetime.fromisoformat(value)
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo is not None else parsed


def _number(value: object) -> object:
    """JSON numbers only: true, false and numeric strings are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TIMESTAMP_PATTERN,
            "description": "ISO 8601 date-time, 1971-2099; with an offset or Z, else UTC",
        }
    ),
]


class DuplicateKey(ValueError):
    """A JSON object names a key twice (JSON parsers keep the last silently)."""


def parse_json(body: bytes) -> Any:
    """The request body as Python values. Raises ValueError saying why it is not acceptable JSON
    (malformed, not UTF-8, or a key given twice in one object)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) < len(pairs):  # the rare case: find the key to name it, in one pass
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise DuplicateKey(f"the key {key!r} appears twice in one JSON object")
                seen.add(key)
        return out

    try:
        return json.loads(body, object_pairs_hook=unique)
    except DuplicateKey:
        raise
    except ValueError as err:
        raise ValueError(f"the body is not valid JSON: {err}") from None


def describe(err: ValidationError) -> str:
    """Each problem once, naming its field: `records[0].amount: Input should be ...; ...`."""

    def where(loc: tuple[Any, ...]) -> str:
        return "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
            for i, p in enumerate(loc)
        )

    return "; ".join(
        f"{where(e['loc']) or 'body'}: {e['msg']}" for e in err.errors(include_url=False)
    )


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def record_model(settings: Settings) -> type[BaseModel]:
    """One record as the service accepts it: the contract's columns, the gate's amount range; a
    column the gate lets have gaps (`validate.null_shares`) may be null or left out (None)."""
    contract = settings.contract

    def optional(col: str, kind: Any) -> tuple[Any, Any]:
        if settings.validate_.null_share(col) > 0:
            return (kind | None, None)
        return (kind, ...)

    fields: dict[str, Any] = {
        contract.id: (code_type(128), ...),
        contract.timestamp: (Timestamp, ...),
    }
    if contract.entity:
        fields[contract.entity] = (code_type(128), ...)
    low, high = settings.validate_.amount_range
    for col in contract.numeric:
        bound = Field(ge=low, le=high) if col == contract.amount else Field()
        # The bound before the validator: so JSON Schema gets minimum/maximum (the other order
        # leaks pydantic's ge/le keywords into the document).
        fields[col] = optional(col, Annotated[float, bound, BeforeValidator(_number)])
    for col in contract.categorical:
        fields[col] = optional(col, code_type(64))
    return create_model("Transaction", __base__=_Record, **fields)


def example_record(settings: Settings, when: dt.datetime | None = None) -> dict[str, Any]:
    """A valid, recognisable record (id and entity start with 'smoke-'): the OpenAPI example and
    the rollout's smoke check. `when`: its timestamp (default: a fixed instant, so the example is
    stable)."""
    c = settings.contract
    record: dict[str, Any] = {
        c.id: "smoke-0001",
        c.timestamp: (when or dt.datetime(2026, 4, 1, 12)).isoformat(),
    }
    if c.entity:
        record[c.entity] = "smoke-check"
    categories = settings.validate_.categories
    for col in c.numeric:
        record[col] = 42.5
    for col in c.categorical:
        record[col] = categories[col][0] if categories.get(col) else "smoke"
    return record


# Where a scored record's history features came from: the online store; nowhere, as the event is
# older than its card's history keeps exact (core.history.LATE_SLACK); nowhere, as the store did
# not answer (the request-level features only).
HistoryStatus = Literal["live", "late", "unavailable"]


class _Score(BaseModel):
    """One record's answer (the response is a list of them, in request order); `score_model`
    adds the record's id under the contract's own name."""

    probability: float
    decision: str
    model_version: str
    unknown_categories: list[str] = Field(
        default_factory=list, description="Columns whose value the model never saw."
    )
    history: HistoryStatus = Field(
        "live",
        description=(
            "Where the history features came from: the online store (live); none, as the event "
            "is more than an hour behind its entity's newest (late); none, as the store did not "
            "answer (unavailable). Without history the score uses the request's own features."
        ),
    )


def score_model(contract: Contract) -> type[BaseModel]:
    """The answer's model for `contract`: `_Score`'s fields and the id echoed as `contract.id`.
    Raises ValueError when the id's name is one of the answer's own fields."""
    if contract.id in _Score.model_fields:
        raise ValueError(
            f"contract.id {contract.id!r} is the name of a field of the service's answer; "
            f"rename it (the answer's fields: {sorted(_Score.model_fields)})"
        )
    return create_model(
        "Score",
        __base__=_Score,
        **{contract.id: (str, Field(description="The record's id, as sent."))},  # type: ignore[call-overload]
    )
