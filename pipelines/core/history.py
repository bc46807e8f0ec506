"""An entity's history in bounded form: what an online store keeps per card, and the pure fold
that keeps it (every store uses it; `core.features` reads it).

Each window of `w` minutes is computed at a *resolution* (`resolution`): at least 96 steps per
window, from the ladder 1, 5, 15, 60, 240, 1440 minutes (1 h: minutes, 24 h: quarter hours,
7 d: hours). A row at minute `m` sees its entity's events of the minutes from `m - w` rounded
down to the resolution up to `m` (excluded) - offline and online alike (core/features.py).

So a card's state is buckets of events, finer near its newest event and coarser further back,
each aligned to its resolution: events, sum of amounts, sum of squared amounts, the latest
timestamp (ms). Minute buckets cover the newest minutes (at least LATE_SLACK plus the windows at
minute resolution); then each resolution covers what its windows can reach from any event at
most LATE_SLACK behind the newest; everything older is folded into totals (`folded_*`) that
count in the card's overall statistics (number of earlier events, mean and spread of amounts,
time since the previous event) but in no window. For each novelty column, each value's first
minute. With the default windows that is at most about 400 buckets whatever the card's age or
burst rate (`max_buckets`): a read costs about the same for a card with 10 events and one with
100,000. Folding happens as events are appended: no maintenance pass ever runs over a store.

An event more than LATE_SLACK minutes behind its card's newest ("late") still joins the buckets
or totals, so later features stay exact; its own history features cannot be computed from them
(`is_late`), and the service scores it on request-level features and says so.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic_core

MS_PER_MINUTE = 60_000
# How far behind its card's newest event an event may arrive and still get exact features (minutes).
LATE_SLACK = 60
# Window resolutions (minutes), each a multiple of the previous, so that coarser buckets are
# unions of finer ones; a window gets the coarsest with at least STEPS_PER_WINDOW steps.
RESOLUTIONS = (1, 5, 15, 60, 240, 1440)
STEPS_PER_WINDOW = 96
_HEADER = struct.Struct("<4sIqddd")  # magic, buckets, folded last ms, n, sum, sq
_MAGIC = b"HST2"
_NEVER = np.iinfo(np.int64).min
_NEVER_INT = int(_NEVER)
# The most buckets `fold` takes one event into in plain Python: ~1 µs per bucket against ~65 µs
# of fixed numpy overhead on the array path; they cross near 70 buckets (bench/features.py).
SCALAR_FOLD_MAX_BUCKETS = 48

Plan = tuple[tuple[int, int], ...]  # (window minutes, resolution minutes), ascending


def resolution(window_minutes: int) -> int:
    """The resolution (minutes) of a window of `window_minutes`: the coarsest of RESOLUTIONS
    that still splits it into STEPS_PER_WINDOW steps."""
    fits = [r for r in RESOLUTIONS if window_minutes // r >= STEPS_PER_WINDOW]
    return fits[-1] if fits else 1


def plan(windows_minutes: Sequence[int]) -> Plan:
    """Each window (minutes) with its resolution, ascending."""
    return tuple((w, resolution(w)) for w in sorted(set(windows_minutes)))


def window_start(minute: Any, window: int, step: int) -> Any:
    """The first minute a window of `window` minutes at resolution `step` covers for rows at
    `minute` (int64 minutes, an array or one int): `minute - window` rounded down to a multiple
    of `step`."""
    return (minute - window) // step * step


@functools.lru_cache(maxsize=4096)  # a batch's cards share a few newest minutes
def levels(newest: int, windows: Plan) -> tuple[tuple[int, int], ...]:
    """Where each resolution holds the buckets of a history whose newest event is at minute
    `newest`: (lowest minute, resolution) from the finest (minutes, always) to the coarsest.
    Below the last lowest minute everything is folded.

    A bucket coarser than a window's resolution must lie before every start that window can
    have for an event at most LATE_SLACK behind `newest` (so each bucket is wholly inside or
    outside every window of every such event), and each level starts on a multiple of the next
    resolution (so coarsening always merges whole buckets)."""
    steps = sorted({1, *(r for _, r in windows)})
    out = []
    for k, step in enumerate(steps):
        # The earliest start of the longest window at this resolution (or the slack alone).
        reach = max([w for w, r in windows if r == step], default=0)
        earliest = (newest - LATE_SLACK - reach) // step * step
        coarser = steps[k + 1] if k + 1 < len(steps) else step
        out.append((earliest // coarser * coarser, step))
    return tuple(out)


def max_buckets(windows: Plan) -> int:
    """The most buckets a history can hold (a card with an event every minute)."""
    newest = 10**7
    bounds = levels(newest, windows)
    total, upper = 0, newest + 1
    for lowest, step in bounds:
        total += -(-(upper - lowest) // step)
        upper = lowest
    return total


@dataclass
class History:
    """One entity's bounded history (see the module docstring). Arrays are aligned, one entry
    per bucket, sorted: `minute` (int64, the bucket's first minute since the epoch), `count`,
    `amount` and `square` (float64: events, their amounts' sum and squares' sum), `last_ms`
    (int64, the bucket's latest event)."""

    minute: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    amount: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    square: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    last_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    folded_n: float = 0.0
    folded_sum: float = 0.0
    folded_sq: float = 0.0
    folded_last_ms: int = int(_NEVER)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> value -> first minute

    @property
    def events(self) -> float:
        """Every event the history holds, bucketed or folded."""
        return float(self.folded_n + self.count.sum())


def is_late(history: History, minute: int) -> bool:
    """Whether an event at `minute` is too far behind the history for exact features (more than
    LATE_SLACK minutes before its newest event)."""
    return bool(len(history.minute)) and minute < int(history.minute[-1]) - LATE_SLACK


def fold(
    history: History,
    ts_ms: np.ndarray,
    amount: np.ndarray,
    values: Mapping[str, Sequence[str | None]],
    windows: Plan,
) -> History:
    """`history` with events added: `ts_ms` (int64 ms), `amount` (float64; zeros without an
    amount column), per novelty column its `values` (None: missing); then every bucket moved to
    the resolution of the level its minute falls in (`levels`), and what is older than every
    level folded into the totals. Pure: returns a new History; the order events arrive in does
    not change the result.

    One event into at most SCALAR_FOLD_MAX_BUCKETS buckets (what a request appends to most cards)
    takes a plain-Python path with the same arithmetic in the same order, so the same floats
    (`tests/unit/test_history.py` holds the two paths bit-equal)."""
    if len(ts_ms) == 1 and len(history.minute) <= SCALAR_FOLD_MAX_BUCKETS:
        return _fold_one(
            history,
            int(ts_ms[0]),
            float(amount[0]),
            {col: vals[0] for col, vals in values.items()},
            windows,
        )
    return _fold_arrays(history, ts_ms, amount, values, windows)


def _fold_arrays(
    history: History,
    ts_ms: np.ndarray,
    amount: np.ndarray,
    values: Mapping[str, Sequence[str | None]],
    windows: Plan,
) -> History:
    """`fold` on arrays, any number of events and buckets."""
    minutes = np.concatenate([history.minute, ts_ms // MS_PER_MINUTE])
    if not len(minutes):
        return history
    newest = int(minutes.max())
    start = minutes.copy()
    old = np.ones(len(minutes), dtype=bool)
    for lowest, step in levels(newest, windows):  # finest first: a minute takes the first fit
        here = old & (minutes >= lowest)
        start[here] = minutes[here] // step * step
        old &= ~here
    keys, where = np.unique(np.where(old, _NEVER, start), return_inverse=True)
    size = len(keys)
    count = np.bincount(where, np.concatenate([history.count, np.ones(len(ts_ms))]), size)
    total = np.bincount(where, np.concatenate([history.amount, amount]), size)
    square = np.bincount(where, np.concatenate([history.square, amount * amount]), size)
    latest = np.full(size, _NEVER, np.int64)
    np.maximum.at(latest, where, np.concatenate([history.last_ms, ts_ms]))
    folded = keys == _NEVER  # sorts first: at most one such key
    out = History(
        minute=keys[~folded],
        count=count[~folded],
        amount=total[~folded],
        square=square[~folded],
        last_ms=latest[~folded],
        folded_n=history.folded_n + float(count[folded].sum()),
        folded_sum=history.folded_sum + float(total[folded].sum()),
        folded_sq=history.folded_sq + float(square[folded].sum()),
        folded_last_ms=max(history.folded_last_ms, int(latest[folded].max()))
        if folded.any()
        else history.folded_last_ms,
        seen={c: dict(v) for c, v in history.seen.items()},
    )
    _note_seen(out.seen, values, (ts_ms // MS_PER_MINUTE).tolist())
    return out


def _fold_one(
    history: History, ts_ms: int, amount: float, values: Mapping[str, str | None], windows: Plan
) -> History:
    """`fold` of one event, in plain Python: the same buckets in the same order, each sum started
    from 0.0 and added to in that order as `np.bincount` does."""
    minute = ts_ms // MS_PER_MINUTE
    minutes = [*history.minute.tolist(), minute]
    bounds = levels(max(minutes), windows)
    sums: dict[int, list] = {}  # bucket key -> [count, amount, square, latest ms]
    for m, n, a, sq, last in zip(
        minutes,
        [*history.count.tolist(), 1.0],
        [*history.amount.tolist(), amount],
        [*history.square.tolist(), amount * amount],
        [*history.last_ms.tolist(), ts_ms],
        strict=True,
    ):
        key = _NEVER_INT
        for lowest, step in bounds:  # finest first: a minute takes the first fit
            if m >= lowest:
                key = m // step * step
                break
        acc = sums.get(key)
        if acc is None:
            sums[key] = [0.0 + n, 0.0 + a, 0.0 + sq, max(_NEVER_INT, last)]
        else:
            acc[0] += n
            acc[1] += a
            acc[2] += sq
            acc[3] = max(acc[3], last)
    folded = sums.pop(_NEVER_INT, None)
    keys = sorted(sums)
    out = History(
        minute=np.array(keys, np.int64),
        count=np.array([sums[k][0] for k in keys], np.float64),
        amount=np.array([sums[k][1] for k in keys], np.float64),
        square=np.array([sums[k][2] for k in keys], np.float64),
        last_ms=np.array([sums[k][3] for k in keys], np.int64),
        folded_n=history.folded_n + (folded[0] if folded else 0.0),
        folded_sum=history.folded_sum + (folded[1] if folded else 0.0),
        folded_sq=history.folded_sq + (folded[2] if folded else 0.0),
        folded_last_ms=max(history.folded_last_ms, folded[3]) if folded else history.folded_last_ms,
        seen={c: dict(v) for c, v in history.seen.items()},
    )
    _note_seen(out.seen, {col: [v] for col, v in values.items()}, [minute])
    return out


def _note_seen(
    seen: dict[str, dict[str, int]],
    values: Mapping[str, Sequence[str | None]],
    minutes: Sequence[int],
) -> None:
    """Record in `seen` each value's first minute (`values`: per column, one per event)."""
    for col, vals in values.items():
        first = seen.setdefault(col, {})
        for value, minute in zip(vals, minutes, strict=True):
            if value is not None and (value not in first or minute < first[value]):
                first[value] = int(minute)


def to_bytes(history: History) -> bytes:
    """A compact, self-describing encoding: a header, the five bucket arrays as little-endian
    8-byte values one after the other, then JSON for the seen values."""
    head = _HEADER.pack(
        _MAGIC,
        len(history.minute),
        int(history.folded_last_ms),
        history.folded_n,
        history.folded_sum,
        history.folded_sq,
    )
    # One buffer for the five arrays: the int64 ones travel as their bits (a view, no cast).
    arrays = np.concatenate(
        [
            np.asarray(history.minute, "<i8").view("<f8"),
            np.asarray(history.count, "<f8"),
            np.asarray(history.amount, "<f8"),
            np.asarray(history.square, "<f8"),
            np.asarray(history.last_ms, "<i8").view("<f8"),
        ]
    )
    # pydantic-core's JSON at a sixth of `json.dumps`' cost, on every append: the same text for
    # ASCII, other text as UTF-8 instead of escapes (both decode either way). Text with a lone
    # surrogate raises ValueError (json.dumps escaped it): none gets here, requests refuse it.
    return head + arrays.tobytes() + pydantic_core.to_json(history.seen)


def from_bytes(data: bytes) -> History:
    """`to_bytes`' inverse. Its arrays are read-only views of `data` (a history is never
    changed in place: `fold` returns a new one). Raises ValueError on anything else."""
    if len(data) < _HEADER.size or data[:4] != _MAGIC:
        raise ValueError("not an encoded history")
    magic, n, last, folded_n, folded_sum, folded_sq = _HEADER.unpack_from(data)
    end = _HEADER.size + 40 * n
    if len(data) < end:
        raise ValueError(f"an encoded history of {n} buckets needs {end} bytes, not {len(data)}")
    arrays = np.frombuffer(data, "<f8", 5 * n, _HEADER.size).reshape(5, n)
    return History(
        minute=arrays[0].view("<i8"),
        count=arrays[1],
        amount=arrays[2],
        square=arrays[3],
        last_ms=arrays[4].view("<i8"),
        folded_n=folded_n,
        folded_sum=folded_sum,
        folded_sq=folded_sq,
        folded_last_ms=last,
        seen=pydantic_core.from_json(data[end:]),
    )
