"""A watch on Faust's recovery (`RecoveryWatch`): faust-streaming's recovery waits, with
no deadline, until it has received every changelog record up to the end offsets it read
at its start. When the records of one partition never reach it (seen in the chaos soak
after a second rebalance within seconds: "No event received for active tp ... since
recovery start", logged for ever), the worker never resumes its streams and its envoys
are never served. A partition recovery receives nothing of for `RECOVERY_STALL_S` while
it still waits for records, though the consumer fetched past them, is declared read and
left to the recovery audit (`recovery_audit`), which reads it again with a client of our
own and puts back what was missed before the streams resume. A partition the consumer
did not fetch past (left out of the consumer's active partitions, or on a broker that
does not answer), or of a table the audit does not cover, is resumed and sought again
where recovery stands instead, and waited for.
Why and how: docs/faust-traps.md#stalled-recoveries
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import faust
from faust.types import TP

from processor.faust_compat.delivery import BROKER_ERRORS
from processor.faust_compat.recovery_audit import AuditsRecovery

log = logging.getLogger(__package__)

#: Recovery receives a busy changelog partition's records every few milliseconds; a
#: partition it still waits for and has received nothing of for this long is stalled.
RECOVERY_STALL_S = 10.0

#: The longest the watch waits for the consumer's position or a seek.
CALL_TIMEOUT_S = 5.0

#: What the watch did with a stalled partition (`vigo_recovery_stalls_total`).
StallAction = Literal["declared_read", "fetched_again"]


def fetched_past(position: int | None, offset: int) -> bool:
    """Whether the consumer's next offset to fetch (`position`) is past the next record
    recovery waits for (`offset` + 1, `offset` the last it received): records of the
    partition were fetched and never reached recovery."""
    return position is not None and position > offset + 1


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

    def __init__(
        self,
        app: faust.App,
        on_stall: Callable[[StallAction], None],
        stall_s: float = RECOVERY_STALL_S,
    ) -> None:
        self.app = app
        #: Told of each action (the `vigo_recovery_stalls_total` counter).
        self.on_stall = on_stall
        self.stall_s = stall_s
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
            await self._unstall(recovery, tp, now - max(received.get(tp, started_at), started_at))

    async def _unstall(self, recovery: Any, tp: TP, idle_s: float) -> None:
        offset, highwater = recovery.active_offsets[tp], recovery.active_highwaters[tp]
        store = recovery.tp_to_table[tp].data
        audited = isinstance(store, AuditsRecovery) and store.reader is not None
        where = f"{tp.topic}[{tp.partition}]: recovery received nothing for {idle_s:.0f} s"
        try:
            position = await asyncio.wait_for(self.app.consumer.position(tp), CALL_TIMEOUT_S)
            if audited and position is not None and fetched_past(position, offset):
                log.warning(
                    "%s at offset %d of %d, though the consumer fetched up to %d; declared "
                    "read, the recovery audit reads it again",
                    where,
                    offset,
                    highwater,
                    position - 1,
                )
                recovery.active_offsets[tp] = highwater
                self.on_stall("declared_read")
                return
            log.warning(
                "%s at offset %d of %d (the consumer at %s); fetching it again from %d",
                where,
                offset,
                highwater,
                position,
                offset + 1,
            )
            # Recovery resumed its partitions when it started; a partition left out of
            # the consumer's active set is fetched and never handed on.
            # (Faust's own TP: recovery's keys may be aiokafka's TopicPartitions, which
            # the consumer's active set refuses.)
            own = TP(tp.topic, tp.partition)
            self.app.consumer.resume_partitions({own})
            await asyncio.wait_for(self.app.consumer.seek_wait({own: offset + 1}), CALL_TIMEOUT_S)
            self.on_stall("fetched_again")
        except BROKER_ERRORS as exc:  # tried again after another RECOVERY_STALL_S
            log.warning("%s; the broker did not answer (%r), looking again later", where, exc)
