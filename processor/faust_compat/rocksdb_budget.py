"""One memory budget for every RocksDB database a worker opens (SPEC 11.5).

Faust opens one database per table and partition, each with its own options: 64 MiB write
buffers, three of them, and a 2 GiB block cache of its own, nothing shared. A worker with
many partitions, or a pod with a memory limit, then grows until it is killed. Here every
database the process opens gets the same two objects, as Kafka Streams' bounded-memory
config setter does: one LRU block cache of `processor.rocksdb.memory_mib`, which also holds
the index and filter blocks, and one write-buffer manager whose memtables are charged to
that cache (a quarter of it), so that the total stays within the one figure.

Faust builds its options from the table's `options` (`RocksDBOptions(**options)`);
`AuditedRocksDBStore` takes our key (`MEMORY_MIB_OPTION`) out of a copy of them and
installs `BudgetedRocksDBOptions`. docs/faust-traps.md#rocksdb-memory-per-database
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

#: The key of a table's `options` that carries the budget in MiB to its stores.
MEMORY_MIB_OPTION: Final = "vigo_memory_mib"
MIB: Final = 1 << 20
#: The memtables' share of the budget (Kafka Streams' example gives them about a third).
WRITE_BUFFER_SHARE: Final = 0.25
#: One memtable of a database at most; more, smaller flushes rather than a few large.
MAX_WRITE_BUFFER: Final = 16 * MIB


@dataclass(frozen=True)
class SharedBudget:
    """The cache and the write-buffer manager every database of the process shares."""

    memory_bytes: int
    cache: Any
    write_buffers: Any

    @property
    def write_buffer_bytes(self) -> int:
        return int(self.memory_bytes * WRITE_BUFFER_SHARE)


#: Every budget the process created (one, unless tests make more): what the metrics read.
BUDGETS: Final[list[SharedBudget]] = []


@cache
def shared_budget(memory_mib: int) -> SharedBudget:
    """The process's budget of `memory_mib`: created once, then the same objects."""
    memory = memory_mib * MIB
    block_cache = rocksdict.Cache(memory)
    manager = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        # No stall (as in Kafka Streams' setter): past the share the manager makes the
        # largest memtable flush; stalling writers could wait on a flush that never comes.
        int(memory * WRITE_BUFFER_SHARE),
        False,
        block_cache,
    )
    budget = SharedBudget(memory, block_cache, manager)
    BUDGETS.append(budget)
    return budget


def budget_usage() -> tuple[int, int] | None:
    """Bytes in use of the process's budgets: (the block cache, the memtables charged
    to it included; the memtables alone); None when no RocksDB store was opened."""
    if not BUDGETS:
        return None
    cache_bytes = sum(int(b.cache.get_usage()) for b in BUDGETS)
    return cache_bytes, sum(int(b.write_buffers.get_usage()) for b in BUDGETS)


class BudgetedRocksDBOptions(RocksDBOptions):
    """Faust's options, with the shared cache and write-buffer manager (rocksdict only)."""

    budget: SharedBudget

    def __init__(self, budget: SharedBudget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        # Two memtables per database, each a small share of the budget: with 64
        # partitions that is still bounded by the manager, which flushes early.
        self.write_buffer_size = max(MIB, min(MAX_WRITE_BUFFER, budget.write_buffer_bytes // 4))
        self.max_write_buffer_number = 2

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        if not self.use_rocksdict:
            raise RuntimeError("processor.rocksdb.memory_mib needs the rocksdict driver")
        return super().open(path, read_only=read_only)

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.budget.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.budget.cache)
        # Index and filter blocks count against the cache too, not beside it.
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


def budgeted_options(
    options: dict[str, Any], memory_mib: int, use_rocksdict: bool
) -> BudgetedRocksDBOptions:
    """A store's options (Faust's, from the table's `options`) within the process budget."""
    return BudgetedRocksDBOptions(shared_budget(memory_mib), **options, use_rocksdict=use_rocksdict)
