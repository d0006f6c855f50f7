"""The Quix Streams peer: the run-path status derivation of SPEC section 4 in Quix Streams,
per-envoy state in its RocksDB store with a changelog topic, each status change published.

Runs in its own virtualenv (benchmarks/quix_env.sh creates it; quixstreams is pinned
there), never imports `vigo`. Reads the input topic from the beginning as a new consumer
group and stops itself fairly: `on_message_processed` counts the records it has processed
and, at the topic's size, calls `app.stop()`, which ends the poll loop and forces the
final checkpoint (changelog and outputs flushed, offsets committed, state written). So the
peer is not held to its next `commit_interval` boundary, and neither is its clock.

Settings, from Quix Streams' own documentation (configuration, checkpointing, RocksDB
options), chosen for throughput on a backlog:
- processing_guarantee "at-least-once" (the default; "exactly-once" adds transactions);
- commit_interval 5 s (the default; `--commit-interval`): a checkpoint costs a producer
  flush and a synchronous offset commit, so a longer interval does fewer of them; the
  last one is forced by the stop whatever the interval;
- consumer fetches of up to 8 MiB a partition and 64 MiB a request, as the aiokafka
  baseline's, and librdkafka's pre-fetch queue left at its (large) default;
- RocksDB with Quix's defaults (orjson serialisation, LZ4, 64 MiB write buffers), fdatasync
  instead of fsync for its files;
- logging at WARNING.

Prints one JSON line: events, and perf_counter() readings (CLOCK_MONOTONIC on Linux, so
comparable with the parent's) at process start, first record processed, last record
processed, and after `app.run()` returned (the final checkpoint committed); and the CPU
seconds the process used, all threads.

Run: $(bash benchmarks/quix_env.sh) benchmarks/peer_quix.py --bootstrap HOST:PORT \
         --input TOPIC --output TOPIC [--group GROUP] [--total N] [--commit-interval S]
(benchmarks/bench_throughput.py runs it side by side with the worker.)
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

# The SPEC section 4 rules for runs, copied (this script must not import vigo).
_CHANGED_STATUS = {1: "drifted", 2: "relapsed"}


def run_outcome(run: dict[str, Any]) -> str:
    """failed: every module errored; partial: some did; changed: any changed resource."""
    resources = run.get("resources", ())
    modules = {r["module"] for r in resources}
    errored = {e["module"] for e in run.get("module_errors", ())}
    modules |= errored
    changed = False
    for r in resources:
        result = r["result"]
        if result == "failed":
            errored.add(r["module"])
        elif result == "changed":
            changed = True
    if errored and errored >= modules:
        return "failed"
    if errored:
        return "partial"
    return "changed" if changed else "clean"


def derive(state: list[Any] | None, run: dict[str, Any]) -> tuple[list[Any], str | None]:
    """state = [consecutive changed runs, last outcome, status, version, last finished_at];
    returns the new state and the previous status when it changed (None if not)."""
    outcome = run_outcome(run)
    consecutive, _last, status, version, last_finished = state or [0, None, None, 0, ""]
    finished = run["finished_at"]
    if finished < last_finished:  # a late run changes nothing (kept out of the status)
        return state or [0, None, None, 0, ""], None
    consecutive = consecutive + 1 if outcome == "changed" else 0
    if outcome == "failed":
        new_status = "failed"
    elif outcome == "partial":
        new_status = "degraded"
    elif outcome == "changed":
        new_status = _CHANGED_STATUS.get(consecutive, "diverged")
    else:
        new_status = "converged"
    if new_status == status and state is not None:
        return [consecutive, outcome, status, version, finished], None
    return [consecutive, outcome, new_status, version + 1, finished], status or ""


def topic_size(bootstrap: str, topic: str) -> int:
    """The sum of the topic's end offsets (the harness passes --total instead)."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "quix-peer-probe"})
    try:
        meta = probe.list_topics(topic, timeout=30).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        return sum(probe.get_watermark_offsets(tp, timeout=30)[1] for tp in tps)
    finally:
        probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default=f"quix-peer-{int(time.time())}")
    parser.add_argument("--total", type=int, default=0, help="records to process (0: all)")
    parser.add_argument("--commit-interval", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    import orjson
    from quixstreams import Application
    from quixstreams.state import State
    from quixstreams.state.rocksdb import RocksDBOptions

    total = args.total or topic_size(args.bootstrap, args.input)
    marks: dict[str, Any] = {"events": total, "started": STARTED, "processed": 0}
    app: Application

    def on_message_processed(topic: str, partition: int, offset: int) -> None:
        n = marks["processed"] = marks["processed"] + 1
        if n == 1:
            marks["first"] = time.perf_counter()
        if n == total:
            marks["last"] = time.perf_counter()
            app.stop()  # ends the poll loop; the final checkpoint is committed on the way out

    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        commit_interval=args.commit_interval,
        consumer_extra_config={
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
        },
        state_dir=state_dir,
        rocksdb_options=RocksDBOptions(use_fsync=False),
        on_message_processed=on_message_processed,
        loglevel="WARNING",
    )
    runs = app.topic(args.input, value_deserializer="bytes", key_deserializer="bytes")
    changes = app.topic(args.output, value_serializer="bytes", key_serializer="bytes")

    def on_run(value: bytes, state: State) -> bytes | None:
        run = orjson.loads(value)
        new, previous = derive(state.get("s"), run)
        state.set("s", new)
        if previous is None:
            return None
        return orjson.dumps(
            {
                "schema": "vigo.status-change/1",
                "envoy_id": run["envoy_id"],
                "from": previous or None,
                "to": new[2],
                "at": run["finished_at"],
                "version": new[3],
                "cause": "run",
                "run_id": run["run_id"],
                "consecutive_changed_runs": new[0],
                "labels": {},
            }
        )

    sdf = app.dataframe(runs)
    sdf = sdf.apply(on_run, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(changes)

    # A peer that never gets there still stops (and says so: no "last" in its line).
    guard = threading.Timer(args.timeout, app.stop)
    guard.daemon = True
    guard.start()
    try:
        app.run()
    finally:
        guard.cancel()
    marks["stopped"] = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread (librdkafka's too)
    marks["cpu_s"] = usage.ru_utime + usage.ru_stime
    shutil.rmtree(state_dir, ignore_errors=True)
    print(json.dumps(marks), flush=True)
    sys.exit(0 if "last" in marks else 1)


if __name__ == "__main__":
    main()
