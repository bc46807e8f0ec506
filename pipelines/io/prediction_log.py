"""The prediction log: every scored record, as date-partitioned Parquet under a URL.

`PredictionLog.append` only buffers in memory (a frame, or plain column arrays: the service's
path, since a pandas frame per small batch costs more than scoring it); a background thread flushes when the buffer holds
`flush_rows` rows or its oldest row is `flush_seconds` old, and `close()` flushes the rest.
Each flush writes new files `{url}/date=YYYY-MM-DD/part-<utc time>-<pid>-<uuid>.parquet`, one
per day present (the day of `timestamp_column`, UTC). Files are never appended to or
rewritten, and each is written atomically (`storage.write_bytes`: temp name + rename locally,
a single PUT on S3), so readers never see a partial file and several processes can log to the
same URL.

When the sink fails (S3 down, no permission, ...), nothing is raised to the caller: the files
go to a local spool directory under the same relative names, a warning names the URL, and
every later flush (and `close()`) first re-delivers the spool, deleting a spooled file only
after its upload succeeded. A retried upload writes the same name, so it cannot duplicate rows.

Records that cannot be written as Parquet at all (a bug in the caller's frames, not an outage)
are logged as an error and dropped by the background flush; an explicit `flush()` raises.

The log's own columns (`LogColumn`) and its file names are defined here, for the service that
writes them and the drift check that reads them (`read_window`).

Crash-loss bound: a process killed without `close()` loses the records buffered since the last
flush, at most `flush_rows` rows or `flush_seconds` of traffic. Spooled files survive and are
delivered by the next `PredictionLog` using the same `spool_dir`; pass a persistent one in
production (the default lives under the system temp directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import io
import itertools
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines.core.drift import lowest_keys, sample_keys
from pipelines.core.features import to_ms
from pipelines.io import storage

log = logging.getLogger(__name__)

PART_GLOB = "date=*/part-*.parquet"
_MS_PER_DAY = 86_400_000
# A file's name carries the UTC time of its flush, which comes after every row's scored_at.
_FLUSH_STAMP = "%Y%m%dT%H%M%S%fZ"
_FLUSHED_AT = re.compile(r"part-(\d{8}T\d{6})\d*Z-")
# Margin for clock adjustments on the writer when files are skipped by their flush time.
_CLOCK_MARGIN = dt.timedelta(hours=1)


class LogColumn:
    """The columns the log adds to each record (beside the contract's id, timestamp and entity,
    and the features the model saw)."""

    PROBABILITY = "probability"  # float64 in [0, 1]
    DECISION = "decision"  # one of the serving decisions
    MODEL_VERSION = "model_version"  # the model tag that scored the record
    UNKNOWN = "unknown_categories"  # comma-separated columns whose value the model never saw
    BATCH_ID = "batch_id"  # one id per model call
    SCORED_AT = "scored_at"  # naive UTC, microseconds: when the record was scored
    HISTORY = "history"  # where the history features came from (serving.metrics.HISTORY_STATUSES)


def part_name(day: dt.date, flushed_at: dt.datetime) -> str:
    """The relative name of a new file of `day`'s partition, flushed at `flushed_at` (UTC)."""
    return (
        f"date={day.isoformat()}/part-{flushed_at.strftime(_FLUSH_STAMP)}-{os.getpid()}-"
        f"{uuid.uuid4().hex}.parquet"
    )


def flushed_at(name: str) -> dt.datetime | None:
    """When a file named by `part_name` was flushed (to the second); None for another name."""
    m = _FLUSHED_AT.search(name.rsplit("/", 1)[-1])
    return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S") if m else None


@dataclass(frozen=True)
class LogStats:
    """Counters for metrics (appended and flushed rows count since this object was created)."""

    rows_appended: int
    rows_buffered: int  # in memory, lost if the process dies
    rows_flushed: int  # delivered to the sink (spooled rows count once delivered)
    rows_spooled: int  # waiting in the local spool for the sink to come back
    flush_failures: int  # sink writes that failed
    lag_seconds: float  # since everything appended was last delivered to the sink


