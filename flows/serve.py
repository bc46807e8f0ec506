"""Serve every deployment from one process against the Prefect API in $PREFECT_API_URL.

    python -m flows.serve          (make orchestrate starts the local Prefect server too)

- training, deploy and batch-predict (a table's URL in, the scores' URL out): on demand;
- drift-check: on the cron schedule from params (drift.cron);
- retraining: triggered by the server on a confirmed drift (the drift-check run's
  `pipelines.drift.confirmed` event; an erroring check is Failed and triggers nothing); at most
  one runs at a time, and a trigger while one runs is dropped (concurrency limit 1, CANCEL_NEW).
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from flows import notify
from flows.common import settings
from flows.deploy import deploy
from flows.drift import DRIFT_CONFIRMED, drift_check
from flows.predict import batch_predict
from flows.retraining import retraining
from flows.training import training

RETRAIN_ON_DRIFT = DeploymentEventTrigger(
    name="retrain-on-drift",
    expect={DRIFT_CONFIRMED},
    match={"prefect.resource.id": "pipelines.drift-check.*"},
    parameters={
        "reason": "drift confirmed: {{ event.payload.message }}",
        "drift_run": "{{ event.payload.flow_run_id }}",
    },
)


def deployments(scheduled: bool = True) -> list:
    """The five deployments; `scheduled`: the drift check on `drift.cron` (False: on demand only,
    so that nothing but the caller starts a check, as in tests)."""
    s = settings()
    return [
        training.to_deployment(name="training"),
        deploy.to_deployment(name="deploy"),
        batch_predict.to_deployment(name="batch-predict"),
        drift_check.to_deployment(name="drift-check", cron=s.drift.cron if scheduled else None),
        retraining.to_deployment(
            name="retraining",
            triggers=[RETRAIN_ON_DRIFT],
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.serve [--no-schedule]`: serve every deployment until stopped."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-schedule", action="store_true", help="no cron for the drift check (tests)")
    args = p.parse_args(argv)
    if block := settings().monitoring.notify_block:
        notify.ensure(block)
    serve(*deployments(scheduled=not args.no_schedule))


if __name__ == "__main__":
    main()
