"""Every use of faust-streaming's internals, in one module. Verified on faust-streaming
0.15.x, the series `pyproject.toml` pins; re-verify each item before moving the pin.

- `write_under(stream, event, write)`: Faust refuses a table write outside an event's
  context and sends each changelog record to the partition of the stream's *current*
  event. An agent that takes batches (`Stream.take_events`, which throughput needs) has
  no current event, so it names the event that last touched the key, as Faust's own
  iteration does (private `Stream._set_current_event`; no public batch-write API exists
  upstream), and puts the previous one back at once: `take_events` fills its next batch in
  the background and reads `Stream.current_event` after an await, so an event left there
  by the agent is buffered in place of the one that arrived, which is lost (seen here as
  single records missing under load once the agent awaited between batches).
- `committed_offset(app, tp)`: where consumption of a partition resumed. Faust keeps it
  (private `Consumer._committed_offset`); asking the broker would cost a round trip on
  every check.
- `DeliveryGuard`: faust-streaming has a history of leaving records out of a stream:
  around recovery and rebalances it can resume fetching before it seeks to the committed
  offsets (upstream #216, #221), and its consumer treats any jump in the offsets it
  fetched as a gap that is "acked" and committed past (upstream #606, #312). Seen here:
  outbox offsets delivered 1, 3, 4 after a restart with a backlog, and partitions kept
  assigned but never fetched again after a second rebalance. The guard checks that each
  agent's offsets on a partition follow each other; on a hole it takes the hole out of
  Faust's gap list (so the commit cannot pass it), drops what follows, asks the broker
  (a second read, by a client of our own) which record really comes first, accepts what
  is not in the log (compaction, transaction markers, retention) and seeks back to it.
  Every `STALL_S` it also seeks partitions that have records but make no progress, which
  restarts a fetch Faust stopped.
- `quiet_root_logger()`: at `-l warn` and above, Faust's worker sets the root logger to
  DEBUG so that its terminal spinner turns on every record (`Worker._setup_spinner_handler`):
  every `logger.debug` call of Faust, mode and aiokafka on the hot path then builds a record
  that nothing prints (about 6% of the worker's time on a backlog). The root logger goes
  back to the level of the handler that prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from faust.types import TP, EventT

log = logging.getLogger(__name__)

#: A partition with records but without progress for this long is fetched again.
STALL_S = 10.0


def write_under(stream: faust.Stream[Any], event: EventT[Any], write: Callable[[], None]) -> None:
    """Run `write` (table writes) with `event` as the stream's current event, then put the
    previous current event back (see above)."""
    previous = stream.current_event
    stream._set_current_event(event)
    try:
        write()
    finally:
        stream._set_current_event(previous)


def quiet_root_logger() -> None:
    """Undo the spinner's DEBUG root level (see above); the printing handlers keep theirs."""
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset consumption of `tp` resumed from, as Faust's consumer knows it."""
    committed = cast(Any, app.consumer)._committed_offset.get(tp)
    return int(committed) if committed is not None else None


