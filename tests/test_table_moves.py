"""Envoy state that moves between workers with the memory store (faust_compat's
`ResumableMemoryStore`): a partition that goes away and comes back keeps every envoy,
including those whose only changelog record is old, and takes what changed while away.

The group changes while the first worker is still reading a long changelog, which is when
Faust's recovery kept an offset for a partition it had just lost (found as silent envoys
missing from the fleet numbers after a long chaos soak)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from processor.web.cluster import envoy_partition
from tests.harness import Worker, enrollment, produce, run_event, worker_config
from tests.webharness import http_get, new_prefix, poll, settled
from topics.names import TopicNames

PARTITIONS = 2
QUIET = [f"quiet-{i}" for i in range(24)]
#: Tombstones of one key per partition: nothing to keep, but recovery reads them all.
FILLER_PER_PARTITION = 150_000


def settled_now(workers: list[Worker]) -> bool:
    """`settled`, False while a worker's web server is not up yet."""
    try:
        return settled(workers)
    except OSError:
        return False


def compliance(worker: Worker) -> dict[str, Any]:
    reply = http_get(worker.url + "/api/compliance")
    return reply.json() if reply.status == 200 else {}


def statuses(worker: Worker) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for envoy_id in QUIET:
        reply = http_get(f"{worker.url}/api/envoys/{envoy_id}")
        found[envoy_id] = reply.json()["status"] if reply.status == 200 else None
    return found


def history_length(worker: Worker, envoy_id: str) -> int:
    reply = http_get(f"{worker.url}/api/envoys/{envoy_id}")
    return len(reply.json()["history"]) if reply.status == 200 else 0


def offline_count(doc: dict[str, Any]) -> int:
    return int(doc.get("by_status", {}).get("offline", 0)) if doc else -1


def fill_changelog(bootstrap: str, changelog: str) -> None:
    for partition in range(PARTITIONS):
        key = next(
            f"filler-{i}"
            for i in range(1000)
            if envoy_partition(f"filler-{i}", PARTITIONS) == partition
        )
        produce(bootstrap, [(changelog, key.encode(), None)] * FILLER_PER_PARTITION)


@pytest.mark.timeout(420)
def test_a_partition_that_moves_away_and_back_keeps_every_envoy(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = new_prefix()
    names = TopicNames(prefix)
    config = worker_config(kafka_bootstrap, prefix, partitions=PARTITIONS, interval="1s")
    config["processor"] = {"store": "memory"}
    first = Worker(config, tmp_path, name="first").start()
    try:
        produce(kafka_bootstrap, [(names.enrollments, e.encode(), enrollment(e)) for e in QUIET])
        produce(
            kafka_bootstrap, [(names.runs, e.encode(), run_event(e, "unchanged")) for e in QUIET]
        )
        # Silent from now on: offline after two intervals, then their records never change.
        doc = poll(lambda: compliance(first), lambda d: offline_count(d) == len(QUIET), timeout=60)
        assert offline_count(doc) == len(QUIET), doc
    finally:
        first.stop()
    fill_changelog(kafka_bootstrap, f"{prefix}compliance-envoys-changelog")

    # The first worker starts reading the long changelog; a second joins meanwhile and
    # takes a partition, then leaves again and gives it back.
    started = first.log_text().count("Reading Starts At")
    first.start(wait=False)
    try:
        poll(lambda: first.log_text().count("Reading Starts At") > started, bool, timeout=60)
        second = Worker(config, tmp_path, name="second").start(wait=False)
        moved = changed_while_away(kafka_bootstrap, names, first, second)
        assert poll(lambda: settled_now([first]), bool, timeout=120)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and None in statuses(first).values():
            time.sleep(1)
        seen = statuses(first)
        assert [e for e, s in seen.items() if s is None] == []
        assert history_length(first, moved) == 1
        # It ran once more and went silent again: offline like the rest.
        doc = poll(lambda: compliance(first), lambda d: offline_count(d) == len(QUIET), timeout=60)
        assert offline_count(doc) == len(QUIET) and doc["active"] == len(QUIET), doc
        assert "Traceback" not in first.log_text()
    finally:
        first.stop()  # whatever failed: no worker outlives the test


def changed_while_away(bootstrap: str, names: TopicNames, first: Worker, second: Worker) -> str:
    """Both workers settle; an envoy of the partition the second took runs once; the
    second leaves. Returns that envoy."""
    try:
        assert poll(lambda: settled_now([first, second]), bool, timeout=180)
        # Changed while its partition is away from the first worker (whichever has it).
        moved = next(e for e in QUIET if envoy_partition(e, PARTITIONS) == 1)
        produce(bootstrap, [(names.runs, moved.encode(), run_event(moved, "changed"))])
        # A clean run leaves no drift history; this one is its first entry.
        assert poll(lambda: history_length(second, moved), lambda n: n == 1, timeout=60) == 1
    finally:
        second.stop()
    return moved
