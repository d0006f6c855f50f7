"""The Quix Streams peer: the run-path status derivation of SPEC section 4 in Quix Streams,
per-envoy state in its RocksDB store with a changelog topic, each status change published.

Runs in its own virtualenv (benchmarks/quix_env.sh creates it; quixstreams is pinned
there), never imports `vigo`. Reads the input topic from the beginning as a new consumer
group, stops once the group has committed every offset of the input as of its start, and
prints one JSON line: events, seconds from process start, seconds from the first commit.

Run: $(bash benchmarks/quix_env.sh) benchmarks/peer_quix.py --bootstrap HOST:PORT \
         --input TOPIC --output TOPIC [--group GROUP]
(benchmarks/bench_throughput.py runs it side by side with the worker.)
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default=f"quix-peer-{int(time.time())}")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    import orjson
    from confluent_kafka import Consumer, TopicPartition
    from quixstreams import Application
    from quixstreams.state import State

    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
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

    # The watcher: the group's committed offsets against the input's end offsets.
    watch = Consumer(
        {"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False}
    )
    meta = watch.list_topics(args.input, timeout=30).topics[args.input]
    tps = [TopicPartition(args.input, p) for p in sorted(meta.partitions)]
    ends = {tp.partition: watch.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
    total = sum(ends.values())
    result: dict[str, Any] = {"events": total}

    def watcher() -> None:
        first = None
        while time.perf_counter() - STARTED < args.timeout:
            done = sum(max(tp.offset, 0) for tp in watch.committed(tps, timeout=30))
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                result["seconds"] = now - STARTED
                if first is not None:
                    result["steady_seconds"] = now - first[0]
                    result["first_committed"] = first[1]
                break
            time.sleep(0.1)
        app.stop()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    app.run()
    thread.join(5)
    watch.close()
    print(json.dumps(result), flush=True)
    sys.exit(0 if "seconds" in result else 1)


if __name__ == "__main__":
    main()
