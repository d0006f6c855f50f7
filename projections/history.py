"""Fleet convergence history for sparklines: one point per bucket, bounded in size."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
#: The most points kept; buckets widen rather than memory grow (24 h at one per minute).
MAX_POINTS = 1441


@dataclass(frozen=True, slots=True)
class ConvergenceHistory:
    bucket_ms: int
    #: (bucket start in epoch ms, percent or None), oldest first.
    points: tuple[tuple[int, float | None], ...] = ()


def history_bucket_ms(interval_s: int) -> int:
    """One point per check-in interval, but never more than MAX_POINTS in 24 hours."""
    return max(interval_s * 1000, -(-DAY_MS // (MAX_POINTS - 1)))


def record_point(
    history: ConvergenceHistory, now_ms: int, percent: float | None
) -> ConvergenceHistory:
    """Keep the latest value of each bucket; drop the oldest points past 24 hours' worth."""
    bucket = now_ms - now_ms % history.bucket_ms
    points = history.points
    if points and points[-1][0] == bucket:
        if points[-1][1] == percent:
            return history
        points = points[:-1]
    elif points and points[-1][0] > bucket:
        return history  # a clock step backwards: never rewrite the past
    keep = max(1, DAY_MS // history.bucket_ms + 1)
    return ConvergenceHistory(history.bucket_ms, (*points, (bucket, percent))[-keep:])
