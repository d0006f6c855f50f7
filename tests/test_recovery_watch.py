"""The recovery watch (`faust_compat.recovery_watch`): a recovery that never receives the
records of one changelog partition ends anyway, and what it missed is put back before the
worker serves. The probe: a real worker on the real broker whose first recovery is
starved of one changelog partition (tests/faults/sitecustomize.py), as in the chaos
soak's stalled recovery; without the watch that worker waits for ever."""

from __future__ import annotations

import os
import time
from pathlib import Path

from faust.types import TP

from processor.faust_compat import RECOVERY_STALL_S, stalled_partitions
from tests.harness import REPO, Worker, enrollment, http_json, produce, run_event, worker_config
from tests.test_processor_failures import one_per_partition
from topics.names import TopicNames

A, B = TP("t-changelog", 0), TP("t-changelog", 1)


def test_a_partition_recovery_waits_for_is_stalled_after_the_wait_without_records() -> None:
    started = 100.0
    # Nothing received since the start: stalled once the wait has passed, not before.
    assert stalled_partitions({A: 5}, {}, started, started + RECOVERY_STALL_S) == [A]
    assert stalled_partitions({A: 5}, {}, started, started + RECOVERY_STALL_S - 0.1) == []
    # A record received lately restarts the wait; one received before the start does not.
    assert stalled_partitions({A: 5}, {A: started + 5}, started, started + RECOVERY_STALL_S) == []
    assert stalled_partitions({A: 5}, {A: started - 50}, started, started + 10.5) == [A]
    # A partition read to its end is never stalled, however quiet.
    assert stalled_partitions({A: 0, B: 3}, {}, started, started + 60) == [B]


def test_a_recovery_starved_of_one_changelog_partition_ends_and_is_repaired(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    envoys = [e for p in range(3) for e in one_per_partition(f"rw{p}")]
    config = worker_config(kafka_bootstrap, topic_prefix)
    first = Worker(config, tmp_path, name="w1")
    starved = Worker(
        config,
        tmp_path,
        name="w2",
        env={
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "faults"), str(REPO)]),
            "VIGO_FAULT_STARVED_CHANGELOG_PARTITION": "0",
        },
    )
    try:
        first.start()
        produce(kafka_bootstrap, [(t.enrollments, e.encode(), enrollment(e)) for e in envoys])
        produce(kafka_bootstrap, [(t.runs, e.encode(), run_event(e, "changed")) for e in envoys])
        before = wait_served(first.url, envoys, "drifted", timeout=60)
        first.stop()
        started = time.monotonic()
        starved.start(wait=False)  # not ready before its first recovery has ended
        # Served at all only once recovery ended: the starved partition's envoys too.
        after = wait_served(starved.url, envoys, "drifted", timeout=RECOVERY_STALL_S + 60)
        took = time.monotonic() - started
    finally:
        first.stop()
        starved.stop()
    log = starved.log_text()
    assert "declared read, the recovery audit reads it again" in log, log[-4000:]
    assert "put back from the changelog" in log, log[-4000:]
    assert after == before
    assert took >= RECOVERY_STALL_S  # the fault really held recovery back
    assert "Traceback" not in log, log[-3000:]


def wait_served(url: str, envoys: list[str], status: str, timeout: float) -> dict[str, object]:
    """Each envoy's status as the worker serves it, once every one has `status`."""
    deadline = time.monotonic() + timeout
    served: dict[str, object] = {}
    while time.monotonic() < deadline:
        served = {}
        for envoy in envoys:
            code, doc = http_json(f"{url}/api/envoys/{envoy}")
            served[envoy] = doc.get("status") if code == 200 and isinstance(doc, dict) else code
        if all(s == status for s in served.values()):
            return served
        time.sleep(0.5)
    raise AssertionError(f"not every envoy {status} within {timeout} s: {served}")
