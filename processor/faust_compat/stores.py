"""Our table stores, installed through Faust's public `Table` setting (`ChangelogTable`):
`ResumableMemoryStore`, a memory store that keeps what it was given and resumes each
partition from the offset its data is applied up to, and `AuditedRocksDBStore`, Faust's
RocksDB store; both audit their recoveries (`recovery_audit`). The table applies only
records of its own changelog. Upstream PR #199 changed the memory store's pruning.
Why and how: docs/faust-traps.md#table-state-lost-around-rebalances
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, MutableMapping
from functools import partial
from typing import Any, cast

import faust
import rocksdict
from faust.stores import memory, rocksdb
from faust.types import TP, EventT, StoreT
from yarl import URL

from processor.faust_compat.recovery_audit import AuditsRecovery
from processor.faust_compat.rocksdb_budget import MEMORY_MIB_OPTION, budgeted_options
from processor.faust_compat.streams import under_partition

#: The package's one logger, `processor.faust_compat`.
log = logging.getLogger(__package__)


class ResumableMemoryStore(AuditsRecovery, memory.Store):  # type: ignore[type-arg]
    """A memory store that keeps every partition it was given, knows per partition the
    changelog offset its data is applied up to, and audits each recovery."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._applied: dict[TP, int] = {}
        self._init_audit()

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        data, applied = self.data, self._applied
        for event in batch:
            message = event.message
            key = to_key(event.key)
            if message.value is None:
                data.pop(key, None)
            else:
                data[key] = to_value(event.value)
            if message.offset > applied.get(message.tp, -1):
                applied[message.tp] = message.offset

    def persisted_offset(self, tp: TP) -> int | None:
        """Where Recovery starts reading, and the audit after it. -1 for a partition
        never seen: Recovery then reads it from its start, instead of from an offset it
        may have kept from a record it should not have taken."""
        applied = self._applied.get(tp, -1)
        self._recovery_starts(tp, applied)
        return applied

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        if offset > self._applied.get(tp, -1):
            self._applied[tp] = offset

    def _partition_data(self, tp: TP) -> Any:
        return self.data

    def _applied_up_to(self, tp: TP, offset: int) -> None:
        self.set_persisted_offset(tp, offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Prunes nothing: what is kept of a partition that moved away is exact up to its
        offset, and is brought up to date from there if the partition comes back."""
        await self._audit_recovery(active_tps)


class AuditedRocksDBStore(AuditsRecovery, rocksdb.Store):
    """Faust's RocksDB store, whose recoveries are audited too: a fresh node reads every
    partition from its start, as the memory store does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A copy: Faust pops keys out of the table's own options dict (see its Store).
        options = dict(kwargs.pop("options", None) or {})
        budget_mib = options.pop(MEMORY_MIB_OPTION, None)
        super().__init__(*args, options=options, **kwargs)
        if budget_mib is not None:
            self.rocksdb_options = budgeted_options(options, budget_mib, self.use_rocksdict)
        self._init_audit()

    def persisted_offset(self, tp: TP) -> int | None:
        offset = super().persisted_offset(tp)
        self._recovery_starts(tp, offset)
        return offset

    def _partition_data(self, tp: TP) -> Any:
        return _PartitionDB(self._db_for_partition(tp.partition))

    def _applied_up_to(self, tp: TP, offset: int) -> None:
        persisted = super().persisted_offset(tp)
        if persisted is None or offset > persisted:
            self.set_persisted_offset(tp, offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        await self._audit_recovery(active_tps)


def partition_reader(table: Any) -> Callable[[int, bytes], bytes | None]:
    """One lookup of a raw key in its partition's store. Faust's `table.get(key)` asks
    `key in table` and then `table[key]`, and outside an event's context its RocksDB store
    looks the key up in every partition's database in turn to find its partition."""
    store = getattr(table, "data", None)  # a plain mapping in the unit tests
    if isinstance(store, ResumableMemoryStore):
        data: Any = store.data
        return lambda partition, key: data.get(key)
    if isinstance(store, AuditedRocksDBStore):
        db_for = store._db_for_partition
        return lambda partition, key: cast(bytes | None, db_for(partition).get(key))
    return lambda partition, key: cast(bytes | None, table.get(key))


def partition_writer(table: Any) -> Callable[[int, list[tuple[Any, Any]]], None]:
    """Writes a partition's (key, value) pairs into its store at once (a value None
    deletes the key). Faust's `store[key] = value` encodes, sets up an event context and
    indexes each key on its way to one `put`; raw bytes on our stores go straight in: one
    RocksDB write batch per partition, or the memory store's dict."""
    store = getattr(table, "data", None)
    serializers = (getattr(table, "key_serializer", None), getattr(table, "value_serializer", None))
    raw = serializers == ("raw", "raw")
    if raw and isinstance(store, AuditedRocksDBStore):
        db_for = store._db_for_partition

        def write_rocksdb(partition: int, pairs: list[tuple[Any, Any]]) -> None:
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in pairs:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            db_for(partition).write(batch)

        return write_rocksdb
    if raw and isinstance(store, ResumableMemoryStore):
        data: MutableMapping[Any, Any] = store.data

        def write_memory(partition: int, pairs: list[tuple[Any, Any]]) -> None:
            for key, value in pairs:
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value

        return write_memory
    return partial(_write_through_table, table)


def _write_through_table(table: Any, partition: int, pairs: list[tuple[Any, Any]]) -> None:
    """Any other store (the unit tests' mappings too), one key at a time through Faust."""
    store = getattr(table, "data", table)
    with under_partition(partition):
        for key, value in pairs:
            if value is not None:
                store[key] = value
                continue
            # Never written, or deleted already: the tombstone goes all the same.
            with contextlib.suppress(KeyError):
                del store[key]


def partition_items(table: Any, partitions: set[int]) -> Iterable[tuple[bytes, bytes]]:
    """The raw entries that may belong to `partitions`: on RocksDB only those partitions'
    databases are read; the memory store keeps one dict, read whole (callers still check
    each record's partition)."""
    store = getattr(table, "data", None)
    if isinstance(store, AuditedRocksDBStore):
        internal = store.offset_key  # Faust keeps the partition's offset in its database
        for partition in sorted(partitions):
            for key, value in store._db_for_partition(partition).items():
                if key != internal:
                    yield key, value
        return
    yield from list(table.items())


class _PartitionDB:
    """One partition's RocksDB, raw bytes, seen as the audit reads and repairs it."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        return cast(bytes | None, self._db.get(key))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def pop(self, key: bytes, default: None = None) -> None:
        self._db.delete(key)


class ChangelogTable(faust.Table):  # type: ignore[type-arg]
    """Faust's table on our stores (the resumable memory store for `memory://`, the
    audited RocksDB store for `rocksdb://`), applying only records of its own changelog."""

    def _new_store_by_url(self, url: str | URL) -> StoreT[Any, Any]:
        scheme = URL(str(url)).scheme
        ours = {"memory": ResumableMemoryStore, "rocksdb": AuditedRocksDBStore}.get(scheme)
        if ours is None:
            return super()._new_store_by_url(url)
        return cast(
            StoreT[Any, Any],
            ours(
                url,
                self.app,
                self,
                table_name=self.name,
                key_type=self.key_type,
                key_serializer=self.key_serializer,
                value_serializer=self.value_serializer,
                value_type=self.value_type,
                loop=self.loop,
                options=self.options,
            ),
        )

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        own = self.changelog_topic.get_topic_name()
        events = list(batch)
        mine = [event for event in events if event.message.topic == own]
        if len(mine) < len(events):
            stray = next(e.message for e in events if e.message.topic != own)
            log.warning(
                "table %s: recovery handed it %s[%d] offset %d, a record of another "
                "table's changelog; not applied",
                self.name,
                stray.topic,
                stray.partition,
                stray.offset,
            )
        super().apply_changelog_batch(mine)
