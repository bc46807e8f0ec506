"""The champion/challenger gate: pure decision rules, no I/O.

Both models are scored on the same recent labelled data. The challenger is promoted only if it
clears an absolute floor and beats the champion by a margin; with no champion yet, the floor
alone decides. Every decision carries its reason, promoted or not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateDecision:
    """One champion/challenger decision with the numbers and the rule behind it."""

    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    margin: float
    floor: float

    def to_dict(self) -> dict:
        return asdict(self)


def judge_challenger(
    metric: str, challenger: float, champion: float | None, margin: float, floor: float
) -> GateDecision:
    """Promote `challenger` (its `metric` on the evaluation rows) over `champion` (None: there is
    none yet)? Promoted only at or above `floor` and, with a champion, at least `margin` above it;
    a NaN metric (e.g. one class in the window) is never promoted. The reason says which rule
    decided. Floor and margin come from `params.deploy`."""

    def verdict(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, metric, challenger, champion, margin, floor)

    if challenger != challenger:  # NaN: e.g. a single class in the evaluation window
        return verdict(False, f"challenger {metric} could not be computed on the evaluation data")
    if challenger < floor:
        return verdict(
            False, f"challenger {metric} {challenger:.4f} is below the floor {floor:.4f}"
        )
    if champion is None:
        return verdict(True, f"first model: {metric} {challenger:.4f} clears the floor {floor:.4f}")
    if challenger < champion + margin:
        return verdict(
            False,
            f"challenger {metric} {challenger:.4f} does not beat the champion's "
            f"{champion:.4f} by the margin {margin:.4f}",
        )
    return verdict(
        True,
        f"challenger {metric} {challenger:.4f} beats the champion's {champion:.4f} "
        f"by {challenger - champion:.4f} >= {margin:.4f}",
    )
