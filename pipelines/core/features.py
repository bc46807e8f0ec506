"""The one definition of the model's features, offline and online.

`build_features(events, spec)` computes, for every row of `events`, request-level features and
history features of its entity that use only *strictly earlier* events of that entity (by
millisecond timestamp; events at the same millisecond do not see each other). Offline, `events`
is the whole dataset. Online, the service calls `features_for(batch, history, spec)` with the
entity's stored events as history: the same function over the same events gives the same
numbers, which is what the skew test checks.

All arithmetic on an entity's history is done within that entity's group, in time order, so a
row's values do not depend on which other entities happen to be in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.config import Contract, Settings

_MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class FeatureSpec:
    contract: Contract
    windows_hours: tuple[int, ...] = (1, 24, 168)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureSpec:
        return cls(settings.contract, settings.features.windows_hours)

    @property
    def has_history(self) -> bool:
        return self.contract.entity is not None

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
    history = _history(_history_arrays(events, spec), spec) if spec.has_history else {}
    return _assemble(events, history, spec)


def features_for(batch: pd.DataFrame, history: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Online path: features of `batch` rows given their entities' earlier stored events.

    The history features are computed over the stored events followed by the batch, exactly as
    `build_features` computes them over the whole dataset, and only the batch's rows are kept.
    Columns travel as numpy arrays: a pandas concat per batch costs more than the arithmetic.
    """
    if not spec.has_history:
        return _assemble(batch, {}, spec)
    arrays = _history_arrays(batch, spec)
    if len(history):
        past = _history_arrays(history, spec)
        arrays = {k: np.concatenate([past[k], arrays[k]]) for k in arrays}
    n = len(batch)
    feats = {k: v[len(v) - n:] for k, v in _history(arrays, spec).items()}
    return _assemble(batch, feats, spec)


def _history_arrays(events: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The columns history features read, as plain arrays."""
    c = spec.contract
    out = {"ts": to_ms(events[c.timestamp]), "entity": events[c.entity].to_numpy(dtype=object)}
    if c.amount:
        out["amount"] = pd.to_numeric(events[c.amount], errors="raise").to_numpy(np.float64)
    for col in c.novelty:
        out[f"novelty:{col}"] = events[col].to_numpy(dtype=object)
    return out


def _assemble(events: pd.DataFrame, history: dict[str, np.ndarray], spec: FeatureSpec) -> pd.DataFrame:
    """Request-level features of `events` plus the history features, in `spec.names` order."""
    c = spec.contract
    ts_ms = to_ms(events[c.timestamp])
    out = {col: pd.to_numeric(events[col], errors="raise").to_numpy(np.float64) for col in c.numeric}
    out["hour"] = ((ts_ms // _MS_PER_HOUR) % 24).astype(np.float64)
    # 1970-01-01 was a Thursday: shift so Monday is 0, like pandas' dayofweek.
    out["day_of_week"] = ((ts_ms // (24 * _MS_PER_HOUR) + 3) % 7).astype(np.float64)
    out.update(history)
    for col in c.categorical:
        out[col] = events[col].astype("string").to_numpy(dtype=object)
    return pd.DataFrame({name: out[name] for name in spec.names}, index=events.index)


def _history(cols: dict[str, np.ndarray], spec: FeatureSpec) -> dict[str, np.ndarray]:
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
        raise ValueError("too many entities x time span for int64 history keys; split the data by time")
    key = code_s.astype(np.int64) * span + (ts_s - t0)
    group_start = np.searchsorted(key, code_s.astype(np.int64) * span, side="left")
    first_same_ms = np.searchsorted(key, key, side="left")
    n_prior = first_same_ms - group_start

    res: dict[str, np.ndarray] = {"hist_n_prior": n_prior.astype(np.float64)}
    has_prev = n_prior > 0
    prev_ts = ts_s[np.maximum(first_same_ms - 1, 0)]
    res["hist_secs_since_prev"] = np.where(has_prev, (ts_s - prev_ts) / 1000.0, np.nan)

    lefts = {}
    for w in spec.windows_hours:
        left = np.maximum(np.searchsorted(key, key - w * _MS_PER_HOUR, side="left"), group_start)
        lefts[w] = left
        res[f"hist_n_{w}h"] = (first_same_ms - left).astype(np.float64)

    if c.amount:
        amount = cols["amount"][order]
        sums = _prefix_within_groups(amount, group_start)
        squares = _prefix_within_groups(amount * amount, group_start)

        def before(prefix: np.ndarray, j: np.ndarray) -> np.ndarray:
            # Sum of the group's values at sorted positions < j (0 at the group's start).
            return np.where(j > group_start, prefix[np.maximum(j - 1, 0)], 0.0)

        s_prior = before(sums, first_same_ms)
        for w in spec.windows_hours:
            res[f"hist_amount_sum_{w}h"] = s_prior - before(sums, lefts[w])
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(has_prev, s_prior / n_prior, np.nan)
            var = (before(squares, first_same_ms) - s_prior * mean) / (n_prior - 1)
            std = np.where(n_prior > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)
            res["hist_amount_mean"] = mean
            res["hist_amount_std"] = std
            res["hist_amount_ratio"] = amount / mean
            res["hist_amount_z"] = np.where(std > 0, (amount - mean) / std, np.nan)

    for col in c.novelty:
        values, _ = pd.factorize(cols[f"novelty:{col}"][order], use_na_sentinel=True)
        # Rows are in (entity, time) order, so the first row of each (entity, value) pair is
        # that value's first appearance for the entity. A missing value is never "new".
        pair = code_s.astype(np.int64) * (int(values.max(initial=0)) + 2) + (values + 1)
        _, first, which = np.unique(pair, return_index=True, return_inverse=True)
        first_seen = ts_s[first][which]
        res[f"hist_new_{col}"] = ((first_seen >= ts_s) & (values >= 0)).astype(np.float64)

    # Back from sorted order to the caller's row order.
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return {name: arr[inverse] for name, arr in res.items()}


def _prefix_within_groups(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Inclusive running sums that restart at each group (rows sorted by group), summed within
    the group only, so a group's values never depend on the other groups in the frame."""
    out = np.empty_like(values)
    starts = np.flatnonzero(np.r_[True, group_start[1:] != group_start[:-1]]) if len(values) else np.zeros(0, int)
    bounds = [*starts.tolist(), len(values)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        np.cumsum(values[lo:hi], out=out[lo:hi])
    return out
