"""A check that no record of an agent's topics is skipped (`DeliveryGuard`): faust-streaming
can resume fetching before it seeks, commits past any jump in the offsets it fetched
(upstream #216, #221, #312, #606) and can stop fetching a partition it keeps assigned.
Why and how: docs/faust-traps.md#skipped-records and
docs/faust-traps.md#unfetched-partitions

`BrokerHealth` is what the guards' calls to the broker (and the timers') learnt of it:
an error there is noted, `/readyz` answers 503, and the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import TP

#: The package's one logger, `processor.faust_compat`.
log = logging.getLogger(__package__)

#: A partition with records but without progress for this long is fetched again.
STALL_S = 10.0

#: What a call to the broker raises while it cannot be reached (aiokafka's connection
#: and timeout errors are KafkaErrors; Faust wraps a refused send in ProducerSendError).
BROKER_ERRORS = (KafkaError, OSError, asyncio.TimeoutError, ProducerSendError)
#: The longest a timer waits for one call to the broker (`BrokerHealth.attempt`).
ATTEMPT_DEADLINE_S = 30.0


class ClientClosed(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """A call to a client of ours after its `close`: the worker is stopping. A
    KafkaError, so every caller treats it as a call that did not get through (the
    recovery audit leaves its range for the next recovery), but not as an outage."""


class BrokerHealth:
    """Whether the broker answered the last call made to it from a timer or a guard
    (SPEC 11.4 "Broker outages"): `/readyz` answers 503 while it did not. One warning
    when an outage starts, one when it ends; the callers try again on their next tick."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def failed(self, what: str, exc: BaseException) -> None:
        if self.down_since is None and not isinstance(exc, ClientClosed):
            self.down_since = time.monotonic()
            log.warning("broker unreachable (%s: %r); retrying until it answers", what, exc)

    async def attempt(self, what: str, call: Awaitable[object]) -> None:
        """Await a timer's call to the broker under a deadline: an error or a hang ends
        the call (noted here), never the timer or the worker."""
        try:
            await asyncio.wait_for(call, ATTEMPT_DEADLINE_S)
        except BROKER_ERRORS as exc:
            self.failed(what, exc)

    def answered(self) -> None:
        if self.down_since is not None:
            log.info("broker reachable again after %.0f s", time.monotonic() - self.down_since)
            self.down_since = None


#: A log line names at most this many partitions (a worker may own hundreds).
LOGGED_PARTITIONS_MAX = 20

#: Per Faust consumer: the partitions its last seek found nothing committed for, and so
#: sought to the start of their log (`seek_uncommitted_to_log_start`).
_FROM_LOG_START: weakref.WeakKeyDictionary[Any, set[TP]] = weakref.WeakKeyDictionary()


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset consumption of `tp` resumed from, as Faust's consumer knows it: 0 for
    a partition it started at the log start since nothing was committed; None when
    Faust has not sought the partition yet."""
    consumer = cast(Any, app.consumer)
    committed = consumer._committed_offset.get(tp)
    if committed is not None:
        return int(committed)
    return 0 if tp in _FROM_LOG_START.get(consumer, ()) else None


def seek_uncommitted_to_log_start(app: faust.App) -> None:
    """Make the consumer Faust creates next start every agent partition that has nothing
    committed at the start of its log, each time Faust seeks to the committed offsets.

    Faust drops records it fetched around a rebalance (for a partition not active yet, or
    when the generation changed) and relies on its seek to the committed offsets to read
    them again; aiokafka's seek leaves a partition with no committed offset (or offset 0)
    where the fetch left it, so those records were never read: the chaos soak lost the
    first four outbox records that way. docs/faust-traps.md#skipped-records"""
    faust_app = cast(Any, app)
    new_consumer = faust_app._new_consumer

    def consumer_seeking_uncommitted_to_log_start() -> Any:
        consumer = new_consumer()
        seek_to_committed = consumer.seek_to_committed

        async def seek() -> Mapping[TP, int]:
            committed = await seek_to_committed()
            changelogs = faust_app.tables.changelog_topics
            acked = faust_app.topics.acks_enabled_for
            uncommitted = {
                TP(tp.topic, tp.partition)
                for tp, offset in committed.items()
                if not offset and tp.topic not in changelogs and acked(tp.topic)
            }
            # Only those a fetch moved on: a seek costs the fetcher its prefetched records
            # (and, measured, a second of latency after a worker's start).
            ordered = sorted(uncommitted)
            positions = await asyncio.gather(*(consumer.position(tp) for tp in ordered))
            moved = {tp: at for tp, at in zip(ordered, positions, strict=True) if at}
            if moved:
                # Offset 0, or the log start if retention removed it (auto_offset_reset);
                # in the consumer's own thread, as Faust's recovery seeks.
                named = [f"{tp.topic}[{tp.partition}]@{at}" for tp, at in moved.items()]
                log.info(
                    "nothing committed for %s%s: reading again from the log start",
                    ", ".join(named[:LOGGED_PARTITIONS_MAX]),
                    f" and {len(named) - LOGGED_PARTITIONS_MAX} more"
                    if len(named) > LOGGED_PARTITIONS_MAX
                    else "",
                )
                await consumer.seek_wait(dict.fromkeys(moved, 0))
            _FROM_LOG_START[consumer] = uncommitted
            return cast(Mapping[TP, int], committed)

        consumer.seek_to_committed = seek
        return consumer

    faust_app._new_consumer = consumer_seeking_uncommitted_to_log_start


