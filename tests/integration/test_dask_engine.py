"""The Dask engine on real clusters: a LocalCluster the stage starts, and a scheduler and two
workers started with the `dask` command-line tools and given by address, as a user's would be."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config import Compute, Settings, load_settings
from pipelines.core import metrics
from pipelines.core.dataset import validation_split
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.io import compute, model_files, storage
from pipelines.stages import featurize, train, validate
from tests.conftest import SMALL_PARAMS, make_repo, run
from tests.data.test_validate import close_enough
from tests.integration.conftest import free_port, stop_group
from tests.unit.test_features import events

if TYPE_CHECKING:
    from tests.integration.conftest import MotoServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes (one thread each) on 127.0.0.1."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                address.rsplit(":", 1)[1],
                "--no-dashboard",
            ],
            stdout=(logs / "scheduler.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "2GiB",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                stdout=(logs / f"worker{i}.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            stop_group(proc, timeout=15)


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy whose source is simulated and has passed ingest and the data gate."""
    repo = make_repo(tmp_path_factory.mktemp("dask-repo") / "repo", SMALL_PARAMS)
    run([sys.executable, "-m", "pipelines", "simulate"], repo)
    run(["dvc", "repro", "validate"], repo)
    return repo


def with_compute(repo: Path, **compute_params: object) -> Settings:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compute"] = {**params["compute"], **compute_params}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(repo / "params.yaml").located(repo)


def local_tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = storage.read_parquet(Layout(settings).raw_table)
    return featurize.featurize(raw, settings)


def written_tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    layout = Layout(settings)
    return storage.read_parquet(layout.train_table), storage.read_parquet(layout.test_table)


def assert_same_tables(settings: Settings) -> None:
    for expected, got in zip(local_tables(settings), written_tables(settings), strict=True):
        assert len(got) > 1000
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_exact=True)


def test_featurize_on_a_local_cluster_writes_exactly_the_pandas_tables(validated: Path) -> None:
    settings = with_compute(validated, engine="dask", address=None, workers=2, partitions=6)
    featurize.run(settings)
    train_dir = Path(Layout(settings).train_table)
    assert train_dir.is_dir() and (train_dir / storage.DATASET_MARKER).exists()
    assert len(list(train_dir.glob("part-*.parquet"))) == 6
    assert_same_tables(settings)
    # Back on pandas, the dataset directory becomes one file again, with the same rows.
    local = with_compute(validated, engine="local", address=None)
    featurize.run(local)
    assert Path(Layout(local).train_table).is_file()
    assert_same_tables(local)


def test_featurize_on_a_users_cluster_by_address(validated: Path, cluster: str) -> None:
    settings = with_compute(validated, engine="dask", address=cluster, partitions=None)
    out = run([sys.executable, "-m", "pipelines", "featurize"], validated)
    assert "dask" in out.stdout
    assert_same_tables(settings)


def test_a_worker_killed_during_featurize_never_leaves_a_complete_looking_output(
    validated: Path, cluster: str
) -> None:
    from distributed import Client

    settings = with_compute(validated, engine="dask", address=cluster, partitions=16)
    layout = Layout(settings)
    with Client(cluster, timeout="30s") as client:
        # A kill that lands after the stage finished proves nothing: try again (rarely needed).
        for _ in range(3):
            for url in (layout.train_table, layout.test_table):
                storage.remove(url)
            victim, stage, killed_while_running = _kill_a_worker_during_featurize(client, validated)
            out, err = stage.communicate(timeout=300)
            client.wait_for_workers(2, timeout=60)  # the nanny restarts it
            if killed_while_running:
                break
    assert killed_while_running
    print(f"killed {victim}: the stage exited {stage.returncode}")
    if stage.returncode == 0:  # Dask recomputed what the worker held
        assert_same_tables(settings)
    else:
        assert "no table was completed" in err, err[-2000:]
        for url in (layout.train_table, layout.test_table):
            with pytest.raises((FileNotFoundError, ValueError)):
                storage.read_parquet(url)


