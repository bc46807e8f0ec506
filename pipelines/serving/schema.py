"""Request and response models, derived from the dataset contract.

Validation at the edge: a missing field, a wrong type, a non-finite or negative amount, an
empty string: pydantic names the field and BentoML answers 400. A category value the model
never saw is *valid* input (new merchants happen); the scorer flags it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from pipelines.config import Contract, Settings

# Printable text only: control characters and lone surrogates cannot be stored or logged, and
# no real id or category contains them.
PRINTABLE = r"^[^\x00-\x1f\x7f\ud800-\udfff]+$"
Text = Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]


class _Record(BaseModel):
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True, regex_engine="python-re"
    )


EARLIEST, LATEST = dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    if not EARLIEST <= value < LATEST:  # garbage, and it would stretch the history time keys
        raise ValueError(f"timestamp must be in [{EARLIEST.year}, {LATEST.year})")
    return value


def record_model(contract: Contract) -> type[BaseModel]:
    """One transaction as the service accepts it."""
    fields: dict[str, Any] = {contract.id: (Text, ...), contract.timestamp: (dt.datetime, ...)}
    if contract.entity:
        fields[contract.entity] = (Text, ...)
    for col in contract.numeric:
        bound = Field(ge=0.0) if col == contract.amount else Field()
        fields[col] = (Annotated[float, bound], ...)
    for col in contract.categorical:
        fields[col] = (Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)], ...)
    validators = {"_utc": field_validator(contract.timestamp)(_naive_utc)}
    return create_model("Transaction", __base__=_Record, __validators__=validators, **fields)


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


class Score(BaseModel):
    """One record's answer (the response is a list of them, in request order)."""

    transaction_id: str
    probability: float
    decision: str
    model_version: str
    unknown_categories: list[str] = Field(
        default_factory=list, description="Columns whose value the model never saw."
    )
