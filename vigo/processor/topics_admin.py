"""Create the input and output topics before the worker subscribes.

Left to chance, a consumer's metadata request or a producer can get a topic auto-created
with the broker's default partition count, and co-partitioning is lost for good. So the
worker creates them first with `kafka.partitions`, and refuses to start on a mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from vigo.processor.config import Settings
from vigo.topics.names import TopicNames

#: The internal ticks topic is worthless after a minute.
TICKS_RETENTION_MS = 3_600_000


class TopicSetupError(Exception):
    """One line for the operator."""


def topic_plan(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    names = TopicNames(settings.kafka.topic_prefix)
    n = settings.kafka.partitions
    plan: dict[str, tuple[int, dict[str, str]]] = {
        name: (n, {}) for name in (*names.inputs, names.status_changes, names.deadletter)
    }
    plan[names.ticks] = (n, {"retention.ms": str(TICKS_RETENTION_MS)})
    plan[names.fleet_partials] = (1, {"cleanup.policy": "compact"})
    plan[names.fleet_convergence] = (1, {})
    plan[names.alerts] = (1, {})
    return plan


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
        await asyncio.wait_for(admin.start(), timeout=30)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise TopicSetupError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} "
            f"(kafka.bootstrap_servers): {exc or type(exc).__name__}"
        ) from None
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
    finally:
        await admin.close()
