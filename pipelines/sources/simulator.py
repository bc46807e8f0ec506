"""The synthetic card-transaction source: the embedded stand-in for an upstream system.

`generate(cfg)` is pure and deterministic for a seed: it returns the transactions and their
delayed labels. `write_source(url, ...)` lays them out as day partitions under any URL.

How the data is made, and why it is worth modelling:

- A population of cards, each with its own habits: a typical amount (lognormal), a home
  country, active hours, preferred merchant categories and a channel mix. Each card transacts
  as a Poisson process with its own rate. Some legit traffic looks odd on purpose: travellers
  pay abroad, people make occasional big purchases, night owls pay at night.
- Fraud comes from a latent mechanism that only the card's history reveals well: a card gets
  compromised, then a burst of transactions follows within hours, usually much larger than the
  card's habit, often abroad, at night, card-not-present, in risky categories. Each signal is
  drawn on its own, so many frauds show only some of them.
- Labels arrive late: chargebacks 1-30 days after the transaction (skewed to the first week),
  legit transactions are confirmed after a maturity delay of 5-10 days.

Every random draw is made whatever the scenario, on independent streams, and a scenario only
changes values from `scenario_start`: the data before it is identical to the `none` scenario's,
which is what makes a drift before/after comparison honest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
import pandas as pd
from pydantic import ValidationError

from pipelines.config import Contract, Scenario, Settings, Simulate
from pipelines.io import source

# The category values must match `validate.categories` in params.yaml (a unit test checks it).
CHANNELS = ("pos", "contactless", "online", "mobile_wallet")
CATEGORIES = (
    "grocery",
    "restaurants",
    "fuel",
    "travel",
    "electronics",
    "fashion",
    "entertainment",
    "health",
    "digital_goods",
    "gambling",
)
COUNTRIES = (
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "CA",
    "MX",
    "BR",
    "JP",
    "CN",
    "IN",
    "AU",
    "NG",
    "RU",
    "TR",
    "AE",
    "SG",
    "ZA",
)
NEW_CATEGORY = "crypto"
TX_COLUMNS = (
    "transaction_id",
    "ts",
    "card_id",
    "amount",
    "merchant_category",
    "merchant_country",
    "channel",
)
LABEL_COLUMNS = ("transaction_id", "is_fraud", "label_ts")
# The simulated table's contract: params.yaml's default contract names the same columns.
SIMULATED = Contract(
    id="transaction_id",
    timestamp="ts",
    entity="card_id",
    target="is_fraud",
    label_timestamp="label_ts",
    numeric=("amount",),
    categorical=("merchant_category", "merchant_country", "channel"),
    amount="amount",
    novelty=("merchant_country", "merchant_category"),
)

_DAY = 86_400.0
_HOUR = 3_600.0
_CAT = {c: i for i, c in enumerate(CATEGORIES)}
_CH = {c: i for i, c in enumerate(CHANNELS)}
_CARD_PRESENT = np.array([True, True, False, False])
_RISKY = np.array([_CAT[c] for c in ("electronics", "digital_goods", "gambling", "travel")])
_RISKY_P = np.array([0.35, 0.35, 0.15, 0.15])


def _weights(table: dict[str, float], values: Sequence[str]) -> np.ndarray:
    w = np.array([table.get(v, 0.0) for v in values])
    return w / w.sum()


# Where cardholders live, where they travel, where stolen cards get used.
_HOME_P = _weights(
    {
        "US": 30,
        "GB": 12,
        "DE": 10,
        "FR": 8,
        "ES": 5,
        "IT": 5,
        "NL": 4,
        "CA": 5,
        "MX": 3,
        "BR": 3,
        "JP": 3,
        "CN": 1,
        "IN": 2,
        "AU": 3,
        "NG": 1,
        "RU": 1,
        "TR": 1,
        "AE": 1,
        "SG": 1,
        "ZA": 1,
    },
    COUNTRIES,
)
_TRIP_P = _weights(
    {
        "US": 10,
        "GB": 8,
        "FR": 12,
        "ES": 12,
        "IT": 10,
        "DE": 5,
        "NL": 4,
        "MX": 6,
        "JP": 6,
        "TR": 6,
        "AE": 5,
        "AU": 3,
        "SG": 3,
        "BR": 3,
        "CA": 4,
        "ZA": 2,
        "CN": 2,
        "IN": 2,
    },
    COUNTRIES,
)
_FRAUD_COUNTRY_P = _weights(
    {
        "NG": 14,
        "RU": 14,
        "CN": 10,
        "BR": 9,
        "TR": 8,
        "MX": 7,
        "IN": 7,
        "AE": 6,
        "ZA": 6,
        "SG": 4,
        "US": 4,
        "GB": 3,
        "NL": 3,
        "DE": 2,
        "FR": 2,
        "ES": 1,
    },
    COUNTRIES,
)
_CATEGORY_P = _weights(
    {
        "grocery": 22,
        "restaurants": 17,
        "fuel": 11,
        "travel": 4,
        "electronics": 5,
        "fashion": 10,
        "entertainment": 8,
        "health": 7,
        "digital_goods": 7,
        "gambling": 1.5,
    },
    CATEGORIES,
)
# Log-multiplier of a card's typical amount by category: a flight costs more than a coffee.
_CATEGORY_AMOUNT = np.array([0.0, -0.2, 0.1, 1.3, 1.1, 0.4, -0.1, 0.2, -0.7, 0.3])
_CHANNEL_P = np.array([0.36, 0.30, 0.24, 0.10])

# The knobs that set how hard the task is (tuned with bench/model_quality.py).
FRAUD_SHARE = 0.011  # target share of fraudulent transactions
BURST_MEAN = 5.0  # mean transactions per compromise
P_NIGHT_START = 0.25  # compromise starts at night (00-05h)
P_FAST_BURST = 0.6  # minutes apart; otherwise hours apart
P_FOREIGN = 0.3  # fraud abroad, in a risky country
P_CNP = 0.5  # card-not-present channel
P_RISKY_CATEGORY = 0.35  # per fraud transaction
P_HIGH_AMOUNT = 0.45  # per compromise: amounts far above the card's habit
AMOUNT_SPREAD = 0.6  # sd of log typical amount across cards: habits differ a lot
P_TRAVELLER = 0.1  # cards with one trip abroad in the period
SESSION_MEAN = 1.6  # legit transactions per shopping session
SESSION_GAP = 25 * 60.0  # mean seconds between payments in a session
P_BIG_PURCHASE = 0.025  # legit transactions much larger than the habit
P_NEW_STYLE = 0.4  # concept shift: share of compromises that use the new mechanism


@dataclass(frozen=True)
class _Habits:
    """Per-card behaviour; arrays indexed by card number."""

    home: np.ndarray
    log_amount: np.ndarray
    amount_sigma: np.ndarray
    rate: np.ndarray  # legit transactions per day
    peak_hour: np.ndarray
    hour_sd: np.ndarray
    category_cum: np.ndarray  # (cards, categories) cumulative probabilities
    channel_cum: np.ndarray  # (cards, channels)
    trip_start: np.ndarray  # seconds from the period start; inf for non-travellers
    trip_end: np.ndarray
    trip_country: np.ndarray


@dataclass(frozen=True)
class _Events:
    """Integer-coded transactions; `t` is seconds since the period start."""

    card: np.ndarray
    t: np.ndarray
    amount: np.ndarray
    category: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    fraud: np.ndarray


def scenario_start(cfg: Simulate) -> dt.date:
    """First day of the scenario: the configured one, else the first day of the last quarter."""
    if cfg.scenario_start is not None:
        return cfg.scenario_start
    return cfg.start + dt.timedelta(days=cfg.days - math.ceil(cfg.days / 4))


def generate(cfg: Simulate) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transactions, labels) for the configured period and scenario; pure and deterministic."""
    start_day = scenario_start(cfg)
    end = cfg.start + dt.timedelta(days=cfg.days)
    if cfg.scenario != "none" and not cfg.start <= start_day < end:
        raise ValueError(
            f"simulate.scenario_start {start_day} is outside the simulated period [{cfg.start}, {end})"
        )
    s0 = (start_day - cfg.start).days * _DAY
    r_cards, r_legit, r_fraud, r_labels, r_scenario = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    habits = _habits(r_cards, cfg.cards, cfg.days)
    legit = _legit(r_legit, habits, cfg.days, cfg.tx_per_day * (1 - FRAUD_SHARE))
    new_style_from = s0 if cfg.scenario == "concept_shift" else math.inf
    fraud = _fraud(r_fraud, habits, cfg.days, cfg.tx_per_day * FRAUD_SHARE, new_style_from)
    ev = _sorted_within(_concat(legit, fraud), cfg.days * _DAY)

    categories: tuple[str, ...] = CATEGORIES
    after = ev.t >= s0
    if cfg.scenario == "covariate_shift":
        ev = _covariate_shift(r_scenario, ev, after)
    elif cfg.scenario == "new_category":
        ev = _new_category(r_scenario, ev, after, cfg.cards)
        categories = (*CATEGORIES, NEW_CATEGORY)

    tx = _transactions_frame(ev, cfg.start, categories)
    labels = _labels_frame(r_labels, tx, ev.fraud)
    if cfg.scenario.startswith("corrupt_"):
        tx, labels = _corrupt(r_scenario, cfg.scenario, tx, labels, pd.Timestamp(start_day))
    return tx, labels


