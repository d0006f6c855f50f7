"""Create the input and output topics before the worker subscribes.

Left to chance, a consumer's metadata request or a producer can get a topic auto-created
with the broker's default partition count, and co-partitioning is lost for good. So the
worker creates them first with `kafka.partitions`, and refuses to start on a mismatch.

Input topics and the ticks topic are created with `message.timestamp.type=LogAppendTime`
(SPEC 10.7): liveness and lifecycle run on record timestamps, and with LogAppendTime
those are the broker's clock, not each producer's (an envoy whose clock is an hour
behind would otherwise look offline). An existing input topic with `CreateTime` is left
as it is, with one warning naming the command that changes it.

Every topic created here gets `min.insync.replicas` = `kafka.min_insync_replicas` (SPEC
11.5; default min(2, replication_factor)): brokers default to 1, and then, whatever the
producer's acks, a write the leader alone holds counts as acknowledged and is lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from processor.config import Settings
from topics.escape import mask_credentials
from topics.names import TopicNames

#: The internal ticks topic is worthless after a minute.
TICKS_RETENTION_MS = 3_600_000
TIMESTAMP_TYPE = "message.timestamp.type"
#: Record timestamps set by the broker when it appends (SPEC 10.7).
BROKER_CLOCK = {TIMESTAMP_TYPE: "LogAppendTime"}
MIN_INSYNC_REPLICAS = "min.insync.replicas"

log = logging.getLogger(__name__)


class TopicSetupError(Exception):
    """One line for the operator."""


def topic_plan(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    names = TopicNames(settings.kafka.topic_prefix)
    n = settings.kafka.partitions
    plan: dict[str, tuple[int, dict[str, str]]] = {
        name: (n, {}) for name in (names.status_changes, names.deadletter)
    }
    plan.update({name: (n, dict(BROKER_CLOCK)) for name in names.inputs})
    plan[names.ticks] = (n, {"retention.ms": str(TICKS_RETENTION_MS), **BROKER_CLOCK})
    plan[names.fleet_partials] = (1, {"cleanup.policy": "compact"})
    plan[names.fleet_convergence] = (1, {})
    plan[names.fleet_rollouts] = (1, {})
    plan[names.alerts] = (1, {})
    durability = {MIN_INSYNC_REPLICAS: str(settings.kafka.min_isr)}
    return {name: (count, {**configs, **durability}) for name, (count, configs) in plan.items()}


def outbox_partitions_message(topic: str, partitions: int) -> str:
    """The alert outbox must have one partition, so that one sender sees every alert (the
    fleet-wide stale digest, SPEC 10.4); a topic cannot lose partitions in place."""
    return (
        f"topic {topic} has {partitions} partitions, the alert outbox needs 1: to migrate, "
        "drain it (vigo_alert_outbox_pending 0 on every worker), stop the workers, "
        "delete the topic, start"
    )


async def ensure_topics(settings: Settings, client_options: dict[str, object]) -> None:
    plan = topic_plan(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers, **client_options
    )
    try:
        with _client_errors() as errors:
            await asyncio.wait_for(admin.start(), timeout=30)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise TopicSetupError(_connect_failure(settings, errors, exc)) from None
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.kafka.replication_factor, topic_configs=configs)
            for name, (partitions, configs) in plan.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
        described = await admin.describe_topics(list(plan))
        for topic in described:
            name = topic["topic"]
            have = len(topic.get("partitions") or [])
            want = plan[name][0]
            if have and name == names.alerts and have != want:
                raise TopicSetupError(outbox_partitions_message(name, have))
            if have and have != want:
                raise TopicSetupError(
                    f"topic {name} has {have} partitions, kafka.partitions says {want}: "
                    "inputs must be co-partitioned; fix the topic or the setting"
                )
        await warn_about_producer_clocks(admin, settings, TopicNames(settings.kafka.topic_prefix))
    finally:
        await admin.close()


async def warn_about_producer_clocks(
    admin: AIOKafkaAdminClient, settings: Settings, names: TopicNames
) -> None:
    """One warning per input topic whose records carry the producers' clocks."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs={TIMESTAMP_TYPE: None})
        for name in names.inputs
    ]
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            topic, entries = resource[3], resource[4]
            value = _config_value(entries, TIMESTAMP_TYPE)
            if value == "CreateTime":
                log.warning(
                    "topic %s uses message.timestamp.type=CreateTime: liveness runs on the "
                    "producers' clocks; to run it on the broker's (SPEC 10.7): "
                    "kafka-configs.sh --bootstrap-server %s --alter --entity-type topics "
                    "--entity-name %s --add-config message.timestamp.type=LogAppendTime",
                    topic,
                    mask_credentials(settings.kafka.bootstrap_servers),
                    topic,
                )


def _config_value(entries: Any, name: str) -> str | None:
    """A config entry's value from a DescribeConfigs response (name first, value second)."""
    for entry in entries:
        if entry[0] == name:
            return str(entry[1])
    return None


@contextlib.contextmanager
def _client_errors() -> Iterator[list[str]]:
    """The errors aiokafka logs while connecting, kept instead of printed: the cause of a
    failed start (bad password, untrusted certificate) is only in them, and the operator
    gets it in the one line of `_connect_failure`."""
    errors: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    client_log = logging.getLogger("aiokafka")
    handler, propagate = Keep(logging.ERROR), client_log.propagate
    client_log.addHandler(handler)
    client_log.propagate = False
    try:
        yield errors
    finally:
        client_log.removeHandler(handler)
        client_log.propagate = propagate


def _connect_failure(settings: Settings, errors: list[str], exc: BaseException) -> str:
    """One line: where, why, and the keys to look at. No secret is in any of it."""
    kafka = settings.kafka
    where = f"cannot connect to Kafka at {mask_credentials(kafka.bootstrap_servers)}"
    said = " ".join(errors)
    if "SaslAuthenticationFailed" in said or "Authentication failed" in said:
        return (
            f"{where}: authentication failed ({kafka.sasl_mechanism} as "
            f"{kafka.sasl_username!r}); check kafka.sasl_username and kafka.sasl_password_file"
        )
    if "CERTIFICATE_VERIFY_FAILED" in said or "certificate verify failed" in said:
        return f"{where}: the broker's certificate is not trusted; check kafka.ssl_cafile"
    return (
        f"cannot reach Kafka at {mask_credentials(kafka.bootstrap_servers)} "
        "(kafka.bootstrap_servers): "
        f"{exc or type(exc).__name__}"
    )
