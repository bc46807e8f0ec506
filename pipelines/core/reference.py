"""The data gate's reference values derived from the data itself: what a team would otherwise
write by hand in `validate` (every level of every category, the label rate, the amount's range,
the volume, the gaps). Pure: `derive` reads a table, `apply` merges; `io.gate_reference` keeps
the result in a file a person reads and edits, and every `validate` key written in params.yaml
wins over it.

The margins, and why (each a judgement, not a published constant: edit the file to tighten):

- `categories`: every level seen; a new level later is reported, and blocks only beyond
  `min_known_share`, as with hand-written levels;
- `label_rate`: ±1.5 log-odds around the observed rate (1 % allows 0.22-4.3 %, 45 % allows
  15-79 %): ordinary swings pass, a label feed that broke (all 0, all 1, a flipped rate) fails;
- `amount_range`: from 0 (or 10x the lowest if negative amounts exist) to 10x the highest: a
  decimal slip (cents as units) fails, a large but plausible amount passes;
- `min_rows` / `max_rows`: a tenth and a hundred times the reference's rows;
- `min_rows_per_period`: 1 when the reference has rows in every `validate.period` of its span
  (daily data counted by day, where an empty day means a feed broke), else 0 (yearly or irregular
  data counted by day has empty days by nature: a survey of 1,500 interviews a year leaves ~15 %
  of its days empty; set `validate.period: 1 year` to check it per year);
- `null_shares`: for each column that may have gaps (categorical, or numeric but the amount) and
  had some, twice the observed share plus one point, at most 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines.config import Contract, Validate
from pipelines.core.expectations import ROWS, added_periods, rows_per_period
from pipelines.core.span import Span

FIELDS = (
    "categories",
    "label_rate",
    "amount_range",
    "min_rows",
    "max_rows",
    "min_rows_per_period",
    "null_shares",
)
LOG_ODDS_MARGIN = 1.5
AMOUNT_HEADROOM = 10.0
# (frame, fn, *args) → [fn(part, *args) for each part of frame], in row order.
MapParts = Callable[..., list[Any]]


class NoRows(ValueError):
    """The table has no rows to derive a reference from."""


@dataclass(frozen=True)
class Profile:
    """What `derive` reads from a table, added part by part (`profile`, `added`): a table
    larger than one process is profiled where its parts live."""

    rows: int
    levels: Mapping[str, frozenset[str]]  # categorical column → its values as text
    labels: tuple[float, int]  # sum and count of the numeric labels
    amounts: tuple[float, float] | None  # lowest and highest amount
    times: tuple[pd.Timestamp, pd.Timestamp] | None  # earliest and latest timestamp
    nulls: Mapping[str, int]  # column that may have gaps → its nulls


def profile(part: pd.DataFrame, contract: Contract) -> Profile:
    """The `Profile` of `part` (rows × contract columns, as ingest writes them)."""
    c = contract
    labels = pd.to_numeric(part.get(c.target, pd.Series(dtype=float)), errors="coerce").dropna()
    amounts = None
    if c.amount and c.amount in part.columns:
        amount = pd.to_numeric(part[c.amount], errors="coerce").dropna()
        amounts = (float(amount.min()), float(amount.max())) if len(amount) else None
    times = None
    if c.timestamp in part.columns:
        ts = pd.to_datetime(part[c.timestamp]).dropna()
        times = (ts.min(), ts.max()) if len(ts) else None
    gaps = [*c.categorical, *(n for n in c.numeric if n != c.amount)]
    return Profile(
        rows=len(part),
        levels={
            col: frozenset(part[col].dropna().astype(str).unique().tolist())
            for col in c.categorical
            if col in part.columns
        },
        labels=(float(labels.sum()), len(labels)),
        amounts=amounts,
        times=times,
        nulls={col: int(part[col].isna().sum()) for col in gaps if col in part.columns},
    )


def added(profiles: Sequence[Profile]) -> Profile:
    """The `Profile` of a table from those of its parts (at least one)."""

    def span(pairs: list[tuple[Any, Any] | None]) -> tuple[Any, Any] | None:
        seen = [p for p in pairs if p is not None]
        return (min(p[0] for p in seen), max(p[1] for p in seen)) if seen else None

    first = profiles[0]
    return Profile(
        rows=sum(p.rows for p in profiles),
        levels={col: frozenset().union(*(p.levels[col] for p in profiles)) for col in first.levels},
        labels=(sum(p.labels[0] for p in profiles), sum(p.labels[1] for p in profiles)),
        amounts=span([p.amounts for p in profiles]),
        times=span([p.times for p in profiles]),
        nulls={col: sum(p.nulls[col] for p in profiles) for col in first.nulls},
    )


def volume_window(p: Profile, period: Span) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The periods from the first's start to the last's end that `p`'s timestamps fall in
    (None without any timestamp): where `from_profile` wants the rows counted."""
    if p.times is None:
        return None
    return period.floor(p.times[0]), period.boundary_after(p.times[1])


