"""Every data location is a URL: a local path by default, `s3://bucket/prefix` unchanged.

Writes are atomic where the backend allows it: locally we write a temporary sibling and
rename it into place, so a reader never sees a half-written file; on S3 a PUT is atomic.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipelines.core.layout import join

__all__ = ["StorageError", "join"]  # join is re-exported: every URL is built by one function


class StorageError(OSError):
    """A location could not be read or written (unreachable, refused, ...); the message names it."""


@contextlib.contextmanager
def _naming(url: str) -> Iterator[None]:
    # Backends word their errors in their own terms (an endpoint, a socket); say which URL failed.
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except Exception as err:
        raise StorageError(f"cannot access {url}: {type(err).__name__}: {err}") from err


def storage_options(url: str) -> dict[str, Any]:
    """Options for the backend of `url`, from the standard environment only (never committed files)."""
    if url.startswith("s3://"):
        opts: dict[str, Any] = {"use_listings_cache": False}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            opts["client_kwargs"] = {"region_name": region}
        return opts
    return {}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def exists(url: str) -> bool:
    with _naming(url):
        fs, path = filesystem(url)
        return bool(fs.exists(path))


def write_bytes(url: str, data: bytes) -> None:
    with _naming(url):
        _write_bytes(url, data)


def _write_bytes(url: str, data: bytes, table: bool = False) -> None:
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}{STAGING}{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            (replace_table if table else os.replace)(tmp, path)
        except BaseException:
            os.remove(tmp)
            raise
    else:
        if table and fs.isdir(path):  # the other engine's form of the table, never read again
            fs.rm(path, recursive=True)
        fs.pipe_file(path, data)


# Suffixes of a local write's temporary sibling and of a replaced table moved aside
# (`.dvcignore` names both, so DVC never hashes one left by a killed writer into an output).
STAGING = ".tmp-"
SET_ASIDE = ".old-"


def is_dataset(path: str) -> bool:
    """Whether the local directory `path` is a Parquet dataset a table writer wrote (its marker
    or part files), as opposed to any other directory."""
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, DATASET_MARKER))
        or any(n.startswith("part-") for n in os.listdir(path))
    )


def replace_table(tmp: str, path: str) -> None:
    """Move the local table `tmp` (a Parquet file or dataset directory) to `path`, replacing the
    table there in either form: an engine switch turns a file into a dataset or back. A file over
    a file is replaced atomically; otherwise the old table is moved aside first, so `path` is
    briefly absent (a reader finds nothing, never a mix of two writes) and put back if the move
    fails. Raises IsADirectoryError when `path` is a directory that is not a dataset (never
    deleted)."""
    if os.path.isdir(path) and not os.path.islink(path) and not is_dataset(path):
        raise IsADirectoryError(f"{path} is a directory, not a table: not replacing it")
    if not (os.path.lexists(path) and (os.path.isdir(path) or os.path.isdir(tmp))):
        os.replace(tmp, path)
        return
    old = f"{path}{SET_ASIDE}{uuid.uuid4().hex}"
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(old, path)
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.remove(old)


def read_bytes(url: str) -> bytes:
    try:
        with _naming(url):
            fs, path = filesystem(url)
            return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {url}") from None


def remove(url: str) -> None:
    """Delete the file or directory tree at `url` (nothing if absent)."""
    with _naming(url):
        fs, path = filesystem(url)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode())


def write_json(url: str, obj: Any) -> None:
    write_text(url, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(url: str) -> Any:
    return json.loads(read_bytes(url))


def write_parquet(df: pd.DataFrame, url: str) -> None:
    """`df` as one Parquet file at `url`, replacing a table there in either form (a file, or a
    dataset directory the Dask engine wrote)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    with _naming(url):
        _write_bytes(url, buf.getvalue(), table=True)


# Written last into a Parquet dataset directory (Dask's `write_metadata_file`): a directory
# without it was left by a writer that stopped part way, and is never read as a table.
DATASET_MARKER = "_metadata"


