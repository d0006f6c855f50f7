"""Record times outside 2000-01-01 .. now + 1 h are `bad_time` dead letters (SPEC 11.4),
against the real broker: an input topic left at CreateTime, with the broker's own bound on
future times raised, carries a year-10000 record; the worker dead-letters it, applies what
comes after it, and no API call fails. Before, `iso_from_ms` raised on such a record, the
batch was never committed and every worker that read it stopped applying."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.harness import Worker, consume, enrollment, send_one, worker_config
from tests.webharness import poll
from topics.names import TopicNames
from topics.timestamps import (
    RECORD_TIME_MAX_AHEAD_MS,
    RECORD_TIME_MIN_MS,
    iso_from_ms,
    record_time_problem,
)

#: 10000-01-01T00:00:00Z: past what a datetime can show.
YEAR_10000_MS = 253_402_300_800_000
NOW_MS = 1_796_000_000_000


def test_record_time_bounds() -> None:
    assert record_time_problem(RECORD_TIME_MIN_MS, NOW_MS) is None
    assert record_time_problem(NOW_MS + RECORD_TIME_MAX_AHEAD_MS, NOW_MS) is None
    assert "before 2000-01-01" in (record_time_problem(RECORD_TIME_MIN_MS - 1, NOW_MS) or "")
    assert "1 h after" in (record_time_problem(NOW_MS + RECORD_TIME_MAX_AHEAD_MS + 1, NOW_MS) or "")
    assert record_time_problem(-1, NOW_MS) is not None  # a record without a timestamp


def test_iso_from_ms_never_raises() -> None:
    assert iso_from_ms(YEAR_10000_MS) == "9999-12-31T23:59:59.000Z"
    assert iso_from_ms(2**62).startswith("9999-12-31T23:59:59")
    assert iso_from_ms(-(2**62)).startswith("0001-01-01T00:00:00")
    assert iso_from_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def _create_time_topic(bootstrap: str, topic: str, partitions: int) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            config = {
                "message.timestamp.type": "CreateTime",
                # Kafka 4 refuses records more than 1 h ahead by default; 3.x did not.
                "message.timestamp.after.max.ms": str(2**63 - 1),
            }
            await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
        finally:
            await admin.close()

    asyncio.run(go())


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_a_year_10000_record_is_a_dead_letter_and_what_follows_is_applied(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    names = TopicNames(topic_prefix)
    _create_time_topic(kafka_bootstrap, names.enrollments, 1)
    worker = Worker(worker_config(kafka_bootstrap, topic_prefix, partitions=1), tmp_path).start()
    try:
        send_one(
            kafka_bootstrap,
            names.enrollments,
            b"future",
            enrollment("future"),
            timestamp_ms=YEAR_10000_MS,
        )
        send_one(
            kafka_bootstrap, names.enrollments, b"past", enrollment("past"), timestamp_ms=1_000
        )
        send_one(kafka_bootstrap, names.enrollments, b"after", enrollment("after"))

        # What follows the bad records is applied: the envoy is listed.
        status, doc = poll(
            lambda: _get(f"{worker.url}/api/envoys/after"),
            lambda r: r[0] == 200,
            timeout=60,
        )
        assert status == 200 and doc["envoy_id"] == "after", doc

        dead = consume(
            kafka_bootstrap,
            names.deadletter,
            until=lambda rs: {r["key"] for r in rs} >= {"future", "past"},
            timeout=30,
        )
        reasons = {d["key"]: d["reason"] for d in dead}
        assert reasons == {"future": "bad_time", "past": "bad_time"}
        errors = {d["key"]: d["error"] for d in dead}
        assert "1 h after" in errors["future"] and "before 2000-01-01" in errors["past"]

        # Nothing stored makes an API call fail: the list, the fleet and each envoy answer.
        assert _get(f"{worker.url}/api/envoys/future")[0] == 404
        assert _get(f"{worker.url}/api/envoys/past")[0] == 404
        status, listed = _get(f"{worker.url}/api/envoys")
        assert status == 200
        assert [e["envoy_id"] for e in listed["envoys"]] == ["after"]
        assert _get(f"{worker.url}/api/compliance")[0] == 200

        # The batch was committed: a restarted worker does not read the bad records again.
        worker.stop()
        before = len(dead)
        worker.start()
        send_one(kafka_bootstrap, names.enrollments, b"later", enrollment("later"))
        poll(lambda: _get(f"{worker.url}/api/envoys/later"), lambda r: r[0] == 200, timeout=60)
        again = consume(kafka_bootstrap, names.deadletter)
        assert len(again) == before, again
    finally:
        worker.stop()
