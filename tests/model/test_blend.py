"""The ensemble family (core/families/blend.py): a mean is exactly the weighted mean of its
members; a stack combines members refitted on every row with weights learned on the newest
rows; it competes in train like any candidate; bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_settings
from pipelines.core import artifact
from pipelines.core.layout import Layout
from pipelines.core.model import fit
from pipelines.io import model_files, storage
from pipelines.stages import train
from tests.model.test_families import SMALL, probe_of, small_world

FAST = {"lightgbm": {"n_estimators": 40}, "hist_gradient_boosting": {"max_iter": 40}}


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return small_world()


def test_a_mean_blend_is_the_weighted_mean_of_its_members(world) -> None:  # type: ignore[no-untyped-def]
    """Members listed out of alphabetical order: each weight stays with its member through the
    archive (whose JSON sorts object keys)."""
    spec, feats, y, _ = world
    blend = {"members": ["lightgbm", "hist_gradient_boosting"], "method": "mean", "weights": [3, 1]}
    s = parse_settings({**SMALL, "train": {**FAST, "blend": blend}})
    model = fit("blend", feats, y, spec, s.train.params_of("blend"), 5)
    probe = probe_of(feats)
    alone = [
        fit(m, feats, y, spec, s.train.params_of(m), 5).predict_proba(probe)
        for m in ("lightgbm", "hist_gradient_boosting")
    ]
    np.testing.assert_allclose(
        model.predict_proba(probe), 0.75 * alone[0] + 0.25 * alone[1], rtol=0, atol=1e-12
    )
    loaded = artifact.unpack(model_files.to_bytes(model), "blend.zip")
    assert list(loaded.estimator.members) == ["lightgbm", "hist_gradient_boosting"]
    np.testing.assert_allclose(
        loaded.predict_proba(probe), model.predict_proba(probe), rtol=0, atol=1e-12
    )


def test_a_stack_refits_its_members_on_every_row_and_learns_weights_on_the_newest(world) -> None:  # type: ignore[no-untyped-def]
    spec, feats, y, raw = world
    order = np.argsort(raw["ts"].to_numpy(), kind="stable")  # the training table's time order
    feats, y = feats.iloc[order].reset_index(drop=True), y[order]
    s = parse_settings({**SMALL, "train": FAST})
    model = fit("blend", feats, y, spec, s.train.params_of("blend"), 5)
    stack = model.estimator
    assert stack.method == "stack" and list(stack.members) == ["lightgbm", "logistic"]
    probe = probe_of(feats)
    X = model.matrix(probe)
    each = []
    for name, member in stack.members.items():
        alone = fit(name, feats, y, spec, s.train.params_of(name), 5)  # on every row
        np.testing.assert_allclose(member.predict(X), alone.estimator.predict(X), atol=1e-12)
        each.append(member.predict(X))
    p = np.clip(np.column_stack(each), 1e-7, 1 - 1e-7)
    z = stack.intercept + np.log(p / (1 - p)) @ np.asarray(stack.weights)
    np.testing.assert_allclose(model.predict_proba(probe), 1 / (1 + np.exp(-z)), atol=1e-12)
    assert max(stack.weights) > 0  # the stacker leans on at least one member's ranking


def test_train_scores_the_blend_as_one_more_candidate(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec, feats, y, raw = world
    table = pd.concat([raw[["transaction_id", "ts", "card_id"]], feats], axis=1)
    table = table.assign(is_fraud=y.astype("int8")).sort_values("ts", ignore_index=True)
    s = parse_settings(
        {
            **SMALL,
            "paths": {"features": str(tmp_path / "f"), "models": str(tmp_path / "m")},
            "train": {
                **FAST,
                "candidates": ["lightgbm", "logistic", "blend"],
                "validation": "3 days",
            },
        }
    )
    storage.write_parquet(table, Layout(s).train_table)
    models = train.run(s)
    selection = json.loads(Path(Layout(s).selection).read_text())
    assert set(selection["scores"]) == {"lightgbm", "logistic", "blend"}
    assert selection["chosen"] == max(selection["scores"], key=selection["scores"].get)
    assert models["blend"].info["params"]["members"]["lightgbm"]["n_estimators"] == 40


@pytest.mark.parametrize(
    ("blend", "message"),
    [
        ({"members": ["lightgbm", "lightgbm"]}, "lists a family twice"),
        (
            {"members": ["lightgbm", "logistic"], "method": "mean", "weights": [1]},
            "one non-negative",
        ),
        (
            {"members": ["lightgbm", "logistic"], "method": "mean", "weights": [0, 0]},
            "not all zero",
        ),
        ({"members": ["lightgbm", "blend"]}, "members"),
        ({"members": ["lightgbm"]}, "at least 2"),
    ],
)
def test_bad_blend_settings_are_named(blend: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings({"train": {"blend": blend}})
