"""Model families as plug-ins (core/families): every family fits on a small simulated set,
scores the same on the serving path as offline, survives its file round trip, says which
features it used; a team's own scikit-learn pipeline plugs in by import path; models pickled
before families were classes convert (what `registry migrate` does); and train chooses among candidates on a validation span cut
from the training window, never the test period."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import parse_settings
from pipelines.core import artifact
from pipelines.core.dataset import join_labels
from pipelines.core.families import FAMILIES
from pipelines.core.features import FeatureSpec, build_features
from pipelines.core.layout import Layout
from pipelines.core.model import TabularModel, _ObjectCategoricals, feature_importance, fit
from pipelines.core.span import Span
from pipelines.io import model_files, storage
from pipelines.sources import simulator
from pipelines.stages import train

SMALL = {"simulate": {"seed": 8, "cards": 200, "days": 10, "tx_per_day": 800}}


def small_world() -> tuple[FeatureSpec, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Features, labels and the raw rows of ten days of 200 cards."""
    s = parse_settings(SMALL)
    tx, labels = simulator.generate(s.simulate)
    raw = join_labels(tx, labels, s.contract)
    spec = FeatureSpec.from_settings(s)
    return spec, build_features(raw, spec), raw["is_fraud"].to_numpy(dtype=int), raw


def probe_of(feats: pd.DataFrame) -> pd.DataFrame:
    probe = feats.sample(200, random_state=1).copy()
    probe.loc[probe.index[:5], "merchant_category"] = "crypto"  # unseen
    probe.loc[probe.index[5:10], "merchant_country"] = None  # missing
    probe.loc[probe.index[10:15], "hist_secs_since_prev"] = np.nan
    return probe


