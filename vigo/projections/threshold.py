"""The `convergence.threshold` detector: fires once per crossing from at-or-above to below.

Its state is data (kept in a changelog-backed table), so a restart while below fires
nothing new.
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
