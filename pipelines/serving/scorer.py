"""The business logic around the model, free of HTTP and of storage.

A batch of validated records becomes plain columns; the entities' stored history enriches them
through the shared feature code; the model scores them; thresholds turn scores into decisions.
No pandas frame is built per batch (each costs ~0.1-1 ms, more than the arithmetic of a
whole batch); the prediction log takes the columns and builds one frame per flush.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.core.features import FeatureSpec, online_features, request_features
from pipelines.core.history import History
from pipelines.core.model import TabularModel
from pipelines.io.prediction_log import LogColumn

_EPOCH, _MS = dt.datetime(1970, 1, 1), dt.timedelta(milliseconds=1)


def record_columns(records: list[Any], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Validated records (naive-UTC timestamps) as `core.features.event_columns`' layout plus the
    id: int64 ms timestamps, float64 numerics, object strings."""
    c = spec.contract
    n = len(records)
    rows = [r.__dict__ for r in records]
    # Floor division truncates like numpy's datetime64[ms] cast (timestamps are after 1970).
    out = {c.timestamp: np.fromiter(((r[c.timestamp] - _EPOCH) // _MS for r in rows), np.int64, n)}
    for col in c.numeric:  # a gap (None: `validate.null_shares`) is NaN, as offline
        out[col] = np.fromiter((np.nan if r[col] is None else r[col] for r in rows), np.float64, n)
    for col in dict.fromkeys([c.id, *([c.entity] if c.entity else []), *c.categorical, *c.novelty]):
        values = np.empty(n, dtype=object)
        values[:] = [r[col] for r in rows]
        out[col] = values
    return out


@dataclass(frozen=True)
class Policy:
    """The business rule from probability to decision (`serving.decisions`): each label applies at
    or above its threshold, the highest threshold met wins; below all of them, `default`."""

    thresholds: tuple[tuple[str, float], ...]  # (label, threshold), highest threshold first
    default: str

    @classmethod
    def of(cls, decisions: Mapping[str, float], default: str) -> Policy:
        ranked = sorted(decisions.items(), key=lambda item: item[1], reverse=True)
        return cls(tuple(ranked), default)

    @property
    def labels(self) -> list[str]:
        """Every decision this policy can give."""
        return [self.default, *(label for label, _ in self.thresholds)]

    def decide(self, p: np.ndarray) -> np.ndarray:
        """Per probability (shape n), the decision (objects)."""
        out = np.full(len(p), self.default, dtype=object)
        for label, threshold in reversed(self.thresholds):  # higher thresholds overwrite
            out[p >= threshold] = label
        return out


@dataclass(frozen=True)
class Scored:
    """One scored batch of n records: features (spec.names, n each), probabilities, decisions,
    where each record's history came from (`schema.HistoryStatus`), and the rows × categorical
    mask of values the model never saw.
    """

    features: dict[str, np.ndarray]
    history: np.ndarray  # n statuses (objects)
    probability: np.ndarray
    decision: np.ndarray
    unknown_mask: np.ndarray  # rows × model.categorical
    categorical: list[str]

    @property
    def unknown(self) -> list[list[str]]:
        """Per row, the columns whose value the model never saw."""
        if not self.unknown_mask.any():
            return [[] for _ in range(len(self.probability))]
        return [[self.categorical[j] for j in np.flatnonzero(row)] for row in self.unknown_mask]


def score_columns(
    batch: dict[str, np.ndarray],
    histories: dict[str, History] | None,
    model: TabularModel,
    spec: FeatureSpec,
    policy: Policy,
) -> Scored:
    """A batch (`record_columns`' layout, n rows) enriched from its entities' stored `histories`
    (None: the store did not answer; {} for a model without history features), scored by `model`
    and decided by `policy`."""
    n = len(batch[spec.contract.timestamp])
    if histories is None and spec.has_history:
        feats, status = request_features(batch, spec), np.full(n, "unavailable", dtype=object)
    else:
        feats, late = online_features(batch, histories or {}, spec)
        status = np.where(late, "late", "live").astype(object)
    p, mask = model.predict_columns(feats)
    return Scored(feats, status, p, policy.decide(p), mask, model.categorical)


def distinct_entities(batch: dict[str, np.ndarray], spec: FeatureSpec) -> list[str]:
    """The batch's entities, each once, in first-seen order (what to read from the store)."""
    return list(dict.fromkeys(batch[spec.entity].tolist()))


def answers(
    batch: dict[str, np.ndarray], scored: Scored, spec: FeatureSpec, version: str
) -> list[dict]:
    """The response body per record (`schema.score_model`'s fields: the id under the contract's
    own name), as JSON-ready dicts."""
    return [
        {
            spec.contract.id: i,
            "probability": p,
            "decision": d,
            "model_version": version,
            "unknown_categories": u,
            "history": h,
        }
        for i, p, d, u, h in zip(
            batch[spec.contract.id].tolist(),
            scored.probability.tolist(),
            scored.decision.tolist(),
            scored.unknown,
            scored.history.tolist(),
            strict=True,
        )
    ]


def log_columns(
    batch: dict[str, np.ndarray],
    scored: Scored,
    spec: FeatureSpec,
    version: str,
    batch_id: str,
    scored_at: np.datetime64,
) -> dict[str, np.ndarray]:
    """What the prediction log keeps per record: the request, the features the model saw, the outcome."""
    c = spec.contract
    n = len(scored.probability)
    columns = {c.id: batch[c.id], c.timestamp: batch[c.timestamp].astype("datetime64[ms]")}
    if c.entity:
        columns[c.entity] = batch[c.entity]
    columns.update(scored.features)
    columns.update(
        {
            LogColumn.PROBABILITY: scored.probability,
            LogColumn.DECISION: scored.decision.astype(object),
            LogColumn.MODEL_VERSION: np.full(n, version, dtype=object),
            LogColumn.UNKNOWN: np.array([",".join(u) for u in scored.unknown], dtype=object),
            LogColumn.BATCH_ID: np.full(n, batch_id, dtype=object),
            LogColumn.SCORED_AT: np.full(n, scored_at, dtype="datetime64[us]"),
            LogColumn.HISTORY: scored.history,
        }
    )
    return columns