# --- cards and their legit traffic ------------------------------------------------------------


def _habits(rng: np.random.Generator, cards: int, days: int) -> _Habits:
    # Most people shop by day, some in the evening, a few are night owls (legit night traffic).
    kind = rng.choice(3, size=cards, p=[0.8, 0.14, 0.06])
    peak = np.choose(
        kind, [rng.normal(14, 2.5, cards), rng.normal(20, 1.5, cards), rng.normal(1, 2, cards)]
    )
    category_p = rng.dirichlet(_CATEGORY_P * 4, size=cards)
    channel_p = rng.dirichlet(_CHANNEL_P * 6, size=cards)
    home = rng.choice(len(COUNTRIES), size=cards, p=_HOME_P)
    trip_country = rng.choice(len(COUNTRIES), size=cards, p=_TRIP_P)
    # A trip to one's own country is no trip: move it to the next destination on the list.
    trip_country = np.where(trip_country == home, (trip_country + 1) % len(COUNTRIES), trip_country)
    travels = rng.random(cards) < P_TRAVELLER
    trip_start = np.where(travels, rng.uniform(0, days * _DAY, cards), np.inf)
    trip_end = trip_start + rng.uniform(3, 14, cards) * _DAY
    return _Habits(
        home=home,
        log_amount=rng.normal(np.log(30.0), AMOUNT_SPREAD, cards),
        amount_sigma=rng.uniform(0.35, 0.7, cards),
        rate=rng.gamma(1.5, 1.0, cards),
        peak_hour=peak,
        hour_sd=rng.uniform(1.5, 3.5, cards),
        category_cum=np.cumsum(category_p, axis=1),
        channel_cum=np.cumsum(channel_p, axis=1),
        trip_start=trip_start,
        trip_end=trip_end,
        trip_country=trip_country,
    )


