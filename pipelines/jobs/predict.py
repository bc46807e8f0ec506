"""predict: batch scoring. The events of a table at a URL, scored by the champion (or a given
model version), written with the model version to a URL.

Not every model serves in real time: a nightly file of transactions, a backfill after a model
change or a table from another team is scored here, with the same model, features and checks
as the service, and without a server.

- **Input**: Parquet, or CSV by the extension `.csv` (`io.storage.read_table`); local paths or
  any URL the project reads (`s3://...`); read as ingest reads a team's table (codes as text,
  timestamps naive UTC: `core.dataset.conform`). Columns beyond the contract's (a label, say)
  are ignored.
- **Validation**: every row as the service validates a request (`serving.schema.record_model`
  with the gate's reference: the contract's columns, the amount range the gate derived, the
  columns allowed gaps). A table with any invalid row is refused, naming the first rows and
  fields, and nothing is written.
- **Features**: point-in-time from *the table's own history*, the offline definition the model
  was trained on (`core.features.build_features`): a row sees its entity's events of strictly
  earlier minutes in the table, never the online store's live state, so the same table gives
  the same numbers whenever it is scored. The first rows of an entity see only what the table
  holds before them: include the history the windows need (the longest is
  `features.windows_hours`) ahead of the rows that matter.
- **Output**: one row per input row, in input order: the contract's id, timestamp and entity,
  then `probability`, `decision` and `model_version` (the prediction log's names). Parquet, or
  CSV by `.csv`; written in one piece (a local file is renamed into place; an object store puts
  one object), so a reader never sees a partial result and a failed run leaves the previous
  file as it was.
- **Engine** (`compute`): on Dask the table (Parquet only) is validated part by part, shuffled
  by entity for the features and scored on the workers; the output is a Parquet dataset
  directory in input order (`_metadata` last: never read before it is whole). Locally it is
  moved into place whole; on an object store the previous output is removed when the writing
  starts, so a run that fails while scoring (not one refused by validation, which writes
  nothing) leaves none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from pipelines.config import Settings
from pipelines.core.dataset import conform
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.model import TabularModel
from pipelines.io import compute, gate_reference
from pipelines.io.compute import Engine, Local
from pipelines.io.prediction_log import LogColumn
from pipelines.serving.schema import record_model
from pipelines.serving.scorer import Policy

# How many problems a refusal names (a bad export can have one per row).
SHOWN_PROBLEMS = 10
# A column the job adds while it runs: each row's 0-based position in the input table, which a
# refusal names and by which the output is put back in input order after the entity shuffle.
ROW = "__row__"
PROBLEM_COLUMNS = {"row": "int64", "field": "str", "message": "str"}


def validate(events: pd.DataFrame, settings: Settings, name: str) -> None:
    """Raise ValueError naming `name`, the missing columns, or the first SHOWN_PROBLEMS invalid
    rows (0-based positions) and fields, when any row is not a record the service accepts."""
    require_columns(events, settings, name)
    require_valid(Local(), numbered(events.reset_index(drop=True)), settings, name)


def require_valid(engine: Engine, events: Any, settings: Settings, name: str) -> None:
    """`refuse` the rows of `events` (numbered) that the service would refuse, checked part by
    part where they live; the gate's reference is read once, here, not on each part's worker."""
    problems = engine.per_entity(events, row_problems, None, gate_reference.completed(settings))
    count, shown = engine.values(problems.shape[0], problems.nsmallest(SHOWN_PROBLEMS, "row"))
    refuse(name, shown, int(count))


def numbered(events: Any) -> Any:
    """`events` (a pandas or dask frame) with ROW, each row's 0-based position: a running count,
    which Dask computes across partitions."""
    events = events.assign(**{ROW: np.int64(1)})
    return events.assign(**{ROW: events[ROW].cumsum() - 1})


def require_columns(events: Any, settings: Settings, name: str) -> None:
    """Raise ValueError naming `name` and the contract's columns `events` lacks."""
    missing = [c for c in dict.fromkeys(settings.contract.columns) if c not in events.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (it has {list(events.columns)})")


def row_problems(events: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Every invalid value of `events` (rows × contract columns, plus ROW) as the service would
    refuse it in a request: columns row (the ROW of its row), field, message. `settings` are
    completed with the gate's reference (`io.gate_reference.completed`)."""
    contract = settings.contract
    needed = list(dict.fromkeys(contract.columns))
    rows = _as_json_values(events[needed], contract.timestamp).to_dict("records")
    record = record_model(settings)
    adapter: TypeAdapter[list[Any]] = TypeAdapter(list[record])  # type: ignore[valid-type]
    try:
        adapter.validate_python(rows)
    except ValidationError as err:
        positions = events[ROW].to_numpy()
        found = err.errors(include_url=False)
        return pd.DataFrame(
            {
                "row": [int(positions[p["loc"][0]]) for p in found],
                "field": [".".join(str(x) for x in p["loc"][1:]) for p in found],
                "message": [p["msg"] for p in found],
            }
        ).astype(PROBLEM_COLUMNS)
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in PROBLEM_COLUMNS.items()})


