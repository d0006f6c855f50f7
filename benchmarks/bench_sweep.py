"""The cost of one liveness sweep tick with a large fleet of which few envoys expire: the
worker's deadline heap (`processor.deadlines.Deadlines`) and the pure sweep rules
(`sweep_envoy`, `next_deadline_ms`), as `EnvoyProcessor._sweep` runs them, plus the
changelog encoding of each swept envoy. Pure: no Kafka, no Faust.

Run: .venv/bin/python benchmarks/bench_sweep.py [--envoys 1000000] [--quick]

For k = 0, 10, 1,000, 10,000 expired envoys (k envoys made silent for 2.5 check-in
intervals, so they go offline but not yet stale), a tick's time should grow with k and not
with the fleet; a full scan of the fleet (what a sweep without the heap would do) is timed
once for contrast.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from benchcommon import machine, table
from msgspec.structs import replace

from processor.deadlines import Deadlines
from processor.envoy_liveness import SWEEP_LIMIT
from processor.records import StoredEnvoy, encode_stored_envoy
from projections.envoy import EnvoyState, Rules, next_deadline_ms, sweep_envoy
from topics.statuses import RunOutcome, Status

INTERVAL_S = 300
RULES = Rules(default_interval_s=INTERVAL_S)
NOW_MS = 1_795_000_000_000


def build(envoys: int) -> dict[bytes, EnvoyState]:
    labels = {"env": "prod", "role": "web"}
    states: dict[bytes, EnvoyState] = {}
    for i in range(envoys):
        envoy = f"host-{i:07d}.prod.example.com"
        # Seen within the last interval: the next deadline is in the future.
        seen = NOW_MS - (i % INTERVAL_S) * 1000
        states[envoy.encode()] = EnvoyState(
            envoy_id=envoy,
            labels=labels,
            interval_s=INTERVAL_S,
            enrolled_at_ms=NOW_MS - 86_400_000,
            last_seen_ms=seen,
            last_seen_at="2026-11-17T12:00:00Z",
            last_outcome=RunOutcome.CLEAN,
            last_run_finished_ms=seen,
            status=Status.CONVERGED,
            status_since_ms=seen,
            version=3,
        )
    return states


def tick(states: dict[bytes, EnvoyState], deadlines: Deadlines, now_ms: int, rules: Rules) -> int:
    """`EnvoyProcessor._sweep` without Faust: pop what expired, sweep it, reschedule."""
    swept_count = 0
    for key in list(deadlines.due(now_ms, SWEEP_LIMIT)):
        state = states[key]
        deadline = next_deadline_ms(state, rules)
        if deadline is None:
            continue
        if deadline > now_ms:
            deadlines.schedule(key, deadline)
            continue
        swept = sweep_envoy(state, now_ms, rules)
        if swept.state != state:
            states[key] = swept.state
            encode_stored_envoy(StoredEnvoy(0, swept.state))
            swept_count += 1
        deadlines.schedule(key, next_deadline_ms(swept.state, rules))
    return swept_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="ticks timed per k")
    parser.add_argument("--quick", action="store_true", help="100,000 envoys")
    args = parser.parse_args()
    if args.quick:
        args.envoys = 100_000
    print(machine())
    rules = RULES
    t0 = time.perf_counter()
    states = build(args.envoys)
    deadlines = Deadlines()
    for key, state in states.items():
        deadlines.schedule(key, next_deadline_ms(state, rules))
    print(f"built {args.envoys:,} envoys and their deadlines in {time.perf_counter() - t0:.1f} s")
    gc.collect()
    gc.freeze()  # the fleet is long-lived: keep the collector off it while timing

    keys = list(states)
    silent_ms = int(2.5 * INTERVAL_S * 1000)
    cursor = 0
    rows = []
    per_k: dict[int, float] = {}
    for k in (0, 10, 1_000, 10_000):
        if k > args.envoys:
            continue
        times = []
        for _ in range(args.repeat):
            # k envoys fall silent: an earlier deadline, queued as the worker queues it.
            chosen = [keys[(cursor + j) % len(keys)] for j in range(k)]
            cursor += k
            for key in chosen:
                old = NOW_MS - silent_ms
                states[key] = replace(
                    states[key], last_seen_ms=old, offline=False, status=Status.CONVERGED
                )
                deadlines.schedule(key, next_deadline_ms(states[key], rules))
            started = time.perf_counter()
            swept = tick(states, deadlines, NOW_MS, rules)
            times.append(time.perf_counter() - started)
            assert swept == k, (swept, k)
        median = statistics.median(times)
        per_k[k] = median
        rows.append(
            (
                f"{k:,}",
                f"{median * 1000:.3f}",
                f"{max(times) * 1000:.3f}",
                f"{median / k * 1e6:.1f}" if k else "-",
            )
        )
    # Contrast: what a sweep that scans the whole fleet would cost per tick.
    started = time.perf_counter()
    due = sum(1 for state in states.values() if (next_deadline_ms(state, rules) or 0) <= NOW_MS)
    scan = time.perf_counter() - started
    print()
    print(f"one sweep tick, {args.envoys:,} envoys scheduled (median of {args.repeat})")
    print(table(rows, ("expired k", "ms/tick", "max ms", "µs per expired envoy")))
    print(f"full scan of the fleet for contrast: {scan * 1000:,.0f} ms per tick ({due} due)")
    if per_k.get(10_000) and per_k.get(1_000):
        print(
            f"tick(10,000) / tick(1,000) = {per_k[10_000] / per_k[1_000]:.1f} "
            "(proportional to the expired: ~10)"
        )
    print(f"heap entries after the ticks: {len(deadlines):,}")


if __name__ == "__main__":
    main()
