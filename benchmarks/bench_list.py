"""`/api/envoys` from the list index (SPEC 11.4 "Lists"): with 1,000,000 envoys, a page of
100 answers in under 50 ms (p99) while the worker processes 5,000 events/s.

Run: .venv/bin/python benchmarks/bench_list.py [--envoys 1000000] [--quick]

A real `EnvoyProcessor` over an in-memory table of real encoded records (format 3, each
with a drift history), its partitions owned, `fleet.group_by: [env]`; no Kafka, no HTTP.
The list index is built as the worker builds it (`counts_for`, once per assignment).
Each query is what a worker does for `/api/local/envoys` (`owned_envoys` with
`limit + 1`, the page and its JSON), from a random cursor. Between queries, status
changes are applied through the same path as the agent's (held state put, index and
counts moved) at 5,000 per second of wall time, and the held states are written to the
table once a second (the checkpoint): the worker is single-threaded, so the events and
the reads interleave. The baseline is the previous full scan (every envoy's head decoded
per request), timed over a few calls only.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from collections.abc import Callable, Container
from typing import Any, cast

import orjson
from benchcommon import machine, rss_bytes, table
from msgspec.structs import replace

from processor.envoys import EnvoyProcessor, encode_envoy_record
from processor.metrics import Metrics
from processor.records import (
    StoredEnvoy,
    decode_envoy_head,
    decode_stored_envoy,
    encode_stored_envoy,
    head_labels,
)
from processor.state import HeldTable
from processor.web.documents import (
    ListQuery,
    encode_cursor,
    merge_pages,
    parse_list_query,
    select_envoys,
)
from projections.envoy import EnvoyState, Rules
from projections.groups import in_group
from projections.runs import RunSummary
from topics.names import TopicNames
from topics.statuses import RunOutcome, Status

NOW_MS = 1_795_000_000_000
#: The fleet's statuses, and where the churn moves envoys to.
MIX = (
    (Status.CONVERGED, 86),
    (Status.DRIFTED, 5),
    (Status.RELAPSED, 2),
    (Status.DIVERGED, 1),
    (Status.DEGRADED, 1),
    (Status.FAILED, 2),
    (Status.OFFLINE, 2),
    (Status.NO_DATA, 1),
)
ENVS = ("prod", "prod", "prod", "staging", "dev")


class Owned:
    """Catch-up and guard of a worker that owns and has caught up every partition."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def active_partitions(self) -> set[int]:
        return self.partitions

    def partition_caught_up(self, partition: int) -> bool:
        return True


def template(status: Status, env: str) -> EnvoyState:
    history = tuple(
        RunSummary(
            run_id=f"run-{n:04d}-5e0c3f1a-9b7d-4a2e-8f61-{n:012d}",
            finished_at="2026-11-17T12:00:00Z",
            finished_at_ms=NOW_MS - n * 1_800_000,
            outcome=RunOutcome.CHANGED if n % 3 else RunOutcome.CLEAN,
            changed=(f"file[/etc/app/conf{n}.d]",) if n % 3 else (),
            failed=(),
            errored_modules=(),
            changed_count=1 if n % 3 else 0,
            failed_count=0,
            errored_modules_count=0,
        )
        for n in range(10)
    )
    return EnvoyState(
        envoy_id="",
        labels={"env": env, "role": "web", "dc": "eu-west-1"},
        interval_s=300,
        enrolled_at_ms=NOW_MS - 86_400_000,
        last_seen_ms=NOW_MS,
        last_seen_at="2026-11-17T12:00:00Z",
        last_outcome=RunOutcome.CLEAN,
        last_run_finished_ms=NOW_MS,
        status=status,
        status_since_ms=NOW_MS,
        version=12,
        history=history,
    )


def build_table(envoys: int, partitions: int, rng: random.Random) -> dict[bytes, bytes]:
    statuses = [s for s, weight in MIX for _ in range(weight)]
    templates = {(s, e): template(s, e) for s in Status for e in set(ENVS)}
    data: dict[bytes, bytes] = {}
    for i in range(envoys):
        envoy = f"host-{rng.randrange(16**8):08x}-{i:07d}.example.com"
        state = replace(templates[rng.choice(statuses), ENVS[i % len(ENVS)]], envoy_id=envoy)
        data[envoy.encode()] = encode_stored_envoy(StoredEnvoy(i % partitions, state))
    return data


