"""Start to ready (`/readyz` 200) for a worker whose tables hold N envoys, and its resident
memory: a fresh node replaying the changelogs (RocksDB and memory stores) and a restart
with `processor.store: rocksdb` and its local state kept.

Run: .venv/bin/python benchmarks/bench_recovery.py [--envoys 1000000] [--quick]
     [--stores rocksdb,memory] [--timeout 900]
     (VIGO_TEST_KAFKA=host:port uses a running broker; otherwise one is started.)

The tables are loaded by writing their changelog topics directly, as the worker writes
them: `<prefix>compliance-envoys-changelog` (key: envoy id, value: `encode_stored_envoy`
of an envoy with a full 10-run history, in the envoy's input partition), the only
per-envoy table (the fleet counts are rebuilt from it). Working N envoys through a worker
would take far longer than the measurement. The input topics are empty, so ready means
recovered.

Phases, in order: (1) RocksDB store, empty data dir: the fresh node's replay (time and
changelog records/s); (2) RocksDB store, same data dir: the restart; (3) memory store,
empty data dir: the replay into memory. RSS is read from /proc once ready.

Ready is not the end of the cost: on its first ticks the envoy agent builds each
partition's indexes (counts, groups, list index, rollouts, liveness deadlines) from the
table, on the event loop. Each phase waits for the worker's "partition N indexed" lines
and reports their sum (the time the loop was held after ready) and the longest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aiokafka.partitioner import murmur2
from benchcommon import (
    broker,
    create_topics,
    envoy_id,
    machine,
    new_prefix,
    preload,
    rss_bytes,
    table,
)
from msgspec.structs import replace

from processor.records import (
    StoredEnvoy,
    encode_stored_envoy,
)
from projections.envoy import EnvoyState, Rules, apply_event
from tests.harness import Worker, worker_config
from topics.events import Enrollment, ModuleError, Resource, Run
from topics.names import TopicNames

PARTITIONS = 8
T0_MS = 1_795_000_000_000


def template() -> EnvoyState:
    """One envoy after an enrollment and 12 runs: a full history of 10 runs."""
    rules = Rules(default_interval_s=300)
    labels = {"env": "prod", "role": "web", "dc": "dc1"}
    state = apply_event(
        None,
        Enrollment("host-0000000", "enrolled", "2026-11-17T12:00:00Z", labels, 300),
        T0_MS,
        rules,
    ).state
    for r in range(12):
        finished = T0_MS + (r + 1) * 300_000
        results = ["ok"] * 8
        if r % 4 == 1:
            results[r % 8] = "changed"
        resources = tuple(
            Resource(f"file[/etc/app/conf{j}.d]", f"m{j % 4}", res)  # type: ignore[arg-type]
            for j, res in enumerate(results)
        )
        errors = (ModuleError("users", "ldap unreachable"),) if r == 5 else ()
        run = Run(
            "host-0000000",
            f"{r:08x}-0000-4000-8000-{r:012x}",
            "2026-11-17T12:05:00Z",
            "2026-11-17T12:05:04Z",
            finished,
            resources,
            errors,
        )
        state = apply_event(state, run, finished, rules).state
    assert state is not None and len(state.history) == 10
    # Seen "now": no envoy goes offline while the benchmark runs.
    return replace(state, last_seen_ms=int(time.time() * 1000) + 3_600_000)


def partition_of(key: bytes) -> int:
    """aiokafka's (and Java's) default partitioner: where the envoy's input records go."""
    return int(murmur2(key) & 0x7FFFFFFF) % PARTITIONS


def changelog_records(envoys: int, base: EnvoyState) -> Iterator[tuple[bytes, bytes, int]]:
    for i in range(envoys):
        name = envoy_id(i)
        key = name.encode()
        p = partition_of(key)
        yield key, encode_stored_envoy(StoredEnvoy(p, replace(base, envoy_id=name))), p


