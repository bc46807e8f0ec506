"""One typed, frozen settings model loaded from params.yaml.

Unknown or mistyped keys are errors that name the key: a silently ignored typo in a
production config is how a model gets trained on the wrong window.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from pipelines.core.span import FORM, Span

PARAMS_ENV = "PIPELINES_PARAMS"
DEFAULT_PARAMS = "params.yaml"
# The card example's project name. Series names are written with it in the code and in
# monitoring/ (the metric contract a test checks), and `series` renames them for another `project`.
DEFAULT_PROJECT = "fraud"


def series(name: str, project: str) -> str:
    """`name` (a series written with DEFAULT_PROJECT's prefix, e.g. `fraud_ready`) as the
    `project` exports it (`employment_ready`); names of other exporters (`bentoml_...`, `up`)
    unchanged."""
    head = f"{DEFAULT_PROJECT}_"
    return f"{project}_{name.removeprefix(head)}" if name.startswith(head) else name


class _LocationMarker:
    """Marks a field as a location: a URL, or a path relative to the params file's directory."""


Location = Annotated[str, _LocationMarker()]

# A span of time in the data's own units, written '21 days', '6 hours', '1 year' (core.span).
SpanOfTime = Annotated[
    Span,
    BeforeValidator(Span.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": FORM, "examples": ["21 days", "1 year"]}),
]

# Keys that were renamed when windows became spans of time: the error says what to write instead.
RENAMED = {
    "ingest.window_days": "ingest.window: '90 days'",
    "split.test_days": "split.test: '21 days'",
    "deploy.recent_days": "deploy.recent: '14 days'",
    "drift.window_hours": "drift.window: '24 hours'",
    "validate.min_rows_per_day": "validate.min_rows_per_period with validate.period: '1 day'",
}


def _is_location(field: Any) -> bool:
    return any(isinstance(m, _LocationMarker) for m in field.metadata)


def _absolute(value: str, root: Path) -> str:
    return value if "://" in value or os.path.isabs(value) else str(root / value)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contract(_Frozen):
    """Which column is what: point the pipeline at your own table by editing this."""

    id: str = "transaction_id"
    timestamp: str = "ts"
    entity: str | None = Field(
        "card_id", description="Entity for history features; null turns them off."
    )
    target: str = "is_fraud"
    label_timestamp: str | None = Field(
        "label_ts",
        description="When the label became known (labels feed); null if your table has none.",
    )
    numeric: tuple[str, ...] = ("amount",)
    categorical: tuple[str, ...] = ("merchant_category", "merchant_country", "channel")
    amount: str | None = Field(
        "amount", description="Numeric column that history statistics summarise."
    )
    novelty: tuple[str, ...] = Field(
        ("merchant_country", "merchant_category"),
        description="Categorical columns whose first appearance for an entity is a feature.",
    )

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of a transaction record (the label columns come from the labels feed)."""
        ent = (self.entity,) if self.entity else ()
        return (self.id, self.timestamp, *ent, *self.numeric, *self.categorical)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """Columns that hold codes, read as text whatever a file stores them as (`021`, 21)."""
        return tuple(n for n in (self.id, self.entity, *self.categorical) if n)

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if self.amount is not None and self.amount not in self.numeric:
            raise ValueError(f"contract.amount {self.amount!r} must be one of contract.numeric")
        missing = [c for c in self.novelty if c not in self.categorical]
        if missing:
            raise ValueError(f"contract.novelty columns {missing} must be in contract.categorical")
        names = [self.id, self.timestamp, self.target, *self.numeric, *self.categorical]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"contract names columns more than once: {dup}")
        return self


class Paths(_Frozen):
    """Every location is a URL or a path; `s3://bucket/prefix` works for the external ones."""

    source: Location = Field(
        "data/source", description="Upstream source: transactions/ and labels/ date partitions."
    )
    raw: Location = "data/raw"
    validation: Location = "reports/validation"
    features: Location = "data/features"
    models: Location = "models"
    metrics: Location = "metrics"
    plots: Location = "plots"
    tuning: Location = Field(
        "tuning",
        description="The tune stage's output: the best parameters, the Optuna study (SQLite, kept "
        "between runs so a larger budget resumes it) and its HTML plots. A local directory.",
    )
    package: Location = Field(
        "reports/package.json", description="What the package stage produced (tags)."
    )
    gate_reference: Location = Field(
        "gate_reference.yaml",
        description=(
            "The gate's reference derived from the first snapshot it sees (levels, ranges, label "
            "rate, volume, gaps): read it, edit it, commit it; params' validate keys win over it."
        ),
    )
    bentoml_home: Location = Field(
        ".bentoml", description="Model and bento store, unless BENTOML_HOME is set."
    )
    model_remote: Location = Field(
        ".model-storage",
        description=(
            "Where `registry push/pull` keep model versions, bentos and the champion pointer between "
            "machines (a CI runner starts empty); s3://bucket/prefix in production."
        ),
    )


Scenario = Literal[
    "none",
    "covariate_shift",
    "new_category",
    "concept_shift",
    "corrupt_nulls",
    "corrupt_range",
    "corrupt_types",
    "corrupt_renamed",
    "corrupt_missing",
    "corrupt_duplicates",
    "corrupt_empty",
]


class Simulate(_Frozen):
    """The synthetic source (pipelines/sources/simulator.py): its world, size and scenario."""

    seed: int = 7
    cards: int = Field(4000, gt=0)
    start: dt.date = dt.date(2026, 1, 1)
    days: int = Field(120, gt=0)
    tx_per_day: int = Field(4000, gt=0)
    scenario: Scenario = "none"
    scenario_start: dt.date | None = Field(
        None, description="First day of the scenario; default: the last quarter of the period."
    )


class Ingest(_Frozen):
    """The training window: pinned by dates (or instants), or rolling (null end: up to the newest
    data)."""

    start: dt.datetime | None = Field(
        None,
        description="First instant ('2026-01-01' is its midnight); null: `window` before end "
        "(not before the start of the oldest data's unit).",
    )
    end: dt.datetime | None = Field(
        None,
        description=(
            "Exclusive; null: the start of the unit of `window` (hour, day, year) after the newest "
            "data in the source, so new data moves the window (how retraining trains on the newest "
            "data without editing params). A partitioned source's newest day counts whole."
        ),
    )
    window: SpanOfTime = Field(
        "90 days", validate_default=True, description="Window length when start is null."
    )
    label_cutoff: dt.datetime | None = Field(
        None, description="Use labels that arrived before this instant; null: all arrived labels."
    )
    csv_decimal: str = Field(
        ".",
        min_length=1,
        max_length=1,
        description=(
            "A CSV source's decimal mark (',' in many European exports; the delimiter is detected)."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Ingest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"ingest.end ({self.end}) must be after ingest.start ({self.start})")
        return self


class Validate(_Frozen):
    """The data gate's reference values (pipelines/core/expectations.py)."""

    min_rows: int = Field(1000, ge=0)
    max_rows: int = Field(50_000_000, gt=0)
    label_rate: tuple[float, float] = (0.001, 0.05)
    amount_range: tuple[float, float] = (0.0, 100_000.0)
    max_null_share: float = Field(
        0.0, ge=0, le=1, description="Share of nulls tolerated in contract columns."
    )
    null_shares: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description=(
            "Per column, the share of nulls tolerated instead of max_null_share: a column with "
            "gaps (categorical, or numeric but the amount). The service then accepts the field "
            "missing or null, and the model takes its missing-value branch, offline and online."
        ),
    )

    def null_share(self, column: str) -> float:
        """The share of nulls tolerated in `column`."""
        return self.null_shares.get(column, self.max_null_share)

    min_rows_per_period: int = Field(
        1, ge=0, description="Fewest rows in every `period` of the window (0: no check)."
    )
    period: SpanOfTime = Field(
        "1 day",
        validate_default=True,
        description="The period the volume check counts rows in: '1 day' for daily data, "
        "'1 hour', '1 year'.",
    )
    categories: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Known values per categorical column; an unseen value is a warning, not a block.",
    )
    min_known_share: float = Field(
        0.95, ge=0, le=1, description="Share of values that must be known categories."
    )


