"""Every use of faust-streaming's internals, one module per workaround. Verified on
faust-streaming 0.15.x, the series `pyproject.toml` pins; re-verify each item before moving
the pin. The why and the how of each: docs/faust-traps.md.

- `streams`: Faust refuses a table write outside an event's context and routes it by the
  stream's current event; `under_partition` stands in an event naming the partition of
  the batched table writes (`TableWriter`), which belong to no single event.
  Upstream: #497 (table writes refused outside stream iteration); no public API to set
  the current event. docs/faust-traps.md#the-current-event
- `delivery`: `DeliveryGuard`, records left out of a stream around recovery and
  rebalances and gaps committed past (upstream #216, #221, #312, #606), and partitions
  kept assigned but not fetched any more (related: upstream #629);
  `seek_uncommitted_to_log_start`, partitions with nothing committed, which Faust's seek
  to the committed offsets leaves where a fetch it dropped left them.
  docs/faust-traps.md#skipped-records, docs/faust-traps.md#unfetched-partitions
- `batches`: `InputBatches`, Faust's cost per record handed to an agent; the envoy agent's
  topics are drained in the batches they were fetched in, and committed once worked off.
  No upstream issue found. docs/faust-traps.md#per-record-overhead,
  docs/faust-traps.md#commit-and-linger-timing
- `fetching`: `install_fetch_wait`, Faust's 1.5 s fetch wait, which holds back every
  partition of a broker while one fetch of quiet partitions waits (aiokafka keeps one
  fetch in flight per broker). No upstream issue found.
  docs/faust-traps.md#long-polls-that-block-fetches
- `producer`: `BatchProducer` and `TableWriter`, one changelog record and `FutureMessage`
  per table write; entries written and sent as one producer batch per partition. No
  upstream issue found. docs/faust-traps.md#table-writes-in-batches
- `stores`: `ChangelogTable`, `ResumableMemoryStore`, `AuditedRocksDBStore`, table state
  lost with the memory store around rebalances (its pruning since upstream PR #199) and
  records of another changelog applied in recovery; `partition_reader` and
  `partition_items`, one lookup per key in its partition's store, where Faust's
  `table.get` makes two and outside an event searches every partition's database.
  docs/faust-traps.md#table-state-lost-around-rebalances
- `rocksdb_budget`: `BudgetedRocksDBOptions`, one block cache and one write-buffer manager
  shared by every RocksDB database of the process (Faust gives each table and partition
  64 MiB write buffers and a 2 GiB cache of its own). No upstream issue found.
  docs/faust-traps.md#rocksdb-memory-per-database
- `recovery_audit`: `audit_recoveries`, each recovery of a table of raw bytes (on either
  store) read again and repaired before the streams resume. No upstream issue found.
  docs/faust-traps.md#recovery-audit
- `recovery_watch`: `RecoveryWatch`, a recovery that waits for ever for a changelog
  partition whose records never reach it. No upstream issue found.
  docs/faust-traps.md#stalled-recoveries
- `table_manager`: `PromptTableManager`, the fixed second Faust's table manager sleeps
  before recovery. No upstream issue found.
  docs/faust-traps.md#a-fixed-second-before-recovery
- `codecs`: table value types that name our codecs, since Faust takes a table's changelog
  codec from its `value_type` (upstream #310: a table's `schema` is not used).
  docs/faust-traps.md#table-codecs
- `root_logger`: `quiet_root_logger`, the root logger left at DEBUG for Faust's terminal
  spinner. No upstream issue found. docs/faust-traps.md#debug-records-nobody-prints
"""

from __future__ import annotations

from processor.faust_compat.batches import COMMIT_CAUGHT_UP_S, InputBatches
from processor.faust_compat.codecs import EncodeDecode, register_value_codecs, value_type
from processor.faust_compat.delivery import (
    STALL_S,
    ClientClosed,
    DeliveryGuard,
    OffsetSource,
    committed_offset,
    seek_uncommitted_to_log_start,
)
from processor.faust_compat.fetching import FETCH_MAX_WAIT_MS, install_fetch_wait
from processor.faust_compat.producer import BatchProducer, Record, TableWriter
from processor.faust_compat.recovery_audit import (
    AUDIT_TIMEOUT_S,
    AuditsRecovery,
    ChangelogReader,
    audit_recoveries,
)
from processor.faust_compat.recovery_watch import (
    RECOVERY_STALL_S,
    RecoveryWatch,
    StallAction,
    fetched_past,
    stalled_partitions,
)
from processor.faust_compat.rocksdb_budget import (
    MEMORY_MIB_OPTION,
    BudgetedRocksDBOptions,
    budget_usage,
)
from processor.faust_compat.root_logger import quiet_root_logger
from processor.faust_compat.stores import (
    AuditedRocksDBStore,
    ChangelogTable,
    ResumableMemoryStore,
    _PartitionDB,
    partition_items,
    partition_reader,
)
from processor.faust_compat.streams import under_partition
from processor.faust_compat.table_manager import PromptTableManager, report_recovery_stalls

__all__ = [
    "AUDIT_TIMEOUT_S",
    "COMMIT_CAUGHT_UP_S",
    "FETCH_MAX_WAIT_MS",
    "MEMORY_MIB_OPTION",
    "RECOVERY_STALL_S",
    "STALL_S",
    "AuditedRocksDBStore",
    "AuditsRecovery",
    "BatchProducer",
    "BudgetedRocksDBOptions",
    "ChangelogReader",
    "ChangelogTable",
    "ClientClosed",
    "DeliveryGuard",
    "EncodeDecode",
    "InputBatches",
    "OffsetSource",
    "PromptTableManager",
    "Record",
    "RecoveryWatch",
    "ResumableMemoryStore",
    "StallAction",
    "TableWriter",
    "_PartitionDB",  # for the recovery-audit tests
    "audit_recoveries",
    "budget_usage",
    "committed_offset",
    "fetched_past",
    "install_fetch_wait",
    "partition_items",
    "partition_reader",
    "quiet_root_logger",
    "register_value_codecs",
    "report_recovery_stalls",
    "seek_uncommitted_to_log_start",
    "stalled_partitions",
    "under_partition",
    "value_type",
]