def as_columns(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """What the service hands a model: one array per feature (`online_features`' shape)."""
    return {
        c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
        if c in spec.numeric
        else frame[c].astype(object).to_numpy()
        for c in spec.names
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fits_serves_round_trips_and_ranks_features(
    family: str, tmp_path: Path
) -> None:
    spec, feats, y, _ = small_world()
    s = parse_settings({**SMALL, "train": {"lightgbm": {"n_estimators": 60}}})
    model = fit(family, feats, y, spec, s.train.params_of(family), 3)
    probe = probe_of(feats)
    offline = model.predict_proba(probe)
    assert offline.shape == (len(probe),) and ((offline >= 0) & (offline <= 1)).all()
    assert offline.std() > 0  # not a constant
    # The serving path (arrays, no frame) gives the offline answer, unseen and missing included.
    online, unknown = model.predict_columns(as_columns(probe, spec))
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-12)
    assert unknown[:5, spec.categorical.index("merchant_category")].all()
    # The file round trip changes nothing, nor does the serving copy's single thread.
    model_files.save(model, str(tmp_path / "m.zip"))
    loaded = model_files.load(str(tmp_path / "m.zip"))
    # (atol: a forest predicts in parallel threads, which sum in any order)
    np.testing.assert_allclose(loaded.predict_proba(probe), offline, rtol=0, atol=1e-12)
    served = loaded.serving_copy()
    np.testing.assert_allclose(served.predict_proba(probe), offline, atol=1e-12)
    if family == "sklearn":  # a forest's joblib workers: one thread when served, as trained else
        assert served.estimator.estimator.n_jobs == 1 and loaded.estimator.estimator.n_jobs == 2
    imp = feature_importance(model)
    assert sorted(imp["feature"]) == sorted(spec.names)
    assert (imp["importance"] >= 0).all() and imp["importance"].sum() == pytest.approx(1.0)


def test_a_teams_own_pipeline_plugs_in_by_import_path_with_params_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory in the team's own module, fed a frame with the feature names and categories as
    text: their encoders, their model, no change to the pipeline's code."""
    (tmp_path / "team_models.py").write_text(
        textwrap.dedent(
            """
            from sklearn.compose import make_column_transformer
            from sklearn.impute import SimpleImputer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import OneHotEncoder

            def scorecard(C=1.0, categorical=()):
                encode = make_column_transformer(
                    (OneHotEncoder(handle_unknown="ignore"), list(categorical)),
                    remainder=SimpleImputer(strategy="median"),
                )
                return make_pipeline(encode, LogisticRegression(C=C, max_iter=5000))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec, feats, y, _ = small_world()
    s = parse_settings(
        {
            "train": {
                "sklearn": {
                    "estimator": "team_models:scorecard",
                    "params": {"C": 0.5, "categorical": spec.categorical},
                    "input": "frame",
                }
            }
        }
    )
    model = fit("sklearn", feats, y, spec, s.train.sklearn, 1)
    probe = probe_of(feats)
    frame = probe[spec.names].copy()
    for c in spec.categorical:  # what the family hands the pipeline: text, unseen as missing
        known = frame[c].isin(model.categories[c])
        frame[c] = frame[c].astype(object).where(known.to_numpy(), None)
    reference = model.estimator.estimator.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(model.predict_proba(probe), reference, rtol=0, atol=1e-12)
    assert model.estimator.estimator[-1].C == 0.5

    with pytest.raises(ValueError, match="team_models:nothing_here.*cannot be imported"):
        bad = parse_settings({"train": {"sklearn": {"estimator": "team_models:nothing_here"}}})
        fit("sklearn", feats, y, spec, bad.train.sklearn, 1)


def legacy(model: TabularModel, estimator: object) -> bytes:
    """`model` pickled as versions before families were classes stored it: the bare estimator."""
    old = TabularModel.__new__(TabularModel)
    old.__dict__.update({**model.__dict__, "estimator": estimator})
    old.__dict__.pop("_level_codes", None)
    return pickle.dumps(old, protocol=5)


def test_models_pickled_before_families_were_classes_convert_and_are_never_unpickled_on_load(
    tmp_path: Path,
) -> None:
    import lightgbm as lgb
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    spec, feats, y, _ = small_world()
    model = fit("logistic", feats, y, spec, parse_settings({}).train.logistic, 1)
    frame = model.prepare(feats)
    probe = probe_of(feats)

    booster = lgb.LGBMClassifier(n_estimators=30, verbose=-1).fit(frame, y)
    state = {**model.__dict__, "family": "lightgbm", "estimator": booster}
    state.pop("_level_codes", None)
    lgbm_old = TabularModel.__new__(TabularModel)
    lgbm_old.__dict__.update(state)
    old = pickle.dumps(lgbm_old, protocol=5)
    loaded = pickle.loads(old)  # what `registry migrate` reads, after the digest matched
    # ...and converts: the portable archive gives the same predictions.
    loaded = artifact.unpack(artifact.pack(loaded), "lgbm.zip")
    np.testing.assert_allclose(
        loaded.predict_proba(probe),
        booster.predict_proba(model.prepare(probe))[:, 1],
        rtol=0,
        atol=1e-12,
    )

    pipeline = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), spec.categorical),
            remainder=SimpleImputer(strategy="median"),
        ),
        LogisticRegression(max_iter=5000),
    )
    objects = frame.copy()
    for c in spec.categorical:
        objects[c] = objects[c].astype(object).where(objects[c].notna(), "__missing__")
    pipeline.fit(objects, y)
    old = legacy(model, _ObjectCategoricals(pipeline, spec.categorical))
    loaded = pickle.loads(old)
    expected = _ObjectCategoricals(pipeline, spec.categorical).predict_proba(model.prepare(probe))
    np.testing.assert_allclose(loaded.predict_proba(probe), expected[:, 1], rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="no portable form; retrain"):  # migrate names it
        artifact.pack(loaded)
    # Loading a model file never unpickles.
    (tmp_path / "logistic.pkl").write_bytes(old)
    with pytest.raises(ValueError, match="logistic.pkl is a pickled model.*never unpickled"):
        model_files.load(str(tmp_path / "logistic.pkl"))


def test_choose_takes_the_best_score_or_the_forced_one() -> None:
    assert train.choose({"a": 0.7, "b": 0.8, "c": float("nan")}, None) == "b"
    assert train.choose({"a": 0.8, "b": 0.8}, None) == "a"  # a tie: the first listed
    assert train.choose({"a": 0.7, "b": 0.8}, "a") == "a"
    with pytest.raises(ValueError, match="train.validation"):
        train.choose({"a": float("nan")}, None)


def test_train_chooses_on_the_training_windows_last_span_and_refits_every_candidate(
    tmp_path: Path,
) -> None:
    spec, feats, y, raw = small_world()
    table = pd.concat([raw[["transaction_id", "ts", "card_id"]], feats], axis=1).assign(
        is_fraud=y.astype("int8")
    )
    table = table.sort_values("ts", ignore_index=True)
    s = parse_settings(
        {
            **SMALL,
            "paths": {"features": str(tmp_path / "features"), "models": str(tmp_path / "models")},
            "train": {
                "candidates": ["logistic", "lightgbm", "hist_gradient_boosting"],
                "validation": "3 days",
                "lightgbm": {"n_estimators": 60},
                "hist_gradient_boosting": {"max_iter": 60},
            },
        }
    )
    layout = Layout(s)
    storage.write_parquet(table, layout.train_table)
    models = train.run(s)
    selection = json.loads(Path(layout.selection).read_text())
    scores = selection["scores"]
    assert set(scores) == {"logistic", "lightgbm", "hist_gradient_boosting"}
    assert selection["chosen"] == max(scores, key=scores.get) and not selection["forced"]
    start = pd.Timestamp(selection["validation"]["from"])
    assert start == table["ts"].max() - pd.Timedelta(days=3)
    assert selection["validation"]["rows"] == int((table["ts"] >= start).sum())
    # Refitted on the whole window: the saved model is the one fitted on every row.
    labels = table["is_fraud"].to_numpy()
    full = fit("logistic", table[spec.names], labels, spec, s.train.logistic, s.train.seed)
    saved = model_files.load(layout.model("logistic"))
    np.testing.assert_allclose(
        saved.predict_proba(table[spec.names]), full.predict_proba(table[spec.names]), atol=1e-12
    )
    assert set(models) == set(scores)

    forced = s.model_copy(update={"train": s.train.model_copy(update={"model": "logistic"})})
    train.run(forced)
    assert json.loads(Path(layout.selection).read_text())["chosen"] == "logistic"

    too_long = s.model_copy(
        update={"train": s.train.model_copy(update={"validation": Span.parse("30 days")})}
    )
    with pytest.raises(ValueError, match="train.validation"):
        train.run(too_long)