def refuse(name: str, shown: pd.DataFrame, count: int) -> None:
    """Raise ValueError naming `name`, `count` problems and the first of `shown` (row order),
    if there is any problem."""
    if not count:
        return
    first = shown.sort_values(["row"], kind="stable").head(SHOWN_PROBLEMS)
    listed = "; ".join(f"row {r.row} {r.field}: {r.message}" for r in first.itertuples())
    more = count - SHOWN_PROBLEMS
    raise ValueError(
        f"{name}: {count} invalid value(s), nothing scored (rows counted from 0): {listed}"
        + (f"; and {more} more" if more > 0 else "")
    )


def score(
    events: pd.DataFrame, model: TabularModel, version: str, settings: Settings
) -> pd.DataFrame:
    """The output rows (see the module docstring) of valid `events`, in their order; `events`
    hold every event of their entities (a ROW column is kept)."""
    events = events.reset_index(drop=True)
    probability = model.predict_proba(build_features(events, FeatureSpec.from_settings(settings)))
    c = settings.contract
    keep = [c.id, c.timestamp, *([c.entity] if c.entity else []), *([ROW] if ROW in events else [])]
    out = events[keep].copy()
    policy = Policy.of(settings.serving.decisions, settings.serving.default_decision)
    out[LogColumn.PROBABILITY] = probability
    out[LogColumn.DECISION] = policy.decide(probability)
    out[LogColumn.MODEL_VERSION] = version
    return out


def run(settings: Settings, source: str, target: str, model: str | None = None) -> dict[str, Any]:
    """Score the table at `source` with `model` (a version tag; default: the champion) and write
    the result to `target`, on the `compute` engine. Returns a summary (rows, version,
    decisions). Raises LookupError when there is no champion, FileNotFoundError when `source` is
    absent, ValueError naming the problem when `source` is unreadable or invalid (nothing is
    written then) or when the Dask engine is given a CSV (it reads and writes Parquet)."""
    from pipelines.io import registry

    version = model or registry.champion_tag()
    if version is None:
        raise LookupError(
            "no champion to score with: promote a model (python -m pipelines promote latest) "
            "or pass --model"
        )
    fitted = registry.load(version)
    with compute.engine(settings) as engine:
        scored = _scored(engine, settings, source, target, fitted, version)
        rows = engine.write_table(target, scored)
        (decisions,) = engine.values(
            engine.written(target, scored)[LogColumn.DECISION].value_counts()
        )
    return {
        "source": source,
        "target": target,
        "rows": rows,
        "model_version": version,
        "decisions": {str(k): int(v) for k, v in decisions.items()},
        "engine": engine.tag,
    }


def _scored(
    engine: Engine,
    settings: Settings,
    source: str,
    target: str,
    fitted: TabularModel,
    version: str,
) -> Any:
    """The scores of the table at `source` on `engine`, in input order, once every row is valid."""
    c = settings.contract
    engine.require_table_urls(source, target)
    # As ingest reads a team's table: codes as text, timestamps naive UTC.
    table = engine.read_table(source, c.text_columns, settings.ingest.csv_decimal)
    require_columns(table, settings, source)
    events = numbered(engine.per_entity(table, conform, None, c))
    require_valid(engine, events, settings, source)
    scored = engine.per_entity(events, score, c.entity, fitted, version, settings)
    return engine.sort(scored, [ROW], like=events[ROW]).drop(columns=ROW)


def _as_json_values(frame: pd.DataFrame, timestamp: str) -> pd.DataFrame:
    """`frame` as the JSON a client would send: gaps as None, timestamps as ISO 8601 text (text
    pandas reads as ISO 8601, e.g. a CSV's `2026-01-20 11:44:49.500`, is taken; other text is
    passed on as it is, for the record model to name)."""
    out = frame.astype(object).where(frame.notna(), None)
    stamps = frame[timestamp]
    if pd.api.types.is_datetime64_any_dtype(stamps.dtype):
        parsed = stamps
    else:  # naive text is UTC, as in a request
        parsed = pd.to_datetime(stamps, errors="coerce", format="ISO8601", utc=True)
    out[timestamp] = [
        t.isoformat() if not pd.isna(t) else given
        for t, given in zip(parsed, out[timestamp], strict=True)
    ]
    return out
