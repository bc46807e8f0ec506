"""The bento a deploy ships (`make bento`): built after the gate, so it carries the champion as
decided. The package stage's bento is built before the gate and carries whatever was champion
then; this one is checked to carry the current champion and named in `release.json`.
"""

from __future__ import annotations

from typing import Any

from pipelines.config import Settings
from pipelines.core.layout import Layout
from pipelines.io import registry, storage


def build_champion_bento(settings: Settings) -> dict[str, Any]:
    """Build the bento, check it carries the champion, record both tags in `release.json`.

    Raises LookupError when there is no champion, RuntimeError when the bento does not carry it.
    """
    champion = registry.champion_tag()
    if champion is None:
        raise LookupError("no champion to ship: run the gate (make gate) or promote a model first")
    tag = registry.build_bento(settings.root)
    carried = registry.bento_models(tag)
    if champion not in carried:
        raise RuntimeError(f"bento {tag} carries {carried}, not the champion {champion}")
    result = {"bento_tag": tag, "model_tag": champion}
    storage.write_json(Layout(settings).release, result)
    return result