def _pick(rng: np.random.Generator, cum: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per row from that row's own categorical distribution (cumulative `cum[rows]`)."""
    u = rng.random(len(rows))
    idx = (u[:, None] > cum[rows]).sum(axis=1)
    return np.minimum(idx, cum.shape[1] - 1)  # float rounding can leave the last sum below 1


def _hour_of_day(rng: np.random.Generator, h: _Habits, card: np.ndarray) -> np.ndarray:
    return (h.peak_hour[card] + h.hour_sd[card] * rng.standard_normal(len(card))) % 24


def _legit(rng: np.random.Generator, h: _Habits, days: int, per_day: float) -> _Events:
    # Shopping comes in sessions (a few payments within the hour), so quick successions on a
    # card are not by themselves fraud.
    rate = h.rate * (per_day / SESSION_MEAN / h.rate.sum())
    s_card = np.repeat(np.arange(len(rate)), rng.poisson(rate * days))
    s_start = rng.integers(0, days, len(s_card)) * _DAY + _hour_of_day(rng, h, s_card) * _HOUR
    size = rng.geometric(1 / SESSION_MEAN, len(s_card))
    card = np.repeat(s_card, size)
    n = len(card)
    first = np.cumsum(size) - size
    gaps = rng.standard_exponential(n) * SESSION_GAP
    gaps[first] = 0.0
    t = np.repeat(s_start, size) + _cumsum_within(gaps, first, size)
    category = _pick(rng, h.category_cum, card)
    channel = _pick(rng, h.channel_cum, card)
    # Digital goods cannot be bought at a till.
    digital = (category == _CAT["digital_goods"]) & _CARD_PRESENT[channel]
    channel = np.where(digital, _CH["online"], channel)
    # Travellers pay abroad in shops while away; their online shopping stays at home merchants.
    away = (t >= h.trip_start[card]) & (t < h.trip_end[card]) & _CARD_PRESENT[channel]
    away &= rng.random(n) < 0.9
    country = np.where(away, h.trip_country[card], h.home[card])
    log_amount = (
        h.log_amount[card]
        + _CATEGORY_AMOUNT[category]
        + h.amount_sigma[card] * rng.standard_normal(n)
    )
    big = rng.random(n) < P_BIG_PURCHASE
    log_amount = (
        log_amount + np.where(big, rng.uniform(1.3, 2.8, n), 0.0) + np.where(away, 0.3, 0.0)
    )
    return _Events(card, t, np.exp(log_amount), category, country, channel, np.zeros(n, dtype=bool))


# --- fraud ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compromises:
    """One row per compromise (`card`, `t0`, ...) and its transactions (`inc` maps them back)."""

    card: np.ndarray
    day: np.ndarray
    t0: np.ndarray  # seconds from the period start
    size: np.ndarray
    first: np.ndarray  # position of each compromise's first transaction
    inc: np.ndarray


def _fraud(
    rng: np.random.Generator, h: _Habits, days: int, per_day: float, new_style_from: float
) -> _Events:
    """Compromised cards and what fraudsters do with them.

    Every draw is made for every compromise, whichever mechanism it ends up using, so that
    switching the mechanism from `new_style_from` leaves earlier data untouched.
    """
    c = _compromises(rng, h, days, per_day)
    classic = _classic_fraud(rng, h, c)
    new_style = _new_style_fraud(rng, h, c)
    new = ((c.t0 >= new_style_from) & (rng.random(len(c.t0)) < P_NEW_STYLE))[c.inc]
    return _Events(
        *(
            np.where(new, b, a)
            for a, b in zip(vars(classic).values(), vars(new_style).values(), strict=True)
        )
    )


def _compromises(rng: np.random.Generator, h: _Habits, days: int, per_day: float) -> _Compromises:
    n_inc = rng.poisson(per_day * days / BURST_MEAN)
    # Busy cards are exposed more often (more merchants, more terminals).
    card = rng.choice(len(h.rate), n_inc, p=h.rate / h.rate.sum())
    day = rng.integers(0, days, n_inc)
    night = rng.random(n_inc) < P_NIGHT_START
    # Otherwise fraudsters strike when the card is usually used, so the hour alone is no tell.
    hour = np.where(night, rng.uniform(0, 5, n_inc), _hour_of_day(rng, h, card))
    size = np.minimum(rng.geometric(1 / BURST_MEAN, n_inc), 25)
    return _Compromises(
        card=card,
        day=day,
        t0=day * _DAY + hour * _HOUR,
        size=size,
        first=np.cumsum(size) - size,
        inc=np.repeat(np.arange(n_inc), size),
    )


def _classic_fraud(rng: np.random.Generator, h: _Habits, c: _Compromises) -> _Events:
    """A burst from t0, mostly minutes apart; each tell (amount, abroad, channel, category) on its own."""
    n_inc, n = len(c.t0), len(c.inc)
    gap_scale = np.where(rng.random(n_inc) < P_FAST_BURST, 20 * 60.0, 6 * _HOUR)
    foreign = rng.random(n_inc) < P_FOREIGN
    inc_country = rng.choice(len(COUNTRIES), n_inc, p=_FRAUD_COUNTRY_P)
    cnp = rng.random(n_inc) < P_CNP
    high = rng.random(n_inc) < P_HIGH_AMOUNT
    level = np.where(high, rng.normal(1.5, 0.5, n_inc), rng.normal(0.2, 0.4, n_inc))

    card = c.card[c.inc]
    gaps = rng.standard_exponential(n) * gap_scale[c.inc]
    gaps[c.first] = 0.0
    t = c.t0[c.inc] + _cumsum_within(gaps, c.first, c.size)
    hopping = rng.random(n) < 0.15
    country = np.where(
        hopping, rng.choice(len(COUNTRIES), n, p=_FRAUD_COUNTRY_P), inc_country[c.inc]
    )
    country = np.where(foreign[c.inc], country, h.home[card])
    cnp_channel = np.where(rng.random(n) < 0.65, _CH["online"], _CH["mobile_wallet"])
    own_channel = _pick(rng, h.channel_cum, card)
    channel = np.where(cnp[c.inc] & (rng.random(n) < 0.9), cnp_channel, own_channel)
    risky = rng.random(n) < P_RISKY_CATEGORY
    own_category = _pick(rng, h.category_cum, card)
    category = np.where(risky, _RISKY[rng.choice(len(_RISKY), n, p=_RISKY_P)], own_category)
    log_amount = h.log_amount[card] + level[c.inc] + 0.3 * rng.standard_normal(n)
    return _Events(card, t, np.exp(log_amount), category, country, channel, np.ones(n, dtype=bool))


def _new_style_fraud(rng: np.random.Generator, h: _Habits, c: _Compromises) -> _Events:
    """The concept-shift mechanism: small, domestic, contactless, at the card's usual hours, in
    everyday categories, spread over days: everything the classic mechanism taught was safe."""
    n = len(c.inc)
    card = c.card[c.inc]
    day_gaps = np.floor(rng.standard_exponential(n) * 1.5)
    day_gaps[c.first] = 0.0
    t = (c.day[c.inc] + _cumsum_within(day_gaps, c.first, c.size)) * _DAY + _hour_of_day(
        rng, h, card
    ) * _HOUR
    category = np.where(rng.random(n) < 0.5, _CAT["fuel"], _CAT["health"])
    log_amount = h.log_amount[card] + rng.normal(-1.2, 0.3, n)
    channel = np.full(n, _CH["contactless"])
    return _Events(
        card, t, np.exp(log_amount), category, h.home[card], channel, np.ones(n, dtype=bool)
    )


def _cumsum_within(values: np.ndarray, first: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Running sums that restart at each group (groups are contiguous: `first`, `size`)."""
    total = np.cumsum(values)
    return total - np.repeat(total[first] - values[first], size)


def _concat(a: _Events, b: _Events) -> _Events:
    return _Events(
        *(np.concatenate([x, y]) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    )


def _sorted_within(ev: _Events, horizon: float) -> _Events:
    """Events inside [0, horizon) seconds, in time order (fraud bursts can run past the end)."""
    keep = np.flatnonzero(ev.t < horizon)
    order = keep[np.argsort(ev.t[keep], kind="stable")]
    return _Events(*(x[order] for x in vars(ev).values()))


# --- scenarios --------------------------------------------------------------------------------


def _covariate_shift(rng: np.random.Generator, ev: _Events, after: np.ndarray) -> _Events:
    """Prices inflate and shoppers move online: inputs drift, the fraud mechanism does not."""
    n = len(ev.t)
    inflation = rng.uniform(1.5, 2.0, n)
    moves = after & _CARD_PRESENT[ev.channel] & (rng.random(n) < 0.4)
    online = np.where(rng.random(n) < 0.55, _CH["online"], _CH["mobile_wallet"])
    return _replace(
        ev,
        amount=np.where(after, ev.amount * inflation, ev.amount),
        channel=np.where(moves, online, ev.channel),
    )


def _new_category(rng: np.random.Generator, ev: _Events, after: np.ndarray, cards: int) -> _Events:
    """A new merchant category takes a real share of traffic, and fraudsters like it more."""
    n = len(ev.t)
    adopter = rng.random(cards) < 0.3
    p = np.where(ev.fraud, 0.45, np.where(adopter[ev.card], 0.3, 0.0))
    moves = after & (rng.random(n) < p)
    return _replace(ev, category=np.where(moves, len(CATEGORIES), ev.category))


def _replace(ev: _Events, **changes: np.ndarray) -> _Events:
    return _Events(**{**vars(ev), **changes})


def _corrupt(
    rng: np.random.Generator, kind: str, tx: pd.DataFrame, labels: pd.DataFrame, since: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Upstream faults from day `since` on, for testing the data gate.

    A frame holds one schema, so schema faults that start on a day are written as a column that
    is entirely missing on those days: `write_source` leaves such a column out of that day's file.
    """
    after = (tx["ts"] >= since).to_numpy()
    n = len(tx)
    tx = tx.copy()
    if kind == "corrupt_nulls":
        tx.loc[after & (rng.random(n) < 0.03), "amount"] = np.nan
        tx.loc[after & (rng.random(n) < 0.03), "card_id"] = None
    elif kind == "corrupt_range":
        u = rng.random(n)
        tx.loc[after & (u < 0.02), "amount"] *= -1
        tx.loc[after & (u > 0.99), "amount"] *= 1e6
    elif kind == "corrupt_types":
        amount = tx["amount"].to_numpy(dtype=object)
        amount[after] = [f"{a:.2f}" for a in amount[after]]
        tx["amount"] = pd.Series(amount, index=tx.index, dtype=object)
    elif kind == "corrupt_renamed":
        tx.insert(tx.columns.get_loc("amount") + 1, "amt", tx["amount"].where(after))
        tx["amount"] = tx["amount"].mask(after)
    elif kind == "corrupt_missing":
        tx["channel"] = tx["channel"].mask(after)
    elif kind == "corrupt_duplicates":
        dup = tx[after & (rng.random(n) < 0.02)]
        tx = pd.concat([tx, dup]).sort_values("ts", kind="stable").reset_index(drop=True)
    elif kind == "corrupt_empty":
        lost = (tx["ts"].dt.normalize() == since).to_numpy()
        labels = labels[~labels["transaction_id"].isin(tx.loc[lost, "transaction_id"])].reset_index(
            drop=True
        )
        tx = tx[~lost].reset_index(drop=True)
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return tx, labels


# --- frames -----------------------------------------------------------------------------------


def _strings(codes: np.ndarray, values: Sequence[str]) -> pd.Series:
    return pd.Series(pd.Categorical.from_codes(codes, list(values))).astype("str")


def _transactions_frame(ev: _Events, start: dt.date, categories: Sequence[str]) -> pd.DataFrame:
    n = len(ev.t)
    base = np.datetime64(start, "ms")
    ts = base + np.round(ev.t * 1000).astype(np.int64).astype("timedelta64[ms]")
    ids = np.strings.add("t", np.strings.zfill(np.arange(n).astype("U"), 9))
    card_ids = np.strings.add(
        "c", np.strings.zfill(np.arange(ev.card.max(initial=0) + 1).astype("U"), 6)
    )
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(ids, dtype="str"),
            "ts": pd.Series(ts.astype("datetime64[us]")),
            "card_id": _strings(ev.card, card_ids.tolist()),
            "amount": np.maximum(np.round(ev.amount, 2), 0.01),
            "merchant_category": _strings(ev.category, categories),
            "merchant_country": _strings(ev.country, COUNTRIES),
            "channel": _strings(ev.channel, CHANNELS),
        }
    )


