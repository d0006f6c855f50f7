"""Input in batches (`InputBatches`): Faust hands every fetched record to the agents one at
a time, at a cost per record larger than the envoy agent's own work; the envoy agent's
topics are handed over in the batches the consumer fetched them in instead.
Why and how: docs/faust-traps.md#per-record-overhead and
docs/faust-traps.md#commit-and-linger-timing
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)

#: The envoy agent commits when it has worked off what was fetched, at most this often.
COMMIT_CAUGHT_UP_S = 0.5


@dataclass
class InputBatches:
    """One agent's topics, delivered in the batches the consumer fetched them in
    (docs/faust-traps.md). `install` before the worker starts; the agent loops over
    `batches()` and calls `ack` once a batch's outputs and states are acknowledged."""

    app: faust.App
    topics: frozenset[str]
    #: Records handed to the agent at most at once (several fetches are merged).
    max_records: int
    #: Fetched batches waiting for the agent: the drain loop waits when it is full.
    queue_size: int = 4
    _queue: asyncio.Queue[list[Message]] = field(init=False)
    _committed_at: float = 0.0

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)

    def install(self) -> None:
        """Drain the consumer Faust creates next (the worker's) through `_drain`."""
        app = cast(Any, self.app)
        new_consumer = app._new_consumer

        def consumer_draining_in_batches() -> Any:
            consumer = new_consumer()

            async def drain(fetcher: Any) -> None:
                await self._drain(consumer, fetcher)

            consumer._drain_messages = drain
            return consumer

        app._new_consumer = consumer_draining_in_batches

    async def batches(self) -> AsyncIterator[list[Message]]:
        """The next records for the agent, tracked as in progress until `ack`."""
        while True:
            batch = list(await self._queue.get())
            while len(batch) < self.max_records and not self._queue.empty():
                batch.extend(self._queue.get_nowait())
            generation = self.app.consumer_generation_id
            if not self.app.flow_control.is_active():
                continue  # a rebalance: the owner reads them again from the committed offset
            current = [m for m in batch if m.generation_id == generation]
            if not current:
                continue
            # One unacked message holds a rebalance until the batch is acked (`ack` acks
            # them all); tracking each costs a WeakSet entry per record.
            last = current[-1]
            last.tracked = True
            cast(Any, self.app.consumer)._unacked_messages.add(last)
            read_offsets = self.app.monitor.tp_read_offsets  # the consumer lag metric
            for message in current:
                read_offsets[message.tp] = message.offset
            yield current

    def ack(self, messages: Sequence[Message]) -> None:
        """`Consumer.ack` for a batch: the same bookkeeping (acked offsets per partition,
        at or above the committed one, each once), done per partition instead of per
        record under Faust's lock."""
        consumer = cast(Any, self.app.consumer)
        by_tp: dict[Any, list[int]] = {}
        for message in messages:
            if not message.acked:
                message.acked = True
                by_tp.setdefault(message.tp, []).append(message.offset)
        if not by_tp:
            return
        acks_enabled_for = self.app.topics.acks_enabled_for
        with ack_lock:
            for tp, offsets in by_tp.items():
                if not acks_enabled_for(tp.topic):
                    continue
                committed = consumer._committed_offset[tp]
                acked_index = consumer._acked_index[tp]
                new: list[int] = []
                for offset in offsets:
                    if (committed is None or offset >= committed) and offset not in acked_index:
                        acked_index.add(offset)
                        new.append(offset)
                consumer._acked[tp].extend(new)
                consumer._n_acked += len(new)
            for message in messages[-1:]:
                consumer._unacked_messages.discard(message)  # the one `batches` tracked
            notify(consumer._waiting_for_ack)

    def idle(self) -> bool:
        """Nothing fetched is waiting for the agent: it has worked off its backlog."""
        return self._queue.empty()

    async def commit_when_caught_up(self) -> None:
        """Commit as soon as nothing is waiting (at most every `COMMIT_CAUGHT_UP_S`)
        rather than at Faust's next interval (2.8 s): the committed offsets, which
        operators' lag monitors read, then show a worked-off backlog at once, and a
        restart reads less again."""
        now = time.monotonic()
        if self._queue.empty() and now - self._committed_at >= COMMIT_CAUGHT_UP_S:
            self._committed_at = now
            await self.app.consumer.commit()

    async def _fetched(self, consumer: Any) -> AsyncIterator[tuple[Any, Message]]:
        """Faust's `Consumer.getmany` (0.15.3), except that a partition's end offset is
        read and tracked (the lag metric) once per fetch, at its first record handed on,
        not for every record. Which partitions are handed on is decided per record, as
        there: the active set changes while the records are handed on (recovery resumes
        the changelogs), and a record left out here is never fetched again."""
        records, active_partitions = await consumer._wait_next_records(1.0)
        generation_id = self.app.consumer_generation_id
        if records is None or consumer.should_stop:
            return
        if not consumer.flow_active:
            try:
                await consumer.perform_seek()  # back to the committed offsets
            except Exception as exc:
                log.warning("exception performing seek when flow not active %r", exc)
            return
        track_end_offset = self.app.monitor.track_tp_end_offset
        to_message = consumer._to_message
        tracked: set[Any] = set()
        for tp, record in consumer.scheduler.iterate(records):
            if not consumer.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if (
                active_partitions is None
                or tp in active_partitions
                or tp in consumer._buffered_partitions
            ):
                if tp not in tracked:
                    tracked.add(tp)
                    track_end_offset(tp, consumer.highwater(tp))
                yield tp, to_message(tp, record)

    async def _drain(self, consumer: Any, fetcher: Any) -> None:
        """Faust's `Consumer._drain_messages` (0.15.3), except that records of `topics`
        are queued per fetch instead of being passed one by one to the conductor."""
        callback = consumer.callback
        read_offset = consumer._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = consumer._commit_every
        consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                fetched: list[Message] = []
                async for tp, message in self._fetched(consumer):
                    offset = message.offset
                    previous = read_offset[tp]
                    if previous is not None and offset < previous:
                        continue  # already read (Faust drops these too)
                    if previous and offset - previous > 1 and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, previous + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if tp.topic in self.topics:
                        fetched.append(message)
                    else:
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    read_offset[tp] = offset
                if fetched:
                    await self._queue.put(fetched)
        except consumer.consumer_stopped_errors:
            if self.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.app.should_stop:
                return
            raise
