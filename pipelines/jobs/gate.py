"""Release: the champion/challenger gate on recent labelled data, then the rollout check.

The gate's rules are in `core.gate`; this module feeds it: both models score the same rows (the
last `deploy.recent_days` of the time-split test set, which neither model trained on), and the
decision, promoted or refused, goes into the registry history with its evidence.

The rollout itself is the service's champion watch (see serving/service.py): promotion is one
atomic pointer swap the running workers pick up. `await_rollout` waits until the service
reports the new version in its metrics, then smoke-checks one scoring request.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import httpx
import numpy as np
import pandas as pd

from pipelines.config import Settings
from pipelines.core import metrics
from pipelines.core.features import FeatureSpec
from pipelines.core.gate import GateDecision, decide
from pipelines.io import registry, storage


def recent_labelled(settings: Settings) -> pd.DataFrame:
    test = storage.read_parquet(storage.join(settings.paths.features, "test.parquet"))
    ts = test[settings.contract.timestamp]
    recent = test[(ts >= ts.max() - pd.Timedelta(days=settings.deploy.recent_days)).to_numpy()]
    return recent[recent[settings.contract.target].notna().to_numpy()]


def score(tag: str, data: pd.DataFrame, settings: Settings) -> float:
    spec = FeatureSpec.from_settings(settings)
    y = data[settings.contract.target].to_numpy(dtype=np.int64)
    p = registry.load(tag).predict_proba(data[spec.names])
    return float(metrics.summary(y, p, settings.evaluate.alert_rate)[settings.deploy.metric])


def gate(settings: Settings, challenger: str) -> GateDecision:
    """Decide, and promote if the challenger wins; either way the decision is recorded."""
    champion = registry.champion_tag()
    if champion == challenger:
        raise ValueError(f"{challenger} is already the champion")
    data = recent_labelled(settings)
    if data.empty:
        raise ValueError("no labelled rows in the gate's evaluation window (deploy.recent_days)")
    d = settings.deploy
    decision = decide(d.metric, score(challenger, data, settings),
                      score(champion, data, settings) if champion else None, d.margin, d.floor)
    evidence = {**decision.to_dict(), "rows": len(data), "champion_tag": champion, "challenger_tag": challenger}
    if decision.promote:
        registry.promote(challenger, decision.reason, evidence)
    else:
        registry.record_decision({"event": "refused", "tag": challenger, "reason": decision.reason,
                                  "evidence": evidence})
    return decision


def gate_packaged(settings: Settings, challenger: str | None = None) -> dict:
    """The gate on `challenger` (default: the model the package stage saved last).

    With nothing new to decide (the challenger already is the champion, e.g. a CI rerun after a
    docs-only change) it returns `decision: None`; a refusal is a normal outcome, not an error.
    Raises FileNotFoundError when there is no package record and no challenger was given.
    """
    if challenger is None:
        challenger = storage.read_json(settings.paths.package)["model_tag"]
    if challenger == registry.champion_tag():
        return {"challenger": challenger, "decision": None,
                "message": f"gate: {challenger} is already the champion; nothing to decide"}
    decision = gate(settings, challenger)
    verdict = "PROMOTE" if decision.promote else "keep the champion"
    return {"challenger": challenger, "decision": decision.to_dict(),
            "message": f"gate: {verdict}: {decision.reason}"}


def served_version(url: str) -> str | None:
    """The model version the service reports in /metrics (None if it has none loaded)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.findall(r'^fraud_model_info\{model_version="([^"]+)"\} 1(?:\.0)?$', text, re.M)
    return found[-1] if found else None


def await_rollout(settings: Settings, tag: str) -> dict:
    """Wait until the running service serves `tag`, then score one smoke record with it."""
    url, deadline = settings.deploy.service_url.rstrip("/"), time.monotonic() + settings.deploy.rollout_timeout_seconds
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = served_version(url)
        except httpx.HTTPError as err:
            seen = f"unreachable ({type(err).__name__})"
        if seen == tag:
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"{url} still serves {seen} {settings.deploy.rollout_timeout_seconds:.0f} s after "
                           f"promoting {tag}")
    resp = httpx.post(f"{url}/score", json={"records": [smoke_record(settings)]}, timeout=10)
    if resp.status_code != 200 or resp.json()[0]["model_version"] != tag:
        raise RuntimeError(f"smoke check against {url} failed: {resp.status_code} {resp.text[:300]}")
    return {"service": url, "model_version": tag, "smoke_probability": resp.json()[0]["probability"]}


def smoke_record(settings: Settings) -> dict:
    """A recognisable synthetic transaction (id and card start with 'smoke-')."""
    c = settings.contract
    record: dict = {c.id: f"smoke-{uuid.uuid4().hex}", c.timestamp: pd.Timestamp.now(tz="UTC").tz_localize(None).isoformat()}
    if c.entity:
        record[c.entity] = "smoke-check"
    categories = settings.validate_.categories
    for col in c.numeric:
        record[col] = 1.0
    for col in c.categorical:
        record[col] = categories[col][0] if categories.get(col) else "smoke"
    return record


def build_champion_bento(settings: Settings) -> dict:
    """The bento a deploy ships: built after the gate, so it carries the champion as decided
    (the package stage's bento carries whatever was champion before the gate ran)."""
    import bentoml

    from pipelines.stages.package import build_bento

    champion = registry.champion_tag()
    if champion is None:
        raise LookupError("no champion to ship: run the gate (make gate) or promote a model first")
    tag = build_bento()
    info = bentoml.get(tag).info
    carried = [str(m.tag) for m in info.models] + [str(m.tag) for svc in info.services for m in svc.models]
    if champion not in carried:
        raise RuntimeError(f"bento {tag} carries {carried}, not the champion {champion}")
    result = {"bento_tag": tag, "model_tag": champion}
    storage.write_json(release_file(settings), result)
    return result


def release_file(settings: Settings) -> str:
    return os.path.join(os.path.dirname(settings.paths.package), "release.json")
