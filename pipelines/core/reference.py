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
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pipelines.config import Contract, Validate
from pipelines.core.expectations import ROWS, rows_per_period
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


def derive(table: pd.DataFrame, contract: Contract, period: Span) -> dict[str, Any]:
    """The reference values (`FIELDS`) of `table` (rows × contract columns, as ingest writes it),
    its volume counted per `period`.

    Raises ValueError when the table has no rows to derive from."""
    c = contract
    if table.empty:
        raise ValueError("no rows to derive the gate's reference from")
    out: dict[str, Any] = {
        "categories": {
            col: sorted(table[col].dropna().astype(str).unique().tolist())
            for col in c.categorical
            if col in table.columns
        },
        "min_rows": max(1, len(table) // 10),
        "max_rows": 100 * len(table),
    }
    labels = pd.to_numeric(table.get(c.target, pd.Series(dtype=float)), errors="coerce").dropna()
    if len(labels):
        out["label_rate"] = list(_band(float(labels.mean())))
    if c.amount and c.amount in table.columns:
        amount = pd.to_numeric(table[c.amount], errors="coerce").dropna()
        if len(amount):
            low, high = float(amount.min()), float(amount.max())
            out["amount_range"] = [
                min(0.0, AMOUNT_HEADROOM * low),
                max(1.0, AMOUNT_HEADROOM * high),
            ]
    ts = pd.to_datetime(table[c.timestamp]).dropna()
    if len(ts):
        start, end = period.floor(ts.min()), period.boundary_after(ts.max())
        counts = rows_per_period(table, c.timestamp, start, end, period)[ROWS]
        out["min_rows_per_period"] = int((counts > 0).all())
    gaps = [*c.categorical, *(n for n in c.numeric if n != c.amount)]
    shares = {col: float(table[col].isna().mean()) for col in gaps if col in table.columns}
    out["null_shares"] = {
        col: round(min(1.0, 2 * share + 0.01), 4) for col, share in shares.items() if share > 0
    }
    return out


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
