"""Serve every deployment from one process against the Prefect API in $PREFECT_API_URL.

    python -m flows.serve          (make orchestrate starts the local Prefect server too)

- training and deploy: on demand;
- drift-check: on the cron schedule from params (drift.cron);
- retraining: triggered by the server when a drift-check flow run fails; at most one runs at a
  time, and a trigger while one runs is dropped (concurrency limit 1, CANCEL_NEW).
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from flows.common import settings
from flows.deploy import deploy
from flows.drift import drift_check
from flows.retraining import retraining
from flows.training import training

DRIFT_FAILED = DeploymentEventTrigger(
    name="retrain-on-drift",
    expect={"prefect.flow-run.Failed"},
    match_related={"prefect.resource.role": "flow", "prefect.resource.name": "drift-check"},
    parameters={"reason": "drift check failed", "drift_run": "{{ event.resource.id }}"},
)


def deployments(cron: str | None = None) -> list:
    s = settings()
    return [
        training.to_deployment(name="training"),
        deploy.to_deployment(name="deploy"),
        drift_check.to_deployment(name="drift-check", cron=cron if cron is not None else s.drift.cron),
        retraining.to_deployment(
            name="retraining", triggers=[DRIFT_FAILED],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        ),
    ]


def main() -> None:
    serve(*deployments())


if __name__ == "__main__":
    main()
