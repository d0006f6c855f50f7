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
import time
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

#: How long the broker is given to return the first record after an offset.
PROBE_TIMEOUT_MS = 3000
#: Records asked for per fetch when reading a range.
READ_BATCH = 20_000

#: (offset, key, value) as they are in the log; value None is a tombstone.
RawRecord = tuple[int, bytes | None, bytes | None]


class EndOffsets:
    def __init__(self, bootstrap_servers: str, options: Mapping[str, object]) -> None:
        self._bootstrap = bootstrap_servers
        self._options = dict(options)
        self._client: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._options,
            )
            await client.start()
            self._client = client
        return self._client

    async def __call__(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = list(tps)
        async with self._lock:
            client = await self._started()
            ends = await client.end_offsets(
                [TopicPartition(tp.topic, tp.partition) for tp in wanted]
            )
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in wanted}

    async def first_offset(self, tp: TP, offset: int) -> int | None:
        """The offset of the first record of `tp` at or after `offset` (the log start if
        `offset` was deleted); None when the broker returned nothing in time."""
        target = TopicPartition(tp.topic, tp.partition)
        async with self._lock:
            client = await self._started()
            client.assign([target])
            client.seek(target, offset)
            batch = await client.getmany(target, timeout_ms=PROBE_TIMEOUT_MS, max_records=1)
            client.unsubscribe()
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
            client = await self._started()
            client.assign([target])
            try:
                client.seek(target, max(start, 0))
                while await client.position(target) < end:
                    if time.monotonic() > deadline:
                        return False
                    batch = await client.getmany(
                        target, timeout_ms=PROBE_TIMEOUT_MS, max_records=READ_BATCH
                    )
                    fetched = batch.get(target, [])
                    on_batch([(r.offset, r.key, r.value) for r in fetched if r.offset < end])
            finally:
                client.unsubscribe()
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None
