"""tune: Optuna's search over each candidate family's parameters, before train.

Reads only the training table (the test period is not in it) and splits it as train does: fit
on the rows before `train.validation`, score on that last span (`core.tuning`). Writes the best
parameters per family (`Layout.tuned`, which train applies over params), the metrics (params as
written vs best, trials, pruned, seconds) and, per family, the optimisation history and the
parameter importances as HTML pages that load plotly's script from one file beside them (no
CDN). The study is a SQLite file kept between runs: each family's study is named by a
fingerprint of the data and everything that shapes the search except the budget, so raising
`tune.trials` continues it and any other change starts a new one.

With `tune.trials: 0` (the default) nothing is searched: the outputs say so and train uses the
params as written.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.core import tuning
from pipelines.core.dataset import content_hash, validation_split
from pipelines.core.families import FAMILIES
from pipelines.core.features import FeatureSpec
from pipelines.core.layout import Layout
from pipelines.io import storage


def families(settings: Settings) -> list[str]:
    """The families to tune: `tune.families`, else every candidate with a search space (a
    blend's members included: the blend is fitted with their tuned parameters). Raises
    ValueError naming a listed family that is neither a candidate nor a blend member, or has no
    search space."""
    t = settings.train
    pool = list(t.candidates)
    if "blend" in t.candidates:
        pool += [m for m in t.blend.members if m not in pool]
    listed = settings.tune.families
    if listed is None:
        return [f for f in pool if tuning.tunable(f)]
    for family in listed:
        if family not in pool:
            raise ValueError(
                f"tune.families lists {family!r}, which is not in train.candidates "
                f"{list(t.candidates)} (nor a member of a blend among them)"
            )
        if not tuning.tunable(family):
            raise ValueError(f"tune.families lists {family!r}, which has no search space")
    return list(listed)


def study_name(family: str, data_sha256: str, settings: Settings) -> str:
    """`<family>-<fingerprint>`: the data, every setting that shapes this family's search and its
    search space, not the budget (`trials`, `timeout`), so that a larger budget resumes the same
    study."""
    t = settings.train
    shape = {
        "data": data_sha256,
        "params": t.params_of(family).model_dump(mode="json"),
        "seed": t.seed,
        "validation": str(t.validation),
        "metric": t.metric,
        "prune_at": settings.tune.prune_at,
        "features": FeatureSpec.from_settings(settings).names,
        # The search space's own code: changed ranges start a new study.
        "space": inspect.getsource(FAMILIES[family].search_space),
    }
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
    return f"{family}-{digest[:16]}"


def run(settings: Settings) -> dict[str, Any]:
    """Search every family to tune; write `Layout.tuned`, `Layout.tuning_metrics` and the plots.
    Returns the metrics. Raises ValueError for a bad `tune.families`, an empty side of the
    validation split or a study with no scored trial."""
    layout, t, tune = Layout(settings), settings.train, settings.tune
    if "://" in settings.paths.tuning:
        raise ValueError(
            f"paths.tuning is {settings.paths.tuning}: the study is a SQLite file, so it must be "
            "a local directory (DVC pushes its outputs to your remote)"
        )
    for page in Path(settings.paths.tuning).glob("*.html"):  # no plot outlives its search
        page.unlink()
    if tune.trials == 0:
        storage.write_json(layout.tuned, {})
        result: dict[str, Any] = {"trials": 0, "metric": t.metric, "families": {}}
        storage.write_json(layout.tuning_metrics, result)
        print("tune: tune.trials is 0: train uses the params as written")
        return result
    chosen = families(settings)
    data = storage.read_parquet(layout.train_table)
    spec, c = FeatureSpec.from_settings(settings), settings.contract
    early, late, cut = validation_split(data, c.timestamp, t.validation)
    early = early.sort_values(c.timestamp, kind="stable")
    split = tuning.Split(
        early[spec.names],
        early[c.target].to_numpy(),
        late[spec.names],
        late[c.target].to_numpy(),
    )
    Path(settings.paths.tuning).mkdir(parents=True, exist_ok=True)
    sha = content_hash(data)
    best: dict[str, dict[str, Any]] = {}
    figures: dict[str, dict[str, Any]] = {}
    for family in chosen:
        problem = tuning.Problem(
            family,
            split,
            spec,
            t.params_of(family),
            seed=t.seed,
            metric=t.metric,
            alert_rate=settings.evaluate.alert_rate,
            prune_at=tune.prune_at,
        )
        outcome, study = tuning.search(
            problem,
            trials=tune.trials,
            timeout=tune.timeout_seconds(),
            storage=f"sqlite:///{Path(layout.study).resolve()}",
            study_name=study_name(family, sha, settings),
        )
        best[family] = outcome.best
        figures[family] = outcome.summary(t.metric)
        print(
            f"tune: {family} {t.metric} {outcome.default_score:.4f} as written → "
            f"{outcome.best_score:.4f} best ({outcome.trials} trials, {outcome.pruned} pruned, "
            f"{outcome.seconds:.0f} s)"
        )
        _plots(study, family, layout, t.seed)
    result = {
        "trials": tune.trials,
        "metric": t.metric,
        "validation_from": str(cut),
        "families": figures,
    }
    storage.write_json(layout.tuned, best)
    storage.write_json(layout.tuning_metrics, result)
    return result


def _plots(study: Any, family: str, layout: Layout, seed: int) -> None:
    """The optimisation history and, with two or more finished trials, the parameter
    importances (fANOVA, seeded) as HTML; plotly's script is written once beside them."""
    import optuna
    import plotly.offline
    from optuna.importance import FanovaImportanceEvaluator

    figures = {"history": optuna.visualization.plot_optimization_history(study)}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2:
        figures["importance"] = optuna.visualization.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed)
        )
    for name, figure in figures.items():
        # "directory": the page loads plotly.min.js from beside it (no CDN: offline, no tracking).
        html = figure.to_html(include_plotlyjs="directory", full_html=True)
        storage.write_text(layout.tuning_plot(family, name), html)
    if not storage.exists(layout.tuning_script):
        storage.write_text(layout.tuning_script, plotly.offline.get_plotlyjs())
