"""Batch scoring (`python -m pipelines predict`, the `batch-predict` flow): a table at a URL
scored by the champion with the offline feature definition, refused whole when invalid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run
from tests.integration.conftest import PrefectServer
from tests.integration.test_flows import flow_env, latest_flow_run

pytestmark = pytest.mark.integration

# The version and the offline definition's probabilities for a table, in the repo's own process
# (its model store): what the job must reproduce.
EXPECTED = """
import json, sys
import pandas as pd
from pipelines.runtime import bootstrap
from pipelines.core.features import FeatureSpec, build_features
from pipelines.io import registry
settings = bootstrap()
tag = sys.argv[2] if len(sys.argv) > 2 else registry.champion_tag()
events = pd.read_parquet(sys.argv[1])
p = registry.load(tag).predict_proba(build_features(events, FeatureSpec.from_settings(settings)))
print(json.dumps({"tag": tag, "p": p.tolist()}))
"""


def recent_events(repo: Path, rows: int) -> pd.DataFrame:
    """The raw snapshot's newest `rows` events, label columns included (the job ignores them)."""
    return pd.read_parquet(repo / "data" / "raw" / "transactions.parquet").tail(rows)


def expected(repo: Path, table: Path) -> dict:
    return json.loads(run(["python", "-c", EXPECTED, str(table)], repo).stdout)


def test_a_table_is_scored_by_the_champion_in_input_order_from_its_own_history(
    served_repo: Path, tmp_path: Path
) -> None:
    events = recent_events(served_repo, 3000).sample(frac=1.0, random_state=0)  # any order
    table = tmp_path / "events.parquet"
    events.to_parquet(table, index=False)
    out = tmp_path / "scores.csv"
    run(["python", "-m", "pipelines", "predict", str(table), str(out)], served_repo)

    scores = pd.read_csv(out, dtype={"transaction_id": "string", "card_id": "string"})
    truth = expected(served_repo, table)
    assert scores["transaction_id"].tolist() == events["transaction_id"].tolist()
    assert set(scores["model_version"]) == {truth["tag"]}
    np.testing.assert_allclose(scores["probability"], truth["p"], rtol=1e-9)
    assert set(scores["decision"]) <= {"approve", "review", "decline"}

    # Point in time from the table: the same rows without the events before them in the table
    # score differently (their history features change), while each row's own earlier events
    # are all the job looks at (shuffling changed nothing above).
    newest = events.sort_values("ts").tail(200)
    alone = tmp_path / "alone.parquet"
    newest.to_parquet(alone, index=False)
    run(
        [
            "python",
            "-m",
            "pipelines",
            "predict",
            str(alone),
            str(tmp_path / "alone-scores.parquet"),
        ],
        served_repo,
    )
    by_id = dict(zip(scores["transaction_id"], scores["probability"], strict=True))
    solo = pd.read_parquet(tmp_path / "alone-scores.parquet")
    with_history = np.array([by_id[i] for i in solo["transaction_id"]])
    assert not np.allclose(solo["probability"], with_history)


def test_an_invalid_table_is_refused_naming_rows_and_fields_and_nothing_is_written(
    served_repo: Path, tmp_path: Path
) -> None:
    events = recent_events(served_repo, 50).reset_index(drop=True)
    events.loc[3, "amount"] = -5.0
    events.loc[7, "channel"] = None
    table = tmp_path / "events.csv"
    events.to_csv(table, index=False)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"yesterday's scores")

    res = run(
        ["python", "-m", "pipelines", "predict", str(table), str(out)], served_repo, check=False
    )
    assert res.returncode == 1
    assert "row 3 amount" in res.stderr and "row 7 channel" in res.stderr, res.stderr
    assert "2 invalid value(s)" in res.stderr
    assert out.read_bytes() == b"yesterday's scores"  # the previous result stays whole

    events.drop(columns=["merchant_country"]).to_csv(table, index=False)
    fresh = tmp_path / "first-run.parquet"
    res = run(
        ["python", "-m", "pipelines", "predict", str(table), str(fresh)], served_repo, check=False
    )
    assert res.returncode == 1 and "lacks columns ['merchant_country']" in res.stderr, res.stderr
    assert not fresh.exists()


def test_the_flow_scores_a_table_and_fails_naming_a_bad_one(
    served_repo: Path, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    events = recent_events(served_repo, 300)
    table = tmp_path / "events.parquet"
    events.to_parquet(table, index=False)
    out = tmp_path / "scores.parquet"
    env = flow_env(prefect_server, served_repo)
    run(["python", "-m", "flows.predict", str(table), str(out)], served_repo, env=env)
    assert latest_flow_run(prefect_server, "batch-predict")["state_type"] == "COMPLETED"
    assert len(pd.read_parquet(out)) == 300

    events.assign(amount=-1.0).to_parquet(table, index=False)
    os.remove(out)
    res = run(
        ["python", "-m", "flows.predict", str(table), str(out)], served_repo, env=env, check=False
    )
    assert res.returncode != 0 and "nothing scored" in res.stderr + res.stdout
    assert latest_flow_run(prefect_server, "batch-predict")["state_type"] == "FAILED"
    assert not out.exists()


ON_DASK = {"PIPELINES_OVERRIDES": json.dumps({"compute": {"engine": "dask", "partitions": 4}})}


def test_on_a_dask_cluster_a_table_gets_the_pandas_scores_in_input_order(
    served_repo: Path, tmp_path: Path
) -> None:
    """The same job on a LocalCluster of two workers: the events are shuffled by card over four
    parts, scored there and put back in input order; a bad table is refused as on pandas."""
    from pipelines.io import storage

    events = recent_events(served_repo, 3000).sample(frac=1.0, random_state=1)
    table = tmp_path / "events.parquet"
    events.to_parquet(table, index=False)
    on_pandas, on_dask = tmp_path / "pandas.parquet", tmp_path / "dask.parquet"
    run(["python", "-m", "pipelines", "predict", str(table), str(on_pandas)], served_repo)
    out = run(
        ["python", "-m", "pipelines", "predict", str(table), str(on_dask)], served_repo, env=ON_DASK
    )
    assert on_dask.is_dir() and (on_dask / "_metadata").exists(), out.stdout
    pd.testing.assert_frame_equal(storage.read_parquet(str(on_dask)), pd.read_parquet(on_pandas))

    bad = events.reset_index(drop=True)
    bad.loc[3, "amount"] = -5.0
    bad.loc[2900, "channel"] = None
    bad.to_parquet(table, index=False)
    refused = tmp_path / "refused.parquet"
    res = run(
        ["python", "-m", "pipelines", "predict", str(table), str(refused)],
        served_repo,
        env=ON_DASK,
        check=False,
    )
    assert res.returncode == 1 and "2 invalid value(s)" in res.stderr, res.stderr
    assert "row 3 amount" in res.stderr and "row 2900 channel" in res.stderr, res.stderr
    assert not refused.exists()

    res = run(
        ["python", "-m", "pipelines", "predict", str(table), str(tmp_path / "scores.csv")],
        served_repo,
        env=ON_DASK,
        check=False,
    )
    assert res.returncode == 1 and "the Dask engine reads and writes Parquet" in res.stderr
