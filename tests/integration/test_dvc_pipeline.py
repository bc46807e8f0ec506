"""`dvc repro` end to end on a small simulated source, in a temporary copy of the repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run

pytestmark = pytest.mark.integration

STAGES = ["ingest", "validate", "featurize", "train", "evaluate", "package"]


def ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def test_repro_trains_reruns_nothing_then_only_what_changed(small_repo: Path) -> None:
    repo = small_repo
    run(["python", "-m", "pipelines", "simulate"], repo)

    first = run(["dvc", "repro"], repo)
    assert ran(first.stdout) == STAGES
    manifest = json.loads((repo / "data/raw/manifest.json").read_text())
    assert (
        manifest["partitions"] == 35
        and manifest["missing_days"] == []
        and len(manifest["sha256"]) == 64
    )
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"roc_auc", "average_precision", "recall_at_alert_rate", "log_loss"} <= set(metrics)
    assert 0.5 < metrics["roc_auc"] <= 1.0
    selection = json.loads((repo / "models/selection.json").read_text())
    assert metrics["model"] == selection["chosen"] and set(metrics["candidates"]) == {
        "lightgbm",
        "logistic",
    }
    assert metrics["roc_auc"] == metrics["candidates"][selection["chosen"]]["roc_auc"]
    shown = run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "roc_auc" in shown
    run(["dvc", "plots", "show", "-o", "plots_html"], repo)
    page = (repo / "plots_html/index.html").read_text()
    assert all(f"plots/roc/{family}.csv" in page for family in ("lightgbm", "logistic"))
    slices = json.loads((repo / "metrics/slices.json").read_text())
    assert set(slices["lightgbm"]) == {"channel", "merchant_category"}

    again = run(["dvc", "repro"], repo)
    assert ran(again.stdout) == []
    assert "up to date" in run(["dvc", "status"], repo).stdout

    # A serving-only change rebuilds the bento, and the model keeps its version (same weights).
    packaged = json.loads((repo / "reports/package.json").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["serving"]["port"] = 3999
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(run(["dvc", "repro"], repo).stdout) == ["package"]
    repackaged = json.loads((repo / "reports/package.json").read_text())
    assert (
        repackaged["model_tag"] == packaged["model_tag"]
        and repackaged["bento_tag"] != packaged["bento_tag"]
    )

    params["train"]["lightgbm"]["learning_rate"] = 0.1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    partial = run(["dvc", "repro"], repo)
    assert ran(partial.stdout) == ["train", "evaluate", "package"]


def test_bad_data_stops_the_pipeline_and_keeps_what_was_good(small_repo: Path) -> None:
    repo = small_repo
    run(["python", "-m", "pipelines", "simulate"], repo)
    run(["dvc", "repro"], repo)
    model_before = (repo / "models/lightgbm.zip").read_bytes()
    features_before = (repo / "data/features/train.parquet").read_bytes()

    run(
        [
            "python",
            "-m",
            "pipelines",
            "simulate",
            "--scenario",
            "corrupt_nulls",
            "--scenario-start",
            "2026-01-20",
        ],
        repo,
    )
    failed = run(["dvc", "repro"], repo, check=False)
    assert failed.returncode != 0
    assert "amount" in failed.stderr + failed.stdout
    assert ran(failed.stdout) == ["ingest", "validate"]
    summary = json.loads((repo / "reports/validation/summary.json").read_text())
    assert summary["success"] is False
    assert (repo / "models/lightgbm.zip").read_bytes() == model_before
    assert (repo / "data/features/train.parquet").read_bytes() == features_before


def test_own_csv_table_with_its_own_column_names_and_no_entity(tmp_path: Path) -> None:
    """The documented path for a team's own data: one CSV, renamed columns, no history."""
    import pandas as pd

    from pipelines.config import parse_settings
    from pipelines.core.dataset import join_labels
    from pipelines.sources import simulator
    from tests.conftest import SMALL_PARAMS, make_repo

    sim = parse_settings(SMALL_PARAMS)
    tx, labels = simulator.generate(sim.simulate)
    table = (
        join_labels(tx, labels, sim.contract)
        .drop(columns=["card_id", "label_ts"])
        .rename(
            columns={
                "transaction_id": "order_id",
                "ts": "created_at",
                "amount": "total",
                "channel": "via",
                "merchant_category": "shop_type",
                "merchant_country": "country",
                "is_fraud": "chargeback",
            }
        )
    )
    repo = make_repo(
        tmp_path / "repo",
        {
            **SMALL_PARAMS,
            "paths": {"source": "data/orders.csv"},
            "contract": {
                "id": "order_id",
                "timestamp": "created_at",
                "entity": None,
                "target": "chargeback",
                "label_timestamp": None,
                "numeric": ["total"],
                "amount": "total",
                "categorical": ["shop_type", "country", "via"],
                "novelty": [],
            },
            "validate": {"categories": {"via": list(simulator.CHANNELS)}},
            "evaluate": {"slice_by": ["via"]},
        },
    )
    (repo / "data").mkdir()
    table.to_csv(repo / "data/orders.csv", index=False)

    out = run(["dvc", "repro", "evaluate"], repo)
    assert ran(out.stdout) == ["ingest", "validate", "featurize", "train", "evaluate"]
    features = pd.read_parquet(repo / "data/features/train.parquet")
    assert not [c for c in features.columns if c.startswith("hist_")]  # no entity: history is off
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert 0.5 < metrics["roc_auc"] <= 1.0
    assert set(json.loads((repo / "metrics/slices.json").read_text())["lightgbm"]) == {"via"}


def test_an_experiment_in_a_temp_directory_sees_the_local_source(small_repo: Path) -> None:
    """The README's experiment workflow: `--temp`/`--queue` copy only tracked files, and the local
    source is git-ignored upstream data, so it is passed with `-C`."""
    from tests.conftest import ROOT

    repo = small_repo
    (repo / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    run(["python", "-m", "pipelines", "simulate"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)
    assert "data/source" not in run(["git", "ls-files"], repo).stdout
    params_before = (repo / "params.yaml").read_text()

    run(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-C",
            "data/source",
            "-S",
            "train.lightgbm.num_leaves=15",
            "-n",
            "fewer-leaves",
        ],
        repo,
    )
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = [
        e
        for rev in shown
        for e in (rev.get("experiments") or [])
        if e.get("name") == "fewer-leaves"
    ]
    assert exps, shown
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lightgbm"]["num_leaves"] == 15
    assert 0.5 < data["metrics"]["metrics/evaluate.json"]["data"]["roc_auc"] <= 1.0
    assert (repo / "params.yaml").read_text() == params_before  # the workspace stays as committed
