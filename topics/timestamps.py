"""The one text form of time that crosses Kafka: RFC 3339, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def iso_from_ms(epoch_ms: int) -> str:
    return f"{_iso_second(epoch_ms // 1000)}.{epoch_ms % 1000:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(epoch_s: int) -> str:
    """The text up to the second: status changes of one batch share a few seconds, and
    formatting a datetime is most of the cost."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
