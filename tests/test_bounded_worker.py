"""SPEC 10.9 on a real worker and broker: an envoy whose runs change thousands of
resources keeps a small changelog record (the broker refuses records over 1 MiB, which
an unbounded history of these runs would reach), while the other envoys go on."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from processor.records import decode_stored_envoy
from tests.eventgen import iso
from tests.harness import (
    Worker,
    checkin,
    consume,
    enrollment,
    get_json,
    produce,
    read_raw,
    run_event,
    worker_config,
)
from topics.names import TopicNames

BIG = "big-01"
RUNS = 12
CHANGED = 5000
OTHERS = [f"other-{i:02d}" for i in range(40)]


def big_run(n: int) -> bytes:
    """5,000 changed resources with ids of 30 bytes: about 370 KB, under the worker's
    1 MiB `processor.max_event_bytes`; ten of them unbounded would be 1.6 MB of ids."""
    finished = iso(int(time.time() * 1000) - (RUNS - n) * 1000)
    return orjson.dumps(
        {
            "schema": "vigo.run/1",
            "envoy_id": BIG,
            "run_id": f"big-run-{n:02d}-{uuid.uuid4().hex[:8]}",
            "started_at": finished,
            "finished_at": finished,
            "resources": [
                {
                    "id": f"file[/srv/app/conf/{n:02d}-{i:05d}.yml]",
                    "module": "files",
                    "result": "changed",
                }
                for i in range(CHANGED)
            ],
        }
    )


def expected_other(i: int) -> str:
    return "drifted" if i % 4 == 0 else "converged"


def other_records(t: TopicNames, round_: int) -> list[tuple[str, bytes, bytes]]:
    """One round of the other envoys: a check-in and a run each."""
    records = []
    for i, envoy in enumerate(OTHERS):
        records.append((t.checkins, envoy.encode(), checkin(envoy)))
        result = "changed" if i % 4 == 0 and round_ == RUNS - 1 else "ok"
        records.append((t.runs, envoy.encode(), run_event(envoy, result)))
    return records


def final_record(bootstrap: str, topic: str, key: bytes, timeout: float = 30) -> Any:
    """The newest changelog record of `key`, once it holds all the runs."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [r for r in read_raw(bootstrap, topic) if r.key == key]
        if mine and decode_stored_envoy(mine[-1].value).state.consecutive_changed == RUNS:
            return mine[-1]
        assert time.monotonic() < deadline, "the final state never reached the changelog"
        time.sleep(1)


def test_huge_runs_keep_the_stored_record_small_while_others_go_on(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix, interval="60s")
    worker = Worker(config, tmp_path).start()
    try:
        produce(kafka_bootstrap, [(t.enrollments, BIG.encode(), enrollment(BIG, env="prod"))])
        for n in range(RUNS):
            produce(
                kafka_bootstrap,
                [(t.runs, BIG.encode(), big_run(n)), *other_records(t, n)],
            )

        def settled(rs: list[dict[str, Any]]) -> bool:
            last = {r["envoy_id"]: r["to"] for r in rs}
            return last.get(BIG) == "diverged" and all(
                last.get(e) == expected_other(i) for i, e in enumerate(OTHERS)
            )

        changes = consume(kafka_bootstrap, t.status_changes, until=settled, timeout=90)
        last = {r["envoy_id"]: r["to"] for r in changes}
        assert last.get(BIG) == "diverged"
        assert {e: last.get(e) for e in OTHERS} == {
            e: expected_other(i) for i, e in enumerate(OTHERS)
        }

        # The statuses settle before the last runs are in, whose states may still be on
        # their way to the table (written after their batch's outputs): wait for the last.
        changelog = f"{topic_prefix}compliance-envoys-changelog"
        record = final_record(kafka_bootstrap, changelog, BIG.encode())
        detail = get_json(f"{worker.url}/api/envoys/{BIG}")
        assert detail["status"] == "diverged"
        assert detail["consecutive_changed_runs"] == RUNS
        assert len(detail["history"]) == 10
        for run in detail["history"]:
            assert (run["outcome"], run["changed_count"], run["failed_count"]) == (
                "changed",
                CHANGED,
                0,
            )
            assert len(run["changed"]) == 20 and run["failed"] == []

        print(f"stored record of {BIG} after {RUNS} runs of {CHANGED}: {len(record.value)} bytes")
        assert len(record.value) < 64 * 1024
        assert consume(kafka_bootstrap, t.deadletter, timeout=2) == []
        assert "Traceback" not in worker.log_text()
    finally:
        worker.stop()
