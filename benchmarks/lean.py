"""The lean design: the worker's per-event work (`floor.WorkerWork`) on bare aiokafka,
with no framework around it, as a hand-written worker would run it at the least
(`bench_throughput.py` times it beside the worker and the peer).

Per fetched batch: each record decoded, its envoy's stored record read from a dict,
the rules applied, the new record encoded and held, the status change sent; once a
second (the worker's `processor.commit_interval`) the held records are sent to a
changelog topic, one per envoy changed since the last time, every send acknowledged,
then the offsets committed. What it leaves out, and the worker does: a store (RocksDB),
the per-partition indexes, the resource counters, liveness, dead letters, metrics,
rebalance and recovery handling. So its CPU per event is a lower bound of any worker
that keeps the SPEC's state, whatever runs it.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from benchcommon import backlog_consumer
from floor import WorkerWork

from projections.envoy import Rules

LEAN = "lean: aiokafka + the worker's per-event work + changelog and changes, no store"
CHECKPOINT_S = 1.0


async def lean_loop(
    bootstrap: str, topic: str, changelog: str, changes: str, total: int
) -> tuple[int, float, float, float]:
    """Work off `total` records; returns (records, seconds, seconds to the first record,
    CPU seconds of this process)."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    consumer = backlog_consumer(bootstrap, topic, "lean")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1_000_000
    )
    await consumer.start()
    await producer.start()
    apply = WorkerWork(Rules(default_interval_s=300)).apply
    held: dict[tuple[int, bytes], bytes] = {}
    sent: list[asyncio.Future[object]] = []  # until acknowledged
    seen = 0
    first: float | None = None
    checkpoint_at = time.monotonic() + CHECKPOINT_S

    async def send(topic: str, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """In producer batches, as the worker writes (`faust_compat.BatchProducer`)."""
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            sent.append(await producer.send_batch(batch, topic, partition=partition))

    async def checkpoint() -> None:
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for (partition, key), record in held.items():
            by_partition.setdefault(partition, []).append((key, record))
        held.clear()
        for partition, records in by_partition.items():
            await send(changelog, partition, records)
        await asyncio.gather(*sent)
        sent.clear()
        await consumer.commit()

    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if first is None and batch:
                first = time.perf_counter()
            for tp, messages in batch.items():
                partition = tp.partition
                published: list[tuple[bytes, bytes]] = []
                for m in messages:
                    seen += 1
                    record, change = apply(m.key, m.value, partition, m.offset, m.timestamp)
                    if record is None:
                        continue
                    held[(partition, m.key)] = record
                    if change is not None:
                        published.append((m.key, change))
                await send(changes, partition, published)
            if time.monotonic() >= checkpoint_at:
                await checkpoint()
                checkpoint_at = time.monotonic() + CHECKPOINT_S
        await checkpoint()
    finally:
        await producer.stop()
        await consumer.stop()
    done = time.perf_counter()
    assert first is not None
    return seen, done - started, first - started, time.process_time() - cpu_started
