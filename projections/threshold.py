"""The `convergence.threshold` detector: fires once per crossing from at-or-above to below,
and `recovered` marks the crossing back (SPEC 10.4, `convergence.recovered`).

Its state is data (kept in a changelog-backed table), so a restart while below fires
nothing new, and a restart after the recovery recovers nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThresholdState:
    #: Starts as if at or above, so a fleet first seen below fires once.
    below: bool = False
    #: Downward crossings so far: part of the alert's deterministic id.
    crossings: int = 0


def check_threshold(
    state: ThresholdState, percent: float | None, threshold: float
) -> tuple[ThresholdState, bool]:
    """The new state and whether this check fires; an empty fleet changes nothing."""
    if percent is None:
        return state, False
    below = percent < threshold
    if below and not state.below:
        return ThresholdState(below=True, crossings=state.crossings + 1), True
    if below == state.below:
        return state, False
    return ThresholdState(below=below, crossings=state.crossings), False


def recovered(before: ThresholdState, after: ThresholdState) -> bool:
    """Whether a check went from below the threshold back to at or above it. Every fall
    fired (the detector starts as if at or above), so this ends the alert numbered
    `after.crossings`, once."""
    return before.below and not after.below
