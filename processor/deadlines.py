"""Per-partition liveness deadlines: a heap with at most one live entry per envoy, so a
sweep touches only envoys whose deadline has passed, never the whole table."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[int, bytes]] = []
        self._scheduled: dict[bytes, int] = {}

    @classmethod
    def of(cls, deadlines: Iterable[tuple[bytes, int | None]]) -> Deadlines:
        """A partition's envoys at once (each key once), as if each were scheduled: one
        heapify rather than a push per envoy, on the event loop after an assignment."""
        built = cls()
        built._scheduled = {key: at for key, at in deadlines if at is not None}
        built._heap = [(at, key) for key, at in built._scheduled.items()]
        heapq.heapify(built._heap)
        return built

    def __len__(self) -> int:
        return len(self._scheduled)

    def schedule(self, key: bytes, deadline_ms: int | None) -> None:
        """Ensure the envoy is looked at no later than `deadline_ms`.

        A later deadline than the one queued is left for the pop to discover (a check-in
        only ever moves the deadline forward), which keeps the heap at one entry per envoy.
        """
        if deadline_ms is None:
            return
        queued = self._scheduled.get(key)
        if queued is not None and queued <= deadline_ms:
            return
        self._scheduled[key] = deadline_ms
        heapq.heappush(self._heap, (deadline_ms, key))

    def due(self, now_ms: int, limit: int) -> Iterator[bytes]:
        """Pop up to `limit` envoys whose queued deadline is at or before `now_ms`."""
        heap = self._heap
        popped = 0
        while heap and heap[0][0] <= now_ms and popped < limit:
            deadline, key = heapq.heappop(heap)
            if self._scheduled.get(key) != deadline:
                continue  # superseded by an earlier entry
            del self._scheduled[key]
            popped += 1
            yield key
