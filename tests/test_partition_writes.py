"""`partition_writer`: a checkpoint's table entries go into the store a partition at a
time (one RocksDB write batch, or the memory store's dict), and Faust's own reads, which
know nothing of it, see exactly what was written and nothing that was deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.faust_compat import AuditedRocksDBStore, ResumableMemoryStore
from processor.faust_compat.stores import partition_reader, partition_writer
from tests.test_recovery_audit import new_table


@pytest.mark.parametrize("store_url", ["memory://", "rocksdb://"])
def test_puts_and_deletes_are_what_faust_reads_back(store_url: str, tmp_path: Path) -> None:
    table, store, _ = new_table("127.0.0.1:9", store_url, partitions=2, datadir=tmp_path)
    assert isinstance(store, AuditedRocksDBStore | ResumableMemoryStore)
    write, read = partition_writer(table), partition_reader(table)
    write(0, [(b"a", b"1"), (b"b", b"2")])
    write(1, [(b"c", b"3")])
    assert [store[k] for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]  # Faust's own get
    assert (read(0, b"a"), read(1, b"c")) == (b"1", b"3")

    write(0, [(b"a", b"1b"), (b"b", None)])  # an update and a delete in one batch
    write(1, [(b"c", None), (b"never-written", None)])  # a delete of nothing is no error

    assert store[b"a"] == b"1b"
    for gone in (b"b", b"c"):
        with pytest.raises(KeyError):
            store[gone]  # Faust found them above; its key index then only points here
    assert (read(0, b"b"), read(1, b"c")) == (None, None)
    if isinstance(store, AuditedRocksDBStore):
        # Each key went into its own partition's database, and only there.
        assert store._db_for_partition(0).get(b"a") == b"1b"
        assert store._db_for_partition(1).get(b"a") is None
