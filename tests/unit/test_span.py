"""Spans of time in the data's own units (core.span) and the rolling window they place
(core.dataset.resolve_window): calendar years and months, hours, and the errors people make."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.config import ConfigError, parse_settings
from pipelines.core.dataset import resolve_window, window_days
from pipelines.core.span import UNITS, Span, at


@given(st.integers(1, 500), st.sampled_from(UNITS))
def test_a_span_reads_back_what_it_writes(count: int, unit: str) -> None:
    span = Span.parse(f"{count} {unit}s")
    assert (span.count, span.unit) == (count, unit)
    assert Span.parse(str(span)) == span


@pytest.mark.parametrize("text", ["21", 21, "0 days", "-1 day", "1.5 days", "3 fortnights", ""])
def test_a_span_without_a_positive_count_and_a_unit_is_refused_by_name(text: object) -> None:
    with pytest.raises(ValueError, match="is not a span of time.*'21 days'"):
        Span.parse(text)


def test_years_and_months_are_calendar_ones() -> None:
    leap = pd.Timestamp("2024-02-29 13:20")
    assert Span.parse("1 year").before(leap) == pd.Timestamp("2023-02-28 13:20")
    assert Span.parse("4 years").before(pd.Timestamp("2024-01-01")) == pd.Timestamp("2020-01-01")
    assert Span.parse("1 month").before(pd.Timestamp("2026-03-31")) == pd.Timestamp("2026-02-28")
    assert Span.parse("48 hours").before(leap) == pd.Timestamp("2024-02-27 13:20")


@pytest.mark.parametrize(
    ("span", "boundary"),
    [
        ("6 hours", "2024-02-29 14:00"),
        ("21 days", "2024-03-01"),
        ("2 weeks", "2024-03-01"),  # a week's grid is its days
        ("3 months", "2024-03-01"),
        ("10 years", "2025-01-01"),
    ],
)
def test_a_rolling_window_ends_at_the_unit_after_the_newest_data(span: str, boundary: str) -> None:
    assert Span.parse(span).boundary_after(pd.Timestamp("2024-02-29 13:20")) == pd.Timestamp(
        boundary
    )


def test_the_grid_counts_whole_periods_and_a_short_last_one() -> None:
    grid = Span.parse("1 year").grid(pd.Timestamp("2010-01-01"), pd.Timestamp("2016-01-01"))
    assert [t.year for t in grid] == list(range(2010, 2016))
    hours = Span.parse("2 hours").grid(pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-01 05:00"))
    assert [t.hour for t in hours] == [0, 2, 4]


def rolling(window: str) -> object:
    return parse_settings({"ingest": {"window": window}}).ingest


@pytest.mark.parametrize(
    ("window", "start", "end"),
    [
        # daily: as before spans existed (the day after the newest, 90 days back)
        ("90 days", "2026-01-12", "2026-04-12"),
        # hourly: the hour after the newest row, 48 hours back
        ("48 hours", "2026-04-09 14:00", "2026-04-11 14:00"),
        # yearly: the 1st of January after the newest row, but not before the oldest year
        ("10 years", "2025-01-01", "2027-01-01"),
        ("1 year", "2026-01-01", "2027-01-01"),
    ],
)
def test_a_rolling_window_in_the_datas_own_unit(window: str, start: str, end: str) -> None:
    oldest, newest = pd.Timestamp("2025-06-30 08:10"), pd.Timestamp("2026-04-11 13:05")
    assert resolve_window(rolling(window), oldest, newest) == (  # type: ignore[arg-type]
        pd.Timestamp(start),
        pd.Timestamp(end),
    )


def test_a_pinned_window_can_start_and_end_within_a_day() -> None:
    ingest = parse_settings(
        {"ingest": {"start": "2026-01-01 06:00", "end": "2026-01-02T18:00:00"}}
    ).ingest
    start, end = resolve_window(ingest, None, None)
    assert (at(start), at(end)) == ("2026-01-01T06:00:00", "2026-01-02T18:00:00")
    assert [d.day for d in window_days(start, end)] == [1, 2]
    assert [d.day for d in window_days(pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-03"))] == [
        1,
        2,
    ]


def test_a_renamed_key_says_what_to_write_instead() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"split": {"test_days": 21}, "drift": {"window": 24}})
    assert "split.test_days: renamed: write split.test: '21 days'" in str(err.value)
    assert "drift.window: 24 is not a span of time" in str(err.value)
