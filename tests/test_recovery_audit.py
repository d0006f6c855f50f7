"""The stores' recovery audit and resumable offsets (`faust_compat`), against the
real broker: a recovery that missed records is completed from the changelog itself, and
a store keeps what it holds of partitions that moved away, exact up to its offset.

The loss the audit guards against (faust-streaming's recovery reading a partition from
its start and leaving its oldest records out) was seen once in the long chaos soak and
is not reproducible on demand, so here the store is put in the state such a recovery
leaves: keys missing, one deleted key still there."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from processor.endoffsets import CALL_TIMEOUT_S, EndOffsets
from processor.faust_compat import (
    AuditedRocksDBStore,
    ChangelogTable,
    ClientClosed,
    ResumableMemoryStore,
    _PartitionDB,
)
from tests.harness import free_port, produce


def memory_table(bootstrap: str, partitions: int = 1) -> tuple[Any, ResumableMemoryStore, str]:
    table, store, changelog = new_table(bootstrap, "memory://", partitions)
    assert isinstance(store, ResumableMemoryStore)
    return table, store, changelog


def new_table(
    bootstrap: str, store_url: str, partitions: int = 1, datadir: Path | None = None
) -> tuple[Any, Any, str]:
    app = faust.App(
        f"audit-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store=store_url,
        datadir=str(datadir) if datadir else None,
        Table=ChangelogTable,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table("t", default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    return table, table.data, table.changelog_topic.get_topic_name()


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(go())


def audit(store: Any, bootstrap: str, active: set[TP]) -> None:
    async def go() -> None:
        reader = EndOffsets(bootstrap, {})
        store.reader = reader
        try:
            await store.on_recovery_completed(active, set())
        finally:
            await reader.close()

    asyncio.run(go())


def test_an_audit_puts_back_what_a_recovery_missed(kafka_bootstrap: str, caplog: Any) -> None:
    _, store, changelog = memory_table(kafka_bootstrap)
    create_topic(kafka_bootstrap, changelog, 1)
    log = [(b"k1", b"v1"), (b"k2", b"v2"), (b"k1", b"v1b"), (b"k3", b"v3"), (b"k2", None)]
    produce(kafka_bootstrap, [(changelog, k, v) for k, v in [*log, (b"k4", b"v4")]])
    tp = TP(changelog, 0)
    # Recovery asks where to start (nothing held: from the start), then reads; this one
    # took only the last records, and an older copy of k2 was left in the store.
    assert store.persisted_offset(tp) == -1
    store.data.update({b"k1": b"v1b", b"k2": b"v2", b"k4": b"v4"})
    store.set_persisted_offset(tp, 5)
    reported: list[tuple[str, int]] = []
    store.on_repair = lambda table, keys: reported.append((table, keys))

    audit(store, kafka_bootstrap, {tp})

    assert dict(store.data) == {b"k1": b"v1b", b"k3": b"v3", b"k4": b"v4"}
    assert store.repaired == 2  # k3 put back, k2 deleted as its tombstone says
    assert reported == [("t", 2)]  # vigo_recovery_repairs_total{table="t"}
    assert "missed the newest record of 2 keys (faust-streaming recovery), e.g. 'k3', 'k2'" in (
        caplog.text
    )
    assert store.persisted_offset(tp) == 5
    # Audited: a second completion reads nothing again and changes nothing.
    store.data[b"k9"] = b"written since"
    audit(store, kafka_bootstrap, {tp})
    assert store.repaired == 2 and store.data[b"k9"] == b"written since"


def test_an_audit_of_a_complete_recovery_changes_nothing(kafka_bootstrap: str) -> None:
    _, store, changelog = memory_table(kafka_bootstrap)
    create_topic(kafka_bootstrap, changelog, 1)
    produce(kafka_bootstrap, [(changelog, b"a", b"1"), (changelog, b"b", b"2")])
    tp = TP(changelog, 0)
    # Held up to offset 0 before this rebalance; the recovery read offset 1.
    store.data[b"a"] = b"1"
    store.set_persisted_offset(tp, 0)
    assert store.persisted_offset(tp) == 0
    store.data[b"b"] = b"2"
    store.set_persisted_offset(tp, 1)

    audit(store, kafka_bootstrap, {tp})

    assert store.repaired == 0 and dict(store.data) == {b"a": b"1", b"b": b"2"}


def test_a_partition_that_moved_away_is_kept_and_resumed_from_its_offset(
    kafka_bootstrap: str,
) -> None:
    _, store, changelog = memory_table(kafka_bootstrap, partitions=2)
    mine, moved = TP(changelog, 0), TP(changelog, 1)
    store.data.update({b"on-0": b"x", b"on-1": b"y"})
    store.set_persisted_offset(mine, 7)
    store.set_persisted_offset(moved, 3)
    store.set_persisted_offset(moved, 2)  # an older acknowledgement never goes back

    asyncio.run(store.on_recovery_completed({mine}, set()))

    # Faust's memory store would delete on-1 here and Recovery would then resume partition
    # 1 from whatever offset it kept; this one keeps it and says where it is applied up to.
    assert dict(store.data) == {b"on-0": b"x", b"on-1": b"y"}
    assert store.persisted_offset(moved) == 3
    assert store.persisted_offset(TP(changelog, 5)) == -1


def test_an_unreachable_broker_leaves_the_audit_for_the_next_recovery(
    kafka_bootstrap: str, caplog: Any
) -> None:
    _, store, changelog = memory_table(kafka_bootstrap)
    create_topic(kafka_bootstrap, changelog, 1)
    produce(kafka_bootstrap, [(changelog, b"a", b"1")])
    tp = TP(changelog, 0)
    assert store.persisted_offset(tp) == -1  # the recovery read nothing: a is missing

    audit(store, f"127.0.0.1:{free_port()}", {tp})  # one warning line, no exception
    assert b"a" not in store.data
    assert "recovery not audited yet" in caplog.text

    audit(store, kafka_bootstrap, {tp})  # the next completion audits from the same start
    assert store.data[b"a"] == b"1" and store.repaired == 1


def test_a_rocksdb_store_is_audited_too(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A fresh RocksDB node reads every partition from its start, as the memory store
    does: its recovery is audited the same way (repairs go into the partition's DB)."""
    _, store, changelog = new_table(kafka_bootstrap, "rocksdb://", datadir=tmp_path)
    assert isinstance(store, AuditedRocksDBStore)
    create_topic(kafka_bootstrap, changelog, 1)
    produce(kafka_bootstrap, [(changelog, b"k1", b"v1"), (changelog, b"k2", b"v2")])
    produce(kafka_bootstrap, [(changelog, b"k1", None), (changelog, b"k3", b"v3")])
    tp = TP(changelog, 0)
    assert store.persisted_offset(tp) is None  # a fresh node: read from the start
    db = _PartitionDB(store._db_for_partition(0))
    db[b"k1"], db[b"k3"] = b"v1", b"v3"  # missed: k1's tombstone and k2
    store.set_persisted_offset(tp, 3)

    audit(store, kafka_bootstrap, {tp})

    assert [db.get(k) for k in (b"k1", b"k2", b"k3")] == [None, b"v2", b"v3"]
    assert store.repaired == 2 and store.persisted_offset(tp) == 3