def _kill_a_worker_during_featurize(
    client: Any, repo: Path
) -> tuple[str, subprocess.Popen[str], bool]:
    """Start featurize, SIGKILL the first worker that holds one of its results; (that worker,
    the stage, whether the stage was still running after the kill)."""
    pids = client.run(os.getpid)  # worker address -> pid
    stage = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "featurize"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and stage.poll() is None and time.monotonic() < deadline:
        held = [w for w, keys in client.has_what().items() if keys]
        victim = held[0] if held else None
        time.sleep(0.01)
    assert victim is not None, "the stage finished before any worker held a result"
    os.kill(pids[victim], signal.SIGKILL)
    return victim, stage, stage.poll() is None


def test_an_unreachable_scheduler_is_named(validated: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    settings = with_compute(validated, engine="dask", address=address)
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "3s"}),
        pytest.raises(RuntimeError, match=f"Dask scheduler at {address}"),
        compute.engine(settings),
    ):
        pass


def awkward_source(root: Path) -> tuple[str, int, tuple[str, int]]:
    """A partitioned source as real feeds deliver one: a day whose amounts arrive as text, a day
    without the `channel` column, an empty day file with no column at all, and a label corrected
    by a later one (flipped, arriving two days after). Returns its URL, how many rows lack
    their channel, and the corrected label (id, the later value)."""
    from pipelines.config import parse_settings
    from pipelines.io import source
    from pipelines.sources import simulator

    world = parse_settings({"simulate": {"cards": 150, "days": 6, "tx_per_day": 300}})
    tx, labels = simulator.generate(world.simulate)
    day = tx["ts"].dt.date
    days = sorted(set(day))
    tx = tx[day != days[3]]  # the empty day
    tx["amount"] = tx["amount"].astype(object)
    on_day_1 = (day == days[1]).reindex(tx.index)
    tx.loc[on_day_1, "amount"] = tx.loc[on_day_1, "amount"].map(lambda a: f"{a:.2f}")
    on_day_2 = (day == days[2]).reindex(tx.index)
    tx.loc[on_day_2, "channel"] = None  # a day without the column
    first = labels.iloc[[0]].copy()
    first["is_fraud"] = 1 - first["is_fraud"]
    first["label_ts"] = first["label_ts"] + pd.Timedelta(days=2)
    labels = pd.concat([labels, first], ignore_index=True)
    url = str(root / "source")
    source.write_partitioned(url, tx, labels, world.contract, days=days)
    # The empty day as a file with no column at all (this writer gives it the columns).
    empty_day = source.transaction_partitions(url)[days[3]]
    pd.DataFrame().to_parquet(empty_day)
    assert storage.read_parquet(empty_day).columns.empty
    corrected = (str(first["transaction_id"].iloc[0]), int(first["is_fraud"].iloc[0]))
    return url, int(on_day_2.sum()), corrected


def test_ingest_on_a_cluster_writes_the_pandas_snapshot_and_hash_from_an_awkward_source(
    tmp_path: Path, cluster: str
) -> None:
    from pipelines.config import parse_settings
    from pipelines.io import manifest
    from pipelines.stages import ingest, validate

    src, without_channel, (corrected, later) = awkward_source(tmp_path)
    snapshots, manifests, verdicts = {}, {}, {}
    for name, compute_params in {
        "local": {"engine": "local"},
        "dask": {"engine": "dask", "address": cluster, "partitions": 3},
    }.items():
        out = tmp_path / name
        settings = parse_settings(
            {
                "paths": {
                    "source": src,
                    "raw": str(out / "raw"),
                    "validation": str(out / "validation"),
                    "gate_reference": str(tmp_path / "gate_reference.yaml"),
                },
                "ingest": {"start": "2026-01-01", "end": "2026-01-07"},
                "validate": {"min_rows": 100, "label_rate": [0.0, 0.2]},
                "compute": compute_params,
            }
        )
        ingest.run(settings)
        raw_table = Path(Layout(settings).raw_table)
        assert raw_table.is_dir() == (name == "dask")
        snapshots[name] = storage.read_parquet(str(raw_table))
        manifests[name] = manifest.read(settings)
        verdicts[name] = (validate.main(settings), validate_failures(settings))
    local, on_dask = snapshots["local"], snapshots["dask"]
    assert local["amount"].dtype == "string"  # the retyped day made the column text
    assert local["channel"].isna().sum() == without_channel > 0
    labelled = local.set_index("transaction_id")["is_fraud"]
    assert labelled[corrected] == later  # the later label won
    pd.testing.assert_frame_equal(on_dask, local, check_exact=True)
    assert manifests["dask"] == manifests["local"]  # the content hash too
    assert (
        manifests["local"]["rows"] == len(local)
        and labelled.notna().sum() == (manifests["local"]["labelled_rows"])
    )
    # The gate sees the same faults either way.
    assert verdicts["dask"] == verdicts["local"]
    assert verdicts["local"][0] == 65 and "amount" in verdicts["local"][1]


