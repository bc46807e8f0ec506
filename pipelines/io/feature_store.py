"""The online feature store: each entity's bounded history (`core.history.History`), kept by
folding every appended event in as it arrives, behind one interface and one factory.

    open_store(url, spec)   a path, or sqlite:///abs/path   → SQLiteStore (io/sqlite_store.py),
                                                              the processes of one host
                            redis://[:password@]host:port/db → RedisStore (io/redis_store.py),
                            [?prefix=name]                     every replica of every host

A store only keeps and returns state: `histories(entities)` reads a batch's entities in one round
trip; `append(columns)` folds a batch of events in atomically (the fold is `core.history.fold`,
pure and the same for every store and for the offline path); an id already appended is skipped,
so a retried request never counts twice. Ids are remembered for ID_RETENTION_MINUTES. `seed`
replaces the whole content at once: readers see the old content or the new, never a mix.

A store that cannot be reached, or does not answer within its timeout, raises StoreUnavailable
from `histories` and `append`: the service then scores on request-level features and replays
the events later (serving/history_source.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from pipelines.core.features import FeatureSpec, event_columns, histories_of
from pipelines.core.history import MS_PER_MINUTE, History

# How long after its append an id is remembered, so that its retry is skipped. Retries come
# within seconds; the service's replay after a store outage within hours. The bound keeps the
# ids a store holds proportional to a day of traffic, not to the history. (An append whose
# answer was lost, replayed after more than this, would count twice: an outage that long calls
# for `materialize --force` after the next ingest anyway.)
ID_RETENTION_MINUTES = 24 * 60


class StoreUnavailable(RuntimeError):
    """The store could not be reached or did not answer in time (the cause is chained)."""


class OnlineStore(Protocol):
    """Per-entity bounded histories for online features, shared by the service's workers."""

    def histories(self, entities: Sequence[str]) -> dict[str, History]:
        """The stored history of each of `entities` that has one, in one round trip. The
        histories are the store's to reuse (this thread's next `append` folds on them when they
        are still current): read them, never change them. Raises StoreUnavailable."""
        ...

    def append(self, columns: Mapping[str, np.ndarray]) -> int:
        """Fold a batch of events (`core.features.event_columns` layout plus the id column) into
        their entities' histories, atomically; ids already appended (or repeated in the batch)
        are skipped. Returns the number of events added. Raises StoreUnavailable, and
        ValueError naming the column when an id or entity is missing."""
        ...

    def seed(self, events: pd.DataFrame) -> None:
        """Replace the whole content with the histories of `events` (`spec.history_columns`)
        at once: readers see the old content or the new."""
        ...

    def seeded(self) -> bool:
        """Whether a seed filled this store or it holds events (the service is not ready on an
        empty, never seeded store: every entity would look new). Raises StoreUnavailable, and
        ValueError when the store was built for another spec."""
        ...

    def count(self) -> int:
        """Events folded into the store since (and including) its seed. Raises
        StoreUnavailable."""
        ...

    def close(self) -> None:
        """Release connections; call when no other thread uses the store."""
        ...


def open_store(url: str, spec: FeatureSpec, timeout_seconds: float = 0.5) -> OnlineStore:
    """The store at `url` (see the module docstring). `timeout_seconds`: how long a network store
    may take to answer before StoreUnavailable. Raises ValueError for another scheme or when
    `spec` has no entity (no history features: nothing to store)."""
    if not spec.has_history:
        raise ValueError("the online store needs contract.entity (history features are off)")
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        from pipelines.io.redis_store import RedisStore

        return RedisStore(url, spec, timeout_seconds)
    if scheme == "sqlite":
        from pipelines.io.sqlite_store import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite://"), spec)
    if len(scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ValueError(
            f"serving.feature_store {url!r}: unknown scheme {scheme!r} "
            "(a path, sqlite:///path or redis://host:port/db)"
        )
    from pipelines.io.sqlite_store import SQLiteStore

    return SQLiteStore(url, spec)


def redacted(url: str) -> str:
    """`url` without the password it may carry (for logs and messages)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)[1]
    user = f"{parsed.username}:***@" if parsed.username else ":***@"
    return parsed._replace(netloc=user + netloc).geturl()


def layout(spec: FeatureSpec) -> str:
    """What a store's content was built for: a store built for other windows or columns is
    refused rather than read wrongly."""
    c = spec.contract
    return json.dumps(
        {
            "history": "buckets-v2",
            "windows": [list(w) for w in spec.windows],
            "amount": c.amount,
            "novelty": list(c.novelty),
        },
        sort_keys=True,
    )


def layout_mismatch(where: str, found: str | None, spec: FeatureSpec) -> ValueError:
    """The error for a store whose content does not fit `spec`."""
    return ValueError(
        f"feature store {where} holds {found}, this spec needs {layout(spec)}; "
        "seed it again (python -m pipelines materialize --force)"
    )


def checked_text(columns: Mapping[str, np.ndarray], name: str) -> list[str]:
    """Column `name` as a list of strings. Raises ValueError naming the column and the first
    missing value's row (a history needs an id and an entity for every event)."""
    values = np.asarray(columns[name], dtype=object).tolist()
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"events column {name!r} has a missing value at row {row}")
    return values


def fresh_rows(ids: list[str], known: Sequence[bool]) -> np.ndarray:
    """Per position, whether the event is new: its id is not `known` to the store and is the
    first of its id in the batch (a batch may repeat one)."""
    seen: set[str] = set()
    out = np.zeros(len(ids), dtype=bool)
    for i, (value, old) in enumerate(zip(ids, known, strict=True)):
        if not old and value not in seen:
            out[i] = True
        seen.add(value)
    return out


def group_by_entity(
    columns: Mapping[str, np.ndarray], entities: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """A batch's columns split per entity (`entities`: the entity of each row), rows in batch
    order. An entity with one row (most, in a batch of requests) gets views, not copies."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entities):
        groups.setdefault(e, []).append(i)
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    return {
        e: {k: a[rows[0] : rows[0] + 1] if len(rows) == 1 else a[rows] for k, a in arrays.items()}
        for e, rows in groups.items()
    }


def seed_content(
    events: pd.DataFrame, spec: FeatureSpec
) -> tuple[dict[str, History], list[str], int]:
    """What a seed writes: each entity's history, the ids to remember (those of the events
    within ID_RETENTION_MINUTES of the newest: the only ones a client may still retry), and the
    number of events (repeated ids counted once)."""
    c = spec.contract
    events = events.drop_duplicates(c.id, keep="first")
    minutes = event_columns(events, spec, history_only=True)[c.timestamp] // MS_PER_MINUTE
    newest = int(minutes.max()) if len(minutes) else 0
    recent = minutes >= newest - ID_RETENTION_MINUTES
    ids = events[c.id].astype(str).to_numpy()[recent].tolist()
    return histories_of(events, spec), ids, len(events)
