"""validate: the blocking data-quality gate, run with Great Expectations 1.x.

Reads the raw snapshot and the window ingest resolved (its manifest), runs the suite from
`core.expectations` on each part of the snapshot where it lives (`compute`: one part in this
process, or a cluster's parts on its workers) in in-memory GX contexts, combines the parts'
results (`core.result_merge`), builds Data Docs (HTML) from them and writes the validation
summary (`core.layout`), which featurize checks before it touches the data. Exit code 65
(`core.expectations.DATA_REJECTED`) on any blocking failure, with one stderr line per failed
expectation naming its column; 1 when the snapshot cannot be read or the cluster reached.
"""

from __future__ import annotations

import copy
import datetime
import math
import shutil
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

from pipelines.config import Settings
from pipelines.core import expectations as ex
from pipelines.core import reference, result_merge
from pipelines.core.layout import Layout
from pipelines.io import compute, gate_reference, manifest, storage

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
    """Run the gate on the raw snapshot where `compute` says (part by part on a cluster, the
    results combined by `core.result_merge`), publish Data Docs and write the summary.

    Raises FileNotFoundError or ValueError when the snapshot is missing or unreadable, and
    RuntimeError when the Dask scheduler cannot be reached (the summary then records that
    failure, so nothing downstream reads a stale pass)."""
    layout = Layout(settings)
    summary_url = layout.validation_summary
    try:
        rows, outcomes = _gate(settings, layout)
    except Exception as err:
        # The summary always describes the latest attempt: nothing downstream reads a stale
        # pass, whatever failed (the snapshot, the cluster, a computation on it).
        storage.write_json(
            summary_url, {"success": False, "error": str(err), "docs": None, "results": []}
        )
        raise
    outcomes = ex.ordered(ex.explain_missing_columns(outcomes))
    result = ValidationSummary(
        success=ex.gate_passed(outcomes),
        rows=rows,
        outcomes=tuple(outcomes),
        docs=settings.portable(storage.join(layout.validation_docs, "index.html")),
        summary=summary_url,
    )
    storage.write_json(summary_url, result.to_json())
    _report(result)
    return result


def _gate(settings: Settings, layout: Layout) -> tuple[int, list[ex.Outcome]]:
    """(rows, outcomes) of the suite on the snapshot, on `settings.compute`'s engine, with the
    Data Docs published."""
    with compute.engine(settings) as engine:
        raw = engine.read_parquet(layout.raw_table)
        start, end = manifest.window(settings)
        saved, derived = gate_reference.load_or_derive(settings, raw, engine.map_parts)
        if derived:
            print(
                f"validate: derived the gate's reference from this snapshot → "
                f"{settings.portable(settings.paths.gate_reference)} (read and edit it; a key "
                "under `validate` in params.yaml wins over it)",
                file=sys.stderr,
            )
        params = reference.apply(settings.validate_, saved)
        checks = ex.build_suite(settings.contract, params, start, end)
        window = (settings.contract.timestamp, start, end, params.period)
        with tempfile.TemporaryDirectory(prefix="gx-docs-") as staging:
            site = Path(staging) / "docs"  # not the 0700 temp dir itself: it is copied as is
            rows, outcomes = _validate(engine, raw, checks, window, site)
            _publish(site, layout.validation_docs)
    return rows, outcomes


def main(settings: Settings) -> int:
    """The stage's exit code: 0 passed, `DATA_REJECTED` blocked, 1 no readable snapshot or
    no reachable cluster."""
    try:
        result = run(settings)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
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


def _context(docs_dir: Path | None) -> Any:
    """An in-memory context whose only Data Docs site is `docs_dir` (none without one).

    The default ephemeral context adds its own docs site in a fresh system temp directory that
    nobody cleans up, so the config is given explicitly.
    """
    sites = {}
    if docs_dir is not None:
        sites[SITE] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        # Off in the config, not only through GX_ANALYTICS_ENABLED=false (runtime.bootstrap):
        # the parts run in a cluster's workers, whose environment this process does not set.
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@dataclass(frozen=True)
class PartRun:
    """The suite's run on one part of the table, and what the combined outcome needs besides."""

    rows: int
    suite: Any  # GX ExpectationSuiteValidationResult of the part
    means: dict[str, tuple[int, float]]  # mean check's key → the column's (count, sum)
    outside: dict[str, pd.Series]  # failing in-set check's key → `ex.outside_values`
    periods: pd.DataFrame | None  # `ex.rows_per_period` of the part, when a window is given


