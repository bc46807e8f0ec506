"""The service's side of the online store, and what it does when the store does not answer.

A store that cannot be reached, times out or errors must not turn into a storm of 5xx, nor
stall every request for its timeout, nor lose the events scored meanwhile. So:

- `read` returns the batch's histories, or None when the store is *down*: the batch is scored on
  its request-level features (history features missing, which every model family handles),
  flagged `history: unavailable` in the response and the log, and counted;
- while down, requests do not touch the store at all (no timeout per request): a background
  thread probes it every `retry_seconds`;
- `write` appends the scored events, or keeps them in a replay buffer while down (at most
  `max_pending` events per worker: beyond, the oldest are dropped and counted, so memory stays
  bounded through an outage of any length);
- once the store answers again, the thread replays the buffer (appends are idempotent on the
  transaction id and the fold does not depend on arrival order, so a replayed event counts
  exactly once wherever it lands) and only then marks the store up: a history read while
  events are still waiting would be missing them.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pipelines.core.history import History
from pipelines.io.feature_store import OnlineStore, StoreUnavailable

log = logging.getLogger(__name__)
# Events per append when replaying: one round trip for many, bounded so that one append stays short.
REPLAY_CHUNK = 5000


class OnlineHistory:
    """`store` with the failure handling above. `on_change(up, pending, dropped)` is called after
    every change of state (for metrics); `close` stops the thread (pending events are lost with
    the process: they are in the prediction log, and `materialize --force` rebuilds the store)."""

    def __init__(
        self,
        store: OnlineStore,
        max_pending: int,
        retry_seconds: float,
        on_change: Callable[[bool, int, int], None] = lambda up, pending, dropped: None,
    ):
        self.store = store
        self.max_pending = max_pending
        self.retry_seconds = retry_seconds
        self._on_change = on_change
        self._lock = threading.Lock()
        self._pending: collections.deque[Mapping[str, np.ndarray]] = collections.deque()
        self._pending_events = 0
        self._replaying = 0  # batches at the head of _pending that an append is writing
        self._dropped = 0
        self._unusable: str | None = None  # why the store cannot be used although it answers
        self._up = True
        self._seeded = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recover, name="store-replay", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        """Whether requests read from and write to the store directly."""
        return self._up

    @property
    def pending(self) -> int:
        """Events waiting to be replayed."""
        return self._pending_events

    @property
    def dropped(self) -> int:
        """Events dropped from a full buffer since start."""
        return self._dropped

    def read(self, entities: Sequence[str]) -> dict[str, History] | None:
        """The stored histories of `entities`; None while the store is down or unusable."""
        if not self._up:
            return None
        try:
            return self.store.histories(entities)
        except (StoreUnavailable, ValueError) as err:
            self._went_down(err)
            return None

    def write(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append a scored batch (`scorer.record_columns`' layout), or keep it for replay."""
        while True:
            if self._up:
                try:
                    self.store.append(columns)
                    return
                except (StoreUnavailable, ValueError) as err:
                    self._went_down(err)
            with self._lock:
                if self._up:  # the store came back meanwhile: append directly
                    continue
                self._pending.append(columns)
                self._pending_events += _size(columns)
                # Drop the oldest, but never what the replay is appending right now (when
                # that is all there is, the batch just added goes): the bound always holds.
                while self._pending_events > self.max_pending and len(self._pending) > (
                    self._replaying
                ):
                    n = _size(self._pending[self._replaying])
                    del self._pending[self._replaying]
                    self._pending_events -= n
                    self._dropped += n
            self._changed()
            return

    def unusable(self) -> str | None:
        """Why the store cannot serve history even when it answers (never seeded: every card
        would look new; built for other windows or columns), else None, also while it is down
        (it cannot say; scoring without history beats refusing). A store once seen usable is
        not asked again."""
        if self._unusable is not None:
            return self._unusable
        if self._seeded or not self._up:  # while down, no request waits on the store
            return None
        try:
            self._seeded = self.store.seeded()
        except StoreUnavailable as err:
            self._went_down(err)
            return None
        except ValueError as err:  # a store built for another spec
            return str(err)
        if not self._seeded:
            return "was never seeded: every entity would look new (python -m pipelines materialize)"
        return None

    def close(self) -> None:
        """Stop the replay thread and close the store."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.store.close()

    def _went_down(self, err: Exception) -> None:
        """Stop using the store: it does not answer (StoreUnavailable), or it answers with
        content built for another layout (ValueError: re-seeded by a newer deploy; this replica
        is not ready until it is replaced or the store re-seeded for it)."""
        with self._lock:
            was_up, self._up = self._up, False
            if isinstance(err, ValueError):
                self._unusable = str(err)
        if was_up:
            log.error(
                "online store unavailable: scoring on request-level features, keeping events "
                "to replay (at most %d): %s",
                self.max_pending,
                err,
            )
            self._changed()

    def _changed(self) -> None:
        self._on_change(self._up, self._pending_events, self._dropped)

    def _recover(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            if self._up:
                continue
            try:
                self._replay()
            except StoreUnavailable as err:  # still down: try again next time
                log.debug("online store still unavailable: %s", err)
            except ValueError as err:  # still built for another layout
                log.debug("online store still unusable: %s", err)
            except Exception:  # the replay must outlive any one failure; say what it was
                log.exception("replaying into the online store failed; retrying")

    def _replay(self) -> None:
        """Replay the buffer oldest first, up to REPLAY_CHUNK events per append (under load the
        buffer grows while it is replayed: one event per round trip would never catch up); mark
        the store up once it is empty. Raises what the store raises (the events stay buffered)."""
        self.store.histories([])  # a probe: raises while down (or built for another layout)
        while True:
            with self._lock:
                if not self._pending:
                    self._up = True  # under the lock: no request can add behind this check
                    self._unusable = None
                    break
                head, n = [], 0
                for batch in self._pending:
                    head.append(batch)
                    n += _size(batch)
                    if n >= REPLAY_CHUNK:
                        break
                self._replaying = len(head)
            try:
                self.store.append({k: np.concatenate([b[k] for b in head]) for k in head[0]})
            finally:
                with self._lock:
                    self._replaying = 0
            with self._lock:
                for _ in head:  # still at the head: a full buffer drops behind them
                    self._pending_events -= _size(self._pending.popleft())
            self._changed()
        log.warning("online store answers again: replayed the events scored while it was down")
        self._changed()


def _size(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values())))
