"""The online feature computation alone (`core.features.online_features`, no store, no HTTP):
microseconds per call and per record, cards with 10, 1,000 and 100,000 earlier events.

    python bench/features.py [--rounds 7]

Columns, measured side by side in one run (the median of `rounds` rounds, each visiting every
case in turn so a noisy neighbour does not favour one):

- `1 record`: a call for one record (most requests; the one-record path);
- `2 records`: a call for two records of different cards (the general path: sort, factorize,
  grouped running sums), and its ratio to the one-record call;
- `64 records`: a call for a batch of 64 records of 64 cards (what the adaptive batcher sends
  under load), per record.

Then the fold that appends one event to a card's history (`core.history.fold`, what the store
does per card per batch), on both of its paths for the same histories: plain Python (taken up to
`SCALAR_FOLD_MAX_BUCKETS` buckets) and numpy arrays; where they cross sets that threshold.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines.config import Contract  # noqa: E402
from pipelines.core.features import (  # noqa: E402
    FeatureSpec,
    event_columns,
    histories_of,
    online_features,
)
from pipelines.core.history import (  # noqa: E402
    MS_PER_MINUTE,
    SCALAR_FOLD_MAX_BUCKETS,
    _fold_arrays,
    _fold_one,
)

SPEC = FeatureSpec(Contract(), (1, 24, 168))
CALLS = 400


def events(cards: int, per_card: int, seed: int = 0) -> pd.DataFrame:
    """`per_card` events for each of `cards` cards, one every ~10 min per card."""
    rng = np.random.default_rng(seed)
    n = cards * per_card
    gaps = rng.integers(1, 1200, size=(cards, per_card)).cumsum(axis=1).ravel()
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "ts": (pd.Timestamp("2024-01-01") + pd.to_timedelta(gaps, unit="s")).astype(
                "datetime64[us]"
            ),
            "card_id": np.repeat([f"c{i}" for i in range(cards)], per_card),
            "amount": rng.gamma(2, 30, n),
            "merchant_category": rng.choice(["grocery", "fuel", "travel"], n),
            "merchant_country": rng.choice(["US", "GB", "FR"], n),
            "channel": "pos",
        }
    )


def per_call(batch: dict[str, np.ndarray], histories: dict) -> float:
    """Seconds per `online_features` call on `batch`."""
    began = time.perf_counter()
    for _ in range(CALLS):
        online_features(batch, histories, SPEC)
    return (time.perf_counter() - began) / CALLS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    cases = {}
    for size in (10, 1_000, 100_000):
        cards = 64 if size < 100_000 else 2  # the largest: two cards, 32 records each in the 64
        df = events(cards, size)
        histories = histories_of(df, SPEC)
        newest = df["ts"].max() + pd.Timedelta(minutes=1)
        probe = df.groupby("card_id", sort=False).tail(1).assign(ts=newest)
        probe = pd.concat([probe] * (64 // len(probe)), ignore_index=True)
        cols = event_columns(probe, SPEC)
        cases[size] = (
            histories,
            {k: v[:1] for k, v in cols.items()},
            {k: v[:2] for k, v in cols.items()},
            cols,
            len(histories["c0"].minute),
        )
    times: dict[tuple[int, str], list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for histories, one, two, many, _ in cases.values():
            for name, batch in (("1", one), ("2", two), ("64", many)):
                took = per_call(batch, histories)
                if round_:
                    times.setdefault((id(histories), name), []).append(took)

    def median_us(histories: dict, name: str) -> float:
        return float(np.median(times[(id(histories), name)])) * 1e6

    print("| card events | buckets | 1 record µs | 2 records µs (general path) | ratio |", end="")
    print(" 64 records µs/record |")
    print("|---|---|---|---|---|---|")
    for size, (histories, *_, buckets) in cases.items():
        one, two, many = (median_us(histories, name) for name in ("1", "2", "64"))
        print(
            f"| {size:,} | {buckets} | {one:.0f} | {two:.0f} | {two / one:.1f}x | {many / 64:.1f} |"
        )
    fold_table(args.rounds)


def fold_table(rounds: int) -> None:
    """µs per fold of one event (a minute after the card's newest) on each path, by buckets."""
    histories = []
    for n in (3, 12, 40, 120, 1_000, 100_000):
        history = histories_of(events(1, n, seed=n), SPEC)["c0"]
        histories.append((history, int(history.last_ms.max()) + MS_PER_MINUTE))
    times: dict[tuple[int, str], list[float]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up
        for i, (history, ts) in enumerate(histories):
            arrays = (np.array([ts], np.int64), np.array([12.5]), {"merchant_country": ["US"]})
            for name, fold, fold_args in (
                ("python", _fold_one, (ts, 12.5, {"merchant_country": "US"})),
                ("arrays", _fold_arrays, arrays),
            ):
                began = time.perf_counter()
                for _ in range(CALLS):
                    fold(history, *fold_args, SPEC.windows)  # type: ignore[operator]
                if round_:
                    times.setdefault((i, name), []).append((time.perf_counter() - began) / CALLS)
    print(f"\nFolding one event (plain Python up to {SCALAR_FOLD_MAX_BUCKETS} buckets):\n")
    print("| buckets | plain Python µs | numpy arrays µs | arrays / Python |")
    print("|---|---|---|---|")
    for i, (history, _) in enumerate(histories):
        py, arr = (float(np.median(times[(i, k)])) * 1e6 for k in ("python", "arrays"))
        print(f"| {len(history.minute)} | {py:.1f} | {arr:.1f} | {arr / py:.2f}x |")


if __name__ == "__main__":
    main()