def _labels_frame(rng: np.random.Generator, tx: pd.DataFrame, fraud: np.ndarray) -> pd.DataFrame:
    n = len(tx)
    # Chargebacks: most within a week or two, a long tail up to 30 days.
    fraud_delay = 1 + np.minimum(rng.gamma(1.3, 5.0, n), 29)
    legit_delay = rng.uniform(5, 10, n)
    delay_ms = np.round(np.where(fraud, fraud_delay, legit_delay) * _DAY * 1000).astype(np.int64)
    label_ts = tx["ts"].to_numpy() + delay_ms.astype("timedelta64[ms]")
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"],
            "is_fraud": fraud.astype(np.int8),
            "label_ts": pd.Series(label_ts.astype("datetime64[us]")),
        }
    )


# --- I/O --------------------------------------------------------------------------------------


def period(cfg: Simulate) -> list[dt.date]:
    """Every simulated day, in order."""
    return [cfg.start + dt.timedelta(days=i) for i in range(cfg.days)]


def run(settings: Settings, url: str | None = None, until: dt.date | None = None) -> None:
    """Simulate `settings.simulate` into `url` (default: `paths.source`) in the partitioned layout.

    `until`: write only what the upstream had landed by that day (transactions of earlier days,
    labels that arrived before it); a later run without it lands the rest, the earlier partitions
    rewritten byte for byte (the world is deterministic for a seed)."""
    cfg = settings.simulate
    target = url or settings.paths.source
    tx, labels = generate(cfg)
    days = period(cfg)
    if until is not None:
        tx = tx[tx["ts"] < pd.Timestamp(until)]
        labels = labels[labels["label_ts"] < pd.Timestamp(until)]
        days = [d for d in days if d < until]
    rate = labels["is_fraud"].mean() if len(labels) else 0.0
    print(
        f"simulate: {len(tx):,} transactions, {len(labels):,} labels (fraud {rate:.2%}), "
        f"scenario {cfg.scenario} from {scenario_start(cfg)} -> {target}",
        file=sys.stderr,
    )
    write_source(target, tx, labels, days)


