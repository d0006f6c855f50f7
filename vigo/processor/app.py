"""The map of the system: topics, tables, agents and timers, wired from the settings.

enrollments ─┐
checkins ────┼─▶ [envoys agent] ──▶ envoy.status-changes ──▶ [fleet agent] ─▶ fleet.partials
runs ────────┤     table: envoys        (co-partitioned)      table: fleet      (1 partition)
ticks ───────┘     (changelog)                                (changelog)            │
   ▲                  │                                                               ▼
[tick timer]          └─▶ deadletter, alerts (stale)        [aggregator] ─▶ fleet.convergence
                                                             tables: parts, fleet-state
                                                             ─▶ alerts (threshold)
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP, TableT

from vigo.alerts.wiring import register_alerts
from vigo.processor.codecs import EnvoyRecordType, FleetEntryType, register_codecs
from vigo.processor.config import Settings
from vigo.processor.endoffsets import EndOffsets
from vigo.processor.envoys import EnvoyProcessor
from vigo.processor.fleet import FleetAggregator, FleetProjection
from vigo.processor.metrics import Metrics
from vigo.processor.progress import CatchUp
from vigo.processor.web import register_web
from vigo.projections.envoy import Rules
from vigo.topics.names import TopicNames

#: Records taken per batch; `BATCH_WITHIN_S` bounds the wait for a full batch.
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05
TICK_INTERVAL_S = 1.0


@dataclass
class Vigo:
    """Everything a web view, a CLI or a test needs to reach."""

    app: faust.App
    settings: Settings
    names: TopicNames
    metrics: Metrics
    envoys: EnvoyProcessor
    fleet: FleetProjection
    aggregator: FleetAggregator


def build_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Vigo:
    register_codecs()
    names = TopicNames(settings.kafka.topic_prefix)
    partitions = settings.kafka.partitions
    interval_s = settings.checkin.interval_s
    metrics = Metrics()

    app = faust.App(
        f"{settings.kafka.topic_prefix}compliance",
        broker=[f"kafka://{host.strip()}" for host in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="rocksdb://" if settings.processor.store == "rocksdb" else "memory://",
        datadir=str(settings.processor.data_dir),
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=settings.processor.standby_replicas,
        broker_session_timeout=settings.processor.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.processor.session_timeout_s / 6),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_host=settings.web.host,
        web_port=settings.web.port,
        canonical_url=_advertised_url(settings),
        web_in_thread=False,
        autodiscover=False,
        producer_max_request_size=2 * settings.processor.max_event_bytes,
        stream_buffer_maxsize=4 * BATCH_MAX,
        # Fewer, larger produce requests: the changelog and status-change writes of a
        # batch leave together (measured: +18% events/s, benchmarks/bench_worker.py).
        producer_linger_ms=20,
        producer_max_batch_size=512_000,
        broker_max_poll_records=2000,
    )

    def topic(name: str, count: int) -> faust.TopicT:
        return app.topic(
            name,
            partitions=count,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,  # declared (created) by the worker with this partition count
        )

    # Every topic is created, with its settings, by `topics_admin` before the worker starts.
    ticks = topic(names.ticks, partitions)
    status_changes = topic(names.status_changes, partitions)
    deadletter = topic(names.deadletter, partitions)
    partials = topic(names.fleet_partials, 1)
    convergence = topic(names.fleet_convergence, 1)
    # Every input topic co-partitioned, one subscription: one worker owns all of an
    # envoy's events and its table entry.
    envoy_channel = app.topic(
        names.enrollments,
        names.checkins,
        names.runs,
        names.ticks,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=True,
    )

    def table(name: str, count: int, key_type: Any, value_type: Any) -> TableT[Any, Any]:
        # Faust derives the changelog codecs from the types, for writing and for recovery
        # alike: bytes is raw, our value types name their codec, anything else is JSON.
        return app.Table(
            name, default=None, partitions=count, key_type=key_type, value_type=value_type
        )

    envoy_table = table("envoys", partitions, bytes, EnvoyRecordType)
    fleet_table = table("fleet", partitions, bytes, FleetEntryType)
    parts_table = table("fleet-parts", 1, str, None)
    fleet_state_table = table("fleet-state", 1, str, None)

    # End offsets come from a client of our own, off Faust's consumer thread.
    end_offsets = EndOffsets(settings.kafka.bootstrap_servers, kafka_client_options(settings))
    input_catch_up = CatchUp(app, names.inputs, end_offsets)
    status_catch_up = CatchUp(app, [names.status_changes], end_offsets)
    # Only for its stall guard: the fleet owner keeps this partition through rebalances.
    partials_catch_up = CatchUp(app, [names.fleet_partials], end_offsets)
    envoys = EnvoyProcessor(
        table=envoy_table,
        names=names,
        status_topic=status_changes,
        deadletter_topic=deadletter,
        rules=Rules(
            default_interval_s=interval_s,
            stale_after=settings.checkin.stale_policy,
            strict_enrollment=settings.enrollment.strict,
        ),
        stale_after=settings.checkin.stale_policy,
        catch_up=input_catch_up,
        metrics=metrics,
        clock=clock,
        max_event_bytes=settings.processor.max_event_bytes,
    )
    fleet = FleetProjection(
        app=app,
        table=fleet_table,
        partials_topic=partials,
        catch_up=status_catch_up,
        interval_s=interval_s,
        clock=clock,
    )
    aggregator = FleetAggregator(
        app=app,
        parts_table=parts_table,
        state_table=fleet_state_table,
        partials_topic=partials,
        convergence_topic=convergence,
        partitions=partitions,
        interval_s=interval_s,
        threshold=settings.threshold,
        metrics=metrics,
        clock=clock,
    )

    @app.agent(envoy_channel, name="envoys")
    async def envoy_agent(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            envoys.process_batch(stream, batch)

    @app.agent(status_changes, name="fleet")
    async def fleet_agent(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            fleet.process_batch(stream, batch)

    @app.agent(partials, name="aggregator")
    async def aggregator_agent(stream: Any) -> None:
        async for event in stream.events():
            partials_catch_up.processed(event.message.tp, event.message.offset)
            aggregator.process(stream, event)

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        """The punctuator: ticks into each owned, caught-up input partition, partials
        from the fleet projection, and a tick for the fleet owner's aggregator."""
        if app.rebalancing or app.in_recovery:
            return
        await input_catch_up.refresh()
        for partition in input_catch_up.active_partitions():
            if input_catch_up.partition_caught_up(partition):
                await ticks.send(key=b"tick", value=b"", partition=partition)
        await fleet.publish_partials()
        await partials_catch_up.refresh()
        await aggregator.send_tick()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        for catch_up in (input_catch_up, status_catch_up, partials_catch_up):
            catch_up.on_revoked(revoked)
        envoys.forget_partitions({tp.partition for tp in revoked if tp.topic in names.inputs})
        fleet.forget_partitions(
            {tp.partition for tp in revoked if tp.topic == names.status_changes}
        )

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        # Whatever was cached for a partition may be stale after it was away.
        envoys.forget_partitions({tp.partition for tp in assigned})
        fleet.forget_partitions({tp.partition for tp in assigned})

    vigo = Vigo(app, settings, names, metrics, envoys, fleet, aggregator)
    register_web(vigo)
    register_alerts(vigo)
    return vigo


def kafka_client_options(settings: Settings) -> dict[str, object]:
    """The same security settings for the admin client as for Faust's own clients."""
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, object] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password_file is not None:
            options["sasl_plain_password"] = kafka.sasl_password_file.read_text().strip()
    return options


def _advertised_url(settings: Settings) -> str:
    """How the other workers reach this one's web server (requests are forwarded to the
    owner of the data): a wildcard address is no address, so advertise the host name,
    as Faust does by default. Faust's NODE_CANONICAL_URL environment variable overrides."""
    host = settings.web.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{settings.web.port}"


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = ""
    if kafka.sasl_password_file is not None:
        password = kafka.sasl_password_file.read_text(encoding="utf-8").strip()
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=password,
        mechanism=kafka.sasl_mechanism,
        ssl_context=context if kafka.security_protocol == "SASL_SSL" else None,
    )
