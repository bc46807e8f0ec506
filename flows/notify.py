"""Notifications on the Prefect server: a failed flow run (an error: a confirmed drift is a
Completed run and does not notify here) and a challenger the gate refused reach people through
a Prefect notification block, `monitoring.notify_block` (`<block-type>/<name>`).

    python -m flows.notify        (flows.serve does it too when the block is set)

Any notification block works: a Slack webhook (`prefect block register -m prefect.blocks.notifications`,
then create `slack-webhook/ops` in the UI or with `SlackWebhook(url=...).save("ops")`), email
(prefect-email's `EmailServerCredentials` with an `email` block), or a plain webhook
(`CustomWebhookNotificationBlock`). The automations are created once and replaced on each call.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect.automations import Automation, EventTrigger, SendNotification

from flows.common import settings

FLOWS = ["training", "deploy", "drift-check", "retraining"]
GATE_REFUSED = "pipelines.gate.refused"  # the deploy flow emits it with the gate's reason


def automations(block_id: object) -> list[Automation]:
    """The two automations, sending through the block document `block_id`."""
    failed = Automation(
        name="pipelines: notify on a failed flow run",
        description="A flow run of the pipeline failed or crashed (an error, not a drift verdict).",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOWS},
            posture="Reactive",
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="Pipeline flow run {{ flow_run.name }} failed",
                body="{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}: "
                "{{ flow_run.state.message }}",
            )
        ],
    )
    refused = Automation(
        name="pipelines: notify on a refused challenger",
        description="The champion/challenger gate kept the champion.",
        trigger=EventTrigger(
            expect={GATE_REFUSED},
            match={"prefect.resource.id": "pipelines.gate.*"},
            posture="Reactive",
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="The gate refused {{ event.payload.challenger }}",
                body="The gate refused {{ event.payload.challenger }} (champion {{ event.payload.champion }}): "
                "{{ event.payload.reason }}",
            )
        ],
    )
    return [failed, refused]


def ensure(block: str) -> list[str]:
    """Create (or replace) the automations sending through the notification block `block`.

    Raises ValueError when the block does not exist on the server."""
    from prefect.blocks.core import Block

    try:
        loaded: Any = Block.load(block)  # sync here (no event loop): a block, not a coroutine
    except ValueError as err:
        raise ValueError(
            f"monitoring.notify_block {block!r} is not a block on the Prefect server: {err}"
        ) from None
    names = []
    for automation in automations(loaded._block_document_id):
        with contextlib.suppress(ValueError):  # not there yet
            existing: Any = Automation.read(name=automation.name)
            existing.delete()
        automation.create()
        names.append(automation.name)
    return names


def main() -> None:
    """`python -m flows.notify`: set up the notifications for `monitoring.notify_block`."""
    block = settings().monitoring.notify_block
    if not block:
        raise SystemExit("monitoring.notify_block is null: nothing to notify through")
    for name in ensure(block):
        print(f"automation: {name} → {block}")


if __name__ == "__main__":
    main()
