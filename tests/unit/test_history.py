"""The bounded per-entity history (core/history.py): folding is order-free and bounded, encodes
losslessly, and the features computed from it equal the offline ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.config import Contract
from pipelines.core.features import (
    FeatureSpec,
    build_features,
    event_columns,
    histories_of,
    online_features,
)
from pipelines.core.history import (
    _HEADER,
    LATE_SLACK,
    MS_PER_MINUTE,
    SCALAR_FOLD_MAX_BUCKETS,
    History,
    _fold_arrays,
    _fold_one,
    fold,
    from_bytes,
    is_late,
    levels,
    max_buckets,
    resolution,
    to_bytes,
)

SPEC = FeatureSpec(Contract(), (1, 24, 168))
T0 = pd.Timestamp("2026-01-01")


def card_events(seconds: list[int], amounts: list[float], card: str = "c") -> pd.DataFrame:
    n = len(seconds)
    return pd.DataFrame(
        {
            "transaction_id": [f"{card}-{i}" for i in range(n)],
            "ts": (T0 + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us]"),
            "card_id": card,
            "amount": amounts,
            "merchant_category": ["grocery", "fuel", "travel"][:1] * n,
            "merchant_country": [["US", "GB", "FR"][i % 3] for i in range(n)],
            "channel": "pos",
        }
    )


@pytest.mark.parametrize("gap_seconds", [600, 6])  # one every ~10 min; a burst, every ~6 s
def test_any_history_folds_into_a_bounded_number_of_aligned_buckets(gap_seconds: int) -> None:
    rng = np.random.default_rng(0)
    seconds = np.cumsum(rng.integers(1, 2 * gap_seconds, 50_000)).tolist()
    history = histories_of(card_events(seconds, rng.gamma(2, 30, 50_000).tolist()), SPEC)["c"]
    assert history.events == 50_000 and (history.folded_n > 0) == (
        gap_seconds == 600
    )  # a year vs 4 days
    assert len(history.minute) <= max_buckets(SPEC.windows) < 400
    newest = int(history.minute[-1])
    for lowest, step in levels(newest, SPEC.windows):  # every bucket on its level's grid
        here = history.minute >= lowest
        assert (history.minute[here] % step == 0).all()
        history = History(
            *(
                getattr(history, f)[~here]
                for f in ("minute", "count", "amount", "square", "last_ms")
            )
        )
    assert not len(history.minute)  # nothing below the coarsest level: folded


def test_each_window_gets_the_coarsest_resolution_with_96_steps() -> None:
    assert SPEC.windows == ((60, 1), (1440, 15), (10080, 60))
    assert resolution(30) == 1 and resolution(480) == 5 and resolution(60 * 24 * 30) == 240


def test_folding_in_any_order_and_in_pieces_gives_the_same_history() -> None:
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 20 * 24 * 3_600_000, 3000)).astype(np.int64)
    amount = rng.gamma(2, 30, 3000)
    values = {"merchant_country": rng.choice(["US", "GB", "FR"], 3000).tolist()}
    whole = fold(History(), ts, amount, values, SPEC.windows)
    pieces = History()
    for lo in range(0, 3000, 250):
        pieces = fold(
            pieces,
            ts[lo : lo + 250],
            amount[lo : lo + 250],
            {k: v[lo : lo + 250] for k, v in values.items()},
            SPEC.windows,
        )
    for name in ("minute", "count", "last_ms"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(pieces, name))
    np.testing.assert_allclose(whole.amount, pieces.amount, rtol=1e-12)
    assert whole.folded_n == pieces.folded_n and whole.seen == pieces.seen
    assert (
        whole.folded_sum == np.float64(pieces.folded_sum)
        or abs(whole.folded_sum - pieces.folded_sum) < 1e-6
    )


def same_bits(a: History, b: History) -> bool:
    """Equal to the bit (dtypes, signed zeros and every float's last digit included)."""
    arrays = ("minute", "count", "amount", "square", "last_ms")
    scalars = ("folded_n", "folded_sum", "folded_sq", "folded_last_ms")
    return (
        all(
            getattr(a, f).dtype == getattr(b, f).dtype
            and getattr(a, f).tobytes() == getattr(b, f).tobytes()
            for f in arrays
        )
        and all(
            np.array(getattr(a, f)).tobytes() == np.array(getattr(b, f)).tobytes() for f in scalars
        )
        and a.seen == b.seen
    )


AMOUNTS = st.floats(allow_nan=True, allow_infinity=True)  # a gap is NaN; ±0.0, subnormals


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # squares of 1e308
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 20 * 24 * 3600), AMOUNTS),
        max_size=SCALAR_FOLD_MAX_BUCKETS,  # at most as many buckets: `fold` takes the scalar path
    ),
    st.integers(-2 * 24 * 3600, 9 * 24 * 3600),
    AMOUNTS,
    st.sampled_from([None, "US", "GB", "ZZ"]),
    st.sampled_from([(1, 24, 168), (2, 12, 720)]),
)
@example([], 0, -0.0, None, (1, 24, 168))
@example([(0, 1.5)], 30 * 24 * 3600, 0.1, "US", (1, 24, 168))  # a month later: everything folds
def test_one_event_folds_to_the_same_bits_on_the_scalar_path_as_on_the_arrays(
    earlier: list[tuple[int, float]],
    offset: int,
    amount: float,
    country: str | None,
    windows_hours: tuple[int, ...],
) -> None:
    """The service's common append (one event, a small history, as stored and read back) takes
    `fold`'s plain-Python path: any history (late events, events days newer that coarsen or fold
    buckets, gaps, infinities, negative zeros, other windows) gets the same bits as the array
    path."""
    windows = FeatureSpec(Contract(), windows_hours).windows
    ts = np.array(sorted(s * 1000 for s, _ in earlier), np.int64)
    history = _fold_arrays(
        History(),
        ts,
        np.array([a for _, a in earlier], np.float64),
        {"merchant_country": [["US", None, "GB"][i % 3] for i in range(len(earlier))]},
        windows,
    )
    history = from_bytes(to_bytes(history))  # what a store hands the fold
    assert len(history.minute) <= SCALAR_FOLD_MAX_BUCKETS
    newest = int(ts.max()) if len(ts) else 10 * 24 * 3_600_000
    event = np.array([max(0, newest + offset * 1000)], np.int64)
    values = {"merchant_country": [country]}
    expected = _fold_arrays(history, event, np.array([amount]), values, windows)
    scalar = _fold_one(history, int(event[0]), amount, {"merchant_country": country}, windows)
    assert same_bits(scalar, expected)
    assert same_bits(fold(history, event, np.array([amount]), values, windows), expected)