def new_processor(data: dict[bytes, bytes], partitions: int) -> EnvoyProcessor:
    none = cast(Any, None)
    owned = cast(Any, Owned(partitions))
    return EnvoyProcessor(
        table=cast(Any, data),
        state=HeldTable(none, encode=encode_envoy_record),
        names=TopicNames("bench."),
        status_topic=none,
        deadletter_topic=none,
        rules=Rules(default_interval_s=300),
        guard=owned,
        catch_up=owned,
        outputs=none,
        metrics=Metrics(),
        clock=lambda: NOW_MS / 1000,
        max_event_bytes=1 << 20,
        group_by=("env",),
    )


class Churn:
    """Status changes at `rate` per second of wall time, applied as the agent applies an
    event's new state (held, index, counts and groups moved), and a checkpoint a second."""

    def __init__(
        self, envoys: EnvoyProcessor, data: dict[bytes, bytes], rate: int, rng: random.Random
    ) -> None:
        self.envoys, self.data, self.rate, self.rng = envoys, data, rate, rng
        self.keys = list(data)
        self.statuses = [s for s, weight in MIX for _ in range(weight)]
        self.started = self.checkpointed = time.perf_counter()
        self.applied = 0
        self.busy_s = 0.0
        self.last = self.started

    def catch_up(self) -> None:
        begun = self.last = time.perf_counter()
        due = int((begun - self.started) * self.rate) - self.applied
        for _ in range(due):
            self.change()
        self.applied += max(due, 0)
        if begun - self.checkpointed >= 1.0:
            self.checkpoint()
            self.checkpointed = begun
        self.busy_s += time.perf_counter() - begun

    def checkpoint(self) -> None:
        """The held states written to the table (`processor.state.flush`)."""
        for _, key, value in self.envoys.state.take():
            self.data[key] = value

    def change(self) -> None:
        envoys = self.envoys
        key = self.rng.choice(self.keys)
        record = envoys._stored(key)
        assert record is not None
        old = record.state
        new = replace(old, status=self.rng.choice(self.statuses), version=old.version + 1)
        partition = record.partition
        envoys.state.put(partition, key, StoredEnvoy(partition, new))
        envoys._listed(partition, key, new)
        envoys._move_groups(partition, old, new)
        if new.status is not old.status:
            envoys._move(partition, old.status, new.status)


def scan_owned_envoys(
    envoys: EnvoyProcessor,
    statuses: Container[Status] | None,
    after: str | None,
    first: int | None,
    label: tuple[str, str] | None,
) -> list[EnvoyState]:
    """The baseline: `owned_envoys` before the index, a scan of every head per call."""
    import heapq

    owned = envoys.catch_up.active_partitions()
    after_key = after.encode("utf-8") if after is not None else None
    keys = []
    for key, data in envoys.table.items():
        if data is None or (after_key is not None and key <= after_key):
            continue
        head = decode_envoy_head(data)
        if (
            head.partition in owned
            and (statuses is None or head.status in statuses)
            and (label is None or in_group(head_labels(head), *label))
        ):
            keys.append(key)
    if first is not None:
        keys = heapq.nsmallest(first, keys)
    return [decode_stored_envoy(envoys.table[key]).state for key in keys]


Lister = Callable[
    [EnvoyProcessor, Container[Status] | None, str | None, int | None, tuple[str, str] | None],
    list[EnvoyState],
]


def indexed(
    envoys: EnvoyProcessor,
    statuses: Container[Status] | None,
    after: str | None,
    first: int | None,
    label: tuple[str, str] | None,
) -> list[EnvoyState]:
    return envoys.owned_envoys(statuses, after, first, label)


def page(envoys: EnvoyProcessor, query: ListQuery, lister: Lister) -> bytes:
    """What `/api/local/envoys` does: the worker's matches, its page, the JSON."""
    states = lister(envoys, query.statuses, query.after, query.limit + 1, query.label)
    items, more = select_envoys(states, query)
    return orjson.dumps(merge_pages([(items, more)], query.limit))


Scenario = Callable[[EnvoyProcessor, Lister, str], object]