class Compute(_Frozen):
    """The engine the data stages run on: pandas in this process, or Dask (dask.distributed).

    `local` is the default and today's behaviour. `dask` starts a LocalCluster of `workers`
    processes for the stage and stops it after, or connects to the scheduler at `address` (a
    user's cluster, started with `dask scheduler` / `dask worker`). The stage code is the same:
    only where the frames live changes (`pipelines.io.compute`)."""

    engine: Literal["local", "dask"] = "local"
    address: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        description="An existing scheduler (`tcp://host:8786`); null starts a LocalCluster.",
    )
    workers: int = Field(2, ge=1, description="LocalCluster worker processes.")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = Field(
        "4GB", description="Per LocalCluster worker (Dask's units: '4GB', '512MiB')."
    )
    partitions: int | None = Field(
        None,
        ge=1,
        description="Partitions the entities are shuffled into; null: 4 per worker thread.",
    )

    @model_validator(mode="after")
    def _engine_of_address(self) -> Compute:
        if self.address is not None and self.engine != "dask":
            raise ValueError("compute.address is a Dask scheduler: set compute.engine: dask too")
        return self


class Features(_Frozen):
    """Feature settings (pipelines/core/features.py): history windows in hours, and the features
    derived from each request's timestamp."""

    windows_hours: tuple[int, ...] = (1, 24, 168)
    request: tuple[Literal["hour", "day_of_week"], ...] = Field(
        ("hour", "day_of_week"),
        description="Features derived from the record's timestamp (UTC hour 0-23, day of week "
        "0 = Monday); [] for a table whose time of day means nothing (a yearly snapshot).",
    )

    @model_validator(mode="after")
    def _positive(self) -> Features:
        if not self.windows_hours or any(w <= 0 for w in self.windows_hours):
            raise ValueError("features.windows_hours must be a non-empty list of positive hours")
        return self