def validate_failures(settings: Settings) -> str:
    summary = storage.read_json(Layout(settings).validation_summary)
    return " ".join(sorted(r["key"] for r in summary["results"] if not r["success"]))


@contextlib.contextmanager
def dask_engine(cluster: str) -> Iterator[compute.Engine]:
    from pipelines.config import parse_settings

    with compute.engine(
        parse_settings({"compute": {"engine": "dask", "address": cluster, "partitions": 3}})
    ) as engine:
        yield engine


SPEC = FeatureSpec.from_settings(load_settings(Path(__file__).parents[2] / "params.yaml"))


def features_on(
    engine: compute.Engine, table: pd.DataFrame, spec: FeatureSpec | None = None
) -> pd.DataFrame:
    import dask.dataframe as dd

    spec = spec or SPEC
    frame = dd.from_pandas(table, npartitions=2)
    out = engine.per_entity(frame, featurize.labelled_features, spec.contract.entity, spec)
    done = engine.sort(out, ["ts", "transaction_id"]).compute()
    return done.reset_index(drop=True)


def test_a_table_without_an_entity_gets_the_pandas_features_on_dask(cluster: str) -> None:
    """History features off (`contract.entity: null`): any split of the rows will do."""
    import dataclasses

    spec = dataclasses.replace(
        SPEC,
        contract=SPEC.contract.model_copy(update={"entity": None, "novelty": ()}),
    )
    table = events(500, 3).drop(columns=["card_id"])
    table["is_fraud"] = np.random.default_rng(3).integers(0, 2, len(table))
    with dask_engine(cluster) as engine:
        got = features_on(engine, table, spec)
    expected = featurize.labelled_features(table, spec).sort_values(["ts", "transaction_id"])
    assert "card_id" not in got and not any(c.startswith("hist_") for c in got)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True), check_exact=True)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 10_000), pivot=st.floats(0.1, 0.9))
def test_on_dask_later_rows_never_leak_into_a_row_and_the_features_are_the_pandas_ones(
    cluster: str, seed: int, pivot: float
) -> None:
    df = events(300, seed, cards=7)
    df["is_fraud"] = np.random.default_rng(seed).integers(0, 2, len(df))
    cut = df["ts"].quantile(pivot)
    tampered = df.copy()
    later = tampered["ts"] > cut
    tampered.loc[later, "amount"] *= 100
    tampered.loc[later, "merchant_country"] = "XX"
    with dask_engine(cluster) as engine:
        a, b = features_on(engine, df), features_on(engine, tampered)
    expected = featurize.labelled_features(df, SPEC).sort_values(["ts", "transaction_id"])
    pd.testing.assert_frame_equal(a, expected.reset_index(drop=True), check_exact=True)
    keep = (a["ts"] <= cut).to_numpy()
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True)
    assert not a[~keep].equals(b[~keep])  # the tampering shows where it should


def gate_on(root: Path, table: pd.DataFrame, on: Compute | None = None) -> tuple:
    """validate's (exit code, summary without the docs path, derived reference) on `table`, on
    `on` (pandas by default)."""
    from tests.data.test_validate import settings_for, write_snapshot

    settings = settings_for(root)
    if on is not None:
        settings = settings.model_copy(update={"compute": on})
    write_snapshot(settings, table)
    code = validate.main(settings)
    summary = storage.read_json(Layout(settings).validation_summary)
    saved = root / "gate_reference.yaml"
    assert summary["results"] or code == 1
    assert (root / "validation/docs/index.html").is_file() or code == 1
    return code, {**summary, "docs": None}, saved.read_text() if saved.exists() else None


def assert_same_gate(local: tuple, dask: tuple, kind: str) -> None:
    assert dask[0] == local[0], kind
    assert close_enough(dask[1], local[1]), kind
    assert dask[2] == local[2], kind  # the derived reference (none from zero rows)


