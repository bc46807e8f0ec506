"""A table unlike the card transactions (the yearly survey of `pipelines/sources/survey.py`):
ROC-AUC per later year of the pipeline's model trained on the first years, against a plain
`LGBMClassifier()` fitted on the same rows, and both retrained on the newest years.

    python bench/own_table.py [--seeds 0 1]

The pipeline's model: the survey's contract through ingest's conforming (codes as text, the
true/false outcome as 0/1), the one feature definition (no entity, no request features) and
LightGBM with params.yaml's hyper-parameters. The plain model: the raw columns, codes as pandas
categories, every LightGBM default. Same rows, same years, one run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_settings, parse_settings  # noqa: E402
from pipelines.core.dataset import conform  # noqa: E402
from pipelines.core.features import FeatureSpec, build_features  # noqa: E402
from pipelines.core.model import fit  # noqa: E402
from pipelines.sources import survey  # noqa: E402

FIRST = range(survey.START_YEAR, survey.START_YEAR + 6)  # trained on 2010-2015
NEWEST = range(survey.START_YEAR + 3, survey.START_YEAR + 9)  # retrained on 2013-2018


def scores(table: pd.DataFrame, years: range, seed: int) -> dict[str, pd.Series]:
    """Per row of `table`, the probability from each model trained on `years`."""
    base = load_settings(Path(__file__).resolve().parents[1] / "params.yaml")
    settings = parse_settings({"contract": survey.CONTRACT, "evaluate": {"slice_by": []}})
    spec = FeatureSpec(settings.contract, settings.features.windows_hours, request=())
    rows = conform(table, settings.contract)
    year = rows["interviewed"].dt.year
    train = year.isin(years).to_numpy()
    X = build_features(rows, spec)
    y = rows["employed"].to_numpy(dtype=int)
    ours = fit("lightgbm", X[train], y[train], spec, base.train.lightgbm, seed)
    plain_X = table.drop(columns=["person", "interviewed", "employed"]).astype(
        {c: "category" for c in ("SCHL", "SEX", "MAR", "COW")}
    )
    plain = LGBMClassifier(random_state=seed, verbose=-1).fit(plain_X[train], y[train])
    return {
        "pipeline": pd.Series(ours.predict_proba(X), index=table.index),
        "plain": pd.Series(plain.predict_proba(plain_X)[:, 1], index=table.index),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    cells: dict[tuple[int, str], list[str]] = {}
    for seed in args.seeds:
        table = survey.generate(seed=seed)
        y = table["employed"].to_numpy(dtype=int)
        year = table["interviewed"].dt.year
        for label, years in (("", FIRST), (" retrained", NEWEST)):
            for name, p_ in scores(table, years, seed).items():
                for yr in range(FIRST.stop, survey.START_YEAR + 10):
                    held_out = (year == yr).to_numpy()
                    value = (
                        "in training"
                        if yr in years
                        else f"{roc_auc_score(y[held_out], p_[held_out]):.3f}"
                    )
                    cells.setdefault((yr, name + label), []).append(value)
    columns = ["pipeline", "plain", "pipeline retrained", "plain retrained"]
    print(
        f"ROC-AUC per year, seeds {' / '.join(map(str, args.seeds))}; the world changes from "
        f"{survey.START_YEAR + 7}; first model trained on {FIRST.start}-{FIRST.stop - 1}, "
        f"retrained on {NEWEST.start}-{NEWEST.stop - 1}"
    )
    print("| year | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for yr in range(FIRST.stop, survey.START_YEAR + 10):
        row = [
            "in training" if set(cells[(yr, c)]) == {"in training"} else " / ".join(cells[(yr, c)])
            for c in columns
        ]
        print(f"| {yr} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
