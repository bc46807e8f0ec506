"""`OnlineStore` in Redis (`redis://[:password@]host:port/db[?prefix=name]`, `rediss://` for
TLS): one store for every replica of the service, on any number of hosts.

Keys, under `prefix` (default `fraud-features`):

    <prefix>:generation             the current generation (a seed switches it atomically)
    <prefix>:<gen>:card:<entity>    an entity's bounded history (`core.history.to_bytes`)
    <prefix>:<gen>:id:<id>          an appended id, expiring after ID_RETENTION_MINUTES
    <prefix>:<gen>:meta             layout, events, seeded_at

A read is one MGET for a batch's entities (and the generation, to notice a seed). An append is
optimistic and atomic per batch: WATCH the generation, the batch's ids and cards, read them (one
MGET), fold in Python (`core.history.fold`, the same as every store), write in one MULTI/EXEC;
if another replica changed one of those keys meanwhile, EXEC fails and the batch is folded again
on what that replica wrote. So two replicas appending to one card never lose an event nor count
one twice. Memory per card is bounded by its history's buckets (core/history.py: at most one per
minute of the longest window plus an hour); cards are never expired (their folded totals feed
`hist_n_prior` and the amount statistics), so memory grows with the number of cards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from pipelines.core.features import FeatureSpec, append_to
from pipelines.core.history import History, from_bytes, to_bytes
from pipelines.io.feature_store import (
    ID_RETENTION_MINUTES,
    StoreUnavailable,
    checked_text,
    fresh_rows,
    group_by_entity,
    layout,
    layout_mismatch,
    seed_content,
)

_CHUNK = 2000  # keys per round trip when seeding or deleting a generation


class RedisStore:
    """See the module docstring. Every call waits at most `timeout_seconds` for the server;
    `histories` and `append` raise StoreUnavailable when it cannot be reached, times out or
    refuses (a replica in read-only mode, a server still loading its data)."""

    def __init__(self, url: str, spec: FeatureSpec, timeout_seconds: float = 0.5):
        import redis

        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        self.prefix = query.pop("prefix", ["fraud-features"])[0]
        self.url = parsed._replace(query="").geturl()
        self.spec = spec
        self.redis: Any = redis.Redis.from_url(
            self.url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._redis_errors = redis.exceptions.RedisError
        self._watch_error = redis.exceptions.WatchError
        self._layout = layout(spec)
        self._generation: str | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self._where})"

    @property
    def _where(self) -> str:
        """The URL without its password, for messages."""
        parsed = urlparse(self.url)
        host = parsed.hostname or ""
        return f"{parsed.scheme}://{host}:{parsed.port or 6379}{parsed.path} (prefix {self.prefix})"

    # --- keys --------------------------------------------------------------------------------

    @property
    def _pointer(self) -> str:
        return f"{self.prefix}:generation"

    def _card(self, gen: str, entity: str) -> str:
        return f"{self.prefix}:{gen}:card:{entity}"

    def _id(self, gen: str, value: str) -> str:
        return f"{self.prefix}:{gen}:id:{value}"

    def _meta(self, gen: str) -> str:
        return f"{self.prefix}:{gen}:meta"

    def _current(self) -> str:
        """The generation in use (an empty one is created on first use of a new store)."""
        if self._generation is None:
            gen = self.redis.get(self._pointer)
            if gen is None:
                fresh = uuid.uuid4().hex
                self.redis.hset(self._meta(fresh), mapping={"events": 0, "layout": self._layout})
                if not self.redis.set(self._pointer, fresh, nx=True):  # another replica won
                    self.redis.delete(self._meta(fresh))
                gen = self.redis.get(self._pointer)
            found = self.redis.hget(self._meta(gen.decode()), "layout")
            if found is None or found.decode() != self._layout:
                raise layout_mismatch(self._where, found.decode() if found else None, self.spec)
            self._generation = gen.decode()
        return self._generation

    # --- the interface -----------------------------------------------------------------------

    def histories(self, entities: Sequence[str]) -> dict[str, History]:
        try:
            while True:
                gen = self._current()
                values = self.redis.mget([self._pointer, *(self._card(gen, e) for e in entities)])
                if values[0] is None or values[0].decode() != gen:  # a seed switched generations
                    self._generation = None
                    continue
                return {
                    e: from_bytes(v)
                    for e, v in zip(entities, values[1:], strict=True)
                    if v is not None
                }
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err

    def append(self, columns: Mapping[str, np.ndarray]) -> int:
        ids = checked_text(columns, self.spec.contract.id)
        entities = checked_text(columns, self.spec.entity)
        if not ids:
            return 0
        try:
            while True:
                added = self._try_append(columns, ids, entities)
                if added is not None:
                    return added
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err

    def _try_append(
        self, columns: Mapping[str, np.ndarray], ids: list[str], entities: list[str]
    ) -> int | None:
        """One optimistic attempt; None when another writer (or a seed) got in between."""
        gen = self._current()
        distinct = list(dict.fromkeys(entities))
        id_keys = [self._id(gen, i) for i in ids]
        card_keys = [self._card(gen, e) for e in distinct]
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self._pointer, *id_keys, *card_keys)
                values = pipe.mget([self._pointer, *id_keys, *card_keys])
                if values[0] is None or values[0].decode() != gen:
                    self._generation = None
                    return None
                known = [v is not None for v in values[1 : 1 + len(ids)]]
                stored = {
                    e: from_bytes(v)
                    for e, v in zip(distinct, values[1 + len(ids) :], strict=True)
                    if v is not None
                }
                fresh = fresh_rows(ids, known)
                if not fresh.any():
                    return 0
                batch = {k: np.asarray(v)[fresh] for k, v in columns.items()}
                kept = [e for e, f in zip(entities, fresh.tolist(), strict=True) if f]
                groups = group_by_entity(batch, kept)
                pipe.multi()
                pipe.mset(
                    {
                        self._card(gen, e): to_bytes(
                            append_to(stored.get(e, History()), rows, self.spec)
                        )
                        for e, rows in groups.items()
                    }
                )
                for value, f in zip(ids, fresh.tolist(), strict=True):
                    if f:
                        pipe.set(self._id(gen, value), 1, ex=ID_RETENTION_MINUTES * 60)
                pipe.hincrby(self._meta(gen), "events", int(fresh.sum()))
                pipe.execute()
                return int(fresh.sum())
            except self._watch_error:
                return None

    def seed(self, events: pd.DataFrame) -> None:
        """Write a complete new generation, switch the pointer to it, then delete the old one."""
        histories, ids, n = seed_content(events, self.spec)
        gen, old = uuid.uuid4().hex, self.redis.get(self._pointer)
        items = list(histories.items())
        for part in _chunks(items, _CHUNK):
            self.redis.mset({self._card(gen, e): to_bytes(h) for e, h in part})
        for part in _chunks(ids, _CHUNK):
            with self.redis.pipeline(transaction=False) as pipe:
                for value in part:
                    pipe.set(self._id(gen, value), 1, ex=ID_RETENTION_MINUTES * 60)
                pipe.execute()
        self.redis.hset(
            self._meta(gen),
            mapping={
                "events": n,
                "layout": self._layout,
                "seeded_at": dt.datetime.now(dt.UTC).isoformat(),
            },
        )
        self.redis.set(self._pointer, gen)  # the switch: appends watching the pointer start over
        self._generation = gen
        if old is not None and old.decode() != gen:
            pattern = f"{self.prefix}:{old.decode()}:*"
            for keys in _chunks(self.redis.scan_iter(match=pattern, count=1000), _CHUNK):
                self.redis.unlink(*keys)

    def seeded(self) -> bool:
        try:
            meta = self.redis.hmget(self._meta(self._current()), ["seeded_at", "events"])
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err
        return meta[0] is not None or int(meta[1] or 0) > 0

    def count(self) -> int:
        try:
            return int(self.redis.hget(self._meta(self._current()), "events") or 0)
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err

    def remove(self) -> None:
        """Delete every key of this store (all generations)."""
        for keys in _chunks(self.redis.scan_iter(match=f"{self.prefix}:*", count=1000), _CHUNK):
            self.redis.unlink(*keys)
        self._generation = None

    def close(self) -> None:
        self.redis.close()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    part: list[Any] = []
    for item in items:
        part.append(item)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part
