"""The lean design: the worker's per-event work (`floor.WorkerWork`) on bare aiokafka,
with no framework around it, as a hand-written worker would run it at the least
(`bench_throughput.py` times it beside the worker and the peer), in two variants:

- as the worker keeps state (`LEAN`): each new state encoded at once and held encoded;
  once a second (the worker's `processor.commit_interval`) the held records go to a
  changelog topic, one per envoy changed since the last time;
- with a decoded cache per checkpoint: new states held decoded, so an envoy that comes
  again before the checkpoint is neither decoded nor encoded again; the checkpoint every
  5 s, as the Quix peer's (its default `commit_interval`), and either when 2,048 envoys
  are held, the worker's bound (`LEAN_DECODED`: about 9 MiB decoded, Kafka Streams'
  record cache is 10 MiB by default), or only at those 5 s (`LEAN_DECODED_ALL`: every
  envoy the backlog touches in 5 s held decoded, 4.5 KB each: 135 MB for this benchmark's
  30,000, some 850 MB for a backlog of a 1,000,000-envoy fleet; not bounded memory, and
  against the memory goal of 1.5 KB per envoy in all).

Per fetched batch: each record decoded, its envoy's stored record read from a dict, the
rules applied, the status changes sent as producer batches. At a checkpoint: the
changelog records sent, every send acknowledged, then the offsets committed. What both
leave out, and the worker does: a store (RocksDB), the per-partition indexes, the
resource counters, liveness, dead letters, metrics, rebalance and recovery handling.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from benchcommon import backlog_consumer
from floor import WorkerWork

from projections.envoy import Rules

LEAN = "lean: aiokafka + the worker's per-event work + changelog and changes, no store"
LEAN_DECODED = "lean, states held decoded: checkpoint every 5 s or at 2,048 held"
LEAN_DECODED_ALL = "lean, states held decoded: checkpoint every 5 s, unbounded"
VARIANTS = (LEAN, LEAN_DECODED, LEAN_DECODED_ALL)
#: Checkpoint intervals: the worker's default, and the Quix peer's.
CHECKPOINT_S = {LEAN: 1.0, LEAN_DECODED: 5.0, LEAN_DECODED_ALL: 5.0}
#: At most this many envoys held between checkpoints (the worker's `MAX_HELD_ENVOYS`).
MAX_HELD = {LEAN: 2_048, LEAN_DECODED: 2_048, LEAN_DECODED_ALL: None}


async def lean_loop(
    bootstrap: str, topic: str, changelog: str, changes: str, total: int, variant: str = LEAN
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
    work = WorkerWork(Rules(default_interval_s=300))
    decoded = variant != LEAN
    max_held = MAX_HELD[variant]
    held: dict[tuple[int, bytes], bytes] = {}  # encoded at once (`LEAN`)
    sent: list[asyncio.Future[object]] = []  # until acknowledged
    seen = 0
    first: float | None = None
    interval = CHECKPOINT_S[variant]
    checkpoint_at = time.monotonic() + interval

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
        records = work.flush() if decoded else [(p, k, r) for (p, k), r in held.items()]
        held.clear()
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for partition, key, record in records:
            by_partition.setdefault(partition, []).append((key, record))
        for partition, pairs in by_partition.items():
            await send(changelog, partition, pairs)
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
                    if decoded:
                        change = work.hold(m.key, m.value, partition, m.offset, m.timestamp)
                    else:
                        record, change = work.apply(
                            m.key, m.value, partition, m.offset, m.timestamp
                        )
                        if record is not None:
                            held[(partition, m.key)] = record
                    if change is not None:
                        published.append((m.key, change))
                await send(changes, partition, published)
                if max_held is not None and len(work.held if decoded else held) >= max_held:
                    await checkpoint()
            if time.monotonic() >= checkpoint_at:
                await checkpoint()
                checkpoint_at = time.monotonic() + interval
        await checkpoint()
    finally:
        await producer.stop()
        await consumer.stop()
    done = time.perf_counter()
    assert first is not None
    return seen, done - started, first - started, time.process_time() - cpu_started