def test_the_encoding_round_trips() -> None:
    rng = np.random.default_rng(2)
    ts = np.sort(rng.integers(0, 10 * 24 * 3_600_000, 500)).astype(np.int64)
    history = fold(
        History(),
        ts,
        rng.gamma(2, 30, 500),
        {"merchant_country": ["US"] * 499 + [None]},
        SPEC.windows,
    )
    back = from_bytes(to_bytes(history))
    for name in ("minute", "count", "amount", "square", "last_ms"):
        np.testing.assert_array_equal(getattr(back, name), getattr(history, name))
    assert (back.folded_n, back.folded_sum, back.folded_sq, back.folded_last_ms, back.seen) == (
        history.folded_n,
        history.folded_sum,
        history.folded_sq,
        history.folded_last_ms,
        history.seen,
    )


def test_anything_but_an_encoded_history_is_refused() -> None:
    history = fold(History(), np.array([0, 60_000]), np.array([1.0, 2.0]), {}, SPEC.windows)
    data = to_bytes(history)
    for broken in (b"", b"HST1" + data[4:], data[:30], data[: len(data) - 20], data[:-1]):
        with pytest.raises(ValueError):
            from_bytes(broken)


def test_a_history_the_previous_encoder_wrote_decodes_the_same() -> None:
    """Stores written before the encoder changed keep working: the arrays one after the other,
    the seen values as `json.dumps` wrote them (non-ASCII text as escapes)."""
    history = fold(History(), np.array([0, 90_000]), np.array([1.5, -2.0]), {}, SPEC.windows)
    history.seen = {"merchant_country": {"Côte d'Ivoire": 0, "日本": 1}}
    old = (
        to_bytes(history)[: _HEADER.size + 40 * len(history.minute)]
        + json.dumps(history.seen, separators=(",", ":")).encode()
    )
    assert b"\\u00f4" in old  # escaped, as json.dumps did
    back = from_bytes(old)
    assert back.seen == history.seen
    assert to_bytes(back) == to_bytes(history)


