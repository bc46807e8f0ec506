"""Combining per-part expectation results (the rules GX applies on a whole table)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.core.result_merge import PartResult, combine


def _rows(element: int, unexpected: int, missing: int = 0) -> PartResult:
    result = {"element_count": element, "unexpected_count": unexpected, "missing_count": missing}
    return PartResult(unexpected == 0, {**result, "partial_unexpected_list": ["x"] * unexpected})


@pytest.mark.parametrize(("unexpected", "passes"), [(5, True), (6, False)])
def test_mostly_is_judged_on_the_whole_tables_considered_rows(
    unexpected: int, passes: bool
) -> None:
    """100 non-missing rows over two parts (10 missing ones are not considered): 95 % known
    passes `mostly: 0.95`, 94 % fails, though no single part decides it."""
    parts = [_rows(60, unexpected, missing=10), _rows(50, 0)]
    success, result = combine("ExpectColumnValuesToBeInSet", {"mostly": 0.95}, parts)
    assert success is passes
    assert result["unexpected_count"] == unexpected and result["missing_count"] == 10
    assert result["unexpected_percent"] == pytest.approx(unexpected)  # of the 100 considered
    assert result["partial_unexpected_counts"] == [{"value": "x", "count": unexpected}]


def test_bounds_take_the_extreme_of_the_parts_and_a_mean_is_one_division() -> None:
    """As GX: a datetime minimum against an ISO bound, text compared as text (never parsed),
    and the mean as the parts' sums over their counts (exactly on the bound passes)."""
    t = pd.Timestamp
    lows = [PartResult(True, {"observed_value": v}) for v in (t("2026-01-02"), pd.NaT)]
    lows.append(PartResult(True, {"observed_value": t("2026-01-01T06:00")}))
    kwargs = {"min_value": "2026-01-01T12:00:00"}
    assert combine("ExpectColumnMinToBeBetween", kwargs, lows) == (
        False,
        {"observed_value": t("2026-01-01T06:00")},
    )
    # "2026-01-01 05:00" sorts before "2026-01-01T00:00" as text: GX fails it, so do the parts.
    texts = [PartResult(True, {"observed_value": v}) for v in ("2026-01-01 05:00", "2026-01-02")]
    assert (
        combine("ExpectColumnMinToBeBetween", {"min_value": "2026-01-01T00:00:00"}, texts)[0]
        is False
    )
    # 25 of 100 labelled rows, split unevenly: exactly 0.25, which passes `max_value: 0.25`.
    means = [PartResult(True, {"observed_value": 0.0}, 9, 0.0), PartResult(True, {}, 91, 25.0)]
    assert combine("ExpectColumnMeanToBeBetween", {"max_value": 0.25}, means) == (
        True,
        {"observed_value": 0.25},
    )


def test_values_that_do_not_compare_are_refused_not_guessed() -> None:
    mixed = [PartResult(True, {"observed_value": v}) for v in (3, "three")]
    with pytest.raises(ValueError, match="do not compare"):
        combine("ExpectColumnMaxToBeBetween", {"max_value": 5}, mixed)
    shapes = [PartResult(True, {"observed_value": "float64"}), _rows(3, 0)]
    with pytest.raises(ValueError, match="disagree on the column's dtype"):
        combine("ExpectColumnValuesToBeInTypeList", {"type_list": ["float64"]}, shapes)


def test_an_expectation_without_a_rule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="ExpectColumnKLDivergenceToBeLessThan"):
        combine("ExpectColumnKLDivergenceToBeLessThan", {}, [_rows(1, 0), _rows(1, 0)])