def _forget_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Take [start, end) out of the offsets Faust would commit past as a gap (#606)."""
    gaps = cast(Any, app.consumer)._gap.get(tp)
    if gaps:
        gaps.chop(start, end)


def _accept_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Let Faust commit past a confirmed hole [start, end). After a seek Faust counts the
    hole from one past the seek offset, so a hole starting there would hold the commit
    back for ever."""
    cast(Any, app.consumer)._gap[tp].addi(start, end)


class OffsetSource(Protocol):
    """Offsets straight from the broker, off Faust's consumer (`EndOffsets`)."""

    async def __call__(self, tps: Iterable[TP]) -> Mapping[TP, int]: ...

    async def first_offset(self, tp: TP, offset: int) -> int | None: ...


@dataclass
class DeliveryGuard:
    """One agent's check that no record of its topics is skipped (see the module text).

    `accept` is called for every event, in order, before the agent uses it; `settle` after
    each batch resolves the holes it found; `watch` runs from a timer."""

    app: faust.App
    topics: frozenset[str]
    offsets: OffsetSource
    #: Called with the topic of every hole found.
    on_gap: Callable[[str], None] = lambda topic: None
    #: The next offset expected per partition.
    _next: dict[TP, int] = field(default_factory=dict)
    #: Holes found since the last `settle`: tp -> (first missing, first delivered after).
    _found: dict[TP, tuple[int, int]] = field(default_factory=dict)
    #: Partitions sought back, and the offset the re-read must deliver first.
    _pending: dict[TP, int] = field(default_factory=dict)
    _progress_at: dict[TP, float] = field(default_factory=dict)
    _stall_check_at: float = 0.0

    def accept(self, tp: TP, offset: int) -> bool:
        """True when the agent may use the record at `offset`; False for a redelivery of
        something already used, or for a record past a hole that is being read again."""
        pending = self._pending.get(tp)
        if pending is not None:
            if offset != pending:
                return False  # fetched before the seek back took effect
            del self._pending[tp]
            return self._advance(tp, offset)
        if tp in self._found:
            return False  # past a hole: read again after `settle`
        expected = self._next.get(tp)
        if expected is None:
            expected = committed_offset(self.app, tp)
        if expected is None or offset == expected:
            return self._advance(tp, offset)
        if offset < expected:
            return False  # already used: a redelivery
        self._found[tp] = (expected, offset)
        _forget_faust_gap(self.app, tp, expected, offset)
        self.on_gap(tp.topic)
        return False

    def settling(self, partition: int) -> bool:
        """Whether a hole of this partition number is being read again: what the agent
        knows of its envoys may lag behind, so liveness waits."""
        return any(tp.partition == partition for tp in (*self._found, *self._pending))

    def _advance(self, tp: TP, offset: int) -> bool:
        self._next[tp] = offset + 1
        self._progress_at[tp] = time.monotonic()
        return True

    async def settle(self) -> None:
        """For each hole found: ask the broker which record really comes first at the
        hole, accept what is not in the log (deleted, compacted, transaction markers),
        and seek back to that record so that it is read again."""
        found, self._found = self._found, {}
        actives = self.app.assignor.assigned_actives()
        for tp, (missing, delivered) in found.items():
            if tp not in actives:
                continue  # moving away: the next owner starts from the committed offset
            first = await self.offsets.first_offset(tp, missing)
            target = missing if first is None else min(first, delivered)
            if target > missing:
                _accept_faust_gap(self.app, tp, missing, target)
                self._next[tp] = target
            log.warning(
                "%s[%d]: offsets %d..%d were not delivered; %s",
                tp.topic,
                tp.partition,
                missing,
                delivered - 1,
                f"{target - missing} not in the log, reading again from {target}"
                if target > missing
                else "reading them again",
            )
            self._pending[tp] = target
            await self.app.consumer.seek(tp, target)

    def position(self, tp: TP) -> int:
        """The next offset to process: past what was used, or where consumption resumed."""
        known = self._next.get(tp)
        if known is not None:
            return known
        return committed_offset(self.app, tp) or 0

    def forget(self, tps: Iterable[TP]) -> None:
        """On revocation: the partition may come back after another worker moved it on."""
        for tp in tps:
            for state in (self._next, self._found, self._pending, self._progress_at):
                state.pop(tp, None)

    async def watch(self) -> None:
        """Every STALL_S: seek each partition that has records it does not progress on to
        where it stands, which restarts the fetch (what comes twice is a redelivery)."""
        now = time.monotonic()
        if now - self._stall_check_at < STALL_S or self.app.rebalancing:
            return
        self._stall_check_at = now
        assigned = [tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.topics]
        if not assigned:
            return
        ends = await self.offsets(assigned)
        for tp in assigned:
            position = self.position(tp)
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
                self._found.pop(tp, None)
                self._pending[tp] = position
                await self.app.consumer.seek(tp, position)