def _run_part(part: pd.DataFrame, checks: list[ex.Check], window: tuple | None) -> PartRun:
    """Run `checks` on `part` (in the process that holds it); `window`: (timestamp column,
    start, end, period) to count rows per period, or None."""
    suite = _run(part, ex.TABLE, checks, RESULT_FORMATS[ex.TABLE])
    results = {r.expectation_config.meta["key"]: r for r in suite.results}
    outside = {
        c.key: ex.outside_values(part[c.column], c.kwargs["value_set"])
        for c in checks
        if c.type == "ExpectColumnValuesToBeInSet"
        and c.column in part.columns
        and (results[c.key].result or {}).get("unexpected_count")
    }
    means = {
        c.key: (int(part[c.column].count()), float(part[c.column].sum()))
        for c in checks
        if c.type == "ExpectColumnMeanToBeBetween" and not _raised(results[c.key].exception_info)
    }
    periods = None if window is None else ex.rows_per_period(part, *window)
    return PartRun(len(part), suite, means, outside, periods)


def _run(frame: pd.DataFrame, batch: str, checks: list[ex.Check], result_format: Any) -> Any:
    """GX's ExpectationSuiteValidationResult of `checks` on `frame`, in a context of its own
    (the docs are built from the combined results). A validation definition, not
    `Batch.validate`: that fetches the batch twice, and GX fingerprints a frame (hashes every
    row) each time it fetches it."""
    with _GX:
        return _run_alone(frame, batch, checks, result_format)


# A cluster's worker runs several parts at once in threads; GX keeps one current context per
# process (each `get_context` replaces it), so runs in one process take turns.
_GX = threading.Lock()


def _run_alone(frame: pd.DataFrame, batch: str, checks: list[ex.Check], result_format: Any) -> Any:
    context = _context(None)
    suite = context.suites.add(
        gx.ExpectationSuite(name=batch, expectations=[_expectation(c) for c in checks])
    )
    data = (
        context.data_sources.add_pandas(batch)
        .add_dataframe_asset(batch)
        .add_batch_definition_whole_dataframe("all")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=batch, suite=suite, data=data)
    )
    return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)


def _validate(
    engine: compute.Engine, raw: Any, checks: list[ex.Check], window: tuple, docs_dir: Path
) -> tuple[int, list[ex.Outcome]]:
    """(rows, one outcome per check) of the gate on `raw` (a frame of `engine`): the table's
    checks on each part, uniqueness on parts split by the column, the volume on the rows per
    period added up; both batches' results published as Data Docs in `docs_dir`."""
    table = [c for c in checks if c.batch == ex.TABLE]
    # One part holds every row of every id: uniqueness needs no second pass over split parts.
    # A check on a missing column fails in the first pass: nothing to split by.
    keyed = [
        c
        for c in table
        if c.type in result_merge.KEYED and not engine.one_part and c.column in raw.columns
    ]
    per_row = [c for c in table if c not in keyed]
    runs = engine.map_parts(raw, _run_part, per_row, window)
    results = _combined(per_row, runs)
    for column in dict.fromkeys(c.column for c in keyed):
        mine = [c for c in keyed if c.column == column]
        split = raw[[column]]
        results |= _combined(mine, engine.map_keyed(split, str(column), _run_part, mine, None))
    outside = {
        c.key: ex.added_counts(found)
        for c in table
        if (found := [r.outside[c.key] for r in runs if c.key in r.outside])
    }
    periods = ex.added_periods([r.periods for r in runs])
    suites = {
        ex.TABLE: _suite_result(runs[0].suite, [results[c.key] for c in table]),
        ex.PERIODS: _run(
            periods,
            ex.PERIODS,
            [c for c in checks if c.batch == ex.PERIODS],
            RESULT_FORMATS[ex.PERIODS],
        ),
    }
    _build_docs(docs_dir, checks, suites)
    by_key = {r.expectation_config.meta["key"]: r for s in suites.values() for r in s.results}
    outcomes = [_outcome(c, by_key[c.key], outside.get(c.key)) for c in checks]
    return sum(r.rows for r in runs), outcomes


