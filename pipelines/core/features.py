"""The one definition of the model's features, offline and online.

`build_features(events, spec)` computes, for every row of `events`, request-level features and
history features of its entity that use only *strictly earlier* events of that entity (by
millisecond timestamp; events at the same millisecond do not see each other). Offline, `events`
is the whole dataset. Online, the service calls `online_features(batch, past, spec, folded)`:
the same computation on plain arrays, over the entity's stored events followed by the batch,
optionally continuing from a store's per-entity summary of events older than the longest window
(`Folded`), so a long history is not re-read per request. `features_for(batch, history, spec)`
is that path on pandas frames (tests and tools). The same events give the same numbers, which is
what the skew test checks.

All arithmetic on an entity's history is done within that entity's group, in time order, so a
row's values do not depend on which other entities happen to be in the frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.config import Contract, Settings

_MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class FeatureSpec:
    """What the features are computed from: the dataset contract and the history windows (hours)."""

    contract: Contract
    windows_hours: tuple[int, ...] = (1, 24, 168)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureSpec:
        return cls(settings.contract, settings.features.windows_hours)

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
        return [*self.contract.numeric, "hour", "day_of_week", *self.history_names]

    @property
    def names(self) -> list[str]:
        """Model input columns, in a fixed order."""
        return [*self.numeric, *self.categorical]

    @property
    def history_columns(self) -> list[str]:
        """What the online store must keep per event to recompute history features."""
        c = self.contract
        cols = [c.id, c.timestamp]
        if c.entity:
            cols.append(c.entity)
        if c.amount:
            cols.append(c.amount)
        return cols + [n for n in c.novelty if n not in cols]


def to_ms(ts: pd.Series) -> np.ndarray:
    """Naive-UTC timestamps as int64 milliseconds since the epoch."""
    # to_datetime on a column that is already datetime64 still samples it in Python (~1.5 ms)
    values = ts if pd.api.types.is_datetime64_any_dtype(ts.dtype) else pd.to_datetime(ts)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ms]").astype(np.int64)


def build_features(events: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features for every row of `events`, indexed like `events`."""
    cols = event_columns(events, spec)  # converted once, for both the history and the rest
    history = _history(_batch_history_arrays(cols, spec), spec) if spec.has_history else {}
    return pd.DataFrame(_assemble(cols, history, spec), index=events.index)


