"""Offsets from a client of our own, outside Faust's consumer.

Asking Faust's consumer thread for end offsets while the group rebalances was seen to
leave retained partitions unfetched (faust-streaming 0.15.3); a separate, group-less
client keeps the catch-up check off that path. The same client answers the delivery
guard's question "which record really comes first at or after this offset?", straight
from the broker, so that a hole in what Faust delivered is judged by the log itself, and
reads a changelog range for the stores' recovery audit (`faust_compat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

from processor.faust_compat import ClientClosed
from processor.faust_compat.delivery import BROKER_ERRORS, BrokerHealth

#: How long the broker is given to return the first record after an offset.
PROBE_TIMEOUT_MS = 3000
#: Records asked for per fetch when reading a range.
READ_BATCH = 20_000
#: The longest any one call to the broker may take (aiokafka's own request timeout is
#: 40 s, and some calls, `position` after a reset, have none).
CALL_TIMEOUT_S = 15.0

T = TypeVar("T")
log = logging.getLogger(__name__)

#: (offset, key, value) as they are in the log; value None is a tombstone.
RawRecord = tuple[int, bytes | None, bytes | None]


class EndOffsets:
    def __init__(self, bootstrap_servers: str, options: Mapping[str, object]) -> None:
        self._bootstrap = bootstrap_servers
        self._options = dict(options)
        self._client: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: Whether the broker answered: marked by every call, read by `/readyz`.
        self.health = BrokerHealth()

    async def _call(self, what: str, call: Callable[[AIOKafkaConsumer], Awaitable[T]]) -> T:
        """One call to the broker under a deadline (a hung call must not stall a timer);
        on an error the health is marked and the client dropped (it may have been cut
        short half-way), so the next call starts a fresh one."""
        if self._closed:
            raise ClientClosed(f"{what}: the worker is stopping")
        try:
            client = await self._started()
            return await asyncio.wait_for(call(client), CALL_TIMEOUT_S)
        except BROKER_ERRORS as exc:
            self.health.failed(what, exc)
            await self._drop()
            raise

    async def _started(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._options,
            )
            try:
                await asyncio.wait_for(client.start(), CALL_TIMEOUT_S)
            except Exception:
                await _stop_quietly(client)
                raise
            self._client = client
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _stop_quietly(client)

    async def __call__(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = list(tps)
        targets = [TopicPartition(tp.topic, tp.partition) for tp in wanted]
        async with self._lock:
            ends = await self._call("end offsets", lambda client: client.end_offsets(targets))
        self.health.answered()
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in wanted}

    async def probe(self) -> None:
        """Whether the broker answers again, asked while it did not."""
        async with self._lock:
            await self._call("metadata", lambda client: client.topics())
        self.health.answered()

    async def first_offset(self, tp: TP, offset: int) -> int | None:
        """The offset of the first record of `tp` at or after `offset` (the log start if
        `offset` was deleted); None when the broker returned nothing in time."""
        target = TopicPartition(tp.topic, tp.partition)

        async def probe(client: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
            client.assign([target])
            try:
                client.seek(target, offset)
                batch: dict[TopicPartition, list[Any]]
                batch = await client.getmany(target, timeout_ms=PROBE_TIMEOUT_MS, max_records=1)
                return batch
            finally:
                client.unsubscribe()

        async with self._lock:
            batch = await self._call("first offset", probe)
        records = batch.get(target, [])
        return int(records[0].offset) if records else None

    async def read(
        self,
        tp: TP,
        start: int,
        end: int,
        timeout_s: float,
        on_batch: Callable[[list[RawRecord]], None],
    ) -> bool:
        """Hand the records of `tp` from `start` (or the log start, if compaction or
        retention removed it) up to `end`, exclusive, to `on_batch` as they are fetched;
        False if the broker did not give them all within `timeout_s`."""
        target = TopicPartition(tp.topic, tp.partition)
        deadline = time.monotonic() + timeout_s
        async with self._lock:
            client = await self._call("read", _returned)
            client.assign([target])
            try:
                client.seek(target, max(start, 0))
                while await self._call("read", lambda c: c.position(target)) < end:
                    if time.monotonic() > deadline:
                        return False
                    batch = await self._call(
                        "read",
                        lambda c: c.getmany(
                            target, timeout_ms=PROBE_TIMEOUT_MS, max_records=READ_BATCH
                        ),
                    )
                    fetched = batch.get(target, [])
                    on_batch([(r.offset, r.key, r.value) for r in fetched if r.offset < end])
            finally:
                with contextlib.suppress(Exception):  # dropped after an error: stopped
                    client.unsubscribe()
        return True

    async def close(self) -> None:
        """No call starts after this one (`ClientClosed`), and the client is stopped
        once the call in flight returns (a read raises between its fetches, each at
        most `PROBE_TIMEOUT_MS`): a client stopped under a read, or started again by a read
        after it, was left to the event loop's close, which logged aiokafka's "Unclosed
        AIOKafkaConnection" and a traceback on every stop in the middle of a recovery
        audit."""
        self._closed = True
        try:
            await asyncio.wait_for(self._lock.acquire(), CALL_TIMEOUT_S)
        except TimeoutError:  # a call that outlives its own deadline: stop it under it
            await self._drop()
            return
        try:
            await self._drop()
        finally:
            self._lock.release()


async def _returned(client: AIOKafkaConsumer) -> AIOKafkaConsumer:
    return client


async def _stop_quietly(client: AIOKafkaConsumer) -> None:
    """Stop a client that may be half-started or cut short: its errors are no news."""
    try:
        await asyncio.wait_for(client.stop(), CALL_TIMEOUT_S)
    except Exception as exc:  # cleanup of a client already given up
        log.debug("end offsets client not stopped cleanly: %r", exc)
