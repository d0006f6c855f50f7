"""End offsets from a client of our own, outside Faust's consumer.

Asking Faust's consumer thread for end offsets while the group rebalances was seen to
leave retained partitions unfetched (faust-streaming 0.15.3); a separate, group-less
client keeps the catch-up check off that path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP


class EndOffsets:
    def __init__(self, bootstrap_servers: str, options: Mapping[str, object]) -> None:
        self._bootstrap = bootstrap_servers
        self._options = dict(options)
        self._client: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, tps: Iterable[TP]) -> dict[TP, int]:
        wanted = list(tps)
        async with self._lock:
            if self._client is None:
                client = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    group_id=None,
                    enable_auto_commit=False,
                    **self._options,
                )
                await client.start()
                self._client = client
            ends = await self._client.end_offsets(
                [TopicPartition(tp.topic, tp.partition) for tp in wanted]
            )
        return {tp: ends[TopicPartition(tp.topic, tp.partition)] for tp in wanted}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
            self._client = None