def ready_after(worker: Worker, timeout: float) -> float | None:
    """Seconds from process start to /readyz 200, or None after `timeout`."""
    started = time.perf_counter()
    worker.start(wait=False)
    while time.perf_counter() - started < timeout:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise SystemExit(f"worker exited:\n{worker.log_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(worker.url + "/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return time.perf_counter() - started
        time.sleep(0.1)
    return None


INDEXED = re.compile(r"partition (\d+) indexed: (\d+) envoys in (\d+) ms")


def indexing_after_ready(worker: Worker, since: int, timeout: float) -> tuple[float, float] | None:
    """(sum, longest) seconds of the partitions' index builds once every partition has
    logged one in the log past `since` (its length when this phase started: phases
    share the log); None after `timeout`."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        logged = worker.log_text()[since:]
        found = {int(p): int(ms) for p, _, ms in INDEXED.findall(logged)}
        if len(found) >= PARTITIONS:
            return sum(found.values()) / 1000, max(found.values()) / 1000
        time.sleep(0.5)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=1_000_000)
    parser.add_argument("--stores", default="rocksdb,memory", help="rocksdb and/or memory")
    parser.add_argument("--timeout", type=float, default=900, help="per phase, seconds")
    parser.add_argument("--quick", action="store_true", help="100,000 envoys")
    args = parser.parse_args()
    if args.quick:
        args.envoys = 100_000
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    print(machine())
    n = args.envoys
    rows: list[tuple[str, ...]] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        prefix = new_prefix("rec")
        names = TopicNames(prefix)
        asyncio.run(create_topics(bootstrap, [*names.inputs, names.ticks], PARTITIONS))
        envoys_cl = f"{prefix}compliance-envoys-changelog"
        compact = {"cleanup.policy": "compact"}
        asyncio.run(create_topics(bootstrap, [envoys_cl], PARTITIONS, compact))
        base = template()
        size = len(encode_stored_envoy(StoredEnvoy(0, base)))
        started = time.perf_counter()
        asyncio.run(preload(bootstrap, envoys_cl, changelog_records(n, base)))
        print(
            f"wrote {n:,} envoy records ({size:,} bytes each, {n * size / 2**20:,.0f} MiB) "
            f"in {time.perf_counter() - started:.1f} s"
        )

        def phase(label: str, store: str, data: str, replayed: int | None) -> None:
            config = worker_config(
                bootstrap, prefix, partitions=PARTITIONS, interval="5m", processor={"store": store}
            )
            worker = Worker(config, Path(tmp) / data, name="rec")
            print(f"- {label} ...", flush=True)
            since = len(worker.log_text())
            try:
                seconds = ready_after(worker, args.timeout)
                assert worker.proc is not None
                rss = rss_bytes(worker.proc.pid)
                indexed = indexing_after_ready(worker, since, 120) if seconds else None
            finally:
                worker.stop(timeout=120)
            if seconds is None:
                rows.append((label, f"> {args.timeout:.0f}", "-", f"{rss / 2**20:,.0f}", "-", "-"))
                return
            rate = f"{replayed / seconds:,.0f}" if replayed else "-"
            per_100k = rss / n * 100_000 / 2**20
            held = "-" if indexed is None else f"{indexed[0]:.2f} ({indexed[1]:.2f})"
            rows.append(
                (label, f"{seconds:.1f}", rate, f"{rss / 2**20:,.0f}", f"{per_100k:,.0f}", held)
            )

        if "rocksdb" in stores:
            phase("fresh node, rocksdb store (changelog replay)", "rocksdb", "rocks", n)
            phase("restart, rocksdb store, local state kept", "rocksdb", "rocks", None)
        if "memory" in stores:
            phase("fresh node, memory store (changelog replay)", "memory", "mem", n)

    print()
    print(f"{n:,} envoys in the table (envoys changelog: {n:,} records)")
    header = (
        "phase",
        "start to ready (s)",
        "records/s",
        "RSS MiB",
        "RSS MiB per 100k envoys",
        "indexing after ready: sum (longest) s",
    )
    print(table(rows, header))
    restart = next((r for r in rows if r[0].startswith("restart")), None)
    if restart is not None and n >= 1_000_000:
        ok = not restart[1].startswith(">") and float(restart[1]) < 30
        print(f"goal restart with rocksdb < 30 s at {n:,} envoys: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