def test_lateness_is_measured_from_the_newest_event() -> None:
    history = fold(
        History(), np.array([100 * 60 * MS_PER_MINUTE]), np.array([1.0]), {}, SPEC.windows
    )
    newest = 100 * 60
    assert not is_late(history, newest - LATE_SLACK) and is_late(history, newest - LATE_SLACK - 1)
    assert not is_late(History(), 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 12 * 24 * 3600), st.floats(0, 1000)),
        min_size=2,
        max_size=60,
    ),
    st.integers(1, 59),
)
def test_features_from_stored_histories_equal_the_offline_ones(
    rows: list[tuple[int, int, float]], cut: int
) -> None:
    """Any history split anywhere: the events before the split, folded as a store keeps them,
    give the events after it the features `build_features` gives them on the whole history."""
    rows = sorted(rows, key=lambda r: r[1])
    df = pd.concat(
        [
            card_events([r[1]], [r[2]], card=f"c{r[0]}").assign(transaction_id=f"t{i}")
            for i, r in enumerate(rows)
        ],
        ignore_index=True,
    )
    cut = min(cut, len(df) - 1)
    offline = build_features(df, SPEC)
    after = df.iloc[cut:]
    online, late = online_features(
        event_columns(after, SPEC), histories_of(df.iloc[:cut], SPEC), SPEC
    )
    assert not late.any()
    pd.testing.assert_frame_equal(
        pd.DataFrame(online, index=after.index),
        offline.iloc[cut:],
        check_exact=False,
        rtol=1e-9,
        atol=1e-9,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.integers(0, 40 * 24 * 3600),  # over a month: some fold into the totals
                # on a quarter-hour grid in the last week: buckets at the windows' first minutes
                st.integers(0, 7 * 24 * 4).map(lambda q: 33 * 24 * 3600 + 900 * q),
            ),
            st.sampled_from([0.0, 0.0, 12.5, 99.99, 1e6]),  # zeros: a mean of zero
            st.sampled_from(["US", "GB", None]),
        ),
        max_size=40,
    ),
    st.one_of(  # the probe, from late to well after the newest event
        st.integers(-3 * 3600, 6 * 3600), st.integers(-8, 24).map(lambda q: 900 * q)
    ),
    st.sampled_from(["US", "FR", None]),
    st.booleans(),
)
@example(  # every 45 min for a week: a bucket starts at each window's first minute
    events=[(33 * 24 * 3600 + 2700 * q, 10.0, "US") for q in range(224)],
    probe_offset=900,
    country="US",
    known_card=True,
)
def test_one_record_gets_exactly_the_features_of_a_batch_row(
    events: list[tuple[int, float, str | None]],
    probe_offset: int,
    country: str | None,
    known_card: bool,
) -> None:
    """The one-record path (most requests) and the batch path give the same numbers bit for bit,
    for a card with any history (folded totals, zero amounts, missing values), a new card, and
    an event late or within the slack."""
    seconds = sorted(s for s, _, _ in events)
    df = card_events(seconds, [a for _, a, _ in events]).assign(
        merchant_country=pd.array([c for _, _, c in events], dtype="string")
    )
    histories = histories_of(df, SPEC) if events else {}
    probe_ts = T0 + pd.Timedelta(seconds=max(seconds, default=0) + probe_offset)
    probe = card_events([0, 0], [42.0, 7.0]).assign(
        ts=[probe_ts, probe_ts],
        card_id=["c" if known_card else "new", "other"],
        merchant_country=pd.array([country, "US"], dtype="string"),
    )
    batch = event_columns(probe, SPEC)
    alone, alone_late = online_features({k: v[:1] for k, v in batch.items()}, histories, SPEC)
    together, together_late = online_features(batch, histories, SPEC)
    assert alone_late[0] == together_late[0]
    for name in SPEC.numeric:
        np.testing.assert_array_equal(alone[name], together[name][:1], err_msg=name)
    for name in SPEC.categorical:
        assert str(alone[name][0]) == str(together[name][0])
