"""deploy: the champion/challenger gate, then the rollout to the running service.

A refused challenger is a normal outcome (the flow completes, the reason is recorded in the
registry history and in an artifact, and the event `pipelines.gate.refused` lets an automation
notify people: flows/notify.py); the champion keeps serving untouched.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from flows.common import run_from_command_line, settings
from flows.notify import GATE_REFUSED
from pipelines.io import registry
from pipelines.jobs import gate as gate_job
from pipelines.jobs import rollout as rollout_job


@task
def gate(challenger: str | None) -> dict:
    """The gate on `challenger` (default: the packaged model); see jobs.gate.gate_packaged."""
    return gate_job.gate_packaged(settings(), challenger)


@task(retries=1, retry_delay_seconds=5)
def rollout(tag: str) -> dict:
    """Wait until the running service serves `tag`, then smoke-check it (jobs.rollout)."""
    return rollout_job.await_rollout(settings(), tag)


@flow(name="deploy", log_prints=True)
def deploy(challenger: str | None = None, rollout_to_service: bool = True) -> dict:
    """Gate `challenger` (default: the model the package stage saved last) against the champion."""
    result = gate(challenger)
    get_run_logger().info(result["message"])
    decision, challenger = result["decision"], result["challenger"]
    if decision is None:
        return result
    if not decision["promote"]:
        emit_event(
            event=GATE_REFUSED,
            resource={"prefect.resource.id": f"pipelines.gate.{challenger}"},
            payload={
                "challenger": challenger,
                "champion": registry.champion_tag(),
                "reason": decision["reason"],
            },
        )
    elif rollout_to_service and settings().deploy.service_url:
        result["rollout"] = rollout(challenger)
    create_markdown_artifact(
        key="deploy-decision",
        markdown=f"**{'Promoted' if decision['promote'] else 'Not promoted'}** `{challenger}`\n\n"
        f"{decision['reason']}\n\n```json\n{json.dumps(result, indent=2, default=str)}\n```",
        description="Champion/challenger gate",
    )
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(
        description="Gate the packaged model (or --challenger TAG) and roll it out."
    )
    p.add_argument("--challenger", help="model tag (default: the package stage's last model)")
    p.add_argument(
        "--no-rollout", action="store_true", help="gate and promote only; no running service needed"
    )
    args = p.parse_args()
    run_from_command_line(
        deploy, challenger=args.challenger, rollout_to_service=not args.no_rollout
    )