def test_the_gate_on_a_cluster_gives_the_pandas_verdicts_report_and_reference(
    cluster: str, tmp_path: Path
) -> None:
    """validate part by part on the users' cluster (four parts, uniqueness on parts split by
    id) against pandas on the whole table, in every world of the gate's data tests: the same
    exit code, summary (every check's verdict, counts, examples) and derived reference. Then
    a LocalCluster worker running two parts at once in threads, and a scheduler that is gone:
    exit 1 naming it, and the previous pass no longer stands in the summary."""
    from tests.data.test_validate import PARTED, make_raw

    on_dask = Compute(engine="dask", address=cluster, partitions=4)
    for kind, corrupt in PARTED.items():
        local = gate_on(tmp_path / kind / "local", corrupt(make_raw()))
        assert_same_gate(
            local, gate_on(tmp_path / kind / "dask", corrupt(make_raw()), on_dask), kind
        )
    assert local[0] == 65  # the last world blocks: the comparison covers failures

    threads = Compute(engine="dask", workers=1, threads_per_worker=2, partitions=6)
    table = PARTED["new_channel_everywhere"](make_raw())
    assert_same_gate(local, gate_on(tmp_path / "threads", table, threads), "threads")

    root = tmp_path / "valid"
    assert gate_on(root, make_raw(), on_dask)[0] == 0
    gone = Compute(engine="dask", address=f"tcp://127.0.0.1:{free_port()}")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        code, summary, _ = gate_on(root, make_raw(), gone)
    assert code == 1 and summary["success"] is False
    assert gone.address in summary["error"]


def test_the_dask_reader_refuses_a_dataset_its_writer_did_not_finish(
    cluster: str, tmp_path: Path
) -> None:
    url = tmp_path / "train.parquet"
    url.mkdir()
    pd.DataFrame({"x": [1.0]}).to_parquet(url / "part-00000.parquet")  # no _metadata after it
    with (
        dask_engine(cluster) as engine,
        pytest.raises(ValueError, match="incomplete Parquet dataset"),
    ):
        engine.read_parquet(str(url))


def test_a_failed_computation_keeps_the_previous_table_and_says_so(
    cluster: str, tmp_path: Path
) -> None:
    import dask.dataframe as dd

    url = str(tmp_path / "features" / "train.parquet")
    storage.write_parquet(pd.DataFrame({"x": [1.0, 2.0]}), url)
    with dask_engine(cluster) as engine:
        frame = dd.from_pandas(pd.DataFrame({"x": np.arange(100.0)}), npartitions=4)
        broken = frame.map_partitions(lambda part: part[["no such column"]], meta=frame._meta)
        with pytest.raises(RuntimeError, match="train.parquet failed .*no table was completed"):
            engine.write_parquet({url: broken})
        assert storage.read_parquet(url)["x"].tolist() == [1.0, 2.0]
        assert engine.write_parquet({url: frame}) == {url: 100}
    assert storage.read_parquet(url)["x"].tolist() == list(np.arange(100.0))
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["train.parquet"]


