"""deploy: the champion/challenger gate, then the rollout to the running service.

A refused challenger is a normal outcome (the flow completes, the reason is recorded in the
registry history and in an artifact); the champion keeps serving untouched.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.common import repo_root, settings
from pipelines import release
from pipelines.io import registry


@task
def gate(challenger: str) -> dict:
    return release.gate(settings(), challenger).to_dict()


@task(retries=1, retry_delay_seconds=5)
def rollout(tag: str) -> dict:
    return release.await_rollout(settings(), tag)


@flow(name="deploy", log_prints=True)
def deploy(challenger: str | None = None, rollout_to_service: bool = True) -> dict:
    """Gate `challenger` (default: the model the package stage saved last) against the champion."""
    s = settings()
    if challenger is None:
        challenger = json.loads((repo_root() / s.paths.package).read_text())["model_tag"]
    if challenger == registry.champion_tag():
        # A rerun with nothing new to train (e.g. CI after a docs-only change): nothing to decide.
        get_run_logger().info("gate: %s is already the champion; nothing to decide", challenger)
        return {"challenger": challenger, "decision": None}
    decision = gate(challenger)
    get_run_logger().info("gate: %s: %s", "PROMOTE" if decision["promote"] else "keep the champion",
                          decision["reason"])
    result = {"challenger": challenger, "decision": decision}
    if decision["promote"] and rollout_to_service:
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

    p = argparse.ArgumentParser(description="Gate the packaged model (or --challenger TAG) and roll it out.")
    p.add_argument("--challenger", help="model tag (default: the package stage's last model)")
    p.add_argument("--no-rollout", action="store_true", help="gate and promote only; no running service needed")
    args = p.parse_args()
    deploy(challenger=args.challenger, rollout_to_service=not args.no_rollout)
