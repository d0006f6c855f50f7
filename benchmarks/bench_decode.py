"""Throughput and latency of decode_input: its fast path (msgspec, one pass) against its
slow path (orjson + JSON Schema, `decode_input_slow`) and a bare orjson.loads baseline.

Run: .venv/bin/python benchmarks/bench_decode.py [--records N] [--seed S] [--rounds R]

The mix mirrors a steady fleet: 10% enrollments, 45% check-ins, 45% runs of 5-30
resources. The orjson baseline shows what schema validation and typed events cost on top
of parsing alone. Per event type, the slow and the fast path are timed in the same run,
best of R rounds each, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from topics.decode import decode_fast, decode_input, decode_input_slow
from topics.events import DeadLetter, RecordMeta

MODULES = ("files", "packages", "services", "users", "cron", "sysctl")
RESULTS = ("ok",) * 90 + ("changed",) * 8 + ("failed",) * 2
META = RecordMeta(topic="vigo.envoy.runs", partition=0, offset=0, timestamp_ms=0)

Record = tuple[str, bytes, bytes]  # (kind, key, value)
KINDS = ("enrollment", "checkin", "run")


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_records(count: int, seed: int) -> list[Record]:
    """Realistic encoded input records, deterministic for a seed."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    records: list[Record] = []
    for i in range(count):
        envoy_id = f"web-{rng.randrange(5000):04d}.dc{rng.randrange(4)}.example.com"
        at = base + timedelta(seconds=i)
        roll = rng.random()
        doc: dict[str, Any]
        if roll < 0.10:
            kind = "enrollment"
            doc = {
                "schema": "vigo.enrollment/1",
                "envoy_id": envoy_id,
                "action": "enrolled" if rng.random() < 0.95 else "revoked",
                "at": _stamp(at),
                "labels": {"env": rng.choice(("prod", "stage")), "role": "web", "dc": "dc1"},
                "checkin_interval_s": 300,
            }
        elif roll < 0.55:
            kind = "checkin"
            doc = {"schema": "vigo.checkin/1", "envoy_id": envoy_id, "at": _stamp(at)}
        else:
            kind = "run"
            resources = []
            for r in range(rng.randint(5, 30)):
                module = rng.choice(MODULES)
                resource: dict[str, Any] = {
                    "id": f"{module}[/etc/app/conf.d/{r:02d}.conf]",
                    "module": module,
                    "result": rng.choice(RESULTS),
                }
                if resource["result"] == "failed":
                    resource["message"] = "exit status 1: permission denied"
                resources.append(resource)
            doc = {
                "schema": "vigo.run/1",
                "envoy_id": envoy_id,
                "run_id": f"{rng.getrandbits(128):032x}",
                "started_at": _stamp(at),
                "finished_at": _stamp(at + timedelta(seconds=rng.randint(1, 30))),
                "config_version": f"{rng.getrandbits(24):06x}",
                "resources": resources,
            }
            if rng.random() < 0.02:
                doc["module_errors"] = [{"module": "users", "message": "ldap unreachable"}]
        records.append((kind, envoy_id.encode(), orjson.dumps(doc)))
    return records


def throughput(records: list[Record], fn: Callable[[bytes, bytes], object], rounds: int) -> float:
    """Best-of-``rounds`` events per second over the whole list (no per-event timer)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _kind, key, value in records:
            fn(key, value)
        best = min(best, time.perf_counter() - start)
    return len(records) / best


def latencies_us(records: list[Record], fn: Callable[[bytes, bytes], object]) -> list[float]:
    """Per-event wall time in microseconds (includes ~0.05 us of timer overhead)."""
    clock = time.perf_counter_ns
    out: list[float] = []
    for _kind, key, value in records:
        start = clock()
        fn(key, value)
        out.append((clock() - start) / 1000)
    return out


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 10) - 1]


def by_kind(
    records: list[Record],
    slow: Callable[[bytes, bytes], object],
    fast: Callable[[bytes, bytes], object],
    rounds: int,
) -> list[tuple[str, int, float, float]]:
    """(kind, count, slow records/s, fast records/s), the two timed in alternate rounds."""
    rows = []
    for kind in KINDS:
        picked = [record for record in records if record[0] == kind]
        slow_rate = fast_rate = 0.0
        for _ in range(rounds):
            slow_rate = max(slow_rate, throughput(picked, slow, 1))
            fast_rate = max(fast_rate, throughput(picked, fast, 1))
        rows.append((kind, len(picked), slow_rate, fast_rate))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    records = build_records(args.records, args.seed)

    def baseline(_key: bytes, value: bytes) -> object:
        return orjson.loads(value)

    def decode(key: bytes, value: bytes) -> object:
        return decode_input(key, value, META)

    def slow(key: bytes, value: bytes) -> object:
        return decode_input_slow(key, value, META)

    dead = [r for r in records if isinstance(decode(r[1], r[2]), DeadLetter)]
    if dead:
        print(f"error: {len(dead)} generated records dead-lettered", file=sys.stderr)
        return 1
    # Otherwise the "fast" figures would include records that fell back to the slow path.
    missed = [r for r in records if decode_fast(r[1], r[2]) is None]
    if missed:
        print(f"error: {len(missed)} records not taken by the fast path", file=sys.stderr)
        return 1

    sizes = [len(value) for _kind, _key, value in records]
    print(
        f"{len(records):,} records, mean {statistics.fmean(sizes):,.0f} B, "
        f"max {max(sizes):,} B; Python {sys.version.split()[0]}"
    )
    rows: list[tuple[str, float, list[float]]] = []
    for name, fn in (
        ("orjson.loads", baseline),
        ("decode_input_slow", slow),
        ("decode_input", decode),
    ):
        latencies_us(records, fn)  # warm-up
        rows.append((name, throughput(records, fn, args.rounds), latencies_us(records, fn)))
    decode_lat = rows[2][2]
    for kind in KINDS:
        picked = [lat for lat, rec in zip(decode_lat, records, strict=True) if rec[0] == kind]
        rows.append((f"  of which {kind} ({len(picked):,})", 0.0, picked))

    print(f"{'':30} {'events/s':>12} {'p50 us':>9} {'p99 us':>9} {'mean us':>9}")
    for name, rate, lat in rows:
        shown = f"{rate:12,.0f}" if rate else f"{'':12}"
        p50, p99, mean = pct(lat, 50), pct(lat, 99), statistics.fmean(lat)
        print(f"{name:30} {shown} {p50:9.2f} {p99:9.2f} {mean:9.2f}")
    base_rate, slow_rate, decode_rate = rows[0][1], rows[1][1], rows[2][1]
    print(
        f"decode_input costs {base_rate / decode_rate:.1f}x bare orjson.loads; "
        f"the mix decodes {decode_rate / slow_rate:.1f}x as fast as the slow path"
    )
    print()
    print(
        f"{'per type':12} {'records':>8} {'slow rec/s':>11} {'slow us':>8} "
        f"{'fast rec/s':>11} {'fast us':>8} {'fast/slow':>9}"
    )
    for kind, count, slow_kind, fast_kind in by_kind(records, slow, decode, args.rounds):
        print(
            f"{kind:12} {count:8,} {slow_kind:11,.0f} {1e6 / slow_kind:8.2f} "
            f"{fast_kind:11,.0f} {1e6 / fast_kind:8.2f} {fast_kind / slow_kind:8.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
