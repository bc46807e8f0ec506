"""Point-in-time correctness of the one feature definition, offline and online."""

from __future__ import annotations

import typing

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.config import Contract, Features, parse_settings
from pipelines.core.features import REQUEST_FEATURES, FeatureSpec, build_features, features_for

SPEC = FeatureSpec(Contract(), (1, 24, 168))
T0 = pd.Timestamp("2026-01-01")


def events(
    n: int, seed: int, cards: int = 4, start: pd.Timestamp = T0, hours: int = 120
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Whole seconds: many events share a minute with another of their card, which they must not see.
    offsets = rng.integers(0, hours * 3600, n) * 1000
    return pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(n)],
            "ts": start + pd.to_timedelta(offsets, unit="ms"),
            "card_id": rng.choice([f"c{i}" for i in range(cards)], n),
            "amount": rng.gamma(2.0, 30.0, n).round(2),
            "merchant_category": rng.choice(["grocery", "fuel", "travel"], n),
            "merchant_country": rng.choice(["US", "GB", "FR"], n),
            "channel": rng.choice(["pos", "online"], n),
        }
    )


def brute_force(df: pd.DataFrame, i: int) -> dict[str, float]:
    """The definition, spelled out one row at a time: a row sees its card's events of earlier
    minutes; a window of w hours starts 60 w minutes before the row's minute, rounded down to
    the window's resolution."""
    ms = df["ts"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    minute = ms // 60_000
    prior = (df["card_id"].to_numpy() == df["card_id"].iloc[i]) & (minute < minute[i])
    out = {"hist_n_prior": float(prior.sum())}
    for w in SPEC.windows_hours:
        step = {1: 1, 24: 15, 168: 60}[w]  # each window's resolution, in minutes
        win = prior & (minute >= (minute[i] - w * 60) // step * step)
        out[f"hist_n_{w}h"] = float(win.sum())
        out[f"hist_amount_sum_{w}h"] = float(df["amount"].to_numpy()[win].sum())
    amounts = df["amount"].to_numpy()[prior]
    out["hist_amount_mean"] = amounts.mean() if len(amounts) else np.nan
    out["hist_amount_std"] = amounts.std(ddof=1) if len(amounts) > 1 else np.nan
    out["hist_secs_since_prev"] = (ms[i] - ms[prior].max()) / 1000 if prior.any() else np.nan
    for col in SPEC.contract.novelty:
        out[f"hist_new_{col}"] = float(df[col].iloc[i] not in set(df[col].to_numpy()[prior]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_history_features_match_the_definition(seed: int) -> None:
    df = events(400, seed)
    feats = build_features(df, SPEC)
    for i in range(0, len(df), 7):
        for name, expected in brute_force(df, i).items():
            assert feats[name].iloc[i] == pytest.approx(
                expected, rel=1e-9, abs=1e-9, nan_ok=True
            ), (name, i)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 120),
    extra=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    cards=st.integers(1, 6),
)
def test_appending_future_events_never_changes_existing_rows(
    n: int, extra: int, seed: int, cards: int
) -> None:
    past = events(n, seed, cards, hours=48)
    future = events(
        extra, seed + 1, cards, start=past["ts"].max() + pd.Timedelta(milliseconds=1), hours=48
    )
    before = build_features(past, SPEC)
    after = build_features(pd.concat([past, future], ignore_index=True), SPEC).iloc[:n]
    pd.testing.assert_frame_equal(before, after, check_exact=False, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), pivot=st.floats(0.1, 0.9))
def test_later_rows_and_labels_never_leak_into_a_row(seed: int, pivot: float) -> None:
    df = events(150, seed).sort_values("ts", ignore_index=True)
    df["is_fraud"] = 0
    cut = df["ts"].quantile(pivot)
    tampered = df.copy()
    later = tampered["ts"] > cut
    tampered.loc[later, "amount"] *= 100
    tampered.loc[later, "merchant_country"] = "XX"
    tampered["is_fraud"] = 1  # labels are not an input at all
    a, b = build_features(df, SPEC), build_features(tampered, SPEC)
    keep = ~later
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=False, rtol=1e-12)
    # ...and the tampering is visible where it should be, so this test can fail.
    assert not a[later].equals(b[later])


def test_events_of_the_same_minute_do_not_see_each_other() -> None:
    df = events(3, 0, cards=1)
    df["ts"] = [T0, T0 + pd.Timedelta(seconds=59), T0 + pd.Timedelta(seconds=60)]
    feats = build_features(df, SPEC)
    assert feats["hist_n_prior"].tolist() == [0.0, 0.0, 2.0]
    assert feats["hist_secs_since_prev"].iloc[2] == 1.0  # from the latest earlier event


