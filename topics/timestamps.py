"""The one text form of time that crosses Kafka: RFC 3339, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

#: The record times a worker accepts on its input topics (SPEC 11.4): from 2000-01-01 to
#: one hour after the worker's clock. Only a topic left at `CreateTime` can hold others.
RECORD_TIME_MIN_MS: Final = 946_684_800_000
RECORD_TIME_MAX_AHEAD_MS: Final = 3_600_000
#: The range a datetime can show (years 1..9999), in seconds since the epoch.
_SHOWN_MIN_S: Final = -62_135_596_800
_SHOWN_MAX_S: Final = 253_402_300_799


def record_time_problem(timestamp_ms: int, now_ms: int) -> str | None:
    """Why a record time is refused (a `bad_time` dead letter), or None when it is fine."""
    if timestamp_ms < RECORD_TIME_MIN_MS:
        return f"record time {timestamp_ms} ms is before 2000-01-01"
    if timestamp_ms > now_ms + RECORD_TIME_MAX_AHEAD_MS:
        return f"record time {timestamp_ms} ms is more than 1 h after the worker's clock"
    return None


def iso_from_ms(epoch_ms: int) -> str:
    """Never raises: a time outside years 1..9999 (from a record stored before record
    times were checked) shows as the nearest time that can be written."""
    epoch_s = min(max(epoch_ms // 1000, _SHOWN_MIN_S), _SHOWN_MAX_S)
    return f"{_iso_second(epoch_s)}.{epoch_ms % 1000:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(epoch_s: int) -> str:
    """The text up to the second: status changes of one batch share a few seconds, and
    formatting a datetime is most of the cost."""
    return datetime.fromtimestamp(epoch_s, UTC).replace(tzinfo=None).isoformat()
