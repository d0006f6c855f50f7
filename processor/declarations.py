"""The topics and tables the worker declares to Faust, with the settings they are created
with; `processor.topology` says which agent reads and writes each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from processor.config import Settings
from processor.faust_compat import MEMORY_MIB_OPTION
from topics.names import TopicNames


@dataclass(frozen=True)
class Topics:
    envoy_inputs: faust.TopicT
    ticks: faust.TopicT
    status_changes: faust.TopicT
    deadletter: faust.TopicT
    partials: faust.TopicT
    convergence: faust.TopicT
    alerts: faust.TopicT
    #: SPEC 11.2: `vigo.fleet.rollouts`.
    rollouts: faust.TopicT


def declare_topics(app: faust.App, names: TopicNames, partitions: int) -> Topics:
    """Raw bytes everywhere (the codecs are ours). Every topic is created, with its
    settings, by `topics_admin` before the worker starts; `internal` only makes Faust
    declare it with these partition counts."""

    def topic(*topic_names: str, count: int) -> faust.TopicT:
        return app.topic(
            *topic_names,
            partitions=count,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )

    n = partitions
    return Topics(
        # Every input topic co-partitioned, one subscription: one worker owns all of an
        # envoy's events and its table entry.
        envoy_inputs=topic(*names.inputs, names.ticks, count=n),
        ticks=topic(names.ticks, count=n),
        status_changes=topic(names.status_changes, count=n),
        deadletter=topic(names.deadletter, count=n),
        partials=topic(names.fleet_partials, count=1),
        convergence=topic(names.fleet_convergence, count=1),
        alerts=topic(names.alerts, count=1),
        rollouts=topic(names.fleet_rollouts, count=1),
    )


def declare_table(
    app: faust.App, settings: Settings, name: str, count: int, key_type: Any, value_type: Any
) -> TableT[Any, Any]:
    """Faust derives the changelog codecs from the types, for writing and recovery alike:
    bytes is raw, our value types name their codec in `records`. Faust creates the
    changelog topic: it gets `kafka.min_insync_replicas` like the worker's own topics."""
    durability = {"min.insync.replicas": str(settings.kafka.min_isr)}
    # The RocksDB store's one budget for all its databases (SPEC 11.5; the memory store
    # ignores it).
    budget = {MEMORY_MIB_OPTION: settings.processor.rocksdb.memory_mib}
    return app.Table(
        name,
        default=None,
        partitions=count,
        key_type=key_type,
        value_type=value_type,
        extra_topic_configs=durability,
        options=budget,
    )
