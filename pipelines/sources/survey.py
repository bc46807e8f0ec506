"""A second stand-in source, unlike the card transactions: a yearly employment survey, one row
per person interviewed (no entity, so no history features), as a single CSV or Parquet table.

What makes it a test of the pipeline's generality: integer-coded categories (`SCHL` education
1-24, `SEX` 1-2, `MAR` marital status 1-5, `COW` class of worker 1-9 with gaps for people who
never worked), numeric gaps (`hours per week`, a column name with spaces), a true/false outcome
(`employed`, near 45 %), interview dates scattered over each year, and a changed world from
`change_year` on: an older population, and education and age matter differently, so a model of
the early years decays on the later ones (concept drift) and retraining wins some of it back.

    python -m pipelines survey --out data/survey.csv [--years 10] [--rows 3000] [--seed 0]

`generate` is pure and deterministic for its arguments.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from pipelines.io import storage

START_YEAR = 2010
CONTRACT = {  # what params.yaml's contract says for this table (README: your own data)
    "id": "person",
    "timestamp": "interviewed",
    "entity": None,
    "target": "employed",
    "label_timestamp": None,
    "numeric": ["AGEP", "hours per week"],
    "amount": None,
    "categorical": ["SCHL", "SEX", "MAR", "COW"],
    "novelty": [],
}


def generate(
    years: int = 10, rows: int = 3000, seed: int = 0, change_year: int = START_YEAR + 7
) -> pd.DataFrame:
    """`rows` interviews in each of `years` years from START_YEAR (rows × the columns of
    CONTRACT); the world changes from `change_year` on."""
    rng = np.random.default_rng(seed)
    year = np.repeat(np.arange(START_YEAR, START_YEAR + years), rows)
    n = len(year)
    changed = year >= change_year
    age = np.clip(rng.normal(44 + 6 * changed, 17, n), 16, 95).round()
    schl = np.clip(rng.normal(17, 4, n), 1, 24).round().astype(int)
    sex = rng.integers(1, 3, n)
    mar = rng.choice([1, 2, 3, 4, 5], n, p=[0.48, 0.06, 0.11, 0.02, 0.33])
    ever_worked = rng.random(n) < np.where(age < 20, 0.5, 0.9)
    cow = pd.array(rng.choice(np.arange(1, 10), n), dtype="Int64")
    cow[~ever_worked] = pd.NA
    hours = pd.array(np.clip(rng.normal(38, 12, n), 1, 99).round(), dtype="Float64")
    hours[~ever_worked | (rng.random(n) < 0.05)] = pd.NA

    # The outcome: an inverted U in age peaking at 40 (at 50 in the changed world), education,
    # past hours; education matters half as much once the world has changed.
    peak = np.where(changed, 50, 40)
    logit = (
        0.25
        - ((age - peak) / 14) ** 2
        + np.where(changed, 0.06, 0.14) * (schl - 17)
        + 0.3 * (sex == 1)
        + 0.25 * (mar == 1)
        + np.where(ever_worked, 0.8, -1.0)
        + 0.015 * np.nan_to_num(hours.to_numpy(dtype=float, na_value=np.nan) - 38)
        + rng.normal(0, 0.6, n)
    )
    employed = rng.random(n) < 1 / (1 + np.exp(-logit))
    interviewed = pd.to_datetime([f"{y}-01-01" for y in year]) + pd.to_timedelta(
        rng.integers(0, 365 * 24 * 60, n), unit="min"
    )
    return pd.DataFrame(
        {
            "person": np.arange(1, n + 1),
            "interviewed": interviewed,
            "AGEP": age,
            "hours per week": hours,
            "SCHL": schl,
            "SEX": sex,
            "MAR": mar,
            "COW": cow,
            "employed": employed,
        }
    ).sort_values("interviewed", ignore_index=True)


def write(table: pd.DataFrame, url: str) -> None:
    """`table` as CSV (`.csv`) or Parquet at `url`, atomically."""
    storage.write_table(table, url)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines survey`: write the table; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m pipelines survey", description=__doc__)
    p.add_argument("--out", required=True, help="a .csv or .parquet path or URL")
    p.add_argument("--years", type=int, default=10)
    p.add_argument("--rows", type=int, default=3000, help="interviews per year")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--change-year", type=int, default=START_YEAR + 7)
    args = p.parse_args(argv)
    table = generate(args.years, args.rows, args.seed, args.change_year)
    write(table, args.out)
    print(f"survey: {len(table):,} interviews, {args.years} years → {args.out}")
    return 0
