"""Delivery edge cases against a real worker and broker: a hole in the offsets that a
second read confirms (records deleted under the committed offset) is accepted and the
worker carries on; a worker that owns no input partition is ready."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from tests.harness import (
    Worker,
    consume,
    enrollment,
    produce,
    run,
    run_event,
    worker_config,
)
from tests.webharness import poll
from topics.names import TopicNames


def delete_records(bootstrap: str, topic: str, before: int) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before)})
        finally:
            await admin.close()

    run(go())


def committed_offset(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of `topic`'s partition 0, None before any commit."""

    async def go() -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        meta = offsets.get(TopicPartition(topic, 0))
        return None if meta is None or meta.offset < 0 else int(meta.offset)

    result: int | None = run(go())
    return result


def metric(worker: Worker, line_start: str) -> float:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_hole_that_a_second_read_confirms_is_accepted(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    worker = Worker(worker_config(kafka_bootstrap, topic_prefix, partitions=1), tmp_path)
    worker.start()
    try:
        produce(kafka_bootstrap, [(t.enrollments, b"h-1", enrollment("h-1", interval_s=3600))])
        produce(kafka_bootstrap, [(t.runs, b"h-1", run_event("h-1", "ok")) for _ in range(5)])
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["to"] == "converged" for r in rs),
            timeout=60,
        )
        # The offsets of runs 0..4 are committed.
        group = f"{topic_prefix}compliance"
        committed = poll(
            lambda: committed_offset(kafka_bootstrap, group, t.runs),
            lambda offset: offset is not None and offset >= 5,
            timeout=60,
        )
        assert committed == 5, committed
        worker.stop()
        # Runs 5..7 never reach the worker: deleted under it while it was away.
        produce(kafka_bootstrap, [(t.runs, b"h-1", run_event("h-1", "changed")) for _ in range(3)])
        delete_records(kafka_bootstrap, t.runs, before=8)
        produce(kafka_bootstrap, [(t.runs, b"h-1", run_event("h-1", "a:ok", "b:failed"))])
        worker.start()
        out = consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["to"] == "degraded" for r in rs),
            timeout=60,
        )
        gaps = metric(worker, f'vigo_delivery_gaps_total{{topic="{t.runs}"}}')
    finally:
        worker.stop()
    # The run at offset 8 was applied right after the clean runs: the deleted changed runs
    # were never seen, and the worker did not stall on the hole.
    mine = [r["to"] for r in out if r["envoy_id"] == "h-1"]
    assert mine[-2:] == ["converged", "degraded"], mine
    assert gaps == 1
    assert "offsets 5..7 were not delivered; 3 not in the log" in worker.log_text()


def ready(worker: Worker) -> bool:
    try:
        with urllib.request.urlopen(worker.url + "/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_a_worker_that_owns_no_input_partition_is_ready(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """More workers than partitions: the idle ones are ready, not stuck unready."""
    config = worker_config(kafka_bootstrap, topic_prefix, partitions=1)
    workers = [Worker(config, tmp_path, name=f"w{i}") for i in (1, 2, 3)]
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(ready(w) for w in workers):
            time.sleep(0.5)
        states = [ready(w) for w in workers]
    finally:
        for worker in workers:
            worker.stop()
    assert states == [True, True, True]
