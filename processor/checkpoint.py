"""Checkpoints (SPEC 11.5), the way Kafka Streams' record cache and Quix's checkpoint
transactions work: status changes and the other outputs leave with every batch (latency
stays), while the envoy states a batch changed stay held in memory (`processor.state`)
and go to the changelog and the store once per checkpoint, one record per envoy however
often it changed. Order at a checkpoint: outputs acknowledged, changelog records
acknowledged, then the batches acked, so their offsets may be committed.

A checkpoint is taken `processor.commit_interval` after the last one, at once when the
agent has worked off what was fetched (so nothing waits while idle, and a rebalance,
which waits for unacked records, never waits for a checkpoint), and when
`MAX_HELD_ENVOYS` states are held (bounded memory under any backlog).

A kill between any two steps replays from the committed offsets over the last flushed
state: records already applied to it are recognised by their position and change
nothing, the others give the same changes again with the same versions (section 9).
After a checkpoint that found the inputs worked off, the C heap's free pages go back to
the operating system (`processor.heap`, at most every 10 s).

`VIGO_FAULT=exit-after-changelog-flush` ends the process between the changelog and the
offsets, for the test that proves it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from faust.types import Message

from processor.envoys import EnvoyProcessor
from processor.faust_compat import InputBatches
from processor.heap import HeapTrimmer

log = logging.getLogger(__name__)

#: A checkpoint at the latest when this many envoy states are held: a bound on memory
#: like Kafka Streams' `cache.max.bytes.buffering` (10 MiB by default). States are held
#: encoded (about 520 bytes with a full history), so about 1 MiB; 16,384 held made no
#: difference to throughput (docs/performance.md), so the bound stayed.
MAX_HELD_ENVOYS: Final = 2_048
#: A fault injection point for tests: the name of the step after which to end at once.
FAULT: Final = os.environ.get("VIGO_FAULT", "")


def fault_point(name: str) -> None:
    """End the process here when `VIGO_FAULT` names this point (tests only)."""
    if name == FAULT:
        log.warning("VIGO_FAULT=%s: ending the process here", name)
        logging.shutdown()
        os._exit(137)


@dataclass
class Checkpoints:
    """The envoy agent's batches since the last checkpoint, and when the next is due."""

    envoys: EnvoyProcessor
    inputs: InputBatches
    interval_s: float
    max_held: int = MAX_HELD_ENVOYS
    clock: Callable[[], float] = time.monotonic
    _pending: list[list[Message]] = field(default_factory=list)
    _last: float = 0.0
    _heap: HeapTrimmer = field(init=False)

    def __post_init__(self) -> None:
        self._heap = HeapTrimmer(self.clock)

    def due(self) -> bool:
        return (
            self.inputs.idle()
            or self.clock() - self._last >= self.interval_s
            or len(self.envoys.state.held) >= self.max_held
        )

    async def after(self, batch: list[Message]) -> bool:
        """Note a processed batch (its outputs acknowledged); take a checkpoint if one is
        due. True when one was taken."""
        self._pending.append(batch)
        if not self.due():
            return False
        await self.envoys.checkpoint()
        fault_point("exit-after-changelog-flush")
        for done in self._pending:
            self.inputs.ack(done)
        self._pending.clear()
        self._last = self.clock()
        await self.inputs.commit_when_caught_up()
        if self.inputs.idle():
            self._heap.when_idle()  # a worked-off backlog's pages back to the system
        return True
