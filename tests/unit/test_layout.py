"""One definition of each artifact name: dvc.yaml names the same files as `core.layout`."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.config import Settings
from pipelines.core.families import FAMILIES
from pipelines.core.layout import Layout, join

ROOT = Path(__file__).resolve().parents[2]


def dvc_files() -> set[str]:
    """Every file or directory dvc.yaml declares (deps, outs, metrics), with params substituted."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = Settings().paths.model_dump()
    found = set()
    for stage in dvc["stages"].values():
        for kind in ("deps", "outs", "metrics"):
            for entry in stage.get(kind, []):
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                for key, value in paths.items():
                    name = name.replace(f"${{paths.{key}}}", value)
                found.add(name)
    for plot in dvc.get("plots", []):
        found.update(plot)  # plot ids: directories of per-candidate files
    return found


def test_dvc_yaml_names_the_files_the_code_writes_and_reads() -> None:
    layout = Layout(Settings())
    declared = dvc_files()
    for name in (
        layout.manifest,
        layout.validation_summary,
        layout.validation_docs,
        layout.train_table,
        layout.test_table,
        layout.evaluation,
        layout.slices,
        layout.package,
        layout.tuned,
        layout.tuning_metrics,
    ):
        assert name in declared, name
    # Directories DVC tracks whole hold the rest.
    for name, directory in (
        (layout.raw_table, "data/raw"),
        (layout.model("lightgbm"), "models"),
        (layout.plot("lightgbm", "roc"), "plots"),
        (layout.study, "tuning"),
        (layout.tuning_plot("lightgbm", "history"), "tuning"),
        (layout.tuning_script, "tuning"),
    ):
        assert name.startswith(directory + "/") and directory in declared, name
    # A directory per plot: every candidate's file is in it, and dvc.yaml names no family.
    for name in ("roc", "pr", "calibration", "importance"):
        for family in FAMILIES:
            path = layout.plot(family, name)
            assert path.rsplit("/", 1)[0] in declared and family not in path.rsplit("/", 1)[0]
    assert not any(family in (ROOT / "dvc.yaml").read_text() for family in FAMILIES)


def test_every_url_is_joined_one_way() -> None:
    assert join("s3://bucket/prefix/", "/a/", "b.json") == "s3://bucket/prefix/a/b.json"
    assert Layout(Settings(paths={"package": "package.json"})).release == "release.json"
    assert Layout(Settings()).release == "reports/release.json"