def write_source(
    url: str,
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    days: Sequence[dt.date] | None = None,
) -> None:
    """The simulated frames in the partitioned source layout (`io.source.write_partitioned`)."""
    source.write_partitioned(url, transactions, labels, SIMULATED, days)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines simulate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--days", type=int)
    p.add_argument("--tx-per-day", type=int)
    p.add_argument("--cards", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--start", type=dt.date.fromisoformat, help="first day, YYYY-MM-DD")
    p.add_argument("--scenario", choices=get_args(Scenario))
    p.add_argument("--scenario-start", type=dt.date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--out", help="source URL (default: paths.source)")
    p.add_argument(
        "--until",
        type=dt.date.fromisoformat,
        help="YYYY-MM-DD: land only what had arrived by then (the rest with a later run)",
    )
    p.add_argument(
        "--if-missing",
        action="store_true",
        help="only if the source has no transactions yet (a local source is simulated, "
        "a remote one is an error: simulated data never lands in a real bucket)",
    )
    return p


def main(argv: Sequence[str] | None, settings: Settings) -> int:
    """`python -m pipelines simulate [flags]`: the exit code. `--if-missing` with a remote
    source that has no data raises FileNotFoundError (simulated data never lands in a real bucket)."""
    parser = _parser()
    args = parser.parse_args(argv)
    update = {
        k: v
        for k, v in vars(args).items()
        if k not in ("out", "if_missing", "until") and v is not None
    }
    target = args.out or settings.paths.source
    if args.if_missing and source.transaction_partitions(target):
        print(f"simulate: {target} already has transactions; leaving it as it is", file=sys.stderr)
        return 0
    if args.if_missing and "://" in target:
        raise FileNotFoundError(
            f"no transactions under {target}: point paths.source at your data "
            f"(or simulate into it explicitly: python -m pipelines simulate)"
        )
    try:
        cfg = Simulate.model_validate(settings.simulate.model_copy(update=update).model_dump())
        run(settings.model_copy(update={"simulate": cfg}), args.out, args.until)
    except (ValidationError, ValueError) as err:
        parser.error(str(err))
    return 0
