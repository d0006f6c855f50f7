"""Topic set-up against the real broker (SPEC 10.7): input and ticks topics carry the
broker's clock (LogAppendTime), an existing CreateTime input topic gets one warning, and
a worker judges liveness by when the broker appended a record, not by the producer's
timestamp on it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.config import Settings
from processor.topics_admin import ensure_topics
from tests.harness import Worker, checkin, enrollment, produce, send_one, worker_config
from tests.webharness import poll
from topics.names import TopicNames

HOUR_MS = 3_600_000


def settings_for(bootstrap: str, prefix: str) -> Settings:
    return Settings.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 2}}
    )


async def timestamp_types(bootstrap: str, topics: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        types = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "message.timestamp.type":
                        types[resource[3]] = entry[1]
        return types
    finally:
        await admin.close()


def described(bootstrap: str, topics: list[str]) -> dict[str, str]:
    """The topics' timestamp types, once the broker can describe every one of them."""
    deadline = time.monotonic() + 20
    while True:
        types = asyncio.run(timestamp_types(bootstrap, topics))
        if set(types) == set(topics) or time.monotonic() > deadline:
            return types
        time.sleep(0.2)


def test_inputs_and_ticks_are_created_with_the_brokers_clock(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(kafka_bootstrap, topic_prefix)
    names = TopicNames(topic_prefix)
    with caplog.at_level(logging.WARNING):
        asyncio.run(ensure_topics(settings, {}))
    types = described(kafka_bootstrap, [*names.inputs, names.ticks, names.status_changes])
    assert {t: types[t] for t in names.inputs} == dict.fromkeys(names.inputs, "LogAppendTime")
    assert types[names.ticks] == "LogAppendTime"
    assert types[names.status_changes] == "CreateTime"  # an output: the worker's own clock
    assert not [r for r in caplog.records if "CreateTime" in r.getMessage()]


def test_an_existing_create_time_input_topic_gets_one_warning(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    names = TopicNames(topic_prefix)

    async def create_checkins_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(names.checkins, 2, 1)])
        finally:
            await admin.close()

    asyncio.run(create_checkins_topic())
    # A new topic reaches the broker's metadata a moment after creation: until then it
    # cannot be described (the worker's own check skips such topics, which it just made).
    described(kafka_bootstrap, [names.checkins])
    with caplog.at_level(logging.WARNING):
        asyncio.run(ensure_topics(settings_for(kafka_bootstrap, topic_prefix), {}))
    warnings = [r.getMessage() for r in caplog.records if "CreateTime" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert names.checkins in warnings[0] and "LogAppendTime" in warnings[0]
    assert "\n" not in warnings[0]
    types = described(kafka_bootstrap, [names.checkins, names.runs])
    assert types == {names.checkins: "CreateTime", names.runs: "LogAppendTime"}


def envoy(worker: Worker, envoy_id: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{worker.url}/api/envoys/{envoy_id}", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except OSError:
        return None


def test_liveness_runs_on_the_brokers_clock_not_the_producers(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A check-in stamped an hour ago by a producer with a wrong clock still counts as
    seen now: the envoy stays online. With CreateTime it would be offline at once."""
    names = TopicNames(topic_prefix)
    config = worker_config(kafka_bootstrap, topic_prefix, partitions=1, interval="10s")
    worker = Worker(config, tmp_path).start()
    try:
        produce(kafka_bootstrap, [(names.enrollments, b"skewed", enrollment("skewed"))])
        sent_ms = int(time.time() * 1000)
        send_one(
            kafka_bootstrap,
            names.checkins,
            b"skewed",
            checkin("skewed"),
            timestamp_ms=sent_ms - HOUR_MS,
        )
        deadline = time.monotonic() + 30
        doc = envoy(worker, "skewed")
        while time.monotonic() < deadline and (doc is None or doc.get("last_seen") is None):
            time.sleep(0.3)
            doc = envoy(worker, "skewed")
        assert doc is not None and doc["last_seen"] is not None, doc
        seen_ms = _ms(doc["last_seen"])
        assert abs(seen_ms - sent_ms) < 60_000, (doc["last_seen"], sent_ms)
        # It goes offline once silent for 2 x 10 s of the broker's clock, and the change
        # is dated by that deadline: an hour-old check-in would have been offline at the
        # first sweep, dated an hour back.
        doc = poll(
            lambda: envoy(worker, "skewed"),
            lambda d: d is not None and d["status"] == "offline",
            timeout=90,
        )
        assert doc is not None and doc["status"] == "offline", doc
        offline_after = _ms(doc["since"]) - seen_ms
        assert 20_000 <= offline_after <= 20_001, (doc["since"], doc["last_seen"])
    finally:
        worker.stop()


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
