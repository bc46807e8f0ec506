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
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from pipelines.config import Settings
from pipelines.core.dataset import conform
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.model import TabularModel
from pipelines.io import gate_reference, storage
from pipelines.io.prediction_log import LogColumn
from pipelines.serving.schema import record_model
from pipelines.serving.scorer import Policy

# How many problems a refusal names (a bad export can have one per row).
SHOWN_PROBLEMS = 10


def validate(events: pd.DataFrame, settings: Settings, name: str) -> None:
    """Raise ValueError naming `name`, the missing columns, or the first SHOWN_PROBLEMS invalid
    rows (0-based positions) and fields, when any row is not a record the service accepts."""
    contract = settings.contract
    needed = list(dict.fromkeys(contract.columns))
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing} (it has {list(events.columns)})")
    rows = _as_json_values(events[needed], contract.timestamp).to_dict("records")
    record = record_model(gate_reference.completed(settings))
    adapter: TypeAdapter[list[Any]] = TypeAdapter(list[record])  # type: ignore[valid-type]
    try:
        adapter.validate_python(rows)
    except ValidationError as err:
        problems = err.errors(include_url=False)
        shown = "; ".join(
            f"row {p['loc'][0]} {'.'.join(str(x) for x in p['loc'][1:])}: {p['msg']}"
            for p in problems[:SHOWN_PROBLEMS]
        )
        more = len(problems) - SHOWN_PROBLEMS
        raise ValueError(
            f"{name}: {len(problems)} invalid value(s), nothing scored (rows counted from 0): {shown}"
            + (f"; and {more} more" if more > 0 else "")
        ) from None


def score(
    events: pd.DataFrame, model: TabularModel, version: str, settings: Settings
) -> pd.DataFrame:
    """The output rows (see the module docstring) of valid `events`, in their order."""
    events = events.reset_index(drop=True)
    probability = model.predict_proba(build_features(events, FeatureSpec.from_settings(settings)))
    c = settings.contract
    out = events[[c.id, c.timestamp, *([c.entity] if c.entity else [])]].copy()
    policy = Policy.of(settings.serving.decisions, settings.serving.default_decision)
    out[LogColumn.PROBABILITY] = probability
    out[LogColumn.DECISION] = policy.decide(probability)
    out[LogColumn.MODEL_VERSION] = version
    return out


def run(settings: Settings, source: str, target: str, model: str | None = None) -> dict[str, Any]:
    """Score the table at `source` with `model` (a version tag; default: the champion) and write
    the result to `target`. Returns a summary (rows, version, decisions). Raises LookupError
    when there is no champion, FileNotFoundError when `source` is absent, ValueError naming the
    problem when `source` is unreadable or invalid (nothing is written then)."""
    from pipelines.io import registry

    version = model or registry.champion_tag()
    if version is None:
        raise LookupError(
            "no champion to score with: promote a model (python -m pipelines promote latest) "
            "or pass --model"
        )
    # As ingest reads a team's table: codes as text, timestamps naive UTC.
    table = storage.read_table(source, settings.contract.text_columns, settings.ingest.csv_decimal)
    events = conform(table, settings.contract)
    validate(events, settings, source)
    scored = score(events, registry.load(version), version, settings)
    storage.write_table(scored, target)
    return {
        "source": source,
        "target": target,
        "rows": len(scored),
        "model_version": version,
        "decisions": scored[LogColumn.DECISION].value_counts().to_dict(),
    }


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