def read_parquet(url: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The table at `url`: one Parquet file, or a dataset directory of `part-*.parquet` files (the
    Dask engine's output) read in their names' order. Raises FileNotFoundError when absent,
    ValueError naming the URL when it is corrupt or a dataset lacks its `_metadata` marker."""
    # A dataset directory is found by the read failing (locally: a directory; an object store
    # has no file at a prefix), so reading a file, the common case, costs no extra request.
    try:
        data = read_bytes(url)
    except FileNotFoundError:
        if is_directory(url):
            return _read_dataset(url, columns)
        raise
    except StorageError as err:
        if isinstance(err.__cause__, IsADirectoryError):
            return _read_dataset(url, columns)
        raise
    try:
        return pd.read_parquet(io.BytesIO(data), columns=columns)
    except FileNotFoundError:
        raise
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"cannot read Parquet at {url}: {err}") from None


def read_schema(url: str) -> pd.DataFrame:
    """The Parquet file at `url` as an empty frame: its columns and the dtypes `read_parquet`
    gives them, from the footer alone. pandas gives an integer or boolean column that holds a
    null as float or object: such a column (by its row groups' null counts, or any column
    without them) is typed so. Raises FileNotFoundError when absent, ValueError naming the URL
    when the footer is corrupt."""
    try:
        with _naming(url):
            fs, path = filesystem(url)
            f = fs.open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {url}") from None
    try:
        with f:
            meta = pq.ParquetFile(f).metadata
    except Exception as err:  # pyarrow raises several types for a corrupt footer
        raise ValueError(f"cannot read Parquet at {url}: {err}") from None
    return _schema_frame(meta)


def read_parquet_and_schema(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Parquet file at `url` (`read_parquet`) and its `read_schema`, from one read of it.
    Raises what `read_parquet` raises."""
    data = read_bytes(url)
    try:
        return pd.read_parquet(io.BytesIO(data)), _schema_frame(
            pq.ParquetFile(io.BytesIO(data)).metadata
        )
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise ValueError(f"cannot read Parquet at {url}: {err}") from None


def _schema_frame(meta: pq.FileMetaData) -> pd.DataFrame:
    empty = meta.schema.to_arrow_schema().empty_table().to_pandas()
    widened = {
        name: "float64" if pd.api.types.is_integer_dtype(dtype) else "object"
        for name, dtype in empty.dtypes.items()
        if (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype))
        and not isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and _may_hold_nulls(meta, str(name))
    }
    return empty.astype(widened) if widened else empty


def _may_hold_nulls(meta: pq.FileMetaData, column: str) -> bool:
    at = meta.schema.names.index(column) if column in meta.schema.names else None
    if at is None:
        return True
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(at).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return True
    return False


def require_complete(url: str) -> None:
    """Raises ValueError naming `url` when the dataset directory there lacks its marker."""
    if not exists(join(url, DATASET_MARKER)):
        raise ValueError(
            f"{url} is an incomplete Parquet dataset (no {DATASET_MARKER}): its writer stopped "
            "part way; rerun the stage that writes it"
        )


def is_directory(url: str) -> bool:
    """Whether `url` is a directory (a prefix on an object store)."""
    with _naming(url):
        fs, path = filesystem(url)
        return bool(fs.isdir(path))


def _read_dataset(url: str, columns: list[str] | None) -> pd.DataFrame:
    require_complete(url)
    files = glob(url, "part-*.parquet")
    if not files:
        raise ValueError(f"the Parquet dataset at {url} has no part-*.parquet files")
    with _naming(url):
        fs, _ = filesystem(url)
    try:
        parts = [pq.read_table(f, columns=columns, filesystem=fs) for f in files]
    except pa.ArrowInvalid as err:
        raise ValueError(f"cannot read the Parquet dataset at {url}: {err}") from None
    return pa.concat_tables(parts).to_pandas()


def glob(base: str, pattern: str) -> list[str]:
    """The paths (on `base`'s filesystem, sorted) under the URL `base` matching `pattern`, listed
    afresh (s3fs caches listings, which hides other writers' new files). Raises StorageError
    naming `base` when it cannot be listed."""
    with _naming(base):
        fs, path = filesystem(base)
        path = path.rstrip("/")
        fs.invalidate_cache(path)
        return sorted(fs.glob(f"{path}/{pattern}"))


def scan_parquet(
    base: str, files: list[str], columns: list[str], where: ds.Expression | None
) -> pa.Table:
    """`columns` of the rows that satisfy `where` in the Parquet `files` (URLs or paths on the
    filesystem of the URL `base`), read in parallel, decoding only those columns.

    Every file's schema counts, not the first one's: a column entirely null in one file is typed
    `null` there. Raises ValueError naming `base` when a column is missing from every file.
    """
    if not files:
        return pa.table({c: pa.array([], pa.null()) for c in columns})
    dataset = _dataset(base, files, columns)
    with _naming(base):
        return dataset.to_table(columns=columns, filter=where)


def scan_parquet_batches(
    base: str, files: list[str], columns: list[str], where: ds.Expression | None
) -> Iterator[pa.RecordBatch]:
    """`scan_parquet` as record batches (Arrow's, ~130k rows at most), file by file in the order
    of `files`: the rows of more files than fit in memory, a batch at a time."""
    if not files:
        return
    dataset = _dataset(base, files, columns)
    with _naming(base):
        yield from dataset.to_batches(columns=columns, filter=where)


def _dataset(base: str, files: list[str], columns: list[str]) -> ds.Dataset:
    with _naming(base):
        fs, _ = filesystem(base)
        files = [fs._strip_protocol(f) for f in files]
        arrow_fs = (
            pafs.LocalFileSystem()
            if isinstance(fs, LocalFileSystem)
            else pafs.PyFileSystem(pafs.FSSpecHandler(fs))
        )
        factory = ds.FileSystemDatasetFactory(
            arrow_fs, files, ds.ParquetFileFormat(), ds.FileSystemFactoryOptions()
        )
        schema = factory.inspect(promote_options="permissive", fragments=None)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ValueError(f"{base} lacks columns {missing} (it has {schema.names})")
    return factory.finish(schema)


def read_table(url: str, text_columns: Iterable[str] = (), decimal: str = ".") -> pd.DataFrame:
    """A user's own table: Parquet, or CSV (by the extension `.csv`).

    CSV: the delimiter is detected (`,` `;` tab `|`), a UTF-8 byte-order mark is dropped, and the
    `text_columns` are read as text, so that category codes like `021` or `21` stay what they are
    instead of becoming numbers; `decimal` is the decimal mark (`,` in many European exports).
    Raises ValueError naming the file when it cannot be parsed.
    """
    if not url.endswith(".csv"):
        return read_parquet(url)
    data = read_bytes(url)
    head = data[:65536].decode("utf-8-sig", errors="replace")
    try:
        sep = csv.Sniffer().sniff(head.split("\n", 1)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        sep = ","  # one column, or nothing to tell from: the default
    try:
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            decimal=decimal,
            encoding="utf-8-sig",
            dtype=dict.fromkeys(text_columns, "string"),
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"cannot read the CSV table {url}: {err}") from None


def write_table(frame: pd.DataFrame, url: str) -> None:
    """`read_table`'s counterpart: `frame` as CSV (by the extension `.csv`) or Parquet at `url`,
    written in one piece (`write_bytes`)."""
    if url.endswith(".csv"):
        write_text(url, frame.to_csv(index=False))
    else:
        write_parquet(frame, url)


def partition_url(base: str, day: dt.date) -> str:
    return join(base, f"date={day.isoformat()}", "part-0.parquet")


def write_partition(df: pd.DataFrame, base: str, day: dt.date) -> str:
    """Replace one day's partition (never append: re-running must not double rows)."""
    url = partition_url(base, day)
    write_parquet(df, url)
    return url


def list_partitions(base: str) -> dict[dt.date, str]:
    """Day → URL of the partitions present under `base` (`date=YYYY-MM-DD/part-0.parquet`)."""
    with _naming(base):
        return _list_partitions(base)


def _list_partitions(base: str) -> dict[dt.date, str]:
    fs, path = filesystem(base)
    if not fs.exists(path):
        return {}
    out: dict[dt.date, str] = {}
    protocol = base.split("://", 1)[0] + "://" if "://" in base else ""
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("date="):
            continue
        try:
            day = dt.date.fromisoformat(name[len("date=") :])
        except ValueError:
            continue
        part = f"{entry.rstrip('/')}/part-0.parquet"
        if fs.exists(part):
            out[day] = protocol + part if protocol and not part.startswith(protocol) else part
    return dict(sorted(out.items()))


def read_partitions(base: str, days: Iterable[dt.date]) -> list[pd.DataFrame]:
    parts = list_partitions(base)
    return [read_parquet(parts[d]) for d in days if d in parts]