def test_dvc_repro_on_a_local_cluster_gives_the_features_and_a_model_as_good(
    tmp_path: Path,
) -> None:
    """The simulator's default size (~480k events): big enough that the validation span's
    ROC-AUC measures the model, not the noise of a few hundred positives."""
    params = {
        "compute": {"engine": "dask", "partitions": 8},
        "train": {"lightgbm": {"n_estimators": 60}},
    }
    repo = make_repo(tmp_path / "repo", params)
    run([sys.executable, "-m", "pipelines", "simulate"], repo)
    first = run(["dvc", "repro", "evaluate"], repo)
    assert ", dask) →" in first.stdout and "train: lightgbm on dask" in first.stdout
    settings = load_settings(repo / "params.yaml").located(repo)
    layout = Layout(settings)
    assert Path(layout.train_table).is_dir()
    assert_same_tables(settings)

    # LightGBM trained on both workers, and saved as the ordinary single-machine model.
    served = model_files.load(layout.model("lightgbm"))
    assert "[num_machines: 2]" in served.estimator.booster.model_to_string()
    selection = json.loads(Path(layout.selection).read_text())
    data = storage.read_parquet(layout.train_table)
    early, late, _ = validation_split(data, "ts", settings.train.validation)
    local = compute.Local()
    spec = FeatureSpec.from_settings(settings)
    lightgbm = train.tuned_params(settings, {})["lightgbm"]
    model = local.fit("lightgbm", early[spec.names], early["is_fraud"], spec, lightgbm, 42)
    y, p = local.scores(model, late, "is_fraud")
    on_one_machine = metrics.summary(y, p, 0.01)["roc_auc"]
    assert abs(selection["scores"]["lightgbm"] - on_one_machine) < 0.005
    assert selection["validation"]["rows"] == len(late)

    assert "Running stage" not in run(["dvc", "repro", "evaluate"], repo).stdout
    # The engine decides how train fits, not what featurize writes...
    with_compute(repo, engine="local")
    again = run(["dvc", "repro", "evaluate"], repo).stdout
    assert "Running stage 'featurize'" not in again and "Running stage 'train'" in again
    from_dataset = {f: Path(layout.model(f)).read_bytes() for f in ("lightgbm", "logistic")}
    # ...and pandas trains the same bytes from the dataset directory as from its own file.
    run(["dvc", "repro", "--force", "--single-item", "featurize"], repo)
    assert Path(layout.train_table).is_file()
    run(["dvc", "repro", "evaluate"], repo)
    assert {f: Path(layout.model(f)).read_bytes() for f in from_dataset} == from_dataset


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "logistic"])
def test_each_family_fits_on_the_cluster_into_an_ordinary_model(
    cluster: str, family: str, tmp_path: Path
) -> None:
    """LightGBM and XGBoost with their own Dask estimators; a family without one (logistic) on
    the rows collected into the stage's process. Each saves and loads as it does locally."""
    import dask.dataframe as dd

    table = events(4000, 11, cards=50)
    table["is_fraud"] = (table["amount"] > table["amount"].quantile(0.9)).astype("int8")
    table = featurize.labelled_features(table, SPEC).sort_values("ts", ignore_index=True)
    params = load_settings(Path(__file__).parents[2] / "params.yaml").train.params_of(family)
    with dask_engine(cluster) as engine:
        frame = dd.from_pandas(table, npartitions=6)
        model = engine.fit(family, frame[SPEC.names], frame["is_fraud"], SPEC, params, 7)
        y, p = engine.scores(model, frame, "is_fraud")
    assert model.categories["merchant_country"] == ["FR", "GB", "US"]
    assert metrics.summary(y, p, 0.1)["roc_auc"] > 0.95  # the amount decides the label
    url = str(tmp_path / f"{family}.zip")
    model_files.save(model, url)
    np.testing.assert_allclose(model_files.load(url).predict_proba(table), p, rtol=1e-12)


def test_on_s3_either_engine_replaces_the_others_table_and_a_torn_one_is_refused(
    s3: MotoServer,
) -> None:
    """No rename on an object store: a dataset is written in place, `_metadata` last."""
    import dask.dataframe as dd

    from pipelines.config import parse_settings

    s3.create_bucket("features")
    url = "s3://features/train.parquet"
    storage.write_parquet(pd.DataFrame({"x": [1.0]}), url)
    settings = parse_settings({"compute": {"engine": "dask", "workers": 1, "partitions": 3}})
    with compute.engine(settings) as engine:
        frame = dd.from_pandas(pd.DataFrame({"x": np.arange(9.0)}), npartitions=3)
        assert engine.write_parquet({url: frame}) == {url: 9}
        assert storage.is_directory(url)
        assert storage.read_parquet(url)["x"].tolist() == list(np.arange(9.0))
        assert engine.read_parquet(url).compute()["x"].tolist() == list(np.arange(9.0))
        storage.remove(storage.join(url, storage.DATASET_MARKER))  # as if its writer died
        for read in (storage.read_parquet, lambda u: engine.read_parquet(u).compute()):
            with pytest.raises(ValueError, match="incomplete Parquet dataset"):
                read(url)
    storage.write_parquet(pd.DataFrame({"x": [5.0]}), url)
    assert not storage.is_directory(url)
    assert storage.read_parquet(url)["x"].tolist() == [5.0]
