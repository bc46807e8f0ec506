"""The champion/challenger gate on recent labelled data.

The rules are in `core.gate`; this job feeds them: both models score the same rows (the last
`deploy.recent` of the time-split test set, which neither model trained on), and the
decision, promoted or refused, goes into the registry history with its evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Settings
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec
from pipelines.core.gate import GateDecision, judge_challenger
from pipelines.core.layout import Layout
from pipelines.io import model_remote, registry, storage


def recent_labelled(settings: Settings) -> pd.DataFrame:
    """The labelled test rows of the last `deploy.recent` before the newest (rows × test-table
    columns)."""
    test = storage.read_parquet(Layout(settings).test_table)
    ts = test[settings.contract.timestamp]
    recent = test[(ts >= settings.deploy.recent.before(ts.max())).to_numpy()]
    return recent[recent[settings.contract.target].notna().to_numpy()]


def metric_of(tag: str, data: pd.DataFrame, settings: Settings) -> float:
    """`deploy.metric` of model `tag` on `data` (NaN when undefined, e.g. one class)."""
    spec = FeatureSpec.from_settings(settings)
    y = data[settings.contract.target].to_numpy(dtype=np.int64)
    p = registry.load(tag).predict_proba(data[spec.names])
    return float(
        metrics.summary(y, p, settings.evaluate.alert_rate).get(settings.deploy.metric, np.nan)
    )


def gate(settings: Settings, challenger: str) -> GateDecision:
    """Decide, and promote if the challenger wins; either way the decision is recorded.

    Raises ValueError when the challenger already is the champion or the window has no labelled row.
    """
    champion = registry.champion_tag()
    if champion == challenger:
        raise ValueError(f"{challenger} is already the champion")
    data = recent_labelled(settings)
    if data.empty:
        raise ValueError("no labelled rows in the gate's evaluation window (deploy.recent)")
    d = settings.deploy
    decision = judge_challenger(
        d.metric,
        metric_of(challenger, data, settings),
        metric_of(champion, data, settings) if champion else None,
        d.margin,
        d.floor,
    )
    evidence = {
        **decision.to_dict(),
        "rows": len(data),
        "champion_tag": champion,
        "challenger_tag": challenger,
    }
    if decision.promote:
        promote(settings, challenger, decision.reason, evidence)
    else:
        registry.record_decision(
            {"event": "refused", "tag": challenger, "reason": decision.reason, "evidence": evidence}
        )
    return decision


def promote(
    settings: Settings, tag: str, reason: str, evidence: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make `tag` the champion and publish it to the model store's remote (`paths.model_remote`,
    or $MODEL_REMOTE): the one record every serving replica follows. Returns the champion record."""
    record = registry.promote(tag, reason, evidence)
    model_remote.publish_champion(model_remote.url_of(None, settings.paths.model_remote))
    return record


def gate_packaged(settings: Settings, challenger: str | None = None) -> dict[str, Any]:
    """The gate on `challenger` (default: the model the package stage saved last).

    With nothing new to decide (the challenger already is the champion, e.g. a CI rerun after a
    docs-only change) it returns `decision: None`; a refusal is a normal outcome, not an error.
    Raises FileNotFoundError when there is no package record and no challenger was given.
    """
    if challenger is None:
        challenger = storage.read_json(Layout(settings).package)["model_tag"]
    if challenger == registry.champion_tag():
        return {
            "challenger": challenger,
            "decision": None,
            "message": f"gate: {challenger} is already the champion; nothing to decide",
        }
    decision = gate(settings, challenger)
    verdict = "PROMOTE" if decision.promote else "keep the champion"
    return {
        "challenger": challenger,
        "decision": decision.to_dict(),
        "message": f"gate: {verdict}: {decision.reason}",
    }