def test_online_batches_give_the_offline_features() -> None:
    df = events(600, 5, cards=8).sort_values("ts", ignore_index=True)
    offline = build_features(df, SPEC)
    history = df.iloc[:500]
    for lo in range(500, 600, 25):  # batches arrive in time order, each appended afterwards
        batch = df.iloc[lo : lo + 25]
        online = features_for(batch, df.iloc[:lo][SPEC.history_columns], SPEC)
        pd.testing.assert_frame_equal(
            online, offline.iloc[lo : lo + 25], check_exact=False, rtol=1e-12
        )
    assert len(history) == 500


def test_row_order_does_not_matter() -> None:
    df = events(300, 9)
    shuffled = df.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        build_features(df, SPEC), build_features(shuffled, SPEC).loc[df.index]
    )


def test_without_an_entity_history_features_are_off() -> None:
    spec = FeatureSpec(Contract(entity=None, novelty=()), (24,))
    feats = build_features(events(50, 1), spec)
    assert not [c for c in feats.columns if c.startswith("hist_")]
    assert list(feats.columns) == spec.names


def test_zero_amounts_leave_the_ratio_missing_not_infinite() -> None:
    """Two $0.00 card verifications, then $25: the mean of the earlier amounts is 0."""
    df = (
        events(4, 0, cards=1)
        .sort_values("ts", ignore_index=True)
        .assign(amount=[0.0, 0.0, 25.0, 0.0])
    )
    feats = build_features(df, SPEC)
    assert np.isnan(feats["hist_amount_ratio"].iloc[2])  # 25 / mean(0, 0): undefined, missing
    assert feats["hist_amount_ratio"].iloc[3] == 0.0  # 0 / mean(0, 0, 25)
    assert np.isnan(feats["hist_amount_ratio"].iloc[0])  # no history: missing
    online = features_for(df.tail(2), df.head(2)[SPEC.history_columns], SPEC)
    np.testing.assert_array_equal(
        online["hist_amount_ratio"].to_numpy(), feats["hist_amount_ratio"].tail(2).to_numpy()
    )


AMOUNTS = st.sampled_from([0.0, 0.01, 25.0, 99_999.99]) | st.floats(0.0, 100_000.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10 * 24 * 3600), AMOUNTS),
        min_size=1,
        max_size=40,
    )
)
def test_no_feature_is_ever_infinite_offline_or_online(rows: list[tuple[int, int, float]]) -> None:
    """Any valid history (zeros, one event, equal timestamps, the gate's amount range): every
    feature is finite or missing, on the offline path and on the online one alike."""
    df = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(rows))],
            "ts": T0 + pd.to_timedelta([r[1] for r in rows], unit="s"),
            "card_id": [f"c{r[0]}" for r in rows],
            "amount": [r[2] for r in rows],
            "merchant_category": "grocery",
            "merchant_country": "US",
            "channel": "pos",
        }
    )
    offline = build_features(df, SPEC)
    assert not np.isinf(offline[SPEC.numeric].to_numpy(dtype=float)).any()
    last = df["ts"] == df["ts"].max()
    online = features_for(df[last], df[~last][SPEC.history_columns], SPEC)
    assert not np.isinf(online[SPEC.numeric].to_numpy(dtype=float)).any()
    np.testing.assert_allclose(
        online[SPEC.numeric].to_numpy(dtype=float),
        offline[last][SPEC.numeric].to_numpy(dtype=float),
        rtol=1e-9,
        atol=1e-9,
    )


def test_request_features_are_the_configured_ones() -> None:
    """Timestamp-derived features are configuration: none for a yearly snapshot (constant within
    a year, a proxy for the year across them), each one alone computed like pandas does."""
    df = events(200, 3)
    ts = df["ts"]
    for request in [(), ("day_of_week",), ("hour", "day_of_week")]:
        spec = FeatureSpec(Contract(), (1, 24), request)
        built = build_features(df, spec)
        assert [n for n in built.columns if n in ("hour", "day_of_week")] == list(request)
        if "day_of_week" in request:
            np.testing.assert_array_equal(built["day_of_week"], ts.dt.dayofweek.astype(float))
        if "hour" in request:
            np.testing.assert_array_equal(built["hour"], ts.dt.hour.astype(float))
    with pytest.raises(ValueError, match="unknown request features \\['minute'\\]"):
        FeatureSpec(Contract(), (1,), ("minute",))


def test_the_config_offers_exactly_the_request_features_the_code_computes() -> None:
    field = Features.model_fields["request"].annotation
    assert set(typing.get_args(typing.get_args(field)[0])) == set(REQUEST_FEATURES)
    assert parse_settings({"features": {"request": []}}).features.request == ()
