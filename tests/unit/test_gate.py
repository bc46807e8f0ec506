"""The champion/challenger rules: floor always, margin over a champion, NaN never promotes."""

from __future__ import annotations

import pytest

from pipelines.core.gate import judge_challenger


@pytest.mark.parametrize(
    ("challenger", "champion", "promote", "why"),
    [
        (0.85, None, True, "first model"),
        (0.79, None, False, "below the floor"),
        (0.90, 0.88, True, "beats the champion"),
        (0.884, 0.88, False, "does not beat"),  # better, but not by the margin
        (0.85, 0.90, False, "does not beat"),
        (0.79, 0.70, False, "below the floor"),  # beating a bad champion is not enough
        (float("nan"), 0.80, False, "could not be computed"),
    ],
)
def test_gate(challenger: float, champion: float | None, promote: bool, why: str) -> None:
    d = judge_challenger("roc_auc", challenger, champion, margin=0.005, floor=0.8)
    assert d.promote is promote
    assert why in d.reason
    assert d.to_dict()["challenger"] == challenger or challenger != challenger