def features_for(batch: pd.DataFrame, history: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Online path: features of `batch` rows given their entities' earlier stored events.

    The history features are computed over the stored events followed by the batch, exactly as
    `build_features` computes them over the whole dataset, and only the batch's rows are kept.
    """
    past = history_arrays(history, spec) if spec.has_history and len(history) else None
    return pd.DataFrame(online_features(event_columns(batch, spec), past, spec), index=batch.index)


@dataclass(frozen=True)
class Coded:
    """A string column as codes into `levels` (NaN: missing): the online store's compact form.
    History features only compare these values for equality, so codes give the same numbers
    without a Python object per stored value."""

    codes: np.ndarray  # float64
    levels: list[str]

    def __len__(self) -> int:
        return len(self.codes)

    def extended(self, values: np.ndarray) -> Coded:
        """These codes followed by `values` (strings or missing) encoded with the same levels."""
        index = {v: float(i) for i, v in enumerate(self.levels)}
        new = np.fromiter(
            (
                index.setdefault(v, float(len(index))) if isinstance(v, str) else np.nan
                for v in values
            ),
            np.float64,
            len(values),
        )
        return Coded(np.concatenate([self.codes, new]), list(index))


@dataclass(frozen=True)
class Folded:
    """What an online store folded away per entity: all its events before a cutoff, summarised.
    Its sums must be running sums in time order (as `build_features` adds them), so features
    that continue them equal the offline ones."""

    entities: list[str]
    n: np.ndarray  # events folded
    sum: np.ndarray  # of the amounts (zeros without contract.amount)
    sq: np.ndarray  # of the squared amounts
    last: np.ndarray  # int64 ms of the latest folded event
    seen: dict[str, list[frozenset[str]]]  # novelty column → per entity, the values folded


Past = Mapping[str, "np.ndarray | Coded"]


def online_features(
    batch: dict[str, np.ndarray], past: Past | None, spec: FeatureSpec, folded: Folded | None = None
) -> dict[str, np.ndarray]:
    """`features_for` on plain arrays, the serving hot path (a pandas frame per batch costs more
    than the arithmetic). `batch` is `event_columns`' layout, `past` is `history_arrays`' one
    (its string columns may be `Coded`), or None: no stored events. Returns `spec.names` → one
    array each, in batch row order.

    With `folded`, `past` holds for its entities only the events from the cutoff on, and every
    batch row of such an entity must be at least the longest window after the cutoff (the
    store reads full histories otherwise): the windows then see only unfolded events, and the
    counts, sums and novelty continue from the summary."""
    if not spec.has_history:
        return _assemble(batch, {}, spec)
    arrays: dict[str, np.ndarray | Coded] = dict(_batch_history_arrays(batch, spec))
    if folded is not None:
        start = past["entity"] if past is not None and len(past["ts"]) else Coded(np.zeros(0), [])
        if not isinstance(start, Coded):
            raise TypeError("folded history needs the store's coded entities")
        arrays["entity"] = start.extended(batch[spec.entity])
    if past is not None and len(past["ts"]):
        arrays = {k: _join(past[k], v) for k, v in arrays.items()}
    cols = {k: v.codes if isinstance(v, Coded) else v for k, v in arrays.items()}
    n = len(batch[spec.contract.timestamp])
    base = _base(arrays["entity"], batch, folded, spec) if folded is not None else None
    history = {k: v[len(v) - n :] for k, v in _history(cols, spec, base).items()}
    return _assemble(batch, history, spec)


def _join(past: np.ndarray | Coded, batch: np.ndarray | Coded) -> np.ndarray | Coded:
    if isinstance(batch, Coded):  # the entity column, already joined
        return batch
    return past.extended(batch) if isinstance(past, Coded) else np.concatenate([past, batch])


def _base(
    entity: np.ndarray | Coded, batch: dict[str, np.ndarray], folded: Folded, spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Per row, its entity's folded summary (zeros for entities without one). Novelty is only
    looked up for the batch rows: the stored rows' own features are not kept."""
    assert isinstance(entity, Coded)
    where = {e: i for i, e in enumerate(folded.entities)}
    slot = np.array([where.get(e, -1) for e in entity.levels], dtype=np.int64)
    known = ~np.isnan(entity.codes)  # a missing entity has no summary
    row = np.full(len(entity.codes), -1, dtype=np.int64)
    row[known] = slot[entity.codes[known].astype(np.int64)]
    has = row >= 0
    pick = np.maximum(row, 0)

    def take(values: np.ndarray, empty: float | int) -> np.ndarray:
        return np.where(has, values[pick] if len(values) else empty, empty)

    base = {
        "n": take(folded.n, 0.0),
        "sum": take(folded.sum, 0.0),
        "sq": take(folded.sq, 0.0),
        "last": take(folded.last, 0),
    }
    total, n = len(row), len(batch[spec.contract.timestamp])
    for col in spec.contract.novelty:
        seen = np.zeros(total, dtype=bool)
        sets = folded.seen[col]
        seen[total - n :] = [
            r >= 0 and v in sets[r]
            for r, v in zip(row[total - n :].tolist(), batch[col], strict=True)
        ]
        base[f"seen:{col}"] = seen
    return base


def event_columns(events: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """What the features read from events, as arrays: the timestamp as int64 ms, numerics as
    float64, categorical and novelty columns as objects, the entity as objects."""
    c = spec.contract
    out = {c.timestamp: to_ms(events[c.timestamp])}
    for col in c.numeric:
        out[col] = pd.to_numeric(events[col], errors="raise").to_numpy(np.float64)
    for col in dict.fromkeys([*c.categorical, *c.novelty, *([c.entity] if c.entity else [])]):
        out[col] = events[col].astype("string").to_numpy(dtype=object)
    return out


def history_arrays(events: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The columns history features read, as plain arrays (the online store's output layout):
    "ts" int64 ms, "entity" and "novelty:<col>" objects, "amount" float64."""
    c = spec.contract
    out = {"ts": to_ms(events[c.timestamp]), "entity": events[c.entity].to_numpy(dtype=object)}
    if c.amount:
        out["amount"] = pd.to_numeric(events[c.amount], errors="raise").to_numpy(np.float64)
    for col in c.novelty:
        out[f"novelty:{col}"] = events[col].to_numpy(dtype=object)
    return out


def _batch_history_arrays(batch: dict[str, np.ndarray], spec: FeatureSpec) -> dict[str, np.ndarray]:
    c = spec.contract
    out = {"ts": batch[c.timestamp], "entity": batch[spec.entity]}
    if c.amount:
        out["amount"] = batch[c.amount]
    for col in c.novelty:
        out[f"novelty:{col}"] = batch[col]
    return out


def _assemble(
    events: dict[str, np.ndarray], history: dict[str, np.ndarray], spec: FeatureSpec
) -> dict[str, np.ndarray]:
    """Request-level features of `events` (`event_columns` layout) plus the history features,
    in `spec.names` order."""
    c = spec.contract
    ts_ms = events[c.timestamp]
    out = {col: events[col] for col in c.numeric}
    out["hour"] = ((ts_ms // _MS_PER_HOUR) % 24).astype(np.float64)
    # 1970-01-01 was a Thursday: shift so Monday is 0, like pandas' dayofweek.
    out["day_of_week"] = ((ts_ms // (24 * _MS_PER_HOUR) + 3) % 7).astype(np.float64)
    out.update(history)
    for col in c.categorical:
        out[col] = events[col]
    return {name: out[name] for name in spec.names}


def _history(
    cols: dict[str, np.ndarray], spec: FeatureSpec, base: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The history features of every row. `base` (online, see `online_features`): per row, what
    its entity's folded events contribute; without it the rows are the whole history."""
    c = spec.contract
    ts_ms = cols["ts"]
    n = len(ts_ms)
    codes, _ = pd.factorize(cols["entity"], use_na_sentinel=True)
    order = np.lexsort((ts_ms, codes))
    code_s, ts_s = codes[order], ts_ms[order]

    # One sortable int64 key per event: entity-major, time-minor. Searching it finds both the
    # entity's first event and the first event at or after any instant of that entity.
    t0 = int(ts_s.min()) if n else 0
    span = (int(ts_s.max()) - t0 + 1) if n else 1
    if n and (int(code_s.max()) + 2) * span >= 2**62:
        raise ValueError(
            "too many entities x time span for int64 history keys; split the data by time"
        )
    key = code_s.astype(np.int64) * span + (ts_s - t0)
    group_start = np.searchsorted(key, code_s.astype(np.int64) * span, side="left")
    first_same_ms = np.searchsorted(key, key, side="left")
    n_prior = first_same_ms - group_start
    b = {k: v[order] for k, v in base.items()} if base is not None else None
    if b is not None:
        n_prior = n_prior + b["n"].astype(np.int64)

    res: dict[str, np.ndarray] = {"hist_n_prior": n_prior.astype(np.float64)}
    has_prev = n_prior > 0
    prev_ts = ts_s[np.maximum(first_same_ms - 1, 0)]
    if b is not None:  # no earlier unfolded event: the previous one is the last folded
        prev_ts = np.where(first_same_ms > group_start, prev_ts, b["last"])
    res["hist_secs_since_prev"] = np.where(has_prev, (ts_s - prev_ts) / 1000.0, np.nan)

    lefts = {}
    for w in spec.windows_hours:
        left = np.maximum(np.searchsorted(key, key - w * _MS_PER_HOUR, side="left"), group_start)
        lefts[w] = left
        res[f"hist_n_{w}h"] = (first_same_ms - left).astype(np.float64)

    if c.amount:
        amount = cols["amount"][order]
        # Running sums continue from the folded ones, in the same order of additions as offline.
        sum0 = b["sum"] if b is not None else np.zeros(n)
        sq0 = b["sq"] if b is not None else np.zeros(n)
        sums = _prefix_within_groups(amount, group_start, sum0)
        squares = _prefix_within_groups(amount * amount, group_start, sq0)

        def before(prefix: np.ndarray, j: np.ndarray, start: np.ndarray) -> np.ndarray:
            # Running sum of the group's values at sorted positions < j (`start` at its first).
            return np.where(j > group_start, prefix[np.maximum(j - 1, 0)], start)

        s_prior = before(sums, first_same_ms, sum0)
        for w in spec.windows_hours:
            res[f"hist_amount_sum_{w}h"] = s_prior - before(sums, lefts[w], sum0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mean = np.where(has_prev, s_prior / n_prior, np.nan)
            var = (before(squares, first_same_ms, sq0) - s_prior * mean) / (n_prior - 1)
            std = np.where(n_prior > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)
            res["hist_amount_mean"] = mean
            res["hist_amount_std"] = std
            # A ratio to an average of zero (two $0 card verifications) or to a vanishing one is
            # undefined: missing, which every model family handles, never an infinity.
            res["hist_amount_ratio"] = _finite_or_missing(amount / mean)
            res["hist_amount_z"] = _finite_or_missing(
                np.where(std > 0, (amount - mean) / std, np.nan)
            )

    for col in c.novelty:
        values, _ = pd.factorize(cols[f"novelty:{col}"][order], use_na_sentinel=True)
        # Rows are in (entity, time) order, so the first row of each (entity, value) pair is
        # that value's first appearance for the entity. A missing value is never "new".
        pair = code_s.astype(np.int64) * (int(values.max(initial=0)) + 2) + (values + 1)
        _, first, which = np.unique(pair, return_index=True, return_inverse=True)
        first_seen = ts_s[first][which]
        new = (first_seen >= ts_s) & (values >= 0)
        if b is not None:
            new &= ~b[f"seen:{col}"]
        res[f"hist_new_{col}"] = new.astype(np.float64)

    # Back from sorted order to the caller's row order.
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return {name: arr[inverse] for name, arr in res.items()}


def _finite_or_missing(values: np.ndarray) -> np.ndarray:
    """`values` with every ±inf (and NaN) as NaN: a quotient that is not a number is missing."""
    return np.where(np.isfinite(values), values, np.nan)


def _prefix_within_groups(
    values: np.ndarray, group_start: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Inclusive running sums that restart at each group (rows sorted by group) from the group's
    `start` value, summed within the group only, so a group's values never depend on the other
    groups in the frame."""
    out = np.empty_like(values)
    starts = (
        np.flatnonzero(np.r_[True, group_start[1:] != group_start[:-1]])
        if len(values)
        else np.zeros(0, int)
    )
    values = values.copy()
    values[starts] = start[starts] + values[starts]  # 0.0 + x is x: no start changes nothing
    bounds = [*starts.tolist(), len(values)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        np.cumsum(values[lo:hi], out=out[lo:hi])
    return out
