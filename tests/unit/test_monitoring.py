"""The monitoring files: alert rules that promtool accepts and whose unit tests fire and clear
every alert, a Prometheus config that loads them, and a Grafana dashboard whose every query names
series the service, BentoML or the drift check export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines import runtime
from pipelines.config import ConfigError, parse_settings, series
from pipelines.io import drift_metrics
from pipelines.jobs import monitoring
from pipelines.serving import metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "fraud-service.json"
# What the queries may name: our series (histograms and counters with Prometheus' suffixes),
# BentoML's, and Prometheus' own `up`.
OURS = [
    metrics.MODEL_INFO,
    metrics.READY,
    metrics.NOT_READY,
    metrics.CHAMPION_AGE,
    metrics.LOG_LAG,
    metrics.LOG_PENDING,
    metrics.LOG_SPOOLED,
    metrics.STORE_UP,
    metrics.STORE_PENDING,
    *(f"{h}_bucket" for h in (metrics.BATCH_SIZE, metrics.SCORE, metrics.STORE_SECONDS)),
    *(
        f"{c}_total"
        for c in (
            metrics.DECISIONS,
            metrics.UNKNOWN_CATEGORY,
            metrics.REFUSED,
            metrics.HISTORY,
            metrics.STORE_DROPPED,
        )
    ),
    metrics.REQUESTS,
    f"{metrics.LATENCY}_bucket",
    drift_metrics.VERDICT,
    drift_metrics.FOUND,
    drift_metrics.COLUMN_SCORE,
    drift_metrics.COLUMN_THRESHOLD,
    drift_metrics.PREDICTION_SCORE,
    drift_metrics.QUALITY,
    drift_metrics.QUALITY_FLOOR,
    drift_metrics.LABELLED,
    drift_metrics.WINDOW_ROWS,
    drift_metrics.LAST_SUCCESS,
    drift_metrics.LAST_FAILURE,
    "up",
]
PROMQL_WORDS = {
    "sum",
    "rate",
    "increase",
    "histogram_quantile",
    "max",
    "min",
    "scalar",
    "time",
    "absent",
    "or",
    "and",
    "unless",
    "bool",
    "on",
    "ignoring",
}


def series_in(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: its identifiers once label matchers, grouping
    clauses, ranges and strings are taken out, minus PromQL's own words."""
    bare = re.sub(r"\{[^}]*\}|\b(?:by|without)\s*\([^)]*\)|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    return set(re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", bare)) - PROMQL_WORDS


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [runtime.os_tool("promtool"), *args], cwd=MONITORING, capture_output=True, text=True
    )


def test_the_rules_are_valid_and_their_unit_tests_fire_and_clear_every_alert() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]
    }
    assert fired == alerts  # every alert is shown to fire at least once
    assert promtool("check", "config", "prometheus.yml").returncode == 0


def test_every_alert_has_a_runbook_and_names_only_exported_series() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert len(rule["annotations"]["runbook"]) > 40, rule["alert"]
            assert rule["labels"]["severity"] in ("page", "ticket")
            unknown = series_in(rule["expr"]) - set(OURS)
            assert not unknown, (rule["alert"], unknown)


def test_the_dashboard_parses_has_a_model_version_variable_and_queries_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "label_values(fraud_decisions_total, model_version)" in json.dumps(
        variables["model_version"]
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    for expr in exprs:
        unknown = series_in(expr) - set(OURS)
        assert not unknown, (expr, unknown)
    used = set().union(*(series_in(e) for e in exprs))
    assert {
        metrics.SCORE + "_bucket",
        metrics.DECISIONS + "_total",
        drift_metrics.COLUMN_SCORE,
        drift_metrics.QUALITY,
        metrics.CHAMPION_AGE,
        metrics.HISTORY + "_total",
        metrics.STORE_UP,
    } <= used
    assert any("$model_version" in e for e in exprs)


def test_the_series_check_sees_what_it_should() -> None:
    assert series_in('sum(rate(fraud_x_total{a="b"}[5m])) / scalar(up)') == {"fraud_x_total", "up"}
    assert series_in("fraud_drift_verdict == 2") == {"fraud_drift_verdict"}


def test_another_project_gets_the_same_rules_and_dashboard_under_its_own_names(
    tmp_path: Path,
) -> None:
    settings = parse_settings({"project": "employment"}).located(ROOT)
    written = monitoring.write(settings, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "alerts.test.yml",
        "alerts.yml",
        "grafana/employment-service.json",
        "prometheus.yml",
    ]
    for path in written:
        assert "fraud" not in path.read_text().lower(), path
    # Valid, and every alert still fires and clears on the renamed series.
    checked = promtool("check", "rules", str(tmp_path / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    assert promtool("check", "config", str(tmp_path / "prometheus.yml")).returncode == 0
    # Every query names what the employment service, BentoML or the drift check export.
    exported = {series(name, "employment") for name in OURS}
    rules = yaml.safe_load((tmp_path / "alerts.yml").read_text())["groups"]
    board = json.loads((tmp_path / "grafana/employment-service.json").read_text())
    exprs = [r["expr"] for g in rules for r in g["rules"]]
    exprs += [t["expr"] for p in board["panels"] for t in p["targets"]]
    for expr in exprs:
        assert series_in(expr) <= exported, expr
    alerts = {r["alert"] for g in rules for r in g["rules"]}
    assert "EmploymentServiceDown" in alerts and all(a.startswith("Employment") for a in alerts)


def test_a_project_name_must_be_a_metric_name_prefix() -> None:
    with pytest.raises(ConfigError, match="project"):
        parse_settings({"project": "Employment Survey"})
    assert series(metrics.READY, "employment") == "employment_ready"
    assert series(metrics.REQUESTS, "employment") == metrics.REQUESTS  # BentoML's own