def _combined(checks: list[ex.Check], runs: list[PartRun]) -> dict[str, Any]:
    """Check key → GX's ExpectationValidationResult on the whole table, from the parts' runs;
    a check GX could not evaluate on a part, or whose parts' results do not combine, is not
    evaluated on the whole (as GX would raise on it)."""
    parts = [{r.expectation_config.meta["key"]: r for r in run.suite.results} for run in runs]
    whole: dict[str, Any] = {}
    for c in checks:
        mine = [p[c.key] for p in parts]
        raised = [r for r in mine if _raised(r.exception_info)]
        if raised:
            whole[c.key] = raised[0]
            continue
        whole[c.key] = copy.deepcopy(mine[0])
        try:
            success, result = result_merge.combine(
                c.type,
                c.kwargs,
                [
                    result_merge.PartResult(r.success, r.result or {}, *run.means.get(c.key, ()))
                    for r, run in zip(mine, runs, strict=True)
                ],
            )
        except ValueError as err:
            success, result = False, {}
            whole[c.key].exception_info = {
                "raised_exception": True,
                "exception_message": str(err),
                "exception_traceback": None,
            }
        whole[c.key].success, whole[c.key].result = success, result
    return whole


def _raised(info: dict | None) -> bool:
    """Whether GX raised evaluating the check."""
    return any(e.get("raised_exception") for e in _exceptions(info))


def _exceptions(info: dict | None) -> list[dict]:
    """GX's exception entries of one result: the info itself, or one per metric when it nests
    them (a metric raised)."""
    if not info:
        return []
    return [v for v in info.values() if isinstance(v, dict)] or [info]


def _suite_result(part: Any, results: list[Any]) -> Any:
    """The suite's result on the whole table: a part's, holding the combined `results`."""
    whole = copy.deepcopy(part)
    passed = sum(bool(r.success) for r in results)
    whole.results = results
    whole.success = passed == len(results)
    whole.statistics = {
        "evaluated_expectations": len(results),
        "successful_expectations": passed,
        "unsuccessful_expectations": len(results) - passed,
        "success_percent": 100 * passed / len(results) if results else None,
    }
    return whole


def _build_docs(docs_dir: Path, checks: list[ex.Check], suites: dict[str, Any]) -> None:
    """Data Docs in `docs_dir`: each batch's suite (from `checks`) and its result in `suites`,
    stored as one validation run in a context whose site is `docs_dir`, then the site built."""
    context = _context(docs_dir)
    run_id = RunIdentifier(run_time=datetime.datetime.now(datetime.UTC))
    for name, result in suites.items():
        expectations = [_expectation(c) for c in checks if c.batch == name]
        context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        suite_id = ExpectationSuiteIdentifier(name=name)
        result.meta["run_id"] = run_id
        result.meta["validation_time"] = run_id.run_time
        context.validation_results_store.store_validation_results(
            suite_validation_result=result,
            suite_validation_result_identifier=ValidationResultIdentifier(
                expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=name
            ),
            expectation_suite_identifier=suite_id,
        )
    context.build_data_docs(site_names=[SITE])


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


def _outcome(check: ex.Check, r: Any, outside: pd.Series | None) -> ex.Outcome:
    res = r.result or {}
    details: dict[str, Any] = {}
    if not r.success and check.type == "ExpectColumnValuesToBeInSet" and outside is not None:
        # GX's partial_unexpected_counts count only the first 20 unexpected rows: a new category
        # seen 400 times would read as 20. Every unexpected value is counted instead (cheap).
        details["unexpected_values"] = _plain(ex.unexpected_value_counts(outside))
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
    """The first exception message of GX's exception entries (`_exceptions`), if any."""
    messages = [e["exception_message"] for e in _exceptions(info) if e.get("exception_message")]
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