class PredictionLog:
    """Buffered, spooling writer of the log at `url` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        timestamp_column: str = "ts",
        flush_rows: int = 5000,
        flush_seconds: float = 10.0,
        spool_dir: str | os.PathLike[str] | None = None,
    ):
        if flush_rows <= 0 or flush_seconds <= 0:
            raise ValueError("flush_rows and flush_seconds must be positive")
        self.url = url.rstrip("/")
        self.timestamp_column = timestamp_column
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.spool_dir = Path(spool_dir) if spool_dir else _default_spool(self.url)

        self._lock = threading.Lock()  # buffer and counters: held briefly, never during I/O
        self._flush_lock = threading.Lock()  # one flush at a time
        self._frames: list[pd.DataFrame | dict[str, np.ndarray]] = []
        self._buffered = 0
        self._oldest: float | None = None  # monotonic time of the oldest buffered row
        self._appended = self._flushed = self._failures = 0
        self._spool_rows: dict[str, int] = {}
        self._last_attempt = self._delivered_at = time.monotonic()
        self._sink_up = True
        self._closed = False

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"prediction-log {self.url}", daemon=True
        )
        self._thread.start()

    def append(self, records: pd.DataFrame | Mapping[str, np.ndarray]) -> None:
        """Buffer `records` (thread-safe, no I/O): a frame, or equal-length column arrays that
        become a frame only when flushed. Later changes to a frame do not reach the log; arrays
        are kept as given, so the caller must not modify them afterwards."""
        if self.timestamp_column not in records:
            raise ValueError(f"prediction log records need the {self.timestamp_column!r} column")
        stamps = np.asarray(records[self.timestamp_column])
        # np.isnat for the service's datetime64 arrays: pd.isna costs more than the rest of append
        if (np.isnat(stamps) if stamps.dtype.kind == "M" else pd.isna(stamps)).any():
            raise ValueError(f"prediction log column {self.timestamp_column!r} has nulls")
        # copy-on-write for a frame: the caller's later edits copy, not ours
        frame = records.copy(deep=False) if isinstance(records, pd.DataFrame) else dict(records)
        rows = len(records[self.timestamp_column])
        with self._lock:
            if self._closed:
                raise RuntimeError(f"prediction log {self.url} is closed")
            self._frames.append(frame)
            self._buffered += rows
            self._appended += rows
            if self._oldest is None:
                self._oldest = time.monotonic()
            full = self._buffered >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Deliver the spool, then the buffer; what the sink refuses goes to the spool."""
        with self._flush_lock:
            with self._lock:
                frames, self._frames = self._frames, []
                self._buffered, self._oldest = 0, None
                self._last_attempt = time.monotonic()
            sink_up = self._deliver_spool()
            if frames:
                records = _one_frame(frames)
                for name, data, rows in self._parts(records):
                    sink_up = sink_up and self._upload(name, data, rows)
                    if not sink_up:
                        self._spool(name, data, rows)
            with self._lock:
                self._sink_up = sink_up
                if sink_up:
                    self._delivered_at = time.monotonic()

    def close(self) -> None:
        """Stop the background thread and flush everything (call on graceful shutdown)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.flush()

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(
                rows_appended=self._appended,
                rows_buffered=self._buffered,
                rows_flushed=self._flushed,
                rows_spooled=sum(self._spool_rows.values()),
                flush_failures=self._failures,
                lag_seconds=time.monotonic() - self._delivered_at,
            )

    # --- background -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._seconds_until_due())
            self._wake.clear()
            if self._stop.is_set() or self._seconds_until_due() > 0:
                continue
            try:
                self.flush()
            except Exception:  # the records could not even be serialized: a bug, not an outage
                log.exception("prediction log %s: flush failed, records dropped", self.url)

    def _seconds_until_due(self) -> float:
        with self._lock:
            # While the sink is down, spool every flush_seconds rather than at every flush_rows.
            if self._buffered >= self.flush_rows and self._sink_up:
                return 0.0
            # An idle log still wakes every flush_seconds to retry the spool and refresh the lag.
            since = self._oldest if self._oldest is not None else self._last_attempt
            return max(0.0, since + self.flush_seconds - time.monotonic())

    # --- files ----------------------------------------------------------------------------------

    def _parts(self, records: pd.DataFrame) -> list[tuple[str, bytes, int]]:
        """(relative name, Parquet bytes, rows) for each day present in `records`."""
        days = to_ms(records[self.timestamp_column]) // _MS_PER_DAY
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        out = []
        for day in np.unique(days):
            part = records[days == day]
            name = part_name(dt.date(1970, 1, 1) + dt.timedelta(days=int(day)), now)
            buf = io.BytesIO()
            part.to_parquet(buf, index=False)
            out.append((name, buf.getvalue(), len(part)))
        return out

    def _upload(self, name: str, data: bytes, rows: int) -> bool:
        url = storage.join(self.url, name)
        try:
            storage.write_bytes(url, data)
        except Exception as err:  # any sink failure: keep the bytes locally instead
            with self._lock:
                self._failures += 1
            log.warning(
                "prediction log: cannot write %s (%s: %s); spooling to %s",
                url,
                type(err).__name__,
                err,
                self.spool_dir,
            )
            return False
        with self._lock:
            self._flushed += rows
        return True

    def _spool(self, name: str, data: bytes, rows: int) -> None:
        path = self.spool_dir / name
        try:
            storage.write_bytes(str(path), data)
        except OSError:
            # Neither the sink nor the disk takes it: keep the records in memory for next time.
            log.exception("prediction log %s: cannot spool to %s either", self.url, path)
            with self._lock:
                self._frames.insert(0, pd.read_parquet(io.BytesIO(data)))
                self._buffered += rows
                self._oldest = self._oldest or time.monotonic()
            return
        with self._lock:
            self._spool_rows[str(path)] = rows

    def _deliver_spool(self) -> bool:
        """Upload spooled files, oldest first; False at the first failure (the sink is down)."""
        self._scan_spool()
        for path in sorted(self._spool_rows, key=lambda p: Path(p).name):
            try:
                data = Path(path).read_bytes()
            except FileNotFoundError:  # another process sharing the spool delivered it
                self._forget_spooled(path)
                continue
            if not self._upload(
                Path(path).relative_to(self.spool_dir).as_posix(), data, self._spool_rows[path]
            ):
                return False
            Path(path).unlink(missing_ok=True)
            self._forget_spooled(path)
        return True

    def _scan_spool(self) -> None:
        """Pick up files spooled by earlier processes (or by others sharing the directory)."""
        paths = set(glob.glob(str(self.spool_dir / PART_GLOB)))
        with self._lock:
            known = dict(self._spool_rows)
        found = {p: known[p] if p in known else _parquet_rows(p) for p in paths}
        with self._lock:
            self._spool_rows = {p: n for p, n in found.items() if n is not None}

    def _forget_spooled(self, path: str) -> None:
        with self._lock:
            self._spool_rows.pop(path, None)


def read_log(url: str, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
    """Every logged record, optionally only the date partitions in [start, end)."""
    fs, _ = storage.filesystem(url)
    files = storage.glob(url, PART_GLOB)
    lo, hi = _day(start), _day(end)
    if lo or hi:
        days = {f: dt.date.fromisoformat(f.rsplit("/", 2)[-2][len("date=") :]) for f in files}
        files = [f for f in files if (lo is None or days[f] >= lo) and (hi is None or days[f] < hi)]
    if not files:
        return pd.DataFrame()
    blobs = fs.cat(files)  # one concurrent fetch on S3
    frames = [pd.read_parquet(io.BytesIO(blobs[f])) for f in files]
    return pd.concat(frames, ignore_index=True)


def read_window(url: str, start: dt.datetime, end: dt.datetime, columns: list[str]) -> pd.DataFrame:
    """Logged rows with `start <= scored_at <= end` (naive UTC), only `columns` plus scored_at.

    Not `read_log`: its date partitions are by transaction time, which says nothing about when a
    record was scored (a replay scores old transactions today), and it decodes every column.
    Files flushed (by their name) before the window opened are not opened at all. Raises
    ValueError naming the log when a column is in no file.
    """
    return storage.scan_parquet(url, *_window_scan(url, start, end, columns)).to_pandas()


def _window_scan(
    url: str, start: dt.datetime, end: dt.datetime, columns: list[str]
) -> tuple[list[str], list[str], ds.Expression]:
    """What a window read scans: the files that may hold it, the columns, the row filter."""
    files = [f for f in storage.glob(url, PART_GLOB) if _may_hold(f, start)]
    when = ds.field(LogColumn.SCORED_AT)
    window = (when >= pa.scalar(start, pa.timestamp("us"))) & (
        when <= pa.scalar(end, pa.timestamp("us"))
    )
    return files, list(dict.fromkeys([*columns, LogColumn.SCORED_AT])), window


def read_window_sample(
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    columns: list[str],
    rows: int,
    key: str,
    seed: int,
) -> tuple[pd.DataFrame, int]:
    """`read_window` for a window of any size: every row when it has at most `rows`, else the
    `rows` whose `key` (a column of `columns`, the record id) hashes lowest with `seed`
    (`core.drift.sample_keys`): a uniform sample, the same however the log is split into files
    when the ids are unique (a record logged twice draws one key twice, and at the cut either
    copy may be kept). Read a batch at a time, rows above the lowest `rows` keys so far dropped
    as they come, so memory holds at most twice `rows` rows and a batch, never the window. Rows
    in the log's order.

    Returns (the rows, how many rows the window has). Raises ValueError as `read_window` does.
    """
    files, wanted, window = _window_scan(url, start, end, columns)
    kept: list[pd.DataFrame] = []
    held, total, ceiling = 0, 0, None
    for i, batch in enumerate(storage.scan_parquet_batches(url, files, wanted, window)):
        frame = batch.to_pandas()
        total += len(frame)
        frame[_ORDER] = (np.int64(i) << 32) + np.arange(len(frame), dtype=np.int64)
        frame[_KEY] = sample_keys(frame[key], seed)
        if ceiling is not None:  # above the lowest `rows` keys so far: never in the sample
            frame = frame[frame[_KEY].to_numpy() <= ceiling]
        kept.append(frame)
        held += len(frame)
        # Cut back to `rows` only once twice as many are held: a log of many small files
        # (a flush every few seconds) costs a cut per `rows` rows, not one per file.
        if held >= 2 * rows:
            kept = [lowest_keys(pd.concat(kept, ignore_index=True), _KEY, rows)]
            held, ceiling = len(kept[0]), kept[0][_KEY].max()
    if not kept:
        return storage.scan_parquet(url, [], wanted, None).to_pandas(), 0
    out = lowest_keys(pd.concat(kept, ignore_index=True), _KEY, rows)
    out = out.sort_values(_ORDER, kind="stable").drop(columns=[_ORDER, _KEY])
    return out.reset_index(drop=True), total


# Columns the sampled read adds while it runs: a row's place in the scan and its sample key.
_ORDER, _KEY = "__scan_order__", "__sample_key__"


def _may_hold(file: str, start: dt.datetime) -> bool:
    """False only for files flushed (by their name) before the window opened."""
    flushed = flushed_at(file)
    return flushed is None or flushed >= start - _CLOCK_MARGIN


def _one_frame(parts: list[pd.DataFrame | dict[str, np.ndarray]]) -> pd.DataFrame:
    """The buffered parts as one frame, in order; a run of column batches is joined column by
    column first (one frame for the run, not one per batch)."""
    frames: list[pd.DataFrame] = []
    for is_frame, run in itertools.groupby(parts, key=lambda p: isinstance(p, pd.DataFrame)):
        if is_frame:
            frames.extend(run)
        else:
            batches = list(run)
            frames.append(
                pd.DataFrame({k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
            )
    return pd.concat(frames, ignore_index=True)


def _day(value: dt.date | None) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else value


def _parquet_rows(path: str) -> int | None:
    """Rows of a spooled file; None if it is gone or unreadable (then set aside, not uploaded)."""
    try:
        return pq.read_metadata(path).num_rows
    except FileNotFoundError:
        return None
    except Exception as err:
        log.error(
            "prediction log spool: %s is unreadable (%s); moving it to *.unreadable", path, err
        )
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, f"{path}.unreadable")
        return None


def _default_spool(url: str) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "prediction-log-spool" / key
