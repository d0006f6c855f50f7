"""A partition with nothing committed starts at the start of its log every time Faust
seeks to the committed offsets (`seek_uncommitted_to_log_start`), and the delivery guard
then expects offset 0 there.

Why: Faust drops records it fetched around a rebalance and counts on that seek to read
them again; aiokafka's `seek_to_committed` does not move a partition with no committed
offset, so they were lost. The chaos soak lost the first four outbox records (three
stale alerts and a threshold mail) that way. Here against the real broker, through a
real aiokafka group consumer: only Faust's two-line delegation to it is stood in."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.types import TP

from processor.faust_compat import DeliveryGuard, committed_offset, seek_uncommitted_to_log_start
from tests.harness import produce
from tests.test_recovery_audit import create_topic

CHANGELOG = "audit-changelog"


class FaustLikeConsumer:
    """Faust's consumer as far as the seek goes: `seek_to_committed` and `seek_wait`
    handed to the aiokafka consumer (Faust does the same in its consumer thread)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self._committed_offset: dict[TP, int] = {}

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        result: dict[TopicPartition, int | None] = await self.consumer.seek_to_committed()
        return result

    async def position(self, tp: TP) -> int:
        return int(await self.consumer.position(TopicPartition(tp.topic, tp.partition)))

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        for tp, offset in partitions.items():
            self.consumer.seek(TopicPartition(tp.topic, tp.partition), offset)


def app_with(consumer: FaustLikeConsumer, acked: set[str]) -> Any:
    app = SimpleNamespace(
        _new_consumer=lambda: consumer,
        tables=SimpleNamespace(changelog_topics={CHANGELOG}),
        topics=SimpleNamespace(acks_enabled_for=lambda topic: topic in acked),
    )
    seek_uncommitted_to_log_start(app)  # type: ignore[arg-type]
    app.consumer = app._new_consumer()
    return app


async def offsets_read(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[int]:
    """What the next fetch gives, until the end of the partition."""
    end = (await consumer.end_offsets([tp]))[tp]
    read: list[int] = []
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=5000)
        read += [record.offset for record in batch.get(tp, [])]
    return read


def test_a_partition_with_nothing_committed_is_read_again_from_its_log_start(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    outbox, inputs = f"{topic_prefix}alerts", f"{topic_prefix}runs"
    create_topic(kafka_bootstrap, outbox, 1)
    create_topic(kafka_bootstrap, inputs, 3)
    produce(kafka_bootstrap, [(outbox, b"a", b"%d" % i) for i in range(4)])
    produce(kafka_bootstrap, [(inputs, b"k", b"%d" % i) for i in range(4)])  # one partition

    async def go() -> None:
        never, committed = TopicPartition(outbox, 0), None
        aio = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=f"seek-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await aio.start()
        try:
            runs = [TopicPartition(inputs, p) for p in range(3)]
            aio.assign([never, *runs])
            (committed,) = [tp for tp in runs if (await aio.end_offsets([tp]))[tp] == 4]
            await aio.commit({committed: OffsetAndMetadata(2, "")})
            for _ in range(100):  # a fresh broker's group coordinator may answer late
                if await aio.committed(committed) == 2:
                    break
                await asyncio.sleep(0.1)
            # What Faust does before its seek: fetch, and drop what it fetched (the
            # committed partition from 0 or 2: the fetcher may have started before the
            # commit).
            assert await offsets_read(aio, never) == [0, 1, 2, 3]
            assert (await offsets_read(aio, committed))[-2:] == [2, 3]

            # Without the workaround the seek leaves the uncommitted partition at its end:
            # the four records are never read again.
            plain = FaustLikeConsumer(aio)
            await plain.seek_to_committed()
            assert await offsets_read(aio, never) == []

            consumer = FaustLikeConsumer(aio)
            app = app_with(consumer, acked={outbox, inputs})
            await app.consumer.seek_to_committed()
            assert await offsets_read(aio, never) == [0, 1, 2, 3]
            assert await offsets_read(aio, committed) == [2, 3]  # committed: as before
            # The guard now knows where the uncommitted partition starts.
            assert committed_offset(app, TP(outbox, 0)) == 0
            assert committed_offset(app, TP(inputs, 2 if committed.partition != 2 else 1)) == 0

            # Retention removed the head: the seek lands on the log start.
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_records({never: RecordsToDelete(3)})
            finally:
                await admin.close()
            await app.consumer.seek_to_committed()
            assert await offsets_read(aio, never) == [3]

            # Changelogs and topics no agent acks are Faust's recovery's: left alone.
            other = FaustLikeConsumer(aio)
            app_with(other, acked={inputs})
            await other.seek_to_committed()
            assert await offsets_read(aio, never) == []
        finally:
            await aio.stop()

    asyncio.run(go())


def test_the_guard_holds_a_record_past_the_log_start_of_an_uncommitted_partition() -> None:
    tp = TP("t.alerts", 0)

    class Sought:
        _committed_offset: dict[TP, int] = {}
        _gap: dict[TP, Any] = {}

        async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
            return {TopicPartition(tp.topic, tp.partition): None}

        async def position(self, tp: TP) -> int:
            return 4  # what Faust fetched and dropped

        async def seek_wait(self, partitions: dict[TP, int]) -> None:
            assert partitions == {tp: 0}

    app = app_with(Sought(), acked={tp.topic})  # type: ignore[arg-type]
    gaps: list[str] = []
    guard = DeliveryGuard(app, frozenset({tp.topic}), offsets=None, on_gap=gaps.append)  # type: ignore[arg-type]
    # Before Faust's seek nothing is known: the first record is taken as the start.
    assert guard.accept(tp, 4)
    guard.forget([tp])

    asyncio.run(app.consumer.seek_to_committed())
    # After it: offsets 0..3 are missing, the record at 4 waits for them.
    assert not guard.accept(tp, 4)
    assert guard._found == {tp: (0, 4)} and gaps == [tp.topic]
    guard.forget([tp])
    guard_b = DeliveryGuard(app, frozenset({tp.topic}), offsets=None)  # type: ignore[arg-type]
    assert guard_b.accept(tp, 4)  # revoked: the next seek says where it starts