class Split(_Frozen):
    """The time split: the last `test` of the window is the test period (never random)."""

    test: SpanOfTime = Field(
        "21 days",
        validate_default=True,
        description="The test period, at the end of the window: '21 days', '6 hours', '1 year'.",
    )


class LightGBMParams(_Frozen):
    """LightGBM's hyper-parameters (LGBMClassifier's names)."""

    n_estimators: int = Field(400, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, gt=1)
    min_child_samples: int = Field(50, gt=0)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    num_threads: int = Field(2, gt=0, description="Fixed so that the model bytes are reproducible.")


class LogisticParams(_Frozen):
    """The logistic baseline's hyper-parameters (scikit-learn's names)."""

    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, gt=0)
    max_rows: int | None = Field(
        300_000,
        gt=0,
        description="Fit on a seeded sample of at most this many rows (null: all); "
        "a linear baseline gains nothing from more, and lbfgs time grows with rows.",
    )


class HistGradientBoostingParams(_Frozen):
    """scikit-learn's HistGradientBoostingClassifier (its names); categorical columns are native."""

    max_iter: int = Field(300, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    max_leaf_nodes: int = Field(31, gt=1)
    min_samples_leaf: int = Field(50, gt=0)
    l2_regularization: float = Field(1.0, ge=0)


class XGBoostParams(_Frozen):
    """XGBoost's XGBClassifier (its names); histogram trees, categorical columns native."""

    n_estimators: int = Field(400, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    max_depth: int = Field(6, gt=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    n_jobs: int = Field(2, gt=0)


class SklearnParams(_Frozen):
    """Any scikit-learn classifier or pipeline, by import path and keyword parameters: a team's
    own estimator plugs in with params only."""

    estimator: str = Field(
        "sklearn.ensemble.RandomForestClassifier",
        pattern=r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$",
        description="`module.Class` or `module:Class` of an estimator with fit/predict_proba.",
    )
    params: dict[str, Any] = Field(
        default_factory=lambda: {"n_estimators": 200, "min_samples_leaf": 20, "n_jobs": 2},
        description="Keyword arguments of the estimator (`random_state` is set from train.seed "
        "when the estimator takes one).",
    )
    input: Literal["matrix", "frame"] = Field(
        "matrix",
        description="matrix: a float array, categories as level codes, missing as NaN (any "
        "estimator); frame: a DataFrame with the feature names, categories as text (a pipeline "
        "with its own encoders).",
    )

    @property
    def package(self) -> str:
        """The top-level package of `estimator` (`team_models` for `team_models.cards:make`):
        what a saved model of this family may hold types from."""
        return self.estimator.replace(":", ".").split(".", 1)[0]


# The model families (pipelines/core/families/): a tag here, a params section in Train, a class.
Family = Literal["lightgbm", "logistic", "hist_gradient_boosting", "xgboost", "sklearn", "blend"]
Member = Literal["lightgbm", "logistic", "hist_gradient_boosting", "xgboost", "sklearn"]


class BlendParams(_Frozen):
    """An ensemble of other families, itself a candidate (core/families/blend.py)."""

    members: tuple[Member, ...] = Field(
        ("lightgbm", "logistic"),
        min_length=2,
        description="The families it combines, each with its own params section.",
    )
    method: Literal["mean", "stack"] = Field(
        "stack",
        description="mean: the average of the members' probabilities (`weights`); stack: a "
        "logistic regression on the members' log-odds, fitted on the newest `holdout` share of "
        "the fitting rows while the members are fitted on the rest, then the members refitted on "
        "all of them.",
    )
    weights: tuple[float, ...] | None = Field(
        None, description="mean: one non-negative weight per member; null: equal."
    )
    holdout: float = Field(
        0.2, gt=0, lt=1, description="stack: the newest share the stacker learns on."
    )

    @model_validator(mode="after")
    def _consistent(self) -> BlendParams:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"train.blend.members lists a family twice: {list(self.members)}")
        if self.weights is not None and (
            len(self.weights) != len(self.members) or min(self.weights) < 0 or not sum(self.weights)
        ):
            raise ValueError(
                "train.blend.weights needs one non-negative weight per member, not all zero"
            )
        return self


class ResolvedBlend(_Frozen):
    """`BlendParams` with each member's params section: what the blend family is fitted with."""

    method: Literal["mean", "stack"]
    weights: tuple[float, ...] | None
    holdout: float
    members: dict[str, SerializeAsAny[BaseModel]]


class Train(_Frozen):
    """The candidate families, how one is chosen, the seed, and each family's parameters."""

    seed: int = 42
    candidates: tuple[Family, ...] = Field(
        ("lightgbm", "logistic"),
        min_length=1,
        description="Families fitted on every run; each is evaluated and plotted.",
    )
    validation: SpanOfTime = Field(
        "14 days",
        validate_default=True,
        description="The last span of the training window that chooses among the candidates "
        "(fitted on the rest, then refitted on the whole window); never the test period.",
    )
    metric: Literal["roc_auc", "average_precision"] = Field(
        "roc_auc", description="What the validation span ranks candidates by."
    )
    model: Family | None = Field(
        None, description="Package this candidate whatever validation says; null: the best."
    )
    lightgbm: LightGBMParams = LightGBMParams()
    logistic: LogisticParams = LogisticParams()
    hist_gradient_boosting: HistGradientBoostingParams = HistGradientBoostingParams()
    xgboost: XGBoostParams = XGBoostParams()
    sklearn: SklearnParams = SklearnParams()
    blend: BlendParams = BlendParams()

    @model_validator(mode="after")
    def _model_is_a_candidate(self) -> Train:
        if self.model is not None and self.model not in self.candidates:
            raise ValueError(
                f"train.model {self.model!r} is not in train.candidates {list(self.candidates)}"
            )
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"train.candidates lists a family twice: {list(self.candidates)}")
        return self

    def params_of(self, family: str) -> BaseModel:
        """The parameters section of `family` (the blend's: with its members' sections)."""
        if family == "blend":
            b = self.blend
            return ResolvedBlend(
                method=b.method,
                weights=b.weights,
                holdout=b.holdout,
                members={m: self.params_of(m) for m in b.members},
            )
        return getattr(self, family)  # type: ignore[no-any-return]


class Tune(_Frozen):
    """Optuna's search over the candidates' parameters (stages/tune.py), on train's validation
    span; train then fits the best parameters found."""

    trials: int = Field(
        0,
        ge=0,
        description="Trials per family (the params as written are the first); 0: no search, train "
        "uses the params as written.",
    )
    timeout: SpanOfTime | None = Field(
        None,
        description="Stop each family's search after this long ('20 minutes'); null: only "
        "`trials` bounds it. With a timeout the trial count depends on the machine's speed, so a "
        "rerun may find other parameters.",
    )
    families: tuple[Family, ...] | None = Field(
        None, description="The candidates to tune; null: every candidate with a search space."
    )
    prune_at: float | None = Field(
        0.25,
        gt=0,
        lt=1,
        description="A trial is first fitted on this newest share of the fitting rows and stopped "
        "there if its score is below the median of earlier trials at that step (Optuna's "
        "MedianPruner); null: no pruning.",
    )

    def timeout_seconds(self) -> float | None:
        """`timeout` in seconds (None: none)."""
        if self.timeout is None:
            return None
        now = pd.Timestamp("2000-01-01")
        return float((now - self.timeout.before(now)).total_seconds())


class Evaluate(_Frozen):
    """The test-period metrics: the alert budget, calibration bins and slices."""

    alert_rate: float = Field(
        0.01, gt=0, lt=1, description="Share of transactions the team can review."
    )
    calibration_bins: int = Field(10, gt=1)
    min_slice_rows: int = Field(200, gt=0)
    slice_by: tuple[str, ...] = Field(
        ("channel", "merchant_category"),
        description="Categorical columns to report metrics per value of.",
    )


class Serving(_Frozen):
    """The BentoML service: address, workers, batching, thresholds, and where its state lives."""

    host: str = "127.0.0.1"
    port: int = Field(3000, gt=0, lt=65536)
    workers: int = Field(1, gt=0)
    batching: Literal["adaptive", "bentoml", "off"] = Field(
        "adaptive",
        description="adaptive: the service's own batcher (pipelines/serving/batching.py); "
        "bentoml: BentoML's batchable dispatcher; off: one model call per request.",
    )
    max_batch_size: int = Field(256, gt=0, description="Most records in one model call.")
    max_latency_ms: int = Field(
        50, gt=0, description="batching=bentoml only: its dispatcher's latency bound."
    )
    max_queue_records: int = Field(
        20_000, gt=0, description="batching=adaptive: beyond this many waiting records, 503."
    )
    max_records_per_request: int = Field(500, gt=0)
    max_body_bytes: int = Field(
        1 << 20,
        gt=0,
        description=(
            "Larger request bodies are refused (413) before they are read: one huge request must not "
            "hold memory and the event loop while small ones wait."
        ),
    )
    decisions: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: {"decline": 0.6, "review": 0.2},
        description=(
            "Decision label -> the probability at or above which it applies (the highest "
            "threshold met wins); below every threshold, `default_decision`."
        ),
    )
    default_decision: str = Field("approve", min_length=1)
    feature_store: Location = Field(
        "data/online/features.sqlite",
        description=(
            "The online feature store: a path or sqlite:///path (a file for the workers of one "
            "host), or redis://[:password@]host:port/db[?prefix=name] (one store for every "
            "replica; rediss:// for TLS)."
        ),
    )
    store_timeout_seconds: float = Field(
        0.25,
        gt=0,
        description=(
            "How long a request waits for a network store before scoring without history "
            "(then no request waits for it until it answers again)."
        ),
    )
    store_retry_seconds: float = Field(
        1.0, gt=0, description="How often an unavailable store is probed, and replayed into."
    )
    store_replay_max_events: int = Field(
        100_000,
        gt=0,
        description=(
            "Events kept per worker while the store is unavailable, replayed once it answers; "
            "beyond, the oldest are dropped (counted): memory stays bounded in a long outage."
        ),
    )
    prediction_log: Location = Field(
        "data/predictions", description="URL of the partitioned Parquet prediction log."
    )
    spool_dir: Location = Field(
        "data/online/spool", description="Local spool for log batches the sink refused."
    )
    log_flush_rows: int = Field(5000, gt=0)
    log_flush_seconds: float = Field(2.0, gt=0)
    reload_seconds: float = Field(
        1.0, gt=0, description="How often the service checks for a new champion."
    )
    request_timeout_seconds: int = Field(10, gt=0)
    access_log: bool = Field(
        False, description="A log line and a trace span per request (costly at high rates)."
    )
    champion_source: Literal["local", "remote"] = Field(
        "local",
        description=(
            "Where the service reads which model is the champion: the local store's pointer "
            "(BENTOML_HOME), or the model store's remote (paths.model_remote or $MODEL_REMOTE), which "
            "every replica follows; a champion missing locally is fetched from the remote."
        ),
    )
    model: str | None = Field(
        None,
        description=(
            "Serve this model version instead of the gated champion: experiments only, logged as a "
            "warning. null: the champion (the service is not ready until there is one)."
        ),
    )

    @model_validator(mode="after")
    def _distinct_decisions(self) -> Serving:
        thresholds = list(self.decisions.values())
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"serving.decisions: two labels share a threshold: {self.decisions}")
        if self.default_decision in self.decisions or "" in self.decisions:
            raise ValueError(
                "serving.decisions: labels must be non-empty and differ from "
                f"serving.default_decision {self.default_decision!r}"
            )
        return self