def test_closing_under_a_read_ends_it_and_stops_the_client(
    kafka_bootstrap: str, caplog: Any
) -> None:
    """A worker stopped during a recovery audit: the close waits for the read (which
    notices between fetches), stops the client, and starts no other. Before, the read
    started a new client after the close and the loop's end logged aiokafka's "Unclosed
    AIOKafkaConnection" and a traceback."""
    changelog = f"close-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, changelog, 1)
    produce(kafka_bootstrap, [(changelog, b"k1", b"v1"), (changelog, b"k2", b"v2")])
    tp = TP(changelog, 0)

    async def go() -> None:
        reader = EndOffsets(kafka_bootstrap, {})
        read: list[Any] = []
        # Up to offset 100 of a log of 2: the read waits on fetches until its deadline.
        reading = asyncio.ensure_future(reader.read(tp, 0, 100, 120, read.extend))
        for _ in range(200):
            if read:
                break
            await asyncio.sleep(0.05)
        assert [key for _, key, _ in read] == [b"k1", b"k2"]
        started = time.monotonic()
        await reader.close()
        assert reader._client is None  # stopped, not left to the loop's close
        with pytest.raises(ClientClosed):  # the audit leaves the range, saying why
            await asyncio.wait_for(reading, CALL_TIMEOUT_S)
        assert time.monotonic() - started < CALL_TIMEOUT_S
        with pytest.raises(ClientClosed):  # no client starts after the close
            await reader([tp])
        assert reader._client is None and reader.health.reachable  # not an outage

    with caplog.at_level(logging.DEBUG):
        asyncio.run(go())
    assert "Unclosed" not in caplog.text and "Traceback" not in caplog.text
