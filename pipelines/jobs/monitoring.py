"""`python -m pipelines monitoring`: monitoring/ (the alert rules, their promtool unit tests, the
Prometheus config and the Grafana dashboard) written for the configured `project`.

The shipped files are the card example's (`fraud_ready`, job `fraud-service`, alert
`FraudServiceDown`) and are the metric contract the tests hold to the code; another project's
service exports `<project>_ready` (`config.series`), so its files are these with the names
renamed: series `fraud_*` → `<project>_*`, the Prometheus job and the Kubernetes app
`fraud-service` → `<project>-service`, alert names `Fraud*` → `<Project>*`. Nothing else changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.config import DEFAULT_PROJECT, Settings

FILES = ("prometheus.yml", "alerts.yml", "alerts.test.yml")
DASHBOARD = f"grafana/{DEFAULT_PROJECT}-service.json"


def renamed(text: str, project: str) -> str:
    """`text` (a monitoring file written for DEFAULT_PROJECT) with every name renamed for
    `project` (see the module docstring). Pure."""
    service = f"{project.replace('_', '-')}-service"
    camel = "".join(word.capitalize() for word in project.split("_"))
    text = re.sub(rf"\b{DEFAULT_PROJECT}_", f"{project}_", text)
    text = text.replace(f"{DEFAULT_PROJECT}-service", service)
    return re.sub(rf"\b{DEFAULT_PROJECT.capitalize()}(?=[A-Z ])", camel, text)


def write(settings: Settings, out: Path) -> list[Path]:
    """Write the monitoring files for `settings.project` under `out` (the dashboard as
    `grafana/<project>-service.json`); returns their paths.

    Raises FileNotFoundError naming a file missing from `<root>/monitoring`."""
    source = settings.root / "monitoring"
    written = []
    for name in (*FILES, DASHBOARD):
        text = (source / name).read_text()
        target = out / renamed(name, settings.project)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(renamed(text, settings.project))
        written.append(target)
    return written
