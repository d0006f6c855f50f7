"""Table writes and the current event: Faust's RocksDB store finds the partition of a
write from the stream's current event, and refuses a write without one.
Why and what to watch for: docs/faust-traps.md#the-current-event
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from faust.streams import _current_event


@contextlib.contextmanager
def under_partition(partition: int) -> Iterator[None]:
    """A stand-in current event naming `partition`, for the RocksDB store's writes."""
    stand_in = _StandInEvent(SimpleNamespace(partition=partition))
    token = _current_event.set(weakref.ref(cast(Any, stand_in)))
    try:
        yield
    finally:
        _current_event.reset(token)


class _StandInEvent:
    def __init__(self, message: Any) -> None:
        self.message = message
