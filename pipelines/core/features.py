"""The one definition of the model's features, offline and online.

`build_features(events, spec)` computes, for every row of `events`, request-level features and
history features of its entity. A row at minute `m` sees its entity's events of *strictly earlier
minutes* (events of the same minute do not see each other); a window of `w` hours covers the
minutes from `m - 60 w` rounded down to the window's resolution (`core.history.resolution`: 1 h
in minutes, 24 h in quarter hours, 7 d in hours) up to `m`. Offline, `events` is the whole
dataset. Online, the service calls `online_features(batch, histories, spec)` with each entity's
bounded history from the online store (`core.history`: buckets aligned to those resolutions, the
totals of everything older): a bucket is a weighted row of the same computation, so the same
events give the same numbers, which is what the skew tests check.
`features_for(batch, earlier_events, spec)` is that path on pandas frames (tests and tools).

All arithmetic on an entity's history is done within that entity's group, in time order, so a
row's values do not depend on which other entities happen to be in the frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.config import Contract, Settings
from pipelines.core.history import (
    MS_PER_MINUTE,
    History,
    Plan,
    fold,
    is_late,
    plan,
    resolution,
    window_start,
)

_MS_PER_HOUR = 3_600_000
# Features derived from a record's own timestamp (int64 ms since the epoch, UTC) → float64.
REQUEST_FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hour": lambda ts_ms: ((ts_ms // _MS_PER_HOUR) % 24).astype(np.float64),
    # 1970-01-01 was a Thursday: shift so Monday is 0, like pandas' dayofweek.
    "day_of_week": lambda ts_ms: ((ts_ms // (24 * _MS_PER_HOUR) + 3) % 7).astype(np.float64),
}


@dataclass(frozen=True)
class FeatureSpec:
    """What the features are computed from: the dataset contract and the history windows (hours)."""

    contract: Contract
    windows_hours: tuple[int, ...] = (1, 24, 168)
    request: tuple[str, ...] = ("hour", "day_of_week")  # names in REQUEST_FEATURES

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureSpec:
        f = settings.features
        return cls(settings.contract, f.windows_hours, f.request)

    def __post_init__(self) -> None:
        unknown = [name for name in self.request if name not in REQUEST_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown request features {unknown}: known are {list(REQUEST_FEATURES)}"
            )

    @property
    def has_history(self) -> bool:
        return self.contract.entity is not None

    @property
    def entity(self) -> str:
        """The entity column (history features need one)."""
        if self.contract.entity is None:
            raise ValueError("history features are off: contract.entity is null")
        return self.contract.entity

    @property
    def categorical(self) -> list[str]:
        return list(self.contract.categorical)

    @property
    def history_names(self) -> list[str]:
        if not self.has_history:
            return []
        names = ["hist_n_prior", "hist_secs_since_prev"]
        names += [f"hist_n_{w}h" for w in self.windows_hours]
        if self.contract.amount:
            names += [f"hist_amount_sum_{w}h" for w in self.windows_hours]
            names += ["hist_amount_mean", "hist_amount_std", "hist_amount_ratio", "hist_amount_z"]
        names += [f"hist_new_{c}" for c in self.contract.novelty]
        return names

    @property
    def numeric(self) -> list[str]:
        return [*self.contract.numeric, *self.request, *self.history_names]

    @property
    def names(self) -> list[str]:
        """Model input columns, in a fixed order."""
        return [*self.numeric, *self.categorical]

    @property
    def history_columns(self) -> list[str]:
        """What the online store reads from each event to keep its history."""
        c = self.contract
        cols = [c.id, c.timestamp]
        if c.entity:
            cols.append(c.entity)
        if c.amount:
            cols.append(c.amount)
        return cols + [n for n in c.novelty if n not in cols]

    @functools.cached_property  # read for every card a store appends to
    def windows(self) -> Plan:
        """Each window in minutes with its resolution (`core.history.resolution`)."""
        return plan([60 * w for w in self.windows_hours])


def to_ms(ts: pd.Series) -> np.ndarray:
    """Naive-UTC timestamps as int64 milliseconds since the epoch."""
    # to_datetime on a column that is already datetime64 still samples it in Python (~1.5 ms)
    values = ts if pd.api.types.is_datetime64_any_dtype(ts.dtype) else pd.to_datetime(ts)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ms]").astype(np.int64)


def build_features(events: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features for every row of `events` (rows × `spec.names`), indexed like `events`."""
    cols = event_columns(events, spec)  # converted once, for both the history and the rest
    history = _history(_event_rows(cols, spec), spec) if spec.has_history else {}
    return pd.DataFrame(_assemble(cols, history, spec), index=events.index)