def timed(
    envoys: EnvoyProcessor,
    churn: Churn,
    run: Scenario,
    lister: Lister,
    ids: list[str],
    calls: int,
    rng: random.Random,
) -> list[float]:
    """Each call from a random cursor, the status changes due applied before it."""
    times = []
    for _ in range(calls):
        churn.catch_up()
        cursor = rng.choice(ids)
        started = time.perf_counter()
        run(envoys, lister, cursor)
        times.append(time.perf_counter() - started)
    return times


def scenarios() -> list[tuple[str, Scenario]]:
    def listing(params: dict[str, str]) -> Scenario:
        def run(envoys: EnvoyProcessor, lister: Lister, cursor: str) -> object:
            query = parse_list_query({**params, "cursor": encode_cursor(cursor)})
            return page(envoys, query, lister)

        return run

    def first_100(envoys: EnvoyProcessor, lister: Lister, cursor: str) -> object:
        return lister(envoys, None, cursor, 100, None)

    return [
        ("owned_envoys(first=100)", first_100),
        ("?limit=100", listing({"limit": "100"})),
        ("?status=drifted&limit=100", listing({"status": "drifted", "limit": "100"})),
        ("?status=errors&label=env=prod", listing({"status": "errors", "label": "env=prod"})),
    ]


def figures(times: list[float]) -> tuple[str, str, str]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{statistics.median(ordered) * 1000:.2f}",
        f"{p99 * 1000:.2f}",
        f"{ordered[-1] * 1000:.2f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envoys", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8, help="owned by the worker")
    parser.add_argument("--calls", type=int, default=2000, help="indexed queries per kind")
    parser.add_argument("--baseline-calls", type=int, default=5, help="scans per kind")
    parser.add_argument("--rate", type=int, default=5000, help="status changes per second")
    parser.add_argument("--quick", action="store_true", help="100,000 envoys, fewer calls")
    args = parser.parse_args()
    if args.quick:
        args.envoys, args.calls = 100_000, 500
    rng = random.Random(7)
    print(machine())
    started = time.perf_counter()
    data = build_table(args.envoys, args.partitions, rng)
    ids = [key.decode() for key in data]
    envoys = new_processor(data, args.partitions)
    print(f"built {args.envoys:,} encoded envoys in {time.perf_counter() - started:.1f} s")
    rss = rss_bytes(os.getpid())
    started = time.perf_counter()
    for partition in range(args.partitions):
        envoys.counts_for(partition)
    built_s = time.perf_counter() - started
    grown = (rss_bytes(os.getpid()) - rss) / 2**20
    print(
        f"counts and list index of {args.partitions} partitions built in {built_s:.1f} s "
        f"(RSS +{grown:,.0f} MiB with the counts and groups)"
    )
    gc.collect()
    gc.freeze()  # the fleet is long-lived: keep the collector off it while timing

    churn = Churn(envoys, data, args.rate, rng)
    rows = []
    for name, run in scenarios():
        fast = timed(envoys, churn, run, indexed, ids, args.calls, rng)
        slow = timed(envoys, churn, run, scan_owned_envoys, ids, args.baseline_calls, rng)
        p50, p99, worst = figures(fast)
        s50, s99, _ = figures(slow)
        speedup = statistics.median(slow) / statistics.median(fast)
        rows.append((name, p50, p99, worst, s50, s99, f"{speedup:,.0f}x"))
        # The index must answer what the scan answers (which reads the table alone).
        churn.checkpoint()
        cursor = rng.choice(ids)
        assert run(envoys, indexed, cursor) == run(envoys, scan_owned_envoys, cursor), name
    elapsed = churn.last - churn.started
    print()
    print(
        f"{args.envoys:,} envoys, {args.partitions} partitions; {churn.applied:,} status "
        f"changes in {elapsed:.1f} s ({churn.applied / elapsed:,.0f}/s, "
        f"{churn.busy_s / elapsed:.0%} of the time) interleaved with the queries"
    )
    print(
        f"latency in ms: index over {args.calls} calls, full scan (baseline) over "
        f"{args.baseline_calls}, random cursors"
    )
    header = ("query", "p50", "p99", "max", "scan p50", "scan p99", "speed-up")
    print(table(rows, header))
    verdict = all(float(row[2]) < 50 for row in rows)
    print(f"p99 < 50 ms for every kind: {'yes' if verdict else 'NO'}")


if __name__ == "__main__":
    main()
