"""One expectation's result on a whole table from its results on the table's parts.

A table larger than one process is validated part by part where it lives (`stages/validate.py`
runs the same GX suite on each part); this module combines the parts' results into the result
GX gives on the whole table, from the quantities GX itself reports: counts add, a minimum or
maximum combines, a mean is the parts' sums over their counts. Pure: plain dicts in
GX 1.x's result shape (`ExpectationValidationResult.result`, SUMMARY format), no GX import.
The unexpected examples keep the parts' order: the table's row order for the parts of a split
by rows, not for uniqueness (its parts are split by the column).

GX's rules restated here (great_expectations 1.24, `expectations/expectation.py`:
`ColumnMapExpectation._validate`, `_mostly_success`, `_format_map_output`), and held to GX on
the whole table by tests/data/test_validate.py:

- per-row ("map") expectations: a row is considered when it is not missing (every row for
  ExpectColumnValuesToNotBeNull, whose result has no `missing_count`); the check passes when no
  row is considered, else when (considered - unexpected) / considered >= `mostly` (default 1);
- ExpectColumnMin/Max/MeanToBeBetween and ExpectTableRowCountToBeBetween: the observed value
  lies in [min_value, max_value] (strict where `strict_min` / `strict_max`); no value fails;
- structure and type checks see the same columns and dtypes in every part (one table schema),
  so they pass when every part passes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# GX's SUMMARY result format keeps this many unexpected values (`partial_unexpected_count`).
PARTIAL = 20

PER_ROW = frozenset(
    {
        "ExpectColumnValuesToNotBeNull",
        "ExpectColumnValuesToBeBetween",
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToBeUnique",
        "ExpectColumnPairValuesAToBeGreaterThanB",
    }
)
# Type checks are per row on an object column and on the dtype otherwise: the result says which.
TYPES = frozenset({"ExpectColumnValuesToBeOfType", "ExpectColumnValuesToBeInTypeList"})
SCHEMA = frozenset({"ExpectColumnToExist", "ExpectTableColumnsToMatchSet"})
BOUNDED = frozenset(
    {
        "ExpectColumnMinToBeBetween",
        "ExpectColumnMaxToBeBetween",
        "ExpectColumnMeanToBeBetween",
        "ExpectTableRowCountToBeBetween",
    }
)
# Uniqueness is decided within a part only when each part holds every row of its values: the
# caller splits the table by the column (a shuffle) for these.
KEYED = frozenset({"ExpectColumnValuesToBeUnique"})


@dataclass(frozen=True)
class PartResult:
    """One part's result of one expectation; for a mean, the column's non-null values in the
    part (`count`) and their sum (`total`): the whole table's mean is one division, as GX's."""

    success: bool
    result: Mapping[str, Any]
    count: int = 0
    total: float = 0.0


def combine(
    type_: str, kwargs: Mapping[str, Any], parts: Sequence[PartResult]
) -> tuple[bool, dict[str, Any]]:
    """(success, result) of the expectation `type_` (a GX class name, with its `kwargs`) on
    the table whose parts, in row order, gave `parts` (at least one, none raised).

    Raises ValueError for an expectation type without a rule here (add one before using it),
    for parts that disagree on a column's dtype, and for values that cannot be compared (GX on
    the whole table would raise too)."""
    if not parts:
        raise ValueError(f"{type_}: no part results to combine")
    if len(parts) == 1:
        return parts[0].success, dict(parts[0].result)
    if type_ in TYPES and len({"element_count" in p.result for p in parts}) > 1:
        raise ValueError("the parts disagree on the column's dtype (object in some only)")
    if type_ in PER_ROW or (type_ in TYPES and "element_count" in parts[0].result):
        return _per_row(kwargs, [p.result for p in parts])
    if type_ in SCHEMA or type_ in TYPES:
        failed = [p for p in parts if not p.success]
        return not failed, dict((failed or parts)[0].result)
    if type_ in BOUNDED:
        observed = _observed(type_, parts)
        return _within(observed, kwargs), {"observed_value": observed}
    raise ValueError(f"no rule combines the parts' results of {type_}")


def _per_row(kwargs: Mapping[str, Any], results: list[Mapping[str, Any]]) -> tuple[bool, dict]:
    element = sum(int(r["element_count"]) for r in results)
    unexpected = sum(int(r["unexpected_count"]) for r in results)
    tracks_missing = "missing_count" in results[0]
    missing = sum(int(r.get("missing_count") or 0) for r in results) if tracks_missing else 0
    considered = element - missing
    mostly = kwargs.get("mostly", 1.0)
    success = considered == 0 or (considered - unexpected) / considered >= mostly
    total = unexpected / element * 100 if element else None
    nonmissing = (
        (unexpected / considered * 100 if considered else None) if tracks_missing else total
    )
    examples = [v for r in results for v in r.get("partial_unexpected_list", [])][:PARTIAL]
    out: dict[str, Any] = {
        "element_count": element,
        "unexpected_count": unexpected,
        "unexpected_percent": nonmissing,
        "partial_unexpected_list": examples,
    }
    if tracks_missing:
        out |= {
            "missing_count": missing,
            "missing_percent": missing / element * 100 if element else None,
            "unexpected_percent_total": total,
            "unexpected_percent_nonmissing": nonmissing,
        }
    try:
        out["partial_unexpected_counts"] = [
            {"value": v, "count": n}
            for v, n in sorted(Counter(examples).most_common(PARTIAL), key=lambda x: (-x[1], x[0]))
        ]
    except TypeError:  # as GX: unhashable values, or tied values of types that do not order
        out["partial_unexpected_counts"] = [
            {"error": "partial_exception_counts requires a hashable type"}
        ]
    return success, out


def _observed(type_: str, parts: Sequence[PartResult]) -> Any:
    values = [p.result.get("observed_value") for p in parts]
    if type_ == "ExpectTableRowCountToBeBetween":
        return sum(int(v or 0) for v in values)
    if type_ == "ExpectColumnMeanToBeBetween":
        counted = sum(p.count for p in parts)
        return sum(p.total for p in parts) / counted if counted else None
    seen: list[Any] = [v for v in values if not _missing(v)]  # an empty part's min is NaT or NaN
    if not seen:
        return None
    try:  # in the values' own order, as GX's min and max on the whole column
        return min(seen) if type_ == "ExpectColumnMinToBeBetween" else max(seen)
    except TypeError as err:
        raise ValueError(f"the parts' values do not compare: {err}") from None


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _within(observed: Any, kwargs: Mapping[str, Any]) -> bool:
    if _missing(observed):
        return False
    lo, hi = (_bound(kwargs.get(k), observed) for k in ("min_value", "max_value"))
    try:
        if lo is not None and (observed <= lo if kwargs.get("strict_min") else observed < lo):
            return False
        return hi is None or not (observed >= hi if kwargs.get("strict_max") else observed > hi)
    except TypeError as err:
        raise ValueError(f"the observed value does not compare with the bounds: {err}") from None


def _bound(bound: Any, observed: Any) -> Any:
    # As GX: a bound is read as a time only when the observed value is one (the suite writes
    # the window's bounds as ISO text); otherwise values compare as they are.
    if isinstance(bound, str) and isinstance(observed, dt.datetime | np.datetime64):
        return pd.Timestamp(bound)
    return bound