def features_for(batch: pd.DataFrame, earlier: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The online path on frames: features of `batch` rows given their entities' `earlier`
    events (`spec.history_columns`), folded into bounded histories as a store would."""
    cols = event_columns(batch, spec)
    histories = histories_of(earlier, spec) if spec.has_history else {}
    features, _ = online_features(cols, histories, spec)
    return pd.DataFrame(features, index=batch.index)


def histories_of(events: pd.DataFrame, spec: FeatureSpec) -> dict[str, History]:
    """Each entity's bounded history of `events` (`spec.history_columns`; what a store holds
    after appending them). Rows without an entity are not part of any history."""
    cols = event_columns(events, spec, history_only=True)
    out: dict[str, History] = {}
    entity = cols[spec.entity]
    for key, rows in pd.Series(np.arange(len(entity))).groupby(entity, sort=False):
        out[str(key)] = append_to(History(), {k: v[rows.to_numpy()] for k, v in cols.items()}, spec)
    return out


def append_to(history: History, batch: Mapping[str, np.ndarray], spec: FeatureSpec) -> History:
    """`history` with the events of `batch` (`event_columns` layout, one entity) folded in."""
    c = spec.contract
    amount = batch[c.amount] if c.amount else np.zeros(len(batch[c.timestamp]))
    values = {col: [v if isinstance(v, str) else None for v in batch[col]] for col in c.novelty}
    return fold(
        history,
        np.asarray(batch[c.timestamp], np.int64),
        np.asarray(amount, np.float64),
        values,
        spec.windows,
    )


def online_features(
    batch: Mapping[str, np.ndarray], histories: Mapping[str, History], spec: FeatureSpec
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The serving hot path on plain arrays (a pandas frame per batch costs more than the
    arithmetic): features of the `batch` rows (`event_columns` layout) given each entity's stored
    history (missing: a new entity). Returns `spec.names` → one array each in batch row order,
    and a mask of the rows whose history features could not be computed (events further behind
    their entity's newest event than `core.history.LATE_SLACK`: scored on request-level features,
    their history features missing)."""
    n = len(batch[spec.contract.timestamp])
    if not spec.has_history:
        return _assemble(batch, {}, spec), np.zeros(n, dtype=bool)
    if n == 1:  # most requests: about a tenth of the general path's cost (bench/features.py)
        entity = batch[spec.entity][0]
        mine = histories.get(entity) if isinstance(entity, str) else None
        minute = int(batch[spec.contract.timestamp][0]) // MS_PER_MINUTE
        if mine is not None and is_late(mine, minute):
            missing = {name: np.full(1, np.nan) for name in spec.history_names}
            return _assemble(batch, missing, spec), np.ones(1, dtype=bool)
        one = _history_of_one(batch, mine or History(), spec)
        return _assemble(batch, one, spec), np.zeros(1, dtype=bool)
    rows = _event_rows(batch, spec)
    entities = batch[spec.entity]
    known = [histories.get(e) if isinstance(e, str) else None for e in entities.tolist()]
    minutes = batch[spec.contract.timestamp] // MS_PER_MINUTE
    late = np.fromiter(
        (
            h is not None and is_late(h, int(m))
            for h, m in zip(known, minutes.tolist(), strict=True)
        ),
        bool,
        n,
    )
    stored = {e: h for e, h in zip(entities.tolist(), known, strict=True) if h is not None}
    buckets = _bucket_rows(stored, spec)
    joined = {k: np.concatenate([buckets[k], rows[k]]) for k in rows}
    history = _history(joined, spec, _base(stored, known, batch, spec), last=n)
    for name in history:
        history[name] = np.where(late, np.nan, history[name])
    return _assemble(batch, history, spec), late


