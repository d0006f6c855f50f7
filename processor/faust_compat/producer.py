"""Writes in producer batches: `BatchProducer` sends a partition's records as aiokafka
producer batches, and `TableWriter` writes a batch of table entries into the store and
into the changelog at once, where Faust sends one changelog record per table write.
Why and how: docs/faust-traps.md#table-writes-in-batches
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import TP, TableT

from processor.faust_compat.stores import partition_writer

#: A record as sent: key and value bytes (a value None is a tombstone).
Record = tuple[bytes | None, bytes | None]


@dataclass
class BatchProducer:
    """Sends records to a partition in as few producer batches as they fit in."""

    app: faust.App

    async def send(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[int, asyncio.Future[Any]]]:
        """Queue `records` in order; per batch, its record count and the future of its
        metadata (the base offset; None without broker acknowledgements)."""
        producer = cast(Any, self.app.producer)._ensure_producer()
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(
                    (
                        batch.record_count(),
                        await producer.send_batch(batch, topic, partition=partition),
                    )
                )
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            sent.append(
                (batch.record_count(), await producer.send_batch(batch, topic, partition=partition))
            )
        return sent

    async def send_keyed(self, topic: str, record: Record) -> asyncio.Future[Any]:
        """One record, partitioned by its key as Faust would; the future of its metadata.
        Raises at once when the producer refuses it (too large for a request)."""
        producer = cast(Any, self.app.producer)._ensure_producer()
        key, value = record
        future: asyncio.Future[Any] = await producer.send(topic, value=value, key=key)
        return future


#: Sends (topic, partition, records) until the broker took them; per batch taken, its
#: record count and metadata (`processor.outputs.Outputs.deliver`).
Deliver = Callable[[str, int, Sequence[Record]], Awaitable[list[tuple[int, Any]]]]


@dataclass
class TableWriter:
    """Writes one table's entries in batches (docs/faust-traps.md): into the store, and
    into the changelog as one producer batch per partition; `write` returns when the
    broker acknowledged them."""

    table: TableT[Any, Any]
    producer: BatchProducer
    #: How the changelog records are sent; without it, once, and a failure raises.
    deliver: Deliver | None = None
    _write_partition: Callable[[int, list[tuple[Any, Any]]], None] = field(init=False)

    def __post_init__(self) -> None:
        self._write_partition = partition_writer(self.table)

    async def write(self, entries: Iterable[tuple[int, Any, Any]]) -> None:
        """Write (partition, key, value) entries; a later entry of a key wins. A value
        None deletes the key: removed from the store (memory or RocksDB), and a tombstone
        (a changelog record with no value) that recovery and compaction honour."""
        table = cast(Any, self.table)
        store, changelog = table.data, table.changelog_topic
        by_partition: dict[int, list[tuple[Any, Any]]] = {}
        for partition, key, value in entries:
            by_partition.setdefault(partition, []).append((key, value))
        records: dict[int, list[Record]] = {}
        write = self._write_partition
        for partition, pairs in by_partition.items():
            write(partition, pairs)
            records[partition] = self._changelog_records(pairs)
        topic = changelog.get_topic_name()
        last: dict[int, int] = {}
        for partition, count, metadata in await self._send(topic, records):
            if metadata is not None:
                last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
        for partition, offset in last.items():
            store.set_persisted_offset(TP(topic, partition), offset)

    async def _send(
        self, topic: str, records: dict[int, list[Record]]
    ) -> list[tuple[int, int, Any]]:
        """(partition, record count, metadata) per batch the broker took."""
        if self.deliver is not None:
            deliver = self.deliver
            taken = await asyncio.gather(*(deliver(topic, p, r) for p, r in records.items()))
            return [
                (partition, count, metadata)
                for partition, batches in zip(records, taken, strict=True)
                for count, metadata in batches
            ]
        sent = [
            (partition, count, future)
            for partition, batch in records.items()
            for count, future in await self.producer.send(topic, partition, batch)
        ]
        done = await asyncio.gather(*(future for _, _, future in sent))
        return [(p, count, m) for (p, count, _), m in zip(sent, done, strict=True)]

    def _changelog_records(self, pairs: list[tuple[Any, Any]]) -> list[Record]:
        """The bytes Faust would send; raw bytes keys and values as they are (Faust's
        serializer registry costs more per record than the rest of the write)."""
        table = cast(Any, self.table)
        key_serializer, value_serializer = table.key_serializer, table.value_serializer
        raw = key_serializer == "raw" and value_serializer == "raw"
        if raw and all(type(k) is bytes and (v is None or type(v) is bytes) for k, v in pairs):
            return pairs
        changelog = table.changelog_topic
        return [
            (
                changelog.prepare_key(key, key_serializer)[0],
                None if value is None else changelog.prepare_value(value, value_serializer)[0],
            )
            for key, value in pairs
        ]
