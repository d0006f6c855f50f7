"""Topic set-up against the real broker (SPEC 10.7): input and ticks topics carry the
broker's clock (LogAppendTime), an existing CreateTime input topic gets one warning, and
a worker judges liveness by when the broker appended a record, not by the producer's
timestamp on it. Every topic gets `kafka.min_insync_replicas` (SPEC 11.5), and the
worker's producer waits for every in-sync replica (acks=all)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.config import ConfigError, Settings, load_settings
from processor.topics_admin import ensure_topics, topic_plan
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


async def topic_configs(bootstrap: str, topics: list[str], key: str) -> dict[str, str | None]:
    """Each topic's value of config `key` (None: the topic does not report it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        values: dict[str, str | None] = {}
        for response in await admin.describe_configs(resources):
            for resource in response.resources:
                values[resource[3]] = next((e[1] for e in resource[4] if e[0] == key), None)
        return values
    finally:
        await admin.close()


def min_insync_replicas(bootstrap: str, topics: list[str]) -> dict[str, str | None]:
    """The topics' `min.insync.replicas`, once the broker asked can describe every one of
    them (also used by tests/test_replicated_cluster.py: on three brokers, the one asked
    may learn of a new topic a moment after the others)."""
    deadline = time.monotonic() + 20
    while True:
        values = asyncio.run(topic_configs(bootstrap, topics, "min.insync.replicas"))
        complete = set(values) == set(topics) and None not in values.values()
        if complete or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


def test_topics_with_one_replica_get_min_insync_replicas_1(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """SPEC 11.5 on the single test broker: replication 1, so min.insync.replicas 1 (the
    default `min(2, replication_factor)`), never more than the replicas there are."""
    settings = settings_for(kafka_bootstrap, topic_prefix)
    assert settings.kafka.min_isr == 1
    asyncio.run(ensure_topics(settings, {}))
    plan = list(topic_plan(settings))
    values = min_insync_replicas(kafka_bootstrap, plan)
    assert set(values) == set(plan)
    assert all(v in ("1", None) for v in values.values()), values


@pytest.mark.parametrize(
    ("kafka", "want"),
    [
        ({}, 1),
        ({"replication_factor": 2}, 2),
        ({"replication_factor": 3}, 2),
        ({"replication_factor": 5, "min_insync_replicas": 3}, 3),
        ({"replication_factor": 3, "min_insync_replicas": 1}, 1),
    ],
)
def test_min_insync_replicas_defaults_to_two_at_most_the_replicas(
    kafka: dict[str, int], want: int
) -> None:
    settings = Settings.model_validate({"kafka": kafka})
    assert settings.kafka.min_isr == want
    assert {c["min.insync.replicas"] for _, c in topic_plan(settings).values()} == {str(want)}


@pytest.mark.parametrize(
    "kafka",
    [
        {"replication_factor": 2, "min_insync_replicas": 3},
        {"min_insync_replicas": 2},
        {"replication_factor": 3, "min_insync_replicas": 0},
    ],
)
def test_a_bad_min_insync_replicas_fails_at_start_naming_the_key(
    kafka: dict[str, int], tmp_path: Path
) -> None:
    path = tmp_path / "vigo.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka}))
    with pytest.raises(ConfigError) as failure:
        load_settings(path, {})
    line = str(failure.value)
    assert line.startswith("config kafka.min_insync_replicas: ") and "\n" not in line, line


def test_the_workers_producer_waits_for_all_in_sync_replicas() -> None:
    """acks=all (-1): with acks=1 a status change the leader acknowledged is lost with
    that leader, whatever min.insync.replicas says."""
    from processor.app import faust_app

    app = faust_app(Settings.model_validate({"kafka": {"replication_factor": 3}}))
    assert app.conf.producer_acks == -1


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
