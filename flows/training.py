"""training: the DVC stages as Prefect tasks, in dvc.yaml's own order.

The DAG is DVC's (read from the repository, never re-declared here). Each stage runs as
`dvc repro -s <stage>`, so a stage whose inputs did not change is skipped by DVC. A stage that
fails is retried with backoff, except when the data gate rejected the data (exit code 65):
the same data would fail the same way.
"""

from __future__ import annotations

import re
import subprocess

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.common import repo_root, run_from_command_line, settings
from pipelines.core.expectations import DATA_REJECTED
from pipelines.io import storage
from pipelines.runtime import tool


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; `code` is the command's own exit code (65: the data gate)."""

    def __init__(self, stage: str, code: int, output: str, remote_inputs: list[str]) -> None:
        tail = "\n".join(output.strip().splitlines()[-15:])
        # DVC names an unreachable input by its endpoint; say which of the stage's URLs it was.
        reads = f"; it reads {', '.join(remote_inputs)}" if remote_inputs else ""
        super().__init__(f"stage '{stage}' failed (exit {code}{reads}):\n{tail}")
        self.stage, self.code = stage, code


def stage_order() -> list[tuple[str, list[str]]]:
    """Each stage, dependencies first, with the URLs among its inputs (e.g. an S3 source)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo_root())) as repo:
        # Edges point from a stage to what it depends on: reversed topological order runs
        # every dependency first.
        stages = reversed(list(nx.topological_sort(repo.index.graph)))
        return [(s.addressing, [d.def_path for d in s.deps if "://" in d.def_path]) for s in stages]


def _retry_unless_rejected(task, task_run, state) -> bool:  # noqa: ANN001
    try:
        state.result()
    except StageFailed as err:
        return err.code != DATA_REJECTED
    except Exception:
        return True
    return False


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_rejected,
    task_run_name="dvc repro -s {stage}",
)
def run_stage(stage: str, remote_inputs: list[str]) -> str:
    """`dvc repro -s stage`, its output in the run's log: "ran" or "skipped" (unchanged).

    Raises StageFailed naming the stage, the command's exit code and the URLs it reads.
    """
    logger = get_run_logger()
    proc = subprocess.run(
        [tool("dvc"), "repro", "-s", stage], cwd=repo_root(), capture_output=True, text=True
    )
    output = proc.stdout + proc.stderr
    for line in output.strip().splitlines():
        logger.info(line)
    if proc.returncode:
        # DVC exits 255 whatever the command did; the command's own code is in its message.
        cmd_code = re.search(r"failed to run: .*, exited with (\d+)", output)
        raise StageFailed(
            stage, int(cmd_code.group(1)) if cmd_code else proc.returncode, output, remote_inputs
        )
    return "skipped" if "didn't change, skipping" in output else "ran"


@flow(name="training", log_prints=True)
def training() -> dict:
    """Every DVC stage in dvc.yaml's order; returns what ran, the test metrics and the package record."""
    s = settings()  # first: DVC's stage commands must find the project's python
    outcome = {stage: run_stage(stage, inputs) for stage, inputs in stage_order()}
    evaluation = storage.read_json(storage.join(s.paths.metrics, "evaluate.json"))
    publish_metrics(evaluation)
    package = storage.read_json(s.paths.package)
    return {"stages": outcome, "metrics": evaluation, "package": package}


def publish_metrics(evaluation: dict) -> None:
    """Every candidate's test metrics as a table artifact, the chosen one first."""
    keys = [
        "roc_auc",
        "average_precision",
        "recall_at_alert_rate",
        "precision_at_alert_rate",
        "log_loss",
        "brier",
    ]
    chosen = evaluation.get("model")
    candidates = evaluation.get("candidates") or {chosen: evaluation}
    order = sorted(candidates, key=lambda name: name != chosen)
    rows = [{"model": name, **{k: candidates[name].get(k) for k in keys}} for name in order]
    create_table_artifact(
        key="evaluation-metrics", table=rows, description="Test-period metrics (dvc metrics)"
    )


if __name__ == "__main__":
    run_from_command_line(training)