def _forget_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Take [start, end) out of the offsets Faust would commit past as a gap (#606)."""
    gaps = cast(Any, app.consumer)._gap.get(tp)
    if gaps:
        gaps.chop(start, end)


def where_waiting(task: asyncio.Task[Any]) -> str:
    """The chain of coroutines a task is suspended in (each one's `cr_await`), outermost
    first, on one line: file:line function > ..."""
    if task.done():
        return "(ended)"
    frames: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(frames) < 50:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        where = "/".join(code.co_filename.split("/")[-2:])  # package/module.py
        frames.append(f"{where}:{frame.f_lineno} {code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(frames) or "(running, or not started)"


def _accept_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Let Faust commit past a confirmed hole [start, end). After a seek Faust counts the
    hole from one past the seek offset, so a hole starting there would hold the commit
    back for ever."""
    cast(Any, app.consumer)._gap[tp].addi(start, end)


class OffsetSource(Protocol):
    """Offsets straight from the broker, off Faust's consumer (`EndOffsets`)."""

    async def __call__(self, tps: Iterable[TP]) -> Mapping[TP, int]: ...

    async def first_offset(self, tp: TP, offset: int) -> int | None: ...

    async def probe(self) -> None:
        """One request the broker must answer (its metadata); marks `health`."""

    @property
    def health(self) -> BrokerHealth: ...


@dataclass
class DeliveryGuard:
    """One agent's check that no record of its topics is skipped (docs/faust-traps.md).

    `accept` is called for every event, in order, before the agent uses it; `settle` after
    each batch resolves the holes it found; `watch` runs from a timer."""

    app: faust.App
    topics: frozenset[str]
    offsets: OffsetSource
    #: Called with the topic of every hole found.
    on_gap: Callable[[str], None] = lambda topic: None
    #: The task of the agent that reads these topics (set by the agent when it starts):
    #: where it waits is logged with a stall, since a stall that fetching again does not
    #: end is the agent's own.
    agent: asyncio.Task[Any] | None = None
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
            try:
                first = await self.offsets.first_offset(tp, missing)
            except BROKER_ERRORS as exc:
                # Asked again after the next batch; until then the records past the hole
                # are refused and Faust commits nothing past it.
                self.offsets.health.failed("first offset", exc)
                self._found.setdefault(tp, (missing, delivered))
                continue
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
        tps = set(tps)
        for tp in tps:
            for state in (self._next, self._found, self._pending, self._progress_at):
                state.pop(tp, None)
        # Another owner may commit it meanwhile: Faust's next seek says where it starts.
        _FROM_LOG_START.get(self.app.consumer, set()).difference_update(tps)

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
        try:
            ends = await self.offsets(assigned)
        except BROKER_ERRORS as exc:  # tried again in STALL_S
            self.offsets.health.failed("end offsets", exc)
            return
        stalled = False
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
                stalled = True
                self._progress_at[tp] = now
                self._found.pop(tp, None)
                self._pending[tp] = position
                await self.app.consumer.seek(tp, position)
        if stalled and self.agent is not None:
            log.warning("the agent reading them is at: %s", where_waiting(self.agent))
