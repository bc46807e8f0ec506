"""The synthetic source: deterministic, well-formed, and each scenario changes only what it says."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings, Simulate, load_settings
from pipelines.io import storage
from pipelines.sources import simulator

ROOT = Path(__file__).resolve().parents[2]
START = dt.date(2026, 1, 1)
SHIFT = dt.date(2026, 1, 21)
CFG = Simulate(seed=5, cards=600, start=START, days=28, tx_per_day=1500, scenario_start=SHIFT)
TX_DTYPES = {
    "transaction_id": "str",
    "ts": "datetime64[us]",
    "card_id": "str",
    "amount": "float64",
    "merchant_category": "str",
    "merchant_country": "str",
    "channel": "str",
}


@cache
def frames(scenario: str = "none", seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    return simulator.generate(CFG.model_copy(update={"scenario": scenario, "seed": seed}))


def written(scenario: str, root: str) -> dict[dt.date, pd.DataFrame]:
    """Transactions partitions of a scenario, as the source exposes them."""
    tx, labels = frames(scenario)
    simulator.write_source(root, tx, labels, simulator.period(CFG))
    base = storage.join(root, "transactions")
    return {day: storage.read_parquet(url) for day, url in storage.list_partitions(base).items()}


def before_after(
    parts: dict[dt.date, pd.DataFrame],
) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    return [p for d, p in parts.items() if d < SHIFT], [p for d, p in parts.items() if d >= SHIFT]


def split(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    after = tx["ts"] >= pd.Timestamp(SHIFT)
    return tx[~after], tx[after]


# --- the clean source -------------------------------------------------------------------------


def test_same_seed_gives_identical_frames() -> None:
    a_tx, a_labels = simulator.generate(CFG)
    b_tx, b_labels = simulator.generate(CFG)
    pd.testing.assert_frame_equal(a_tx, b_tx)
    pd.testing.assert_frame_equal(a_labels, b_labels)


def test_another_seed_gives_other_data() -> None:
    a, _ = frames(seed=5)
    b, _ = frames(seed=6)
    assert not a["amount"].head(1000).equals(b["amount"].head(1000))
    assert not a["card_id"].head(1000).equals(b["card_id"].head(1000))


def test_transactions_schema_and_values() -> None:
    tx, labels = frames()
    assert {c: str(t) for c, t in tx.dtypes.items()} == TX_DTYPES
    assert {c: str(t) for c, t in labels.dtypes.items()} == {
        "transaction_id": "str",
        "is_fraud": "int8",
        "label_ts": "datetime64[us]",
    }
    assert tx["transaction_id"].is_unique
    assert tx["transaction_id"].str.fullmatch(r"t\d+").all()
    assert tx["card_id"].str.fullmatch(r"c\d{6}").all()
    assert tx["ts"].is_monotonic_increasing
    assert tx["ts"].min() >= pd.Timestamp(START)
    assert tx["ts"].max() < pd.Timestamp(START + dt.timedelta(days=CFG.days))
    assert (tx["amount"] > 0).all()
    assert np.allclose(tx["amount"], tx["amount"].round(2))
    assert not tx.isna().any().any()
    # Roughly tx_per_day a day, over most of the cards.
    assert abs(len(tx) / (CFG.tx_per_day * CFG.days) - 1) < 0.1
    assert tx["card_id"].nunique() > 0.8 * CFG.cards


def test_categorical_values_are_the_ones_params_yaml_declares() -> None:
    known = load_settings(ROOT / "params.yaml").validate_.categories
    assert set(simulator.CHANNELS) == set(known["channel"])
    assert set(simulator.CATEGORIES) == set(known["merchant_category"])
    assert set(simulator.COUNTRIES) == set(known["merchant_country"])
    tx, _ = frames()
    for col, values in known.items():
        assert set(tx[col].unique()) <= set(values), col
    # Every value actually occurs, so a model sees the whole vocabulary.
    assert set(tx["merchant_category"].unique()) == set(known["merchant_category"])
    assert set(tx["channel"].unique()) == set(known["channel"])


def test_fraud_rate_is_in_band() -> None:
    _, labels = frames()
    assert 0.005 <= labels["is_fraud"].mean() <= 0.02
    assert set(labels["is_fraud"].unique()) == {0, 1}


def test_every_transaction_has_exactly_one_later_label() -> None:
    tx, labels = frames()
    assert labels["transaction_id"].is_unique
    assert set(labels["transaction_id"]) == set(tx["transaction_id"])
    both = tx.merge(labels, on="transaction_id", validate="one_to_one")
    delay_days = (both["label_ts"] - both["ts"]) / pd.Timedelta(days=1)
    fraud = both["is_fraud"] == 1
    assert (delay_days > 0).all()
    assert delay_days[fraud].between(1, 30).all()
    assert delay_days[~fraud].between(5, 10).all()
    # Chargebacks are skewed early: most arrive within two weeks.
    assert (delay_days[fraud] < 14).mean() > 0.6


def test_fraud_looks_unusual_for_its_card() -> None:
    tx, labels = frames()
    both = tx.merge(labels, on="transaction_id")
    typical = both[both["is_fraud"] == 0].groupby("card_id")["amount"].median()
    ratio = both["amount"] / both["card_id"].map(typical)
    fraud = both["is_fraud"] == 1
    assert (ratio[fraud] > 3).mean() > 3 * (ratio[~fraud] > 3).mean()
    cnp = both["channel"].isin(["online", "mobile_wallet"])
    assert cnp[fraud].mean() > cnp[~fraud].mean() + 0.1


# --- writing ----------------------------------------------------------------------------------


def test_partitions_are_written_per_day_and_rewriting_replaces(tmp_path: Path) -> None:
    tx, labels = frames()
    url = str(tmp_path / "source")
    simulator.write_source(url, tx, labels, simulator.period(CFG))
    simulator.write_source(url, tx, labels, simulator.period(CFG))

    tx_parts = storage.list_partitions(storage.join(url, "transactions"))
    assert list(tx_parts) == simulator.period(CFG)
    back = pd.concat([storage.read_parquet(u) for u in tx_parts.values()], ignore_index=True)
    pd.testing.assert_frame_equal(back, tx)
    for day, u in tx_parts.items():
        assert (storage.read_parquet(u)["ts"].dt.date == day).all()

    label_parts = storage.list_partitions(storage.join(url, "labels"))
    got = pd.concat([storage.read_parquet(u) for u in label_parts.values()], ignore_index=True)
    assert len(got) == len(labels) and got["transaction_id"].is_unique
    for day, u in label_parts.items():
        assert (storage.read_parquet(u)["label_ts"].dt.date == day).all()
    # Labels are still arriving after the simulated period ends.
    assert max(label_parts) > CFG.start + dt.timedelta(days=CFG.days)


def test_cli_overrides_params_and_rejects_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "cli")
    argv = ["--days", "3", "--tx-per-day", "200", "--cards", "50", "--seed", "1", "--out", out]
    assert simulator.main(argv, Settings()) == 0
    assert len(storage.list_partitions(storage.join(out, "transactions"))) == 3
    assert "transactions 3/3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        simulator.main(["--days", "0", "--out", out], Settings())
    assert err.value.code == 2
    assert "days" in capsys.readouterr().err


# --- scenarios --------------------------------------------------------------------------------


def test_default_scenario_start_is_the_last_quarter() -> None:
    assert simulator.scenario_start(Simulate(start=START, days=120)) == START + dt.timedelta(
        days=90
    )
    assert simulator.scenario_start(CFG) == SHIFT


def test_scenario_start_outside_the_period_is_an_error() -> None:
    late = CFG.model_copy(
        update={"scenario": "covariate_shift", "scenario_start": dt.date(2027, 1, 1)}
    )
    with pytest.raises(ValueError, match="scenario_start"):
        simulator.generate(late)


@pytest.mark.parametrize(
    "scenario",
    ["covariate_shift", "new_category", "concept_shift", "corrupt_nulls", "corrupt_range"],
)
def test_scenarios_leave_the_days_before_their_start_untouched(scenario: str) -> None:
    clean_before, clean_after = split(frames()[0])
    before, after = split(frames(scenario)[0])
    pd.testing.assert_frame_equal(before, clean_before)
    assert not after.reset_index(drop=True).equals(clean_after.reset_index(drop=True))


def test_covariate_shift_inflates_amounts_and_moves_online() -> None:
    clean_before, clean_after = split(frames()[0])
    before, after = split(frames("covariate_shift")[0])
    assert after["amount"].median() > 1.4 * clean_after["amount"].median()
    online = ["online", "mobile_wallet"]
    assert after["channel"].isin(online).mean() > clean_after["channel"].isin(online).mean() + 0.15
    assert before["amount"].median() == clean_before["amount"].median()


def test_new_category_appears_only_after_start_and_attracts_fraud() -> None:
    tx, labels = frames("new_category")
    before, after = split(tx)
    assert simulator.NEW_CATEGORY not in set(before["merchant_category"])
    new = after["merchant_category"] == simulator.NEW_CATEGORY
    assert new.mean() > 0.05
    fraud = after.merge(labels, on="transaction_id")["is_fraud"].to_numpy() == 1
    assert new.to_numpy()[fraud].mean() > 2 * new.mean()


def test_concept_shift_makes_fraud_small_and_card_present() -> None:
    def fraud_profile(scenario: str) -> tuple[float, float]:
        tx, labels = frames(scenario)
        both = tx.merge(labels, on="transaction_id")
        typical = both[both["is_fraud"] == 0].groupby("card_id")["amount"].median()
        both["ratio"] = both["amount"] / both["card_id"].map(typical)
        fraud = both[(both["is_fraud"] == 1) & (both["ts"] >= pd.Timestamp(SHIFT))]
        return fraud["ratio"].median(), (fraud["channel"] == "contactless").mean()

    clean_ratio, clean_contactless = fraud_profile("none")
    ratio, contactless = fraud_profile("concept_shift")
    assert ratio < 0.8 * clean_ratio
    assert contactless > clean_contactless + 0.1


@pytest.mark.parametrize("kind", ["corrupt_nulls", "corrupt_range", "corrupt_duplicates"])
def test_value_corruptions_show_only_from_start(kind: str, tmp_path: Path) -> None:
    before, after = before_after(written(kind, str(tmp_path)))
    broken = {
        "corrupt_nulls": lambda p: p["amount"].isna().any() and p["card_id"].isna().any(),
        "corrupt_range": lambda p: (p["amount"] < 0).any() and (p["amount"] > 100_000).any(),
        "corrupt_duplicates": lambda p: p["transaction_id"].duplicated().any(),
    }[kind]
    assert not any(broken(p) for p in before)
    assert all(broken(p) for p in after)
    assert all({c: str(t) for c, t in p.dtypes.items()} == TX_DTYPES for p in before + after)


@pytest.mark.parametrize(
    "kind, check",
    [
        (
            "corrupt_types",
            lambda p: (
                str(p["amount"].dtype) == "str" and p["amount"].str.fullmatch(r"-?\d+\.\d\d").all()
            ),
        ),
        (
            "corrupt_renamed",
            lambda p: (
                "amount" not in p.columns and "amt" in p.columns and p["amt"].dtype == "float64"
            ),
        ),
        (
            "corrupt_missing",
            lambda p: "channel" not in p.columns and len(p.columns) == len(TX_DTYPES) - 1,
        ),
    ],
)
def test_schema_corruptions_show_only_from_start(kind: str, check, tmp_path: Path) -> None:
    before, after = before_after(written(kind, str(tmp_path)))
    assert all({c: str(t) for c, t in p.dtypes.items()} == TX_DTYPES for p in before)
    assert after and all(check(p) and len(p) > 0 for p in after)


def test_corrupt_empty_writes_one_empty_day_with_the_schema(tmp_path: Path) -> None:
    parts = written("corrupt_empty", str(tmp_path))
    assert list(parts) == simulator.period(CFG)
    empty = [d for d, p in parts.items() if len(p) == 0]
    assert empty == [SHIFT]
    assert {c: str(t) for c, t in parts[SHIFT].dtypes.items()} == TX_DTYPES
    tx, labels = frames("corrupt_empty")
    assert set(labels["transaction_id"]) == set(tx["transaction_id"])


def test_if_missing_simulates_a_missing_local_source_once_and_never_into_a_remote_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(ROOT / "params.yaml")
    small = ["--days", "2", "--tx-per-day", "50", "--cards", "20", "--if-missing"]
    local = str(tmp_path / "source")
    assert simulator.main([*small, "--out", local], settings) == 0
    first = storage.list_partitions(storage.join(local, "transactions"))
    assert len(first) == 2
    assert simulator.main([*small, "--out", local, "--seed", "99"], settings) == 0  # left as it is
    assert "already has transactions" in capsys.readouterr().err
    assert storage.list_partitions(storage.join(local, "transactions")) == first
    with pytest.raises(FileNotFoundError, match="memory://bucket/source"):
        simulator.main([*small, "--out", "memory://bucket/source"], settings)
    assert not storage.exists("memory://bucket/source")
