"""validate: the blocking data-quality gate, run with Great Expectations 1.x.

Reads the raw snapshot and the window ingest resolved (its manifest), runs the suite from
`core.expectations` in an in-memory GX context,
builds Data Docs (HTML) and writes the validation summary (`core.layout`), which featurize
checks before it touches the data. Exit code 65 (`core.expectations.DATA_REJECTED`) on any
blocking failure, with one stderr line per failed expectation naming its column; 1 when the
snapshot cannot be read.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from pipelines.config import Settings
from pipelines.core import expectations as ex
from pipelines.core import reference
from pipelines.core.layout import Layout
from pipelines.io import gate_reference, manifest, storage

SITE = "validation"
# SUMMARY keeps per-expectation results bounded (20 example values) however large the table;
# the per-period table is small, and COMPLETE with the period as index lists every short one.
RESULT_FORMATS: dict[str, Any] = {
    ex.TABLE: "SUMMARY",
    ex.PERIODS: {"result_format": "COMPLETE", "unexpected_index_column_names": [ex.PERIOD]},
}
EXAMPLES = 3


@dataclass(frozen=True)
class ValidationSummary:
    """The gate's verdict on one snapshot: every outcome (failures first) and where the report is."""

    success: bool
    rows: int
    outcomes: tuple[ex.Outcome, ...]  # failures first
    docs: str  # URL of the Data Docs index.html
    summary: str  # URL of summary.json

    @property
    def failures(self) -> list[ex.Outcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def blocking_failures(self) -> int:
        return sum(o.check.blocking for o in self.failures)

    @property
    def warnings(self) -> int:
        return sum(not o.check.blocking for o in self.failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "evaluated": len(self.outcomes),
            "failed_blocking": self.blocking_failures,
            "warnings": self.warnings,
            "docs": self.docs,
            "results": [o.to_json() for o in self.outcomes],
        }


def run(settings: Settings) -> ValidationSummary:
    """Run the gate on the raw snapshot, publish Data Docs and write the summary.

    Raises FileNotFoundError or ValueError when the snapshot is missing or unreadable (the summary
    then records that failure, so nothing downstream reads a stale pass)."""
    layout = Layout(settings)
    raw_url, summary_url = layout.raw_table, layout.validation_summary
    try:
        raw = storage.read_parquet(raw_url)
        start, end = manifest.window(settings)
    except (FileNotFoundError, ValueError) as err:
        # The summary always describes the latest attempt, so nothing downstream reads a stale pass.
        storage.write_json(
            summary_url, {"success": False, "error": str(err), "docs": None, "results": []}
        )
        raise
    saved, derived = gate_reference.load_or_derive(settings, raw)
    if derived:
        print(
            f"validate: derived the gate's reference from this snapshot → "
            f"{settings.portable(settings.paths.gate_reference)} (read and edit it; a key under "
            "`validate` in params.yaml wins over it)",
            file=sys.stderr,
        )
    params = reference.apply(settings.validate_, saved)
    checks = ex.build_suite(settings.contract, params, start, end)
    frames = {
        ex.TABLE: raw,
        ex.PERIODS: ex.rows_per_period(raw, settings.contract.timestamp, start, end, params.period),
    }
    docs_url = layout.validation_docs
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as staging:
        site = Path(staging) / "docs"  # not the 0700 temp dir itself: it would be copied as is
        outcomes = _validate(frames, checks, site)
        _publish(site, docs_url)
    outcomes = ex.ordered(ex.explain_missing_columns(outcomes))
    result = ValidationSummary(
        success=ex.gate_passed(outcomes),
        rows=len(raw),
        outcomes=tuple(outcomes),
        docs=settings.portable(storage.join(docs_url, "index.html")),
        summary=summary_url,
    )
    storage.write_json(summary_url, result.to_json())
    _report(result)
    return result


def main(settings: Settings) -> int:
    """The stage's exit code: 0 passed, `DATA_REJECTED` blocked, 1 no readable snapshot."""
    try:
        result = run(settings)
    except (FileNotFoundError, ValueError) as err:
        print(f"validate: error: {err}", file=sys.stderr)
        return 1
    return 0 if result.success else ex.DATA_REJECTED


def _report(result: ValidationSummary) -> None:
    for o in result.failures:
        print(f"validate: {ex.failure_line(o)}", file=sys.stderr)
    verdict = "passed" if result.success else "FAILED"
    print(
        f"validate: {verdict}: {len(result.outcomes)} checks on {result.rows:,} rows, "
        f"{result.blocking_failures} blocking failure(s), {result.warnings} warning(s); "
        f"report: {result.docs}",
        file=sys.stdout if result.success else sys.stderr,
    )


# --- Great Expectations ---------------------------------------------------------------------


def _context(docs_dir: Path) -> Any:
    """An in-memory context whose only Data Docs site is `docs_dir`.

    The default ephemeral context adds its own docs site in a fresh system temp directory that
    nobody cleans up, so the config is given explicitly.
    """
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,  # and GX_ANALYTICS_ENABLED=false from runtime.bootstrap
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate(
    frames: dict[str, pd.DataFrame], checks: list[ex.Check], docs_dir: Path
) -> list[ex.Outcome]:
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("pipeline")
    outcomes: list[ex.Outcome] = []
    # One checkpoint per batch: a checkpoint passes the same batch parameters (the dataframe)
    # to all its validation definitions. Both update the same docs site, whose index lists both.
    for batch, frame in frames.items():
        mine = {c.key: c for c in checks if c.batch == batch}
        suite = gx.ExpectationSuite(
            name=batch, expectations=[_expectation(c) for c in mine.values()]
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=batch,
                suite=context.suites.add(suite),
                data=source.add_dataframe_asset(batch).add_batch_definition_whole_dataframe("all"),
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=batch,
                validation_definitions=[definition],
                result_format=RESULT_FORMATS[batch],
                actions=[UpdateDataDocsAction(name="docs", site_names=[SITE])],
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        for suite_result in result.run_results.values():
            outcomes += [
                _outcome(mine[r.expectation_config.meta["key"]], r, frame)
                for r in suite_result.results
            ]
    order = {c.key: i for i, c in enumerate(checks)}
    return sorted(outcomes, key=lambda o: order[o.check.key])


def _expectation(check: ex.Check) -> Any:
    # The description replaces GX's generated sentence in Data Docs, so a reader sees which
    # failures block (GX's own pages do not show severity).
    kind = "BLOCKING" if check.blocking else "warning"
    return getattr(gxe, check.type)(
        **check.kwargs,
        severity="critical" if check.blocking else "warning",
        description=f"[{kind}] {check.description}",
        meta={"key": check.key},
    )


def _outcome(check: ex.Check, r: Any, frame: pd.DataFrame) -> ex.Outcome:
    res = r.result or {}
    details: dict[str, Any] = {}
    if not r.success and check.type == "ExpectColumnValuesToBeInSet" and check.column in frame:
        # GX's partial_unexpected_counts count only the first 20 unexpected rows: a new category
        # seen 400 times would read as 20. Count every unexpected value instead (cheap).
        details["unexpected_values"] = _plain(
            ex.unexpected_value_counts(frame[check.column], check.kwargs["value_set"])
        )
    elif res.get("partial_unexpected_list") and check.type != "ExpectColumnValuesToNotBeNull":
        details["examples"] = _plain(list(dict.fromkeys(res["partial_unexpected_list"]))[:EXAMPLES])
    if res.get("unexpected_percent") is not None:
        details["unexpected_percent"] = _plain(res["unexpected_percent"])
    if "mismatched" in (res.get("details") or {}):
        details["mismatched"] = res["details"]["mismatched"]
    if res.get("unexpected_index_list"):
        details["periods"] = [row[ex.PERIOD] for row in res["unexpected_index_list"]]
    count = res.get("unexpected_count")
    return ex.Outcome(
        check=check,
        success=bool(r.success),
        expectation=r.expectation_config.type,
        observed=_plain(res.get("observed_value")),
        unexpected_count=None if count is None else int(count),
        details=details,
        error=_error(r.exception_info),
    )


def _error(info: dict | None) -> str | None:
    """The first exception message; GX nests them per metric when a metric raised."""
    if not info:
        return None
    entries = [v for v in info.values() if isinstance(v, dict)] or [info]
    messages = [e.get("exception_message") for e in entries if e.get("exception_message")]
    return messages[0] if messages else None


def _plain(value: Any) -> Any:
    """JSON-able values: NaN/NA become None, numpy scalars Python ones, anything else str."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return None if pd.isna(value) else str(value)


# --- publishing -----------------------------------------------------------------------------


def _publish(staging: Path, url: str) -> None:
    """Put a fully built docs site at `url`: a reader sees the old report or the new one, never half."""
    fs, path = storage.filesystem(url)
    if isinstance(fs, LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fresh = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
        stale = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        shutil.copytree(staging, fresh)
        if target.exists():
            target.rename(stale)
        fresh.rename(target)
        shutil.rmtree(stale, ignore_errors=True)
        return
    # Object stores have no directory rename: replace the files and upload index.html last, so
    # the report only looks complete once it is.
    if fs.exists(path):
        fs.rm(path, recursive=True)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.relative_to(staging) == Path("index.html")):
        fs.put_file(str(p), f"{path}/{p.relative_to(staging).as_posix()}")
