"""Liveness as deadlines: when an envoy goes offline and when it goes stale.

Deadlines let the sweep keep a priority queue instead of scanning every envoy each tick.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

OFFLINE_AFTER_INTERVALS = 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_BARE_NUMBER = re.compile(r"^\s*[-+]?\d+(?:\.\d+)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(text: str | int | float) -> int:
    """`"5m"`, `"90s"`, `"1h"`, `"250ms"` or a number of seconds; ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        value = float(text) * 1000
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 5m, 1h)")
        value = float(match.group(1)) * _UNIT_MS[match.group(2)]
    # At least a millisecond, and finite (YAML's .inf, or 400 digits, is not a duration).
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"duration must be positive: {text!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class StaleAfter:
    """`checkin.stale_after`: a multiple of the envoy's interval, or a fixed duration."""

    intervals: float | None = 3.0
    duration_ms: int | None = None

    @classmethod
    def parse(cls, value: str | int | float) -> StaleAfter:
        """A bare number is a multiple of the interval (SPEC: `3` = 3 x interval), also
        when it arrives as text (`"3"`, as every environment variable does); a number with
        a unit (`"20m"`) is a duration."""
        if isinstance(value, bool):
            raise ValueError(f"not a multiple or a duration: {value!r}")
        multiple = value
        if isinstance(value, str) and _BARE_NUMBER.match(value):
            multiple = float(value)
        if isinstance(multiple, int | float):
            if not math.isfinite(multiple) or multiple <= 0:
                raise ValueError(f"must be a positive multiple of the interval: {value!r}")
            return cls(intervals=float(multiple), duration_ms=None)
        return cls(intervals=None, duration_ms=parse_duration_ms(value))

    def after_ms(self, interval_s: int) -> int:
        if self.duration_ms is not None:
            return self.duration_ms
        assert self.intervals is not None
        return int(self.intervals * interval_s * 1000)


def offline_deadline_ms(last_alive_ms: int, interval_s: int) -> int:
    """The first instant at which the envoy counts as offline."""
    return last_alive_ms + OFFLINE_AFTER_INTERVALS * interval_s * 1000 + 1


def stale_deadline_ms(last_alive_ms: int, interval_s: int, stale_after: StaleAfter) -> int:
    """The first instant at which the envoy's last check-in is older than stale_after."""
    return last_alive_ms + stale_after.after_ms(interval_s) + 1


def deactivate_deadline_ms(last_alive_ms: int, deactivate_after_ms: int | None) -> int | None:
    """SPEC 10.3: the instant an envoy silent since `last_alive_ms` becomes `inactive`
    (last alive + `lifecycle.deactivate_after`, the `at` of its change); None: never."""
    if deactivate_after_ms is None:
        return None
    return last_alive_ms + deactivate_after_ms


def purge_deadline_ms(since_ms: int, purge_after_ms: int | None) -> int | None:
    """SPEC 10.3: the instant an envoy inactive (or revoked) since `since_ms` is purged
    (forgotten; a revoked one shrinks to its revocation); None: never."""
    if purge_after_ms is None:
        return None
    return since_ms + purge_after_ms
