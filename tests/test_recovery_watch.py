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

from processor.faust_compat import RECOVERY_STALL_S, fetched_past, stalled_partitions
from tests.harness import (
    REPO,
    Worker,
    enrollment,
    http_json,
    metric_total,
    produce,
    run_event,
    worker_config,
)
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


def test_only_records_fetched_and_never_received_are_left_to_the_audit() -> None:
    # Recovery received offset 41 last, so it waits for 42.
    assert fetched_past(50, 41)  # 42..49 fetched, never received: the audit reads them
    assert not fetched_past(42, 41)  # nothing fetched past it: fetched again, waited for
    assert not fetched_past(None, 41)  # no position known: the same
    assert fetched_past(1, -1) and not fetched_past(0, -1)  # from the log's start


def test_a_recovery_starved_of_one_changelog_partition_ends_and_is_repaired(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Records fetched and never handed to recovery: declared read, the audit puts them
    back."""
    log, stalls = recover_with_fault(
        kafka_bootstrap, topic_prefix, tmp_path, "VIGO_FAULT_STARVED_CHANGELOG_PARTITION"
    )
    assert "declared read, the recovery audit reads it again" in log, log[-4000:]
    assert stalls["declared_read"] >= 1 and stalls["fetched_again"] == 0, stalls
    assert "put back from the changelog" in log, log[-4000:]


def test_a_changelog_partition_recovery_never_took_is_resumed_and_read(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A partition left out when recovery resumed its partitions, so never fetched past:
    resumed and fetched again, and recovery itself reads it (nothing left to the audit)."""
    log, stalls = recover_with_fault(
        kafka_bootstrap, topic_prefix, tmp_path, "VIGO_FAULT_UNRESUMED_CHANGELOG_PARTITION"
    )
    assert "fetching it again from" in log, log[-4000:]
    assert stalls["fetched_again"] >= 1 and stalls["declared_read"] == 0, stalls
    assert "declared read" not in log, log[-4000:]
    assert "put back from the changelog" not in log, log[-4000:]


def recover_with_fault(
    bootstrap: str, prefix: str, tmp_path: Path, fault: str
) -> tuple[str, dict[str, float]]:
    """A worker serves envoys on every partition and stops; a second worker, with `fault`
    on changelog partition 0 (tests/faults/sitecustomize.py), recovers the tables. It must
    serve every envoy as the first did, after the fault held its recovery back for at
    least the watch's wait. Returns the second worker's log and its
    `vigo_recovery_stalls_total` by action."""
    t = TopicNames(prefix)
    envoys = [e for p in range(3) for e in one_per_partition(f"rw{p}")]
    config = worker_config(bootstrap, prefix)
    first = Worker(config, tmp_path, name="w1")
    faulty = Worker(
        config,
        tmp_path,
        name="w2",
        env={
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "faults"), str(REPO)]),
            fault: "0",
        },
    )
    try:
        first.start()
        produce(bootstrap, [(t.enrollments, e.encode(), enrollment(e)) for e in envoys])
        produce(bootstrap, [(t.runs, e.encode(), run_event(e, "changed")) for e in envoys])
        before = wait_served(first.url, envoys, "drifted", timeout=60)
        first.stop()
        started = time.monotonic()
        faulty.start(wait=False)  # not ready before its first recovery has ended
        # Served at all only once recovery ended: partition 0's envoys too.
        after = wait_served(faulty.url, envoys, "drifted", timeout=RECOVERY_STALL_S + 60)
        took = time.monotonic() - started
        # The API serves the tables once recovery has read them; the audit and the
        # streams come after. Stopped only once ready, not in the middle of the audit.
        faulty.wait_ready(timeout=60)
        stalls = {
            action: metric_total(faulty.url, "vigo_recovery_stalls_total", f'action="{action}"')
            for action in ("declared_read", "fetched_again")
        }
    finally:
        first.stop()
        faulty.stop()
    log = faulty.log_text()
    assert after == before
    assert took >= RECOVERY_STALL_S, log[-4000:]  # the fault really held recovery back
    assert "Traceback" not in log, log[-3000:]
    return log, stalls


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
