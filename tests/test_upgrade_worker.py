"""Upgrading to the format 3 envoy record, end to end: the changelog of the
last release holds JSON records (format 2); a worker of this release restores them into
its memory store as they are, goes on from them, and writes format 3 back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgspec.structs import replace as replace_struct

from processor.records import ENVOY_FORMAT, decode_envoy_head, decode_stored_envoy
from tests.harness import (
    Worker,
    consume,
    enrollment,
    produce,
    read_raw,
    run_event,
    send_one,
    worker_config,
)
from tests.test_state_codec import format2
from topics.names import TopicNames

ENVOY = "up-1"


def newest(bootstrap: str, changelog: str) -> Any:
    return [r for r in read_raw(bootstrap, changelog) if r.key == ENVOY.encode()][-1]


def send_to(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    send_one(bootstrap, topic, key, value, partition=partition)


def test_a_changelog_of_json_records_is_restored_and_continued(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    t = TopicNames(topic_prefix)
    changelog = f"{topic_prefix}compliance-envoys-changelog"
    worker = Worker(worker_config(kafka_bootstrap, topic_prefix, interval="60s"), tmp_path)
    try:
        worker.start()
        produce(kafka_bootstrap, [(t.enrollments, ENVOY.encode(), enrollment(ENVOY, tier="gold"))])
        produce(kafka_bootstrap, [(t.runs, ENVOY.encode(), run_event(ENVOY, "changed"))])
        consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["envoy_id"] == ENVOY and r["to"] == "drifted" for r in rs),
            timeout=40,
        )
        worker.stop()
        # As the last release left it: the envoy's newest changelog record is JSON (with
        # labels of its own, to tell it from the record before it).
        last = newest(kafka_bootstrap, changelog)
        stored = decode_stored_envoy(last.value)
        old = format2(
            replace_struct(stored, state=replace_struct(stored.state, labels={"tier": "json"}))
        )
        send_to(kafka_bootstrap, changelog, last.partition, ENVOY.encode(), old)
        assert newest(kafka_bootstrap, changelog).value == old
        worker.start()
        produce(kafka_bootstrap, [(t.runs, ENVOY.encode(), run_event(ENVOY, "changed"))])
        out = consume(
            kafka_bootstrap,
            t.status_changes,
            until=lambda rs: any(r["envoy_id"] == ENVOY and r["to"] == "relapsed" for r in rs),
            timeout=40,
        )
    finally:
        worker.stop()
    # Relapsed (two changed runs in a row) with the JSON record's labels only if that
    # record was restored; the version goes on from it.
    mine = [(r["to"], r["version"]) for r in out if r["envoy_id"] == ENVOY]
    assert mine[-1][0] == "relapsed"
    assert [v for _, v in mine] == list(range(1, len(mine) + 1))
    assert out[-1]["labels"] == {"tier": "json"}
    assert decode_envoy_head(newest(kafka_bootstrap, changelog).value).format == ENVOY_FORMAT