class Deploy(_Frozen):
    """The champion/challenger gate and the rollout."""

    metric: Literal["roc_auc", "average_precision"] = "roc_auc"
    margin: float = Field(
        0.005, ge=0, description="The challenger must beat the champion by at least this."
    )
    floor: float = Field(
        0.8,
        ge=0,
        le=1,
        description="No model below this is ever promoted (the first one included).",
    )
    recent: SpanOfTime = Field(
        "14 days",
        validate_default=True,
        description="Both models are scored on the labelled test events of this last span.",
    )
    service_url: str | None = Field(
        "http://127.0.0.1:3000",
        description=(
            "The running service the rollout waits for and smoke-checks; null: none to check (replicas "
            "follow the model store's remote on their own)."
        ),
    )
    rollout_timeout_seconds: float = Field(60.0, gt=0)


class Drift(_Frozen):
    """The scheduled drift check on the prediction log against the training reference."""

    cron: str = Field("*/15 * * * *", description="Schedule of the drift-check deployment.")
    window: SpanOfTime = Field(
        "24 hours",
        validate_default=True,
        description="Prediction-log window each check reads, by scored_at: serving time, whatever "
        "the data's own period.",
    )
    min_rows: int = Field(500, gt=0, description="Fewer logged rows than this: no verdict.")
    sample_rows: int = Field(
        20_000, gt=0, description="Seeded sample of larger windows and of the reference."
    )
    read_rows: int = Field(
        500_000,
        gt=0,
        description="At most this many logged rows are read per check: a larger window is read "
        "as a uniform sample of this size (by record id, file by file), so the check's memory "
        "does not grow with traffic. The counts and the label join use these rows.",
    )
    seed: int = 0
    num_method: str = Field(
        "wasserstein", description="Evidently drift method for numeric columns."
    )
    num_threshold: float = Field(0.2, gt=0)
    cat_method: str = Field(
        "jensenshannon", description="Evidently drift method for categorical columns."
    )
    cat_threshold: float = Field(0.1, gt=0)
    columns: tuple[str, ...] | None = Field(
        None, description="Columns to test; null: the request-level inputs."
    )
    drift_share: float = Field(
        0.25, gt=0, le=1, description="Share of drifted columns that counts as data drift."
    )
    min_quality: float | None = Field(
        0.75, description="ROC-AUC on labelled logged rows below this counts as drift."
    )
    min_labelled: int = Field(
        300, gt=0, description="Labelled rows (with both classes) needed to judge quality."
    )
    persistence: int = Field(
        2, gt=0, description="Drift must be seen in this many consecutive checks."
    )
    cooldown_hours: float = Field(
        6.0, ge=0, description="No new alarm this long after a retraining."
    )
    reports: Location = Field(
        "reports/drift", description="Where HTML reports, summaries and the check state go."
    )
    retention_days: float = Field(
        7.0,
        gt=0,
        description=(
            "Check directories (report ~4 MB, summary) older than this are deleted, except those of "
            "checks that confirmed drift."
        ),
    )

    @model_validator(mode="after")
    def _reads_what_it_samples(self) -> Drift:
        if self.read_rows < max(self.sample_rows, self.min_rows):
            raise ValueError(
                f"drift.read_rows ({self.read_rows}) must be at least drift.sample_rows "
                f"({self.sample_rows}) and drift.min_rows ({self.min_rows}): the check samples "
                "and counts the rows it read"
            )
        return self


