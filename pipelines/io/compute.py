"""Where a stage's frames live: pandas in this process (`local`), or a Dask cluster (`dask`).

A stage is written once against `Engine`: it reads a table, applies a pure pandas function to
frames that each hold whole entities (`per_entity`), sorts, filters with ordinary pandas
expressions (the same on a pandas and a Dask frame) and writes. `Local` runs that in process as
before; `Dask` runs it on a LocalCluster started for the stage or on the scheduler at
`compute.address`, and writes each table as a Parquet dataset directory (`part-*.parquet`, then
`_metadata` last: `storage.read_parquet` reads either form, and refuses a directory without the
marker). Chosen by `compute.engine` (`engine(settings)`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from pipelines.config import Compute, Settings
from pipelines.core import dataset, model
from pipelines.core.families import FAMILIES
from pipelines.core.features import FeatureSpec
from pipelines.core.model import TabularModel
from pipelines.io import storage

PartFunction = Callable[..., pd.DataFrame]


class Engine(ABC):
    """The few operations a stage needs where the data lives; everything else is the frame's
    own pandas API. A 'frame' is a pandas DataFrame (`Local`) or a dask DataFrame (`Dask`)."""

    tag: ClassVar[str]
    # Whether a frame is always one part (then `map_keyed` splits nothing and is `map_parts`).
    one_part: ClassVar[bool] = False

    @abstractmethod
    def read_parquet(self, url: str) -> Any:
        """The table at `url` (a file or a dataset directory). Raises FileNotFoundError when
        absent, ValueError naming the URL when unreadable or a dataset is incomplete."""

    @abstractmethod
    def read_parts(self, urls: list[str], fn: PartFunction, *args: Any) -> Any:
        """One table from the Parquet files `urls` (at least one): part i is `fn(file i's frame,
        *args)` with `core.dataset.SOURCE_ORDER` added, cast to the schema the files' footers
        give through `fn` (`core.dataset.stacked_schema`; `fn` must accept an empty frame), the
        same on every engine. Raises ValueError naming an unreadable file, or a file and column
        whose values that schema would change."""

    @abstractmethod
    def read_table(self, url: str, text_columns: Any = (), decimal: str = ".") -> Any:
        """A team's table at `url` (`storage.read_table`'s formats where this engine reads
        them). Raises what `storage.read_table` raises."""

    @abstractmethod
    def require_table_urls(self, *urls: str) -> None:
        """Raise ValueError naming a URL whose format this engine cannot read or write."""

    @abstractmethod
    def per_entity(self, frame: Any, fn: PartFunction, entity: str | None, *args: Any) -> Any:
        """`fn(part, *args)` over parts that each hold all the rows of their entities (every row
        of one `entity` value in the same part; any split when `entity` is None); `fn` returns a
        pandas frame whose columns do not depend on the part."""

    @abstractmethod
    def map_parts(self, frame: Any, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """`fn(part, *args)` for each part of `frame`, computed where the part lives and
        collected here in row order (so `fn` returns something small: counts, a verdict)."""

    @abstractmethod
    def map_keyed(self, frame: Any, key: str, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """`map_parts` over parts that each hold every row of their value of the column `key`
        (any split when `frame` has no such column)."""

    @abstractmethod
    def sort(self, frame: Any, by: list[str], like: Any = None) -> Any:
        """`frame` ordered by the columns `by` (ascending, a total order when they are unique).
        `like`: a column distributed as `frame[by[0]]` and cheaper to compute (the input's),
        from which a cluster takes its partition boundaries instead of computing `frame` twice."""

    @abstractmethod
    def values(self, *results: Any) -> tuple[Any, ...]:
        """Reductions (`frame[...].sum()`) as plain values, computed in one pass."""

    @abstractmethod
    def write_table(self, url: str, frame: Any) -> int:
        """Write `frame` whole at `url` (`storage.write_table`'s formats where this engine writes
        them; a reader never sees part of it); returns its rows."""

    @abstractmethod
    def written(self, url: str, frame: Any) -> Any:
        """The table `write_parquet` just wrote from `frame`, to reduce further: `frame` itself
        in memory; on a cluster the stored table (recomputing `frame` would redo the stage)."""

    @abstractmethod
    def content_hash(self, frame: Any) -> str:
        """`core.dataset.content_hash` of `frame`, part by part in row order."""

    @abstractmethod
    def fit(
        self, family: str, X: Any, y: Any, spec: FeatureSpec, params: Any, seed: int
    ) -> TabularModel:
        """`core.model.fit` on features `X` (rows × spec.names) and labels `y` (a column) where
        they live. Raises what `core.model.fit` raises."""

    @abstractmethod
    def scores(
        self, fitted: TabularModel, frame: Any, target: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) of `frame`'s rows by `fitted`, both (rows,), collected here."""

    @abstractmethod
    def write_parquet(self, tables: dict[str, Any]) -> dict[str, int]:
        """Write every url → frame in one pass over the inputs; returns each table's rows. No
        table looks complete before it is (a local write is moved into place whole)."""


class Local(Engine):
    """pandas in this process: today's path, nothing started."""

    tag = "local"
    one_part = True

    def read_parquet(self, url: str) -> pd.DataFrame:
        return storage.read_parquet(url)

    def require_table_urls(self, *urls: str) -> None:
        return None  # Parquet and CSV, as `storage` reads and writes them

    def read_table(self, url: str, text_columns: Any = (), decimal: str = ".") -> pd.DataFrame:
        return storage.read_table(url, text_columns, decimal)

    def read_parts(self, urls: list[str], fn: PartFunction, *args: Any) -> pd.DataFrame:
        # Each file read once: its rows and its footer's schema (the cluster's, see `Dask`).
        read = [storage.read_parquet_and_schema(u) for u in urls]
        meta = dataset.stacked_schema([_ordered(fn(s, *args), i) for i, (_, s) in enumerate(read)])
        parts = [
            _cast(u, _ordered(fn(frame, *args), i), meta)
            for i, (u, (frame, _)) in enumerate(zip(urls, read, strict=True))
        ]
        return pd.concat(parts, ignore_index=True) if len(meta.columns) else parts[0]

    def per_entity(
        self, frame: pd.DataFrame, fn: PartFunction, entity: str | None, *args: Any
    ) -> pd.DataFrame:
        return fn(frame, *args)

    def map_parts(self, frame: pd.DataFrame, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(frame, *args)]

    def map_keyed(
        self, frame: pd.DataFrame, key: str, fn: Callable[..., Any], *args: Any
    ) -> list[Any]:
        return self.map_parts(frame, fn, *args)  # the one part holds every row of each key

    def sort(self, frame: pd.DataFrame, by: list[str], like: Any = None) -> pd.DataFrame:
        if len(by) == 1 and frame[by[0]].is_monotonic_increasing:  # a pandas join kept the order
            return frame.reset_index(drop=True)
        return frame.sort_values(by, ignore_index=True)

    def values(self, *results: Any) -> tuple[Any, ...]:
        return results

    def write_table(self, url: str, frame: pd.DataFrame) -> int:
        storage.write_table(frame, url)
        return len(frame)

    def written(self, url: str, frame: pd.DataFrame) -> pd.DataFrame:
        return frame

    def content_hash(self, frame: pd.DataFrame) -> str:
        return dataset.content_hash(frame)

    def fit(
        self, family: str, X: pd.DataFrame, y: pd.Series, spec: FeatureSpec, params: Any, seed: int
    ) -> TabularModel:
        return model.fit(family, X, y.to_numpy(), spec, params, seed)

    def scores(
        self, fitted: TabularModel, frame: pd.DataFrame, target: str
    ) -> tuple[np.ndarray, np.ndarray]:
        return frame[target].to_numpy(dtype=np.int64), fitted.predict_proba(frame)

    def write_parquet(self, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        for url, frame in tables.items():
            storage.write_parquet(frame, url)
        return {url: len(frame) for url, frame in tables.items()}


class Dask(Engine):
    """A `distributed.Client`'s cluster; `partitions`: how many parts `per_entity` shuffles into."""

    tag = "dask"

    def __init__(self, client: Any, partitions: int) -> None:
        self.client = client
        self.partitions = partitions

    def read_parquet(self, url: str) -> Any:
        import dask.dataframe as dd

        if storage.is_directory(url):
            storage.require_complete(url)  # Dask itself would read a half-written dataset
        elif not storage.exists(url):
            raise FileNotFoundError(f"no table at {url}")
        try:
            frame = dd.read_parquet(url, storage_options=storage.storage_options(url))
        except Exception as err:  # as `storage.read_parquet`: pyarrow raises several types
            cause = err.__cause__ or err  # Dask wraps pyarrow's error in one about its backend
            raise ValueError(f"cannot read Parquet at {url}: {cause}") from None
        # A table one process wrote is often one part: split it, or one worker does it all.
        if frame.npartitions < self.partitions:
            frame = frame.repartition(npartitions=self.partitions)
        return frame

    def require_table_urls(self, *urls: str) -> None:
        for url in urls:
            if url.endswith(".csv"):
                raise ValueError(
                    f"{url}: the Dask engine reads and writes Parquet (a file or a dataset "
                    "directory), not CSV: convert it, or use compute.engine: local"
                )

    def read_table(self, url: str, text_columns: Any = (), decimal: str = ".") -> Any:
        self.require_table_urls(url)
        return self.read_parquet(url)

    def read_parts(self, urls: list[str], fn: PartFunction, *args: Any) -> Any:
        import dask.dataframe as dd

        meta = _parts_schema(urls, fn, *args)
        return dd.from_map(
            _source_part,
            urls,
            range(len(urls)),
            args=[fn, meta, *args],
            meta=meta,
            label="read-source",
            enforce_metadata=False,
        )

    def per_entity(self, frame: Any, fn: PartFunction, entity: str | None, *args: Any) -> Any:
        # The output's schema, from the function itself on a few real rows: Dask's guess from
        # made-up values would run the feature code on data it was never meant to see.
        sample = frame.head(64, npartitions=1, compute=True)
        if sample.empty:
            sample = frame.head(64, npartitions=-1, compute=True)
        meta = fn(sample, *args).iloc[:0]
        parts = (
            frame.shuffle(on=entity, npartitions=self.partitions)
            if entity in frame.columns  # a table without it is `fn`'s to refuse, as on pandas
            else frame.repartition(npartitions=self.partitions)
        )
        return parts.map_partitions(_conformed, fn, meta.dtypes.to_dict(), *args, meta=meta)

    def map_parts(self, frame: Any, fn: Callable[..., Any], *args: Any) -> list[Any]:
        import dask

        return list(dask.compute(*(dask.delayed(fn)(part, *args) for part in frame.to_delayed())))

    def map_keyed(self, frame: Any, key: str, fn: Callable[..., Any], *args: Any) -> list[Any]:
        if key in frame.columns:
            frame = frame.shuffle(on=key, npartitions=self.partitions)
        return self.map_parts(frame, fn, *args)

    def sort(self, frame: Any, by: list[str], like: Any = None) -> Any:
        # Boundaries computed here, not by `sort_values`: it computes them inside a cached
        # property, and Python 3.11's cached_property lock then deadlocks the scheduler a
        # LocalCluster runs in this process when it materialises that very graph.
        import dask

        column = frame[by[0]] if like is None else like
        probs = np.linspace(0.0, 1.0, self.partitions + 1)
        low, high, inner = dask.compute(column.min(), column.max(), column.quantile(probs[1:-1]))
        # The ends are the exact extremes: Dask puts a value outside the divisions in the last
        # part, which would break the order.
        bounds = sorted({low, *inner.tolist(), high})
        divisions = bounds if len(bounds) > 1 else bounds * 2
        meta = frame._meta
        ranged = frame.set_index(by[0], divisions=divisions, sort=True).reset_index()
        return ranged.map_partitions(_sorted_part, by, list(meta.columns), meta=meta)

    def values(self, *results: Any) -> tuple[Any, ...]:
        import dask

        return tuple(dask.compute(*results))

    def write_table(self, url: str, frame: Any) -> int:
        self.require_table_urls(url)
        return self.write_parquet({url: frame})[url]

    def written(self, url: str, frame: Any) -> Any:
        return self.read_parquet(url)

    def content_hash(self, frame: Any) -> str:
        import dask

        hashes = [dask.delayed(dataset.row_hashes)(part) for part in frame.to_delayed()]
        futures = self.client.compute(hashes)
        # Gathered in row order one at a time: a part's hashes are 8 bytes a row.
        return dataset.chained_hash(frame.dtypes, (f.result() for f in futures))

    def fit(
        self, family: str, X: Any, y: Any, spec: FeatureSpec, params: Any, seed: int
    ) -> TabularModel:
        """The levels and the checks from aggregates, then the family's Dask estimator on the
        partitions' matrices when it has one (`Family.distributed`); else `core.model.fit` on
        the rows collected here (a family without one needs them in one process anyway)."""
        import dask

        model.unfitted(family, spec, {})  # an unknown family fails here, before any work
        if not FAMILIES[family].distributed:
            X_local, y_local = dask.compute(X, y)
            return model.fit(family, X_local, y_local.to_numpy(), spec, params, seed)
        uniques = {c: X[c].dropna().astype(str).unique() for c in spec.categorical}
        infinite = {c: X[c].isin([np.inf, -np.inf]).sum() for c in spec.numeric}
        classes, infinite, uniques = dask.compute(y.nunique(), infinite, uniques)
        model.check_labels(int(classes))
        model.check_finite(infinite)
        out = model.unfitted(family, spec, model.levels_of(uniques))
        # One expression for the matrix and the labels: two would let Dask's optimiser fuse
        # their partitions differently, and the estimators pair them partition by partition.
        meta = pd.DataFrame({name: pd.Series(dtype=np.float64) for name in out.features})
        meta[_LABEL] = pd.Series(dtype=np.int64)
        both = X.assign(**{_LABEL: y}).map_partitions(_matrix, out, meta=meta).persist()
        # The estimators train on each worker's own parts and refuse an empty one (a time
        # filter empties whole partitions): kept in memory, as they would load them anyway.
        lengths = both.map_partitions(len).compute().tolist()
        both = both.partitions[[i for i, n in enumerate(lengths) if n]]
        self.client.rebalance(both)  # every worker trains on a share
        out.estimator = FAMILIES[family].fit_distributed(
            both[out.features].to_dask_array(),
            both[_LABEL].to_dask_array(),
            out.columns,
            params,
            seed,
        )
        return out

    def scores(
        self, fitted: TabularModel, frame: Any, target: str
    ) -> tuple[np.ndarray, np.ndarray]:
        meta = pd.DataFrame({"y": pd.Series(dtype=np.int64), "p": pd.Series(dtype=np.float64)})
        scored = frame.map_partitions(_scored, fitted, target, meta=meta).compute()
        return scored["y"].to_numpy(), scored["p"].to_numpy()

    def write_parquet(self, tables: dict[str, Any]) -> dict[str, int]:
        staged = {url: _staging(url) for url in tables}
        writes = [
            tables[url].to_parquet(
                where,
                write_index=False,
                write_metadata_file=True,
                name_function=lambda i: f"part-{i:05d}.parquet",
                storage_options=storage.storage_options(where),
                overwrite=True,
                compute=False,
            )
            for url, (where, _) in staged.items()
        ]
        counts = [frame.map_partitions(len).sum() for frame in tables.values()]
        # One graph for every write and count, so the shared inputs are computed once.
        futures = self.client.compute([*writes, *counts])
        try:
            rows = self.client.gather(futures)[len(writes) :]
        except BaseException as err:
            # No further writes start; one already running may still leave a part in the
            # staging directory after it is removed: never read, and `.dvcignore` names it.
            self.client.cancel(futures, force=True)
            for where, local in staged.values():
                if local:
                    shutil.rmtree(where, ignore_errors=True)
            if not isinstance(err, Exception):
                raise
            raise RuntimeError(
                f"the Dask computation of {', '.join(tables)} failed ({type(err).__name__}: "
                f"{err}); no table was completed (a local one was not written, a remote one "
                f"lacks {storage.DATASET_MARKER} and is never read)"
            ) from err
        for url, (where, local) in staged.items():
            if local:
                storage.replace_table(where, storage.filesystem(url)[1])
        return {url: int(n) for url, n in zip(tables, rows, strict=True)}


_LABEL = "__label__"


def _matrix(part: pd.DataFrame, unfitted: TabularModel) -> pd.DataFrame:
    out = pd.DataFrame(unfitted.matrix(part), columns=unfitted.features, index=part.index)
    out[_LABEL] = part[_LABEL].to_numpy(dtype=np.int64)
    return out


def _scored(part: pd.DataFrame, fitted: TabularModel, target: str) -> pd.DataFrame:
    y = part[target].to_numpy(dtype=np.int64)
    return pd.DataFrame({"y": y, "p": fitted.predict_proba(part)}, index=part.index)


def _sorted_part(part: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    return part.sort_values(by)[columns]


def _ordered(part: pd.DataFrame, index: int) -> pd.DataFrame:
    if not len(part.columns):  # an empty day's file: `stack` leaves it out
        return part
    order = (np.int64(index) << 32) + np.arange(len(part), dtype=np.int64)
    return part.assign(**{dataset.SOURCE_ORDER: order})


def _parts_schema(urls: list[str], fn: PartFunction, *args: Any) -> pd.DataFrame:
    # Before any row is read, from each file's footer through `fn`: the same on every engine,
    # so a day with a missing or retyped column reaches the gate the same way on each.
    return dataset.stacked_schema(
        [_ordered(fn(storage.read_schema(u), *args), i) for i, u in enumerate(urls)]
    )


def _source_part(
    url: str, index: int, fn: PartFunction, meta: pd.DataFrame, *args: Any
) -> pd.DataFrame:
    return _cast(url, _ordered(fn(storage.read_parquet(url), *args), index), meta)


def _cast(url: str, part: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    if part.dtypes.equals(meta.dtypes):  # the common case: every day file alike
        return part
    cast = part.reindex(columns=meta.columns).astype(meta.dtypes.to_dict())
    for name in part.columns.intersection(meta.columns):
        before, after = part[name], cast[name]
        # A coarser time unit would drop digits silently (text with nanoseconds, say).
        if (
            pd.api.types.is_datetime64_dtype(before.dtype)
            and before.dtype != after.dtype
            and not (before.isna() | (before == after.astype(before.dtype))).all()
        ):
            raise ValueError(
                f"{url}: column {name!r} holds {before.dtype} values that the other partitions' "
                f"{after.dtype} would truncate"
            )
    return cast


def _conformed(part: pd.DataFrame, fn: PartFunction, dtypes: dict[str, Any], *args: Any) -> Any:
    # An empty or all-missing part gives object columns where the others give text: every
    # part gets the meta's dtypes, so the dataset has one schema.
    return fn(part, *args).astype(dtypes)


def _staging(url: str) -> tuple[str, bool]:
    """Where a dataset is written before it is complete, and whether that is local: a sibling
    moved into place after (`storage.replace_table`), or the URL itself on an object store (no
    rename there: `_metadata`, written last, is the completeness marker; a table file left by
    the other engine is removed first)."""
    fs, path = storage.filesystem(url)
    if not isinstance(fs, LocalFileSystem):
        if fs.isfile(path):
            fs.rm(path)
        return url, False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return f"{path}{storage.STAGING}{uuid.uuid4().hex}", True


@contextlib.contextmanager
def engine(settings: Settings) -> Iterator[Engine]:
    """The engine `settings.compute` names, ready for one stage and released after it: a
    LocalCluster is started (on 127.0.0.1) and stopped; a client of `compute.address`
    is closed, leaving the user's cluster running. Raises RuntimeError naming the address when
    its scheduler cannot be reached or has no worker within a minute."""
    c = settings.compute
    if c.engine == "local":
        yield Local()
        return
    with _client(c) as client:
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise RuntimeError(
                f"the Dask scheduler at {client.scheduler.address} has no worker after 60 s"
            ) from None
        threads = sum(client.nthreads().values())
        yield Dask(client, c.partitions or max(1, 4 * threads))


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    # The in-process scheduler logs a WARNING when each shuffle starts and ends: routine here.
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _client(c: Compute) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    # Strings stay pandas' own dtype, so a Dask stage writes the same table as a local one.
    with dask.config.set({"dataframe.convert-string": False}):
        if c.address:
            try:
                # Dask's own setting (distributed.comm.timeouts.connect, 30 s by default).
                client = Client(c.address)
            except OSError as err:
                raise RuntimeError(
                    f"cannot reach the Dask scheduler at {c.address} (compute.address): {err}"
                ) from None
            with client:
                yield client
            return
        with (
            _quiet("distributed.shuffle._scheduler_plugin"),
            LocalCluster(
                n_workers=c.workers,
                threads_per_worker=c.threads_per_worker,
                memory_limit=c.memory_limit,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # not Dask's fixed 8787: clusters side by side
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
