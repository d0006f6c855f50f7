"""RSS of a RocksDB worker over a soak: flat, and within its budget plus the Python heap.

Run: .venv/bin/python benchmarks/bench_soak.py [--minutes 5] [--envoys 10000] [--budget 256]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

A worker as production runs it (`processor.store: rocksdb`, a data directory) with
`processor.rocksdb.memory_mib` = `--budget`, fed by `vigo-simulate --envoys N --interval 5`
(N envoys, each checking in and running every 5 s: about N / 3 events per second, the
fleet fixed). Its RSS (VmRSS) is sampled every 15 s. Reported: the samples, the first
minute's and the last minute's mean, the growth between them, the peak, and the
comparison the issue asks for: peak <= budget + the Python heap, the heap being the peak
RSS of a memory-store worker soaked with the same fleet in the same run (its state is a
few MiB of Python bytes; everything else of it, interpreter, Faust, buffers, the RocksDB
worker has too). `--rocksdb-only` skips that soak and takes the RocksDB worker's RSS
after its first minute instead (every envoy read once), which flatters the bound."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchcommon import broker, create_topics, machine, new_prefix, rss_bytes, table

from tests.harness import Worker, metric_total, worker_config
from topics.names import TopicNames

SIMULATE = Path(sys.executable).parent / "vigo-simulate"
SAMPLE_S = 15
MIB = 2**20
ROCKSDB_METRIC = "vigo_rocksdb_memory_bytes"


def soak(bootstrap: str, store: str, envoys: int, minutes: float, budget: int) -> list[int]:
    """RSS samples (bytes) of one worker over the soak; printed with what its RocksDB
    databases hold of the budget (`vigo_rocksdb_memory_bytes`)."""
    prefix = new_prefix(f"soak-{store}")
    asyncio.run(create_topics(bootstrap, TopicNames(prefix).inputs, 8))
    processor = {"store": store, "rocksdb": {"memory_mib": budget}}
    config = worker_config(bootstrap, prefix, partitions=8, interval="5s", processor=processor)
    samples: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(config, Path(tmp), name=f"soak-{store}").start(timeout=180)
        assert worker.proc is not None
        fleet_args = ["--envoys", str(envoys), "--interval", "5"]
        fleet = subprocess.Popen(
            [SIMULATE, "--bootstrap", bootstrap, "--prefix", prefix, *fleet_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                time.sleep(SAMPLE_S)
                assert worker.proc.poll() is None, worker.log_text()[-3000:]
                samples.append(rss_bytes(worker.proc.pid))
                rocksdb = ""
                if store == "rocksdb":
                    cache = metric_total(worker.url, ROCKSDB_METRIC, 'part="block_cache"')
                    memtables = metric_total(worker.url, ROCKSDB_METRIC, 'part="memtables"')
                    rocksdb = f"  RocksDB {cache / MIB:6.1f} MiB ({memtables / MIB:.1f} memtables)"
                elapsed = len(samples) * SAMPLE_S
                print(
                    f"  {store}: {elapsed:>4} s  RSS {samples[-1] / MIB:7.1f} MiB{rocksdb}",
                    flush=True,
                )
        finally:
            fleet.terminate()
            fleet.wait(30)
            worker.stop()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--envoys", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=256, help="processor.rocksdb.memory_mib")
    parser.add_argument("--rocksdb-only", action="store_true", help="no memory-store soak")
    args = parser.parse_args()
    print(machine())
    print(f"{args.envoys:,} envoys every 5 s for {args.minutes:g} min; RSS every {SAMPLE_S} s")
    per_minute = 60 // SAMPLE_S
    stores = ["rocksdb"] + ([] if args.rocksdb_only else ["memory"])
    results: dict[str, list[int]] = {}
    with broker() as bootstrap:
        for store in stores:
            results[store] = soak(bootstrap, store, args.envoys, args.minutes, args.budget)
    rows = []
    for store, samples in results.items():
        first = statistics.mean(samples[:per_minute]) / MIB
        last = statistics.mean(samples[-per_minute:]) / MIB
        rows.append(
            (
                store,
                f"{first:,.1f}",
                f"{last:,.1f}",
                f"{last - first:+,.1f}",
                f"{max(samples) / MIB:,.1f}",
            )
        )
    print(table(rows, ("store", "first min (MiB)", "last min (MiB)", "growth (MiB)", "peak (MiB)")))
    rocks = results["rocksdb"]
    heap = max(results["memory"]) if "memory" in results else rocks[min(per_minute, len(rocks)) - 1]
    heap_from = "the memory store's peak" if "memory" in results else "RSS after the first minute"
    bound = args.budget * MIB + heap
    verdict = "met" if max(rocks) <= bound else "NOT met"
    print(
        f"goal: RocksDB peak {max(rocks) / MIB:,.1f} MiB <= budget {args.budget} MiB + "
        f"Python heap {heap / MIB:,.1f} MiB ({heap_from}): {verdict}"
    )


if __name__ == "__main__":
    main()
