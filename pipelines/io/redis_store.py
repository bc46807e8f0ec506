"""`OnlineStore` in Redis (`redis://[:password@]host:port/db[?prefix=name]`, `rediss://` for
TLS): one store for every replica of the service, on any number of hosts.

Keys, under `prefix` (default `fraud-features`):

    <prefix>:generation             the current generation (a seed switches it atomically)
    <prefix>:<gen>:card:<entity>    an entity's bounded history (`core.history.to_bytes`)
    <prefix>:<gen>:id:<id>          an appended id, expiring after ID_RETENTION_MINUTES
    <prefix>:<gen>:meta             layout, events, seeded_at

A card's value is an 8-byte version token (random, new at every write) then its bounded history
(`core.history.to_bytes`). A read is one MGET for a batch's entities (and the generation, to
notice a seed). An append is one round trip and atomic per batch: the batch is folded in Python
(`core.history.fold`, the same as every store) on the histories the batch's read returned, and
one Lua script (`_APPEND`) writes the new values only if the generation is unchanged, every card
still carries the token that read saw and none of the batch's ids is known; otherwise it writes
nothing, and the batch is folded again on what is stored now (another replica's write, a seed)
without the known ids. So two replicas appending to one card never lose an event nor count one
twice. The WATCH/MGET/MULTI version this replaced took three round trips, re-read every card and
sent a command per id: a 64-record batch's append took 6.3 ms in process, now 5.2 ms.

Memory per card is bounded by its history's buckets (core/history.py `max_buckets`: 369 with the
default windows, 40 bytes each); cards are never expired (their folded totals feed `hist_n_prior`
and the amount statistics), so memory grows with the number of cards. The keys of one append span
hash slots: a single Redis primary (with replicas, managed or not), not Redis Cluster.
"""

from __future__ import annotations

import datetime as dt
import os
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
_TOKEN = 8  # bytes of version token ahead of each card's history

# KEYS: the generation pointer, the meta hash, k cards, then the batch's new ids.
# ARGV: the generation, k, the ids' time to live (s), k tokens read ("" for a new card), k values.
# Returns the number of events added, -1 when the generation changed, -2 when a card did, or the
# positions (1-based, among the ids sent) of ids already known.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local k = tonumber(ARGV[2])
for i = 1, k do
  if redis.call('GETRANGE', KEYS[2 + i], 0, 7) ~= ARGV[3 + i] then return -2 end
end
local known = {}
for j = 3 + k, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 1 then known[#known + 1] = j - 2 - k end
end
if #known > 0 then return known end
for i = 1, k do redis.call('SET', KEYS[2 + i], ARGV[3 + k + i]) end
for j = 3 + k, #KEYS do redis.call('SET', KEYS[j], 1, 'EX', ARGV[3]) end
redis.call('HINCRBY', KEYS[2], 'events', #KEYS - 2 - k)
return #KEYS - 2 - k
"""


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
        self._append_script = self.redis.register_script(_APPEND)
        self._layout = layout(spec)
        self._generation: str | None = None
        # The last read's (token, history) per entity: the base an append folds on (the script
        # refuses it if a card changed since, so a stale entry costs a retry, never an event).
        self._read: dict[str, tuple[bytes, History]] = {}

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
            read = self._fetch(entities)
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err
        self._read = read
        return {e: h for e, (token, h) in read.items() if token}

    def _fetch(self, entities: Sequence[str]) -> dict[str, tuple[bytes, History]]:
        """Each entity's (token, history), in one MGET with the generation pointer; an entity
        with no card yet gets (b"", an empty history): what the script expects for a new card."""
        while True:
            gen = self._current()
            values = self.redis.mget([self._pointer, *(self._card(gen, e) for e in entities)])
            if values[0] is None or values[0].decode() != gen:  # a seed switched generations
                self._generation = None
                continue
            return {
                e: (v[:_TOKEN], from_bytes(v[_TOKEN:])) if v is not None else (b"", History())
                for e, v in zip(entities, values[1:], strict=True)
            }

    def append(self, columns: Mapping[str, np.ndarray]) -> int:
        ids = checked_text(columns, self.spec.contract.id)
        entities = checked_text(columns, self.spec.entity)
        if not ids:
            return 0
        distinct = list(dict.fromkeys(entities))
        known = [False] * len(ids)
        try:
            base = self._read
            while True:
                missing = [e for e in distinct if e not in base]
                if missing:  # entities this store's last read did not cover (a replay)
                    base = {**base, **self._fetch(missing)}
                fresh = fresh_rows(ids, known)
                if not fresh.any():
                    return 0
                outcome = self._try_append(columns, ids, entities, fresh, base)
                if isinstance(outcome, int) and outcome >= 0:
                    return outcome
                if isinstance(outcome, list):  # ids already stored: fold without them
                    sent = [i for i, f in enumerate(fresh.tolist()) if f]
                    for position in outcome:
                        known[sent[int(position) - 1]] = True
                    continue
                if outcome == -1:  # a seed switched generations
                    self._generation = None
                base = self._fetch(distinct)  # another writer got in between: fold on theirs
        except self._redis_errors as err:
            raise StoreUnavailable(f"feature store {self._where}: {err}") from err

    def _try_append(
        self,
        columns: Mapping[str, np.ndarray],
        ids: list[str],
        entities: list[str],
        fresh: np.ndarray,
        base: Mapping[str, tuple[bytes, History]],
    ) -> int | list[int]:
        """One attempt: the `fresh` rows folded on `base`, written by the script if nothing
        changed meanwhile. Returns the script's answer (see `_APPEND`)."""
        gen = self._current()
        batch = {k: np.asarray(v)[fresh] for k, v in columns.items()}
        kept = [e for e, f in zip(entities, fresh.tolist(), strict=True) if f]
        groups = group_by_entity({k: batch[k] for k in self.spec.history_columns}, kept)
        cards = list(groups)
        tokens = [base[e][0] for e in cards]
        values = [
            os.urandom(_TOKEN) + to_bytes(append_to(base[e][1], groups[e], self.spec))
            for e in cards
        ]
        new_ids = [i for i, f in zip(ids, fresh.tolist(), strict=True) if f]
        answer = self._append_script(
            keys=[
                self._pointer,
                self._meta(gen),
                *(self._card(gen, e) for e in cards),
                *(self._id(gen, i) for i in new_ids),
            ],
            args=[gen, len(cards), ID_RETENTION_MINUTES * 60, *tokens, *values],
        )
        return answer if isinstance(answer, list) else int(answer)

    def seed(self, events: pd.DataFrame) -> None:
        """Write a complete new generation, switch the pointer to it, then delete the old one."""
        histories, ids, n = seed_content(events, self.spec)
        gen = uuid.uuid4().hex
        items = list(histories.items())
        for part in _chunks(items, _CHUNK):
            self.redis.mset({self._card(gen, e): os.urandom(_TOKEN) + to_bytes(h) for e, h in part})
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
        # The switch (appends in flight see the pointer change and start over); GET returns what
        # it replaced, which is what to delete even if another seed switched in between.
        old = self.redis.set(self._pointer, gen, get=True)
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
