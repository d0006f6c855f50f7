"""Memory per envoy of the table state, and the changelog bytes written per envoy update.

Run: .venv/bin/python benchmarks/bench_memory.py [--envoys 20000] [--runs 25] [--quick]

Each envoy gets an enrollment and `--runs` realistic runs (5-30 resources, 8% changed,
2% failed), so its drift history is full (HISTORY_RUNS = 10 runs, plus RECENT_RUN_IDS run
ids). The mean is traced Python allocations of the whole table (tracemalloc), not RSS:
the worker's resident memory per 100,000 envoys is in bench_recovery.py. The baseline in
the same run is the least any design must keep: a (status, version, last_seen) tuple per
envoy.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchcommon import machine

from vigo.processor.records import StoredEnvoy, encode_stored_envoy
from vigo.projections.envoy import HISTORY_RUNS, EnvoyState, Rules, apply_event
from vigo.topics.events import Enrollment, ModuleError, Resource, Run

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
                "2026-11-27T12:00:00Z",
                "2026-11-27T12:00:04Z",
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envoys", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="5,000 envoys")
    args = parser.parse_args()
    if args.quick:
        args.envoys = 5_000
    print(machine())

    table, table_bytes = measure(build, args.envoys, args.runs)
    base, base_bytes = measure(
        lambda n: {
            f"host-{i:07d}.prod.example.com".encode(): ("converged", 7, T0) for i in range(n)
        },
        args.envoys,
    )
    record_sizes = sorted(len(encode_stored_envoy(r)) for r in table.values())
    per_envoy = table_bytes / args.envoys
    full = sum(len(r.state.history) == HISTORY_RUNS for r in table.values())
    print(f"{args.envoys:,} envoys, {args.runs} runs each; {full:,} with a full history")
    print(f"{'measure':<46}{'value':>12}")
    print(f"{'table state per envoy (bytes, in memory)':<46}{per_envoy:>12,.0f}")
    print(f"{'baseline per envoy (status tuple in a dict)':<46}{base_bytes / args.envoys:>12,.0f}")
    median = record_sizes[len(record_sizes) // 2]
    print(f"{'changelog record per update, median (bytes)':<46}{median:>12,}")
    print(f"{'changelog record per update, max (bytes)':<46}{record_sizes[-1]:>12,}")
    print(f"{'1M envoys, table state (GiB)':<46}{per_envoy * 1e6 / 2**30:>12.2f}")
    verdict = "met" if per_envoy < 1024 else "NOT met"
    print(f"goal < 1 KB of table state per envoy (mean, full history): {verdict}")
    del base


if __name__ == "__main__":
    main()
