"""params.yaml is one typed, frozen model: mistakes name the key that is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_params_file_is_valid() -> None:
    s = load_settings(ROOT / "params.yaml")
    assert s.contract.target == "is_fraud"
    assert s.train.candidates == ("lightgbm", "logistic") and s.train.model is None
    assert s.validate_.categories["channel"]


def test_settings_are_frozen() -> None:
    s = parse_settings({})
    with pytest.raises(Exception, match="frozen"):
        s.train.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"trian": {}}, "trian: unknown key"),
        ({"train": {"lightgbm": {"num_leavs": 7}}}, "train.lightgbm.num_leavs: unknown key"),
        ({"train": {"lightgbm": {"learning_rate": "fast"}}}, "train.lightgbm.learning_rate"),
        ({"train": {"model": "catboost"}}, "train.model"),
        ({"train": {"model": "xgboost"}}, "train.model 'xgboost' is not in train.candidates"),
        ({"train": {"candidates": ["lightgbm", "lightgbm"]}}, "lists a family twice"),
        ({"train": {"candidates": []}}, "train.candidates"),
        ({"train": {"sklearn": {"estimator": "not a path"}}}, "train.sklearn.estimator"),
        ({"ingest": {"start": "2026-02-01", "end": "2026-01-01"}}, "ingest.end"),
        (
            {"contract": {"amount": "price"}},
            "contract.amount 'price' must be one of contract.numeric",
        ),
        ({"contract": {"novelty": ["city"]}}, "contract.novelty"),
        ({"evaluate": {"slice_by": ["city"]}}, "evaluate.slice_by"),
        ({"features": {"windows_hours": [0]}}, "windows_hours"),
        ({"compute": {"address": "tcp://10.0.0.5:8786"}}, "set compute.engine: dask too"),
        ({"compute": {"engine": "dask", "address": "10.0.0.5:8786"}}, "compute.address"),
        ({"compute": {"engine": "spark"}}, "compute.engine"),
        ({"drift": {"read_rows": 10_000}}, "drift.read_rows (10000) must be at least"),
        ({"validate": {"label_rate": [0.1]}}, "validate.label_rate"),
        ({"serving": {"decisions": {"a": 0.5, "b": 0.5}}}, "two labels share a threshold"),
        ({"serving": {"decisions": {"approve": 0.5}}}, "differ from serving.default_decision"),
        ({"serving": {"decisions": {"decline": 1.0}}}, "serving.decisions.decline"),
        ({"validate": {"null_shares": {"amount": 0.1}}}, "validate.null_shares names ['amount']"),
        ({"validate": {"null_shares": {"channel": 1.5}}}, "validate.null_shares.channel"),
    ],
)
def test_invalid_params_name_the_problem(params: dict, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(params)
    assert named in str(err.value)


def test_a_mistake_is_named_once_without_the_rest_of_the_file() -> None:
    """A check across sections sees the whole file: its message names the keys, and neither the
    file nor a section is echoed after it (it was ~3,000 characters); a long input is shortened."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["slice_by"] = ["city"]
    with pytest.raises(ConfigError) as err:
        parse_settings(params, "params.yaml")
    assert str(err.value).splitlines() == [
        "params.yaml is invalid:",
        "  evaluate.slice_by names ['city'], which are not in contract.categorical",
    ]
    params["serving"]["host"] = ["127.0.0.1"] * 500
    with pytest.raises(ConfigError) as err:
        parse_settings(params, "params.yaml")
    assert "serving.host: Input should be a valid string" in str(err.value)
    assert len(str(err.value)) < 200


def test_a_team_can_describe_its_own_table(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "contract": {
                    "id": "order_id",
                    "timestamp": "created_at",
                    "entity": None,
                    "target": "churned",
                    "numeric": ["basket"],
                    "categorical": ["region"],
                    "amount": "basket",
                    "novelty": [],
                },
                "evaluate": {"slice_by": ["region"]},
            }
        )
    )
    s = load_settings(path)
    assert s.contract.columns == ("order_id", "created_at", "basket", "region")


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad)


def test_cli_prints_the_schema_and_rejects_bad_params(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines", "config", "--schema"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    schema = json.loads(out.stdout)
    assert {"contract", "train", "validate"} <= set(schema["properties"])
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  sed: 1\n")
    res = subprocess.run(
        [sys.executable, "-m", "pipelines", "--params", str(bad), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 2
    assert "train.sed: unknown key" in res.stderr
