"""Outputs before progress (SPEC 11.4), against a broker that enforces ACLs: when the
broker refuses a status change for want of an ACL, the worker stops with one line naming
the topic and the ACL, and neither its state nor its offsets move past the refused
record. Once the ACL is granted, a restarted worker reads the run again and publishes the
change with the next version: no gap in the envoy's versions. (Before, the failed send was
logged and forgotten, the state moved on, and the change was never published.)"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafkabroker
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from tests.harness import Worker, consume, enrollment, produce, run_event, worker_config
from tests.webharness import poll
from topics.names import TopicNames

ACL_TOOL = Path(__file__).resolve().parent / "java" / "KafkaAcls.java"
AUTHORIZER = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    # Everything without an ACL stays open (inter-broker and controller requests too).
    "allow.everyone.if.no.acl.found": "true",
}


@pytest.fixture(scope="module")
def acl_broker() -> Iterator[kafkabroker.Broker]:
    broker = kafkabroker.start_broker(extra=AUTHORIZER)
    try:
        yield broker
    finally:
        broker.stop()


def acls(bootstrap: str, action: str, topic: str) -> None:
    """Deny (or allow again) WRITE on `topic` to the anonymous principal."""
    libs = kafkabroker.ensure_jars()
    done = subprocess.run(
        ["java", "-cp", f"{libs}/*", str(ACL_TOOL), bootstrap, action, topic],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and f"ok {action}" in done.stdout, done.stdout + done.stderr


def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    async def go() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            meta = offsets.get(tp)
            return -1 if meta is None else int(meta.offset)
        finally:
            await admin.close()

    return asyncio.run(go())


def changes(bootstrap: str, topic: str, envoy: str) -> list[dict[str, Any]]:
    return [c for c in consume(bootstrap, topic) if c.get("envoy_id") == envoy]


def test_a_refused_status_change_stops_the_worker_and_holds_its_state(
    acl_broker: kafkabroker.Broker, topic_prefix: str, tmp_path: Path
) -> None:
    bootstrap, names = acl_broker.bootstrap, TopicNames(topic_prefix)
    config = worker_config(bootstrap, topic_prefix, partitions=1, interval="5m")
    worker = Worker(config, tmp_path).start()
    try:
        produce(bootstrap, [(names.enrollments, b"web-01", enrollment("web-01"))])
        produce(bootstrap, [(names.runs, b"web-01", run_event("web-01", "ok", "ok"))])
        before = poll(
            lambda: changes(bootstrap, names.status_changes, "web-01"),
            lambda cs: bool(cs) and cs[-1]["to"] == "converged",
            timeout=60,
        )
        assert before and before[-1]["to"] == "converged", before
        runs_tp = TopicPartition(names.runs, 0)
        poll(
            lambda: committed(bootstrap, f"{topic_prefix}compliance", runs_tp),
            lambda offset: offset == 1,
            timeout=60,
        )

        acls(bootstrap, "deny-write", names.status_changes)
        # A run that fails: the envoy's status changes, and that change is refused.
        produce(bootstrap, [(names.runs, b"web-01", run_event("web-01", "failed"))])
        assert worker.proc is not None
        assert worker.proc.wait(timeout=90) == 78  # the worker stops by itself (EX_CONFIG)
        log = worker.log_text()
        lines = [line for line in log.splitlines() if "grant this worker's principal" in line]
        assert len(lines) == 1, log[-3000:]
        assert names.status_changes in lines[0] and "WRITE" in lines[0]
        # Nothing moved past the refused record: no change, no committed offset.
        assert changes(bootstrap, names.status_changes, "web-01") == before
        assert committed(bootstrap, f"{topic_prefix}compliance", runs_tp) == 1

        acls(bootstrap, "allow", names.status_changes)
        worker.start()
        after = poll(
            lambda: changes(bootstrap, names.status_changes, "web-01"),
            lambda cs: len(cs) > len(before),
            timeout=90,
        )
        new = after[len(before) :]
        assert [c["version"] for c in after] == list(range(1, len(after) + 1)), after
        assert new[0]["from"] == "converged" and new[0]["to"] == "failed", new
        deadline = time.monotonic() + 30
        while committed(bootstrap, f"{topic_prefix}compliance", runs_tp) != 2:
            assert time.monotonic() < deadline, "the run's offset was never committed"
            time.sleep(0.5)
    finally:
        worker.stop()
