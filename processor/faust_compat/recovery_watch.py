"""A watch on Faust's recovery (`RecoveryWatch`): faust-streaming's recovery waits, with
no deadline, until it has received every changelog record up to the end offsets it read
at its start. When the records of one partition never reach it (seen in the chaos soak
after a second rebalance within seconds: "No event received for active tp ... since
recovery start", logged for ever), the worker never resumes its streams and its envoys
are never served. A partition recovery receives nothing of for `RECOVERY_STALL_S` while
it still waits for records is declared read and left to the recovery audit
(`recovery_audit`), which reads it again with a client of our own and puts back what was
missed before the streams resume; a partition of a table the audit does not cover is
sought again where recovery stands instead.
Why and how: docs/faust-traps.md#stalled-recoveries
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.types import TP

from processor.faust_compat.recovery_audit import AuditsRecovery

log = logging.getLogger(__package__)

#: Recovery receives a busy changelog partition's records every few milliseconds; a
#: partition it still waits for and has received nothing of for this long is stalled.
RECOVERY_STALL_S = 10.0


def stalled_partitions(
    remaining: Mapping[TP, int],
    last_received: Mapping[TP, float],
    started_at: float,
    now: float,
    stall_s: float = RECOVERY_STALL_S,
) -> list[TP]:
    """The partitions recovery still waits for (`remaining` records > 0) and has received
    nothing of for `stall_s`: since their last record, or since the recovery started."""
    return sorted(
        tp
        for tp, left in remaining.items()
        if left > 0 and now - max(last_received.get(tp, started_at), started_at) >= stall_s
    )


class RecoveryWatch:
    """`watch` is called every second by our table manager (`PromptTableManager`); it
    acts only while the worker recovers. See the module's doc."""

    def __init__(self, app: faust.App, stall_s: float = RECOVERY_STALL_S) -> None:
        self.app = app
        self.stall_s = stall_s
        #: Partitions declared read or sought again, since start.
        self.unstalled = 0
        #: When each stalled partition was last acted on, so that a partition sought
        #: again gets `stall_s` to show progress before the next action.
        self._acted_at: dict[TP, float] = {}

    async def watch(self) -> None:
        recovery = cast(Any, self.app.tables).recovery
        started_at = recovery._recovery_started_at
        if not recovery.in_recovery or started_at is None:
            self._acted_at.clear()
            return
        now = time.monotonic()
        received = dict(recovery._active_events_received_at)
        for tp, at in self._acted_at.items():
            received[tp] = max(received.get(tp, at), at)
        stalled = stalled_partitions(
            recovery.active_remaining(), received, started_at, now, self.stall_s
        )
        for tp in stalled:
            self._acted_at[tp] = now
            self.unstalled += 1
            await self._unstall(recovery, tp, now - max(received.get(tp, started_at), started_at))

    async def _unstall(self, recovery: Any, tp: TP, idle_s: float) -> None:
        offset, highwater = recovery.active_offsets[tp], recovery.active_highwaters[tp]
        store = recovery.tp_to_table[tp].data
        audited = isinstance(store, AuditsRecovery) and store.reader is not None
        where = (
            f"{tp.topic}[{tp.partition}]: recovery received nothing for {idle_s:.0f} s "
            f"at offset {offset} of {highwater}"
        )
        if audited:
            log.warning("%s; declared read, the recovery audit reads it again", where)
            recovery.active_offsets[tp] = highwater
            return
        log.warning("%s; fetching it again from offset %d", where, offset + 1)
        await self.app.consumer.seek_wait({tp: offset + 1})