def request_features(batch: Mapping[str, np.ndarray], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The features of the `batch` rows (`event_columns` layout) without any history: the
    request-level ones, every history feature missing (when the online store cannot answer)."""
    n = len(batch[spec.contract.timestamp])
    return _assemble(batch, {name: np.full(n, np.nan) for name in spec.history_names}, spec)


def _event_rows(cols: Mapping[str, np.ndarray], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Events as rows of the history computation: each counts once, with its amount."""
    c = spec.contract
    n = len(cols[c.timestamp])
    amount = np.asarray(cols[c.amount], np.float64) if c.amount else np.zeros(n)
    out = {
        "ts": np.asarray(cols[c.timestamp], np.int64),
        "minute": np.asarray(cols[c.timestamp], np.int64) // MS_PER_MINUTE,
        "entity": cols[spec.entity],
        "count": np.ones(n),
        "amount": amount,
        "square": amount * amount,
    }
    for col in c.novelty:
        out[f"novelty:{col}"] = cols[col]
    return out


def _bucket_rows(histories: Mapping[str, History], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Stored buckets as weighted rows: a bucket counts its events and carries their sums; its
    minute is its first, its timestamp its latest event's. Buckets carry no category value
    (novelty is looked up in the histories' first-seen minutes instead)."""
    parts = list(histories.items())
    entity = np.empty(sum(len(h.minute) for _, h in parts), dtype=object)
    start = 0
    for e, h in parts:
        entity[start : start + len(h.minute)] = e
        start += len(h.minute)

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([getattr(h, name) for _, h in parts]) if parts else np.zeros(0, dtype)

    out = {
        "ts": cat("last_ms", np.int64),
        "minute": cat("minute", np.int64),
        "entity": entity,
        "count": cat("count", np.float64),
        "amount": cat("amount", np.float64),
        "square": cat("square", np.float64),
    }
    for col in spec.contract.novelty:
        out[f"novelty:{col}"] = np.full(len(entity), None, dtype=object)
    return out


def _base(
    stored: Mapping[str, History],
    known: list[History | None],
    batch: Mapping[str, np.ndarray],
    spec: FeatureSpec,
) -> dict[str, np.ndarray]:
    """Per row of `_bucket_rows(stored)` followed by the batch rows (whose entities' histories
    are `known`, None for a new one), what its entity's folded events contribute, and for the
    batch rows whether each novelty value was seen in an earlier minute."""
    sizes = [len(h.minute) for h in stored.values()]
    own = [h if h is not None else History() for h in known]

    def per_row(name: str, dtype: type) -> np.ndarray:
        buckets: np.ndarray = np.repeat(
            np.array([getattr(h, name) for h in stored.values()], dtype), sizes
        )
        return np.concatenate([buckets, np.array([getattr(h, name) for h in own], dtype)])

    base = {
        "n": per_row("folded_n", np.float64),
        "sum": per_row("folded_sum", np.float64),
        "sq": per_row("folded_sq", np.float64),
        "last": per_row("folded_last_ms", np.int64),
    }
    minutes = (batch[spec.contract.timestamp] // MS_PER_MINUTE).tolist()
    for col in spec.contract.novelty:
        seen = [
            isinstance(v, str) and h.seen.get(col, {}).get(v, m) < m
            for h, v, m in zip(own, batch[col].tolist(), minutes, strict=True)
        ]
        base[f"seen:{col}"] = np.concatenate(
            [np.zeros(sum(sizes), dtype=bool), np.array(seen, bool)]
        )
    return base


def event_columns(
    events: pd.DataFrame, spec: FeatureSpec, history_only: bool = False
) -> dict[str, np.ndarray]:
    """What the features read from events, as arrays: the timestamp as int64 ms, numerics as
    float64, categorical, novelty and entity columns as objects. `history_only`: just what a
    history keeps (`spec.history_columns` but the id)."""
    c = spec.contract
    out = {c.timestamp: to_ms(events[c.timestamp])}
    numeric = ([c.amount] if c.amount else []) if history_only else list(c.numeric)
    text = [] if history_only else list(c.categorical)
    for col in dict.fromkeys(numeric):
        out[col] = pd.to_numeric(events[col], errors="raise").to_numpy(np.float64)
    for col in dict.fromkeys([*text, *c.novelty, *([c.entity] if c.entity else [])]):
        out[col] = events[col].astype("string").to_numpy(dtype=object)
    return out


def _assemble(
    events: Mapping[str, np.ndarray], history: dict[str, np.ndarray], spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Request-level features of `events` (`event_columns` layout) plus the history features,
    in `spec.names` order."""
    c = spec.contract
    ts_ms = events[c.timestamp]
    out = {col: events[col] for col in c.numeric}
    for name in spec.request:
        out[name] = REQUEST_FEATURES[name](ts_ms)
    out.update(history)
    for col in c.categorical:
        out[col] = events[col]
    return {name: out[name] for name in spec.names}


def _history(
    cols: Mapping[str, np.ndarray],
    spec: FeatureSpec,
    base: dict[str, np.ndarray] | None = None,
    last: int | None = None,
) -> dict[str, np.ndarray]:
    """The history features of every row (`_event_rows`' layout: a row counts `count` events with
    amounts summing to `amount` and squares to `square`, from `minute` on, the latest at `ts`).
    `base` (online): per row, what its entity's folded events contribute; without it the rows
    are the whole history. `last`: only the last `last` rows' features are computed and returned
    (online: the batch after its entities' stored buckets, which need running sums only)."""
    c = spec.contract
    ts_ms = np.asarray(cols["ts"], np.int64)
    minute = np.asarray(cols["minute"], np.int64)
    n = len(ts_ms)
    codes, _ = pd.factorize(cols["entity"], use_na_sentinel=True)
    order = np.lexsort((ts_ms, minute, codes))
    code_s, min_s, ts_s = codes[order], minute[order], ts_ms[order]

    # One sortable int64 key per row: entity-major, minute-minor. Searching it finds both the
    # entity's first row and the first row at or after any minute of that entity.
    m0 = int(min_s.min()) if n else 0
    span = (int(min_s.max()) - m0 + 1) if n else 1
    if n and (int(code_s.max()) + 2) * span >= 2**62:
        raise ValueError(
            "too many entities x time span for int64 history keys; split the data by time"
        )
    key = code_s.astype(np.int64) * span + (min_s - m0)
    group_start = np.searchsorted(key, code_s.astype(np.int64) * span, side="left")
    b = {k: v[order] for k, v in base.items()} if base is not None else None
    zeros = np.zeros(n)
    counts = _prefix_within_groups(
        np.asarray(cols["count"], np.float64)[order],
        group_start,
        b["n"] if b is not None else zeros,
    )
    # The sorted positions of the rows whose features are wanted: every running sum above
    # covers all rows, everything below is evaluated at these positions only.
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    at = inverse if last is None else inverse[n - last :]
    code_at, min_at, ts_at, first = code_s[at], min_s[at], ts_s[at], group_start[at]
    first_same = np.searchsorted(key, key[at], side="left")  # the row's minute: not seen by it

    def before(prefix: np.ndarray, j: np.ndarray, start: np.ndarray) -> np.ndarray:
        # Running sum of the group's values at sorted positions < j (`start` at its first).
        return np.where(j > first, prefix[np.maximum(j - 1, 0)], start)

    def starting(name: str) -> np.ndarray:
        return b[name][at] if b is not None else zeros[at]

    n0 = starting("n")
    n_prior = before(counts, first_same, n0)
    res: dict[str, np.ndarray] = {"hist_n_prior": n_prior}
    has_prev = n_prior > 0
    prev_ts = ts_s[np.maximum(first_same - 1, 0)]
    if b is not None:  # no earlier bucketed row: the previous event is the last folded one
        prev_ts = np.where(first_same > first, prev_ts, starting("last"))
    res["hist_secs_since_prev"] = np.where(has_prev, (ts_at - prev_ts) / 1000.0, np.nan)

    lefts = {}
    for w in spec.windows_hours:
        start = window_start(min_at, 60 * w, resolution(60 * w))
        target = code_at.astype(np.int64) * span + (start - m0)
        left = np.maximum(np.searchsorted(key, target, side="left"), first)
        lefts[w] = left
        res[f"hist_n_{w}h"] = n_prior - before(counts, left, n0)

    if c.amount:
        amount = np.asarray(cols["amount"], np.float64)[order]
        sum0, sq0 = starting("sum"), starting("sq")
        sums = _prefix_within_groups(amount, group_start, b["sum"] if b is not None else zeros)
        squares = _prefix_within_groups(
            np.asarray(cols["square"], np.float64)[order],
            group_start,
            b["sq"] if b is not None else zeros,
        )
        s_prior = before(sums, first_same, sum0)
        for w in spec.windows_hours:
            res[f"hist_amount_sum_{w}h"] = s_prior - before(sums, lefts[w], sum0)
        own = amount[at]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mean = np.where(has_prev, s_prior / n_prior, np.nan)
            var = (before(squares, first_same, sq0) - s_prior * mean) / (n_prior - 1)
            std = np.where(n_prior > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)
            res["hist_amount_mean"] = mean
            res["hist_amount_std"] = std
            # A ratio to an average of zero (two $0 card verifications) or to a vanishing one is
            # undefined: missing, which every model family handles, never an infinity.
            res["hist_amount_ratio"] = _finite_or_missing(own / mean)
            res["hist_amount_z"] = _finite_or_missing(np.where(std > 0, (own - mean) / std, np.nan))

    for col in c.novelty:
        values, _ = pd.factorize(
            np.asarray(cols[f"novelty:{col}"], dtype=object)[order], use_na_sentinel=True
        )
        # Rows are in (entity, minute) order, so the first row of each (entity, value) pair is
        # that value's first minute for the entity. A missing value is never "new".
        pair = code_s.astype(np.int64) * (int(values.max(initial=0)) + 2) + (values + 1)
        _, first_of_pair, which = np.unique(pair, return_index=True, return_inverse=True)
        new = (min_s[first_of_pair][which[at]] >= min_at) & (values[at] >= 0)
        if b is not None:
            new &= ~b[f"seen:{col}"][at]
        res[f"hist_new_{col}"] = new.astype(np.float64)
    return res


def _history_of_one(
    batch: Mapping[str, np.ndarray], history: History, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """`_history` for a batch of one record (`event_columns` layout) given its entity's stored
    `history`, without the sort and factorize a batch needs. The same sums in the same order
    (running sums from the folded totals, differences of them), so the numbers are bit-equal to
    the general path's (tests/unit/test_history.py checks it)."""
    c = spec.contract
    ts = int(batch[c.timestamp][0])
    minute = ts // MS_PER_MINUTE
    k = int(np.searchsorted(history.minute, minute, side="left"))  # buckets before the minute

    def running(values: np.ndarray, start: float) -> np.ndarray:
        # `_prefix_within_groups` on one group: `start` added to the first value, then cumsum.
        values = values[:k].astype(np.float64)
        if len(values):
            values[0] = start + values[0]
        return np.cumsum(values)

    def before(prefix: np.ndarray, j: int, start: float) -> float:
        return float(prefix[j - 1]) if j > 0 else start

    counts = running(history.count, history.folded_n)
    n_prior = before(counts, k, history.folded_n)
    res: dict[str, float] = {"hist_n_prior": n_prior}
    prev_ts = int(history.last_ms[k - 1]) if k > 0 else int(history.folded_last_ms)
    res["hist_secs_since_prev"] = (ts - prev_ts) / 1000.0 if n_prior > 0 else np.nan
    lefts = {}
    for w in spec.windows_hours:
        start = window_start(minute, 60 * w, resolution(60 * w))
        lefts[w] = int(np.searchsorted(history.minute[:k], start, side="left"))
        res[f"hist_n_{w}h"] = n_prior - before(counts, lefts[w], history.folded_n)
    if c.amount:
        amount = float(batch[c.amount][0])
        sums = running(history.amount, history.folded_sum)
        s_prior = before(sums, k, history.folded_sum)
        for w in spec.windows_hours:
            res[f"hist_amount_sum_{w}h"] = s_prior - before(sums, lefts[w], history.folded_sum)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mean = np.float64(s_prior) / n_prior if n_prior > 0 else np.nan
            squares = before(running(history.square, history.folded_sq), k, history.folded_sq)
            var = (np.float64(squares) - s_prior * mean) / np.float64(n_prior - 1)
            std = np.sqrt(max(var, 0.0)) if n_prior > 1 else np.nan
            res["hist_amount_mean"] = mean
            res["hist_amount_std"] = std
            res["hist_amount_ratio"] = np.float64(amount) / mean
            res["hist_amount_z"] = (amount - mean) / std if std > 0 else np.nan
    for col in c.novelty:
        value = batch[col][0]
        seen = isinstance(value, str) and history.seen.get(col, {}).get(value, minute) < minute
        res[f"hist_new_{col}"] = float(isinstance(value, str) and not seen)
    return {
        name: _finite_or_missing(np.array([value], np.float64))
        if name in ("hist_amount_ratio", "hist_amount_z")
        else np.array([value], np.float64)
        for name, value in res.items()
    }


def _finite_or_missing(values: np.ndarray) -> np.ndarray:
    """`values` with every ±inf (and NaN) as NaN: a quotient that is not a number is missing."""
    return np.where(np.isfinite(values), values, np.nan)


def _prefix_within_groups(
    values: np.ndarray, group_start: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Inclusive running sums that restart at each group (rows sorted by group) from the group's
    `start` value, summed within the group only, so a group's values never depend on the other
    groups in the frame."""
    n = len(values)
    starts = (
        np.flatnonzero(np.r_[True, group_start[1:] != group_start[:-1]]) if n else np.zeros(0, int)
    )
    values = values.copy()
    values[starts] = start[starts] + values[starts]  # 0.0 + x is x: no start changes nothing
    lengths = np.diff(np.r_[starts, n])
    if n and len(lengths) * int(lengths.max()) <= 4 * n:
        # Groups of similar size (a serving batch): one cumsum per row of a zero-padded grid.
        # An accumulate is sequential along its axis, so each row's sums are bit-equal to a
        # cumsum of that group alone, at a fraction of a loop's per-group call cost.
        row = np.repeat(np.arange(len(lengths)), lengths)
        col = np.arange(n) - np.repeat(starts, lengths)
        grid = np.zeros((len(lengths), int(lengths.max())))
        grid[row, col] = values
        return np.cumsum(grid, axis=1)[row, col]
    out = np.empty_like(values)
    bounds = [*starts.tolist(), n]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        np.cumsum(values[lo:hi], out=out[lo:hi])
    return out