def from_profile(p: Profile, rows_per_period: pd.Series | None) -> dict[str, Any]:
    """The reference values (`FIELDS`) of the table `p` profiles, whose rows per period of
    `volume_window` are `rows_per_period`.

    Raises NoRows (a ValueError) when the table has no rows to derive from."""
    if not p.rows:
        raise NoRows("no rows to derive the gate's reference from")
    out: dict[str, Any] = {
        "categories": {col: sorted(values) for col, values in p.levels.items()},
        "min_rows": max(1, p.rows // 10),
        "max_rows": 100 * p.rows,
    }
    total, labelled = p.labels
    if labelled:
        out["label_rate"] = list(_band(total / labelled))
    if p.amounts is not None:
        low, high = p.amounts
        out["amount_range"] = [min(0.0, AMOUNT_HEADROOM * low), max(1.0, AMOUNT_HEADROOM * high)]
    if rows_per_period is not None:
        out["min_rows_per_period"] = int((rows_per_period > 0).all())
    out["null_shares"] = {
        col: round(min(1.0, 2 * (nulls / p.rows) + 0.01), 4)
        for col, nulls in p.nulls.items()
        if nulls > 0
    }
    return out


def derive(
    table: Any, contract: Contract, period: Span, map_parts: MapParts | None = None
) -> dict[str, Any]:
    """The reference values (`FIELDS`) of `table` (rows × contract columns, as ingest writes it),
    its volume counted per `period`: each part profiled where it lives (`map_parts`, an
    engine's `io.compute.Engine.map_parts`; default: `table` is one pandas frame), the
    profiles added, then the rows per period of their span counted the same way.

    Raises NoRows (a ValueError) when the table has no rows to derive from."""
    map_parts = map_parts or _whole
    p = added(map_parts(table, profile, contract))
    window = volume_window(p, period)
    counts = None
    if p.rows and window is not None:
        parts = map_parts(table, rows_per_period, contract.timestamp, *window, period)
        counts = added_periods(parts)[ROWS]
    return from_profile(p, counts)


def _whole(frame: pd.DataFrame, fn: Callable[..., Any], *args: Any) -> list[Any]:
    return [fn(frame, *args)]


def apply(params: Validate, reference: Mapping[str, Any]) -> Validate:
    """`params` with every `FIELDS` key that params.yaml did not write taken from `reference`.

    Raises pydantic's ValidationError when an edited reference holds a wrong value."""
    written = params.model_fields_set
    update = {k: v for k, v in reference.items() if k in FIELDS and k not in written}
    return Validate.model_validate({**params.model_dump(), **update})


def _band(rate: float) -> tuple[float, float]:
    """±LOG_ODDS_MARGIN log-odds around `rate` (clipped away from 0 and 1), rounded outwards."""
    p = min(max(rate, 1e-6), 1 - 1e-6)
    centre = math.log(p / (1 - p))
    low = 1 / (1 + math.exp(-(centre - LOG_ODDS_MARGIN)))
    high = 1 / (1 + math.exp(-(centre + LOG_ODDS_MARGIN)))
    return math.floor(low * 1e4) / 1e4, math.ceil(high * 1e4) / 1e4