class Monitoring(_Frozen):
    """Where monitoring results go beyond the service's /metrics (monitoring/ holds the rules)."""

    pushgateway: str | None = Field(
        None,
        description=(
            "Prometheus Pushgateway URL the drift check pushes its verdict and scores to (a batch job "
            "is not scraped itself); null: none."
        ),
    )
    notify_block: str | None = Field(
        None,
        description=(
            "A Prefect notification block (`<block-type>/<name>`, e.g. slack-webhook/ops) that a failed "
            "flow run and a refused challenger notify through; null: no notifications."
        ),
    )


class Settings(_Frozen):
    """Everything params.yaml holds; one frozen instance per process (runtime.bootstrap)."""

    project: str = Field(
        DEFAULT_PROJECT,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="The first word of every Prometheus series the service and the drift check "
        "export (`<project>_ready`) and of the service's Prometheus job "
        "(`python -m pipelines monitoring` writes the alert rules and the dashboard for it).",
    )
    contract: Contract = Contract()
    paths: Paths = Paths()
    simulate: Simulate = Simulate()
    ingest: Ingest = Ingest()
    validate_: Validate = Field(Validate(), alias="validate")
    features: Features = Features()
    compute: Compute = Compute()
    split: Split = Split()
    train: Train = Train()
    tune: Tune = Tune()
    evaluate: Evaluate = Evaluate()
    serving: Serving = Serving()
    deploy: Deploy = Deploy()
    drift: Drift = Drift()
    monitoring: Monitoring = Monitoring()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _root: Path | None = PrivateAttr(None)

    def located(self, root: Path) -> Settings:
        """A copy whose relative locations (fields typed `Location`) are absolute under `root`;
        URLs and absolute paths stay as written."""
        sections = {}
        for name in type(self).model_fields:
            section = getattr(self, name)
            if isinstance(section, BaseModel):
                fields = type(section).model_fields
                moved = {
                    k: _absolute(getattr(section, k), root)
                    for k, f in fields.items()
                    if _is_location(f) and getattr(section, k) is not None
                }
                if moved:
                    sections[name] = section.model_copy(update=moved)
        out = self.model_copy(update=sections)
        out._root = root.absolute()
        return out

    @property
    def root(self) -> Path:
        """The directory relative locations are resolved against (the params file's); the working
        directory for settings that were not `located`."""
        return self._root or Path.cwd()

    def portable(self, location: str) -> str:
        """`location` as written relative to the root when it lies under it: what versioned
        outputs record, so that they do not depend on where the checkout is."""
        if "://" in location or not os.path.isabs(location):
            return location
        try:
            return Path(location).relative_to(self.root).as_posix()
        except ValueError:
            return location

    @model_validator(mode="after")
    def _gaps_only_where_the_features_allow_them(self) -> Settings:
        c = self.contract
        allowed = [*c.categorical, *(n for n in c.numeric if n != c.amount)]
        wrong = [name for name in self.validate_.null_shares if name not in allowed]
        if wrong:
            raise ValueError(
                f"validate.null_shares names {wrong}: gaps are allowed in {allowed} only (the id, "
                "timestamp and entity identify an event, and the amount feeds every history sum)"
            )
        return self

    @model_validator(mode="after")
    def _slices_are_categorical(self) -> Settings:
        unknown = [s for s in self.evaluate.slice_by if s not in self.contract.categorical]
        if unknown:
            raise ValueError(
                f"evaluate.slice_by names {unknown}, which are not in contract.categorical"
            )
        return self


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


