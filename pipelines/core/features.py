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
    c = spec.contract
    ts_ms = to_ms(events[c.timestamp])
    out = {col: pd.to_numeric(events[col], errors="raise").to_numpy(np.float64) for col in c.numeric}
    hours = (ts_ms // _MS_PER_HOUR) % 24
    out["hour"] = hours.astype(np.float64)
    # 1970-01-01 was a Thursday: shift so Monday is 0, like pandas' dayofweek.
    out["day_of_week"] = ((ts_ms // (24 * _MS_PER_HOUR) + 3) % 7).astype(np.float64)
    if spec.has_history:
        out.update(_history(events, ts_ms, spec))
    frame = pd.DataFrame(out, index=events.index)
    for col in c.categorical:
        frame[col] = events[col].astype("string").to_numpy(dtype=object)
    return frame[spec.names]


def features_for(batch: pd.DataFrame, history: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Online path: features of `batch` rows given their entities' earlier stored events."""
    if not spec.has_history or history.empty:
        events = batch
    else:
        events = pd.concat([history[spec.history_columns], batch], ignore_index=True)
        events.index = np.r_[np.full(len(history), -1), np.asarray(batch.index)]
    feats = build_features(events, spec)
    feats = feats.iloc[len(events) - len(batch):]
    feats.index = batch.index
    return feats


def _history(events: pd.DataFrame, ts_ms: np.ndarray, spec: FeatureSpec) -> dict[str, np.ndarray]:
    c = spec.contract
    n = len(events)
    codes, _ = pd.factorize(events[c.entity], use_na_sentinel=True)
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
        amount = pd.to_numeric(events[c.amount], errors="raise").to_numpy(np.float64)[order]
        sums = _prefix_within_groups(amount, code_s)
        squares = _prefix_within_groups(amount * amount, code_s)

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
        values, _ = pd.factorize(events[col].to_numpy()[order], use_na_sentinel=True)
        first_seen = (
            pd.Series(ts_s).groupby([code_s, values], sort=False).transform("min").to_numpy()
        )
        res[f"hist_new_{col}"] = (first_seen >= ts_s).astype(np.float64)

    # Back from sorted order to the caller's row order.
    unsorted = {}
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    for name, arr in res.items():
        unsorted[name] = arr[inverse]
    return unsorted


def _prefix_within_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Inclusive running sums that restart at each group, so each group's arithmetic is its own."""
    return pd.Series(values).groupby(groups, sort=False).cumsum().to_numpy(np.float64)
