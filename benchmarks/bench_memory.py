"""Memory per envoy as an operator pays it, and what the table's records cost.

Run: .venv/bin/python benchmarks/bench_memory.py [--stores memory,rocksdb] [--trace]
     .venv/bin/python benchmarks/bench_memory.py --codec [--envoys 20000] [--runs 25]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

The default measures resident memory (VmRSS, as `top` and a pod's memory limit see it):
a worker started as production starts it (`vigo-processor worker`, with the store named)
works off 10 runs for each of 1,000 envoys, and separately for each of 20,000 (a fresh
topic prefix each time); once every run is counted in its `vigo_events_total`, and 15 s
later (checkpoints pass, the idle worker gives the C heap's free pages back:
`processor.heap`), its RSS is read. Per envoy: (RSS at 20,000 - RSS at 1,000) /
19,000, so that the interpreter, Faust and the libraries cancel out. `--trace` starts the
workers with `benchmarks/memtrace` on PYTHONPATH and writes, per size, where the live
Python memory was allocated and what it is (tracemalloc and objects by type).

`--codec`: the table state alone, traced in this process:

Each envoy gets an enrollment and `--runs` realistic runs (5-30 resources, 8% changed,
2% failed), so its drift history is full (HISTORY_RUNS = 10 runs, plus RECENT_RUN_IDS run
ids). Memory is traced Python allocations (tracemalloc), not RSS: the worker's resident
memory per 100,000 envoys is in bench_recovery.py. Rows, in the same run:

- the store as it is: the memory store's dict of envoy id -> encoded record (format 3;
  the RocksDB store keeps the same bytes on disk), keys included;
- before (format 2): the same table as Python objects (`StoredEnvoy`), which the memory
  store held until the table was given the encoded bytes; and the JSON records (format 2)
  written to the changelog then;
- the baseline, the least any design must keep: a (status, version, last_seen) tuple per
  envoy;
- microseconds per record to encode, to decode (once per event on the agent's path) and
  to decode only the head (what the indexes built on a partition's assignment read).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_throughput import watch_applied
from benchcommon import (
    broker,
    build_runs,
    create_topics,
    machine,
    new_prefix,
    preload,
    rss_bytes,
    table,
)

from processor.records import (
    StoredEnvoy,
    decode_envoy_head,
    decode_stored_envoy,
    encode_stored_envoy,
)
from projections.envoy import HISTORY_RUNS, EnvoyState, Rules, apply_event
from tests.harness import Worker, worker_config
from tests.test_state_codec import format2
from topics.events import Enrollment, ModuleError, Resource, Run
from topics.names import TopicNames
from topics.timestamps import iso_from_ms

T = TypeVar("T")
RESULTS = ("ok",) * 90 + ("changed",) * 8 + ("failed",) * 2
T0 = 1_795_000_000_000


def build(envoys: int, runs: int, seed: int = 3) -> dict[bytes, StoredEnvoy]:
    rng = random.Random(seed)
    rules = Rules(default_interval_s=300)
    table: dict[bytes, StoredEnvoy] = {}
    for i in range(envoys):
        envoy = f"host-{i:07d}.prod.example.com"
        state: EnvoyState | None = apply_event(
            None,
            Enrollment(
                envoy, "enrolled", "2026-11-27T12:00:00Z", {"env": "prod", "role": "web"}, 300
            ),
            T0,
            rules,
        ).state
        for r in range(runs):
            finished = T0 + r * 300_000
            resources = tuple(
                Resource(f"file[/etc/app/conf{j}.d]", f"m{j % 5}", rng.choice(RESULTS))  # type: ignore[arg-type]
                for j in range(rng.randint(5, 30))
            )
            errors = (ModuleError("users", "ldap unreachable"),) if rng.random() < 0.01 else ()
            run = Run(
                envoy,
                f"{rng.getrandbits(128):032x}",
                iso_from_ms(finished - 4_000),
                iso_from_ms(finished),
                finished,
                resources,
                errors,
            )
            state = apply_event(state, run, finished, rules).state
        assert state is not None
        table[envoy.encode()] = StoredEnvoy(i % 8, state)
    return table


def measure(factory: Callable[..., T], *args: Any) -> tuple[T, int]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value = factory(*args)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return value, after - before


def per_record_us(action: Callable[[Any], object], items: list[Any]) -> float:
    """Mean microseconds of `action` over `items`, best of three passes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for item in items:
            action(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


RSS_SIZES = (1_000, 20_000)
RUNS_PER_ENVOY = 10
#: The goal of the per-envoy figure (bytes of RSS per envoy).
RSS_GOAL = 1_536


def worker_rss(
    bootstrap: str, store: str, envoys: int, trace: Path | None, mode: str = "trace"
) -> int:
    """RSS of a worker that worked off RUNS_PER_ENVOY runs for each of `envoys` envoys."""
    prefix = new_prefix("mem")
    names = TopicNames(prefix)
    records = build_runs(RUNS_PER_ENVOY * envoys, envoys)
    asyncio.run(create_topics(bootstrap, names.inputs, 8))
    asyncio.run(preload(bootstrap, names.runs, records))
    config = worker_config(
        bootstrap, prefix, partitions=8, interval="5m", processor={"store": store}
    )
    env = {}
    if trace is not None:
        env = {
            "PYTHONPATH": str(Path(__file__).parent / "memtrace"),
            "VIGO_MEMTRACE_OUT": str(trace),
            "VIGO_MEMTRACE_MODE": mode,
        }
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(config, Path(tmp), name="mem", env=env)
        worker.start(timeout=180)
        assert worker.proc is not None
        try:
            applied: dict[str, float] = {}
            asyncio.run(
                asyncio.wait_for(watch_applied(worker.url, names.runs, len(records), applied), 900)
            )
            time.sleep(15)  # checkpoints: nothing held, buffers released, the heap trimmed
            rss = rss_bytes(worker.proc.pid)
            if trace is not None:
                os.kill(worker.proc.pid, signal.SIGRTMIN + (3 if mode == "heap" else 2))
                deadline = time.monotonic() + 300
                while not (trace.exists() and trace.stat().st_size) and time.monotonic() < deadline:
                    time.sleep(1)
                time.sleep(2)
            return rss
        finally:
            worker.stop()


def pymalloc_summary(path: Path) -> str:
    """The totals of `sys._debugmallocstats`: arenas, and bytes in use vs. held."""
    wanted = ("arenas allocated current", "# bytes in allocated blocks", "Total")
    lines = path.read_text().splitlines()
    return "; ".join(" ".join(line.split()) for line in lines if line.startswith(wanted))


def rss_main(stores: list[str], trace: bool, mode: str = "trace") -> None:
    print(machine())
    print(f"{RUNS_PER_ENVOY} runs per envoy; RSS read once every run was counted, plus 15 s")
    rows = []
    with broker() as bootstrap:
        for store in stores:
            rss = {}
            for n in RSS_SIZES:
                out = Path(f"/tmp/vigo-memtrace-{store}-{n}.txt") if trace else None
                rss[n] = worker_rss(bootstrap, store, n, out, mode)
                print(f"  {store}: {n:,} envoys, RSS {rss[n] / 2**20:,.1f} MiB", flush=True)
                if out is not None and mode == "heap":
                    print("    " + out.read_text().replace("\n", "; "))
                    print(f"    pymalloc: {pymalloc_summary(Path(str(out) + '.pymalloc'))}")
                elif out is not None:
                    print(f"    trace: {out}")
            low, high = RSS_SIZES
            per_envoy = (rss[high] - rss[low]) / (high - low)
            rows.append(
                (
                    store,
                    f"{rss[low] / 2**20:,.1f}",
                    f"{rss[high] / 2**20:,.1f}",
                    f"{per_envoy:,.0f}",
                )
            )
    print(table(rows, ("store", "RSS 1,000 (MiB)", "RSS 20,000 (MiB)", "RSS per envoy (B)")))
    for store, _, _, figure in rows:
        verdict = "met" if float(figure.replace(",", "")) < RSS_GOAL else "NOT met"
        print(f"goal < {RSS_GOAL:,} B of RSS per envoy ({store}): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--codec", action="store_true", help="the table state alone")
    parser.add_argument("--stores", default="memory,rocksdb")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the workers")
    parser.add_argument(
        "--heap", action="store_true", help="pymalloc arenas and RSS after malloc_trim"
    )
    parser.add_argument("--envoys", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="5,000 envoys")
    args = parser.parse_args()
    if not args.codec:
        heap = args.heap
        rss_main(args.stores.split(","), args.trace or heap, "heap" if heap else "trace")
        return
    if args.quick:
        args.envoys = 5_000
    print(machine())
    n = args.envoys

    objects, objects_bytes = measure(build, n, args.runs)
    # What the memory store keeps: its own key and the encoded record of every envoy.
    store, store_bytes = measure(
        lambda: {r.state.envoy_id.encode(): encode_stored_envoy(r) for r in objects.values()}
    )
    base, base_bytes = measure(
        lambda: {f"host-{i:07d}.prod.example.com".encode(): ("converged", 7, T0) for i in range(n)}
    )
    sizes = sorted(len(data) for data in store.values())
    json_sizes = sorted(len(format2(r)) for r in objects.values())
    full = sum(len(r.state.history) == HISTORY_RUNS for r in objects.values())
    sample = list(objects.values())[:2_000]
    encoded = [encode_stored_envoy(r) for r in sample]
    as_json = [format2(r) for r in sample]
    assert all(decode_stored_envoy(d) == r for d, r in zip(encoded, sample, strict=True))
    per_envoy = store_bytes / n

    def row(label: str, value: float, unit: str = ",.0f") -> None:
        print(f"{label:<52}{value:>12{unit}}")

    print(f"{n:,} envoys, {args.runs} runs each; {full:,} with a full history")
    print(f"{'measure':<52}{'value':>12}")
    row("table state per envoy (bytes, memory store)", per_envoy)
    row("  before: as Python objects (bytes)", objects_bytes / n)
    row("baseline per envoy (status tuple in a dict)", base_bytes / n)
    row("record (format 3), mean (bytes)", statistics.mean(sizes))
    row("record (format 3), max (bytes)", sizes[-1])
    row("  before: JSON record (format 2), mean (bytes)", statistics.mean(json_sizes))
    row("  before: JSON record (format 2), max (bytes)", json_sizes[-1])
    row("encode per record (us)", per_record_us(encode_stored_envoy, sample), ",.1f")
    row("decode per record (us)", per_record_us(decode_stored_envoy, encoded), ",.1f")
    row("decode the head only (us)", per_record_us(decode_envoy_head, encoded), ",.2f")
    row("  before: decode a JSON record (us)", per_record_us(decode_stored_envoy, as_json), ",.1f")
    row("1M envoys, table state (GiB, memory store)", per_envoy * 1e6 / 2**30, ",.2f")
    verdict = "met" if per_envoy < 1024 else "NOT met"
    print(f"goal < 1 KB of table state per envoy (mean, full history): {verdict}")
    del base


if __name__ == "__main__":
    main()