def _describe(err: ValidationError) -> str:
    """One line per problem: the key and what is wrong with it. A check across keys (a
    validator's ValueError) names its keys itself, and its input is a whole section or the
    whole file: never echoed. Other inputs are shown shortened."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        where = f"  {key}: " if key else "  "
        if e["type"] == "extra_forbidden":
            renamed = RENAMED.get(key)
            lines.append(f"{where}renamed: write {renamed}" if renamed else f"{where}unknown key")
        elif e["type"] == "value_error":
            lines.append(where + str(e["msg"]).removeprefix("Value error, "))
        else:
            lines.append(f"{where}{e['msg']} (got {reprlib.repr(e.get('input'))})")
    return "\n".join(lines)


def parse_settings(data: object, origin: str = "params") -> Settings:
    """Validate `data` (params.yaml's mapping) into Settings.

    Raises ConfigError naming `origin` and each wrong key once (unknown keys included).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{origin} is invalid:\n{_describe(err)}") from None


OVERRIDES_ENV = "PIPELINES_OVERRIDES"


def load_settings(
    path: str | os.PathLike[str] | None = None, overrides: str | None = None
) -> Settings:
    """The settings in the params file `path` (default: $PIPELINES_PARAMS, else ./params.yaml),
    with `overrides` deep-merged over it: a JSON object of the same shape, how a deployment (a
    Kubernetes Deployment's env) changes a few keys without its own copy of params.yaml.

    Raises ConfigError naming the file, the variable or the key that is wrong.
    """
    path = Path(path or os.environ.get(PARAMS_ENV, DEFAULT_PARAMS))
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    origin = str(path)
    if overrides:
        try:
            extra = json.loads(overrides)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{OVERRIDES_ENV} is not valid JSON: {err}") from None
        if not isinstance(extra, dict) or not isinstance(data, dict | None):
            raise ConfigError(f"{OVERRIDES_ENV} must be a JSON object like params.yaml's top level")
        data, origin = _deep_merge(data or {}, extra), f"{path} with {OVERRIDES_ENV}"
    return parse_settings(data, origin)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def json_schema() -> dict:
    """The JSON schema of params.yaml (`python -m pipelines config --schema`)."""
    return Settings.model_json_schema(by_alias=True)
