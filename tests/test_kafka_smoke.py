"""Smoke test of the real broker: keyed produce/consume round trip through 4 partitions.

Why: every processor guarantee (one worker owns all of an envoy's events) rests on Kafka
hashing a key to one partition; this proves the local broker and aiokafka agree on it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 4
COUNT = 100
KEYS = 10


async def _round_trip(
    bootstrap: str, topic: str
) -> tuple[dict[int, int], list[tuple[str, dict[str, Any], int]]]:
    """Create the topic, produce COUNT keyed messages, read them back.

    Returns the partition each message was acknowledged in (by seq) and the consumed
    (key, value, partition) triples.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
    finally:
        await admin.close()

    acked: dict[int, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        assert len(await producer.partitions_for(topic)) == PARTITIONS
        for seq in range(COUNT):
            key = f"envoy-{seq % KEYS:02d}"
            value = json.dumps({"envoy_id": key, "seq": seq}).encode()
            meta = await producer.send_and_wait(topic, value=value, key=key.encode())
            acked[seq] = meta.partition
    finally:
        await producer.stop()

    consumed: list[tuple[str, dict[str, Any], int]] = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(consumed) < COUNT and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for rec in records:
                    assert rec.key is not None and rec.value is not None
                    consumed.append((rec.key.decode(), json.loads(rec.value), tp.partition))
    finally:
        await consumer.stop()
    return acked, consumed


@pytest.mark.timeout(120)
def test_keyed_messages_round_trip(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}smoke"
    acked, consumed = asyncio.run(_round_trip(kafka_bootstrap, topic))

    assert len(consumed) == COUNT
    assert sorted(v["seq"] for _, v, _ in consumed) == list(range(COUNT))
    partition_of: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    for key, value, partition in consumed:
        seq: int = value["seq"]
        assert key == value["envoy_id"] == f"envoy-{seq % KEYS:02d}"
        assert partition == acked[seq]
        # same key -> same partition, and per-key order is preserved within it
        assert partition_of.setdefault(key, partition) == partition
        assert seq > last_seq.get(key, -1)
        last_seq[key] = seq
    assert len(partition_of) == KEYS
    assert len(set(partition_of.values())) > 1, "all keys hashed to one partition"
