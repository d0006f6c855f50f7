"""Catch-up tracking: a worker may not judge liveness on a partition until it has
processed everything that was already in it when the partition was assigned.

Otherwise a processor that was down for an hour would, on restart, mark the whole fleet
offline before it had read the check-ins waiting for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import faust
from faust.types import TP

log = logging.getLogger(__name__)

#: A pending partition without progress for this long is fetched again.
STALL_S = 10.0


class CatchUp:
    def __init__(
        self,
        app: faust.App,
        topics: Iterable[str],
        end_offsets: Callable[[Iterable[TP]], Awaitable[Mapping[TP, int]]],
    ) -> None:
        self.app = app
        self.end_offsets = end_offsets
        self.topics = frozenset(topics)
        self._processed: dict[TP, int] = {}
        self._targets: dict[TP, int] = {}
        self._caught_up: set[TP] = set()
        self._assigned: set[TP] = set()
        #: When each pending partition last made progress (monotonic seconds).
        self._progress_at: dict[TP, float] = {}
        self._stall_check_at = 0.0

    def on_assigned(self, assigned: Iterable[TP]) -> None:
        """A new assignment: every newly assigned partition must be caught up again."""
        mine = {tp for tp in assigned if tp.topic in self.topics}
        for tp in mine - self._assigned:
            self._caught_up.discard(tp)
            self._targets.pop(tp, None)
            self._processed.pop(tp, None)
            self._progress_at.pop(tp, None)
        self._assigned = mine

    def on_revoked(self, revoked: Iterable[TP]) -> None:
        for tp in revoked:
            self._assigned.discard(tp)
            self._caught_up.discard(tp)
            self._targets.pop(tp, None)
            self._processed.pop(tp, None)
            self._progress_at.pop(tp, None)

    def processed(self, tp: TP, offset: int) -> None:
        self._processed[tp] = offset
        self._progress_at[tp] = time.monotonic()

    def partition_caught_up(self, partition: int) -> bool:
        tps = [tp for tp in self._assigned if tp.partition == partition]
        return bool(tps) and all(tp in self._caught_up for tp in tps)

    def all_caught_up(self) -> bool:
        return bool(self._assigned) and self._assigned <= self._caught_up

    def active_partitions(self) -> set[int]:
        actives = self.app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic in self.topics}

    def _position(self, tp: TP) -> int:
        """The next offset to process: what we processed, or where consumption resumed
        (Faust keeps the committed offset per partition)."""
        committed = cast(Any, self.app.consumer)._committed_offset
        return max(self._processed.get(tp, -1) + 1, committed.get(tp) or 0)

    async def refresh(self) -> None:
        """Fetch the end offsets once per assignment and compare with progress; every
        STALL_S, look for partitions that have records but make no progress."""
        actives = self.app.assignor.assigned_actives()
        self.on_assigned(tp for tp in actives if tp.topic in self.topics)
        pending = [tp for tp in self._assigned if tp not in self._caught_up]
        missing = [tp for tp in pending if tp not in self._targets]
        if missing:
            self._targets.update(await self.end_offsets(missing))
        for tp in pending:
            if self._position(tp) >= self._targets[tp]:
                self._caught_up.add(tp)
        now = time.monotonic()
        if self._assigned and now - self._stall_check_at >= STALL_S:
            self._stall_check_at = now
            await self._restart_stalled(now)

    async def _restart_stalled(self, now: float) -> None:
        """faust-streaming 0.15.3 can leave a partition assigned and active but unfetched
        after a rebalance; seeking it to where it stands restarts the fetch (anything
        fetched twice is a redelivery, which the rules ignore)."""
        ends = await self.end_offsets(self._assigned)
        for tp in list(self._assigned):
            position = self._position(tp)
            if ends.get(tp, 0) <= position:
                self._progress_at[tp] = now
                continue
            since = self._progress_at.setdefault(tp, now)
            if now - since >= STALL_S:
                log.warning(
                    "%s[%d] made no progress for %.0f s at offset %d of %d: fetching again",
                    tp.topic,
                    tp.partition,
                    now - since,
                    position,
                    ends[tp],
                )
                self._progress_at[tp] = now
                await self.app.consumer.seek(tp, position)
