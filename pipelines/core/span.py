"""Spans of time in the data's own units: `21 days`, `6 hours`, `10 years`.

The training window, the test split, the gate's evaluation window, the gate's volume period and
the drift window are written this way in params.yaml, so a yearly survey, a daily ledger and an
hourly sensor table each say what they mean (a year is a calendar year, not 365 days: leap years
move nothing). Arithmetic is pandas' `DateOffset`, which is calendar-aware for months and years.

A span also names the grid its windows align to: a rolling window of `48 hours` ends at the hour
after the newest data, one of `10 years` on the 1st of January after it (`boundary_after`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

import pandas as pd

Unit = Literal["minute", "hour", "day", "week", "month", "year"]
UNITS: tuple[Unit, ...] = get_args(Unit)
FORM = r"^\s*(\d+)\s*(minute|hour|day|week|month|year)s?\s*$"
_FORM = re.compile(FORM)
# The pandas period each unit floors to; a week floors to its day (weeks are 7-day spans from any
# day, not ISO weeks, so `2 weeks` back from a Wednesday is a Wednesday).
_FLOOR = {"minute": "min", "hour": "h", "day": "D", "week": "D", "month": "M", "year": "Y"}


@dataclass(frozen=True)
class Span:
    """`count` consecutive `unit`s (count ≥ 1)."""

    count: int
    unit: Unit

    @classmethod
    def parse(cls, text: object) -> Span:
        """`'21 days'`, `'1 year'`, `'6hours'` → Span. Raises ValueError naming the text and the
        accepted form (a bare number is refused: its unit would be a guess)."""
        if isinstance(text, Span):
            return text
        match = _FORM.match(text) if isinstance(text, str) else None
        if match is None or int(match[1]) == 0:
            raise ValueError(
                f"{text!r} is not a span of time: write a positive count and a unit, e.g. "
                f"'21 days', '6 hours', '1 year' (units: {', '.join(UNITS)})"
            )
        return cls(int(match[1]), cast(Unit, match[2]))

    def __str__(self) -> str:
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"

    @property
    def offset(self) -> pd.DateOffset:
        """The span as a calendar-aware pandas offset."""
        return pd.DateOffset(**{f"{self.unit}s": self.count})

    def before(self, t: pd.Timestamp) -> pd.Timestamp:
        """The instant one span before `t`."""
        return pd.Timestamp(t) - self.offset

    def floor(self, t: pd.Timestamp) -> pd.Timestamp:
        """The start of the unit `t` falls in (its hour, day, month, year)."""
        return pd.Timestamp(t).to_period(_FLOOR[self.unit]).start_time

    def boundary_after(self, t: pd.Timestamp) -> pd.Timestamp:
        """The start of the unit after the one `t` falls in: where a rolling window that holds `t`
        ends (exclusive). A week's grid is its days."""
        return (pd.Timestamp(t).to_period(_FLOOR[self.unit]) + 1).start_time

    def grid(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
        """The starts of consecutive spans from `start` while before `end` (the periods a volume
        check counts rows in; the last may be cut short by `end`)."""
        return pd.date_range(
            pd.Timestamp(start), pd.Timestamp(end), freq=self.offset, inclusive="left"
        )


def at(t: pd.Timestamp) -> str:
    """`t` as ISO text, without a midnight time: `2026-01-01` or `2026-01-01T06:00:00`."""
    t = pd.Timestamp(t)
    return t.date().isoformat() if t == t.normalize() else t.isoformat()
