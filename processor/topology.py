"""The map of the system: every topic, table, agent, timer and signal, and alerting.

    enrollments ─┐
    checkins ────┼─▶ [envoys agent] ──▶ envoy.status-changes (output, co-partitioned)
    runs ────────┤     table: envoys
    ticks ───────┘     counts per partition ──(between batches)──▶ fleet.partials
       ▲                  │                                        (1 partition)
    [tick timer] ─────────┼────── (a tick, on the fleet owner) ──────────▶ │
                          ├─▶ deadletter                                   ▼
                          └─▶ alerts (stale) ◀── (threshold) ── [aggregator]
                                 │                 tables: fleet-parts, fleet-state
                                 ▼                 ─▶ fleet.convergence
                          [alert sender] ──SMTP──▶ ops     tables: alerts-sent,
                                 ▲                 alerts-windows, alerts-journal
                          [outbox tick timer] ──▶ alerts (a tick while a window is due)

Each agent is a short loop over its stream and writes its tables one way
(`processor.state`); the rules live in `projections`, the bytes in `topics` and
`processor.records`, Faust's internals in `processor.faust_compat`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust
from faust.types import TP

from processor.aggregator import FleetAggregator
from processor.alerting.outbox import Outbox
from processor.alerting.sender import (
    OUTBOX_TICK_INTERVAL_S,
    SENDER_WATCH_INTERVAL_S,
    AlertSender,
    mail_settings,
)
from processor.app import BATCH_MAX, faust_app, kafka_client_options
from processor.checkpoint import Checkpoints
from processor.config import Settings
from processor.declarations import Topics, declare_table, declare_topics
from processor.endoffsets import EndOffsets
from processor.envoys import EnvoyProcessor, envoy_rules
from processor.faust_compat import (
    BatchProducer,
    DeliveryGuard,
    InputBatches,
    TableWriter,
    audit_recoveries,
    budget_usage,
    quiet_root_logger,
    report_recovery_stalls,
    seek_uncommitted_to_log_start,
)
from processor.fleet import FleetProjection, group_settings
from processor.heap import freeze_startup_objects
from processor.lognoise import quiet_kafka_client_logs
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.progress import CatchUp
from processor.records import AlertSentType, FleetPartsType, FleetStateType, register_codecs
from processor.resources_fleet import install_resources
from processor.rollouts_fleet import install_rollouts
from processor.state import HeldTable
from processor.web.cluster import Cluster
from processor.web.views import WebContext, dashboard_page, register_web
from topics.names import TopicNames

TICK_INTERVAL_S = 1.0

log = logging.getLogger(__name__)


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
    sender: AlertSender | None = None


def build_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> Vigo:
    register_codecs()
    app = faust_app(settings)
    seek_uncommitted_to_log_start(app)  # before the consumer exists: it wraps its seeks
    names = TopicNames(settings.kafka.topic_prefix)
    metrics = Metrics()
    metrics.threshold = settings.threshold
    if settings.processor.store == "rocksdb":
        metrics.watch_rocksdb(budget_usage)
    topics = declare_topics(app, names, settings.kafka.partitions)
    # End offsets come from a client of our own, off Faust's consumer thread.
    end_offsets = EndOffsets(settings.kafka.bootstrap_servers, kafka_client_options(settings))
    batches = BatchProducer(app)
    outputs = Outputs(batches, metrics.count_dropped_output)

    def guard(*topic_names: str) -> DeliveryGuard:
        return DeliveryGuard(app, frozenset(topic_names), end_offsets, metrics.delivery_gap)

    envoys = envoy_processor(
        app, settings, topics, guard(*names.inputs, names.ticks), outputs, batches, metrics, clock
    )
    vigo = Vigo(
        app,
        settings,
        names,
        metrics,
        envoys=envoys,
        fleet=FleetProjection(
            app,
            envoys,
            topics.partials,
            settings.checkin.interval_s,
            clock,
            group_settings(settings),
        ),
        aggregator=fleet_aggregator(
            app, settings, topics, guard(names.fleet_partials), outputs, batches, metrics, clock
        ),
    )
    install_rollouts(vigo, topics, outputs, metrics)
    vigo.sender = add_alerting(vigo, topics.alerts, guard(names.alerts), outputs, batches)
    vigo.envoys.resources, vigo.aggregator.resources = install_resources(
        app, settings, metrics.registry, topics, outputs, batches, clock
    )
    add_agents(vigo, topics)
    add_timers(vigo, topics)
    add_signals(vigo)
    add_web(vigo)
    watch_recoveries(app, end_offsets, metrics)

    @app.task
    async def quiet_logging() -> None:
        quiet_root_logger()
        quiet_kafka_client_logs()

    return vigo


def watch_recoveries(app: faust.App, end_offsets: EndOffsets, metrics: Metrics) -> None:
    """Recoveries audited with our own client (the audit's repairs and the recovery
    watch's actions counted), and that client closed before the worker stops."""
    audit_recoveries(app, end_offsets, metrics.recovery_repaired)
    report_recovery_stalls(app, metrics.recovery_stalled)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_end_offsets(sender: Any, **_: Any) -> None:
        await end_offsets.close()


def envoy_processor(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    guard: DeliveryGuard,
    outputs: Outputs,
    batches: BatchProducer,
    metrics: Metrics,
    clock: Callable[[], float],
) -> EnvoyProcessor:
    # Raw bytes values: the store keeps each envoy encoded (`records.encode_stored_envoy`),
    # the agent decodes it when it reads.
    table = declare_table(app, settings, "envoys", settings.kafka.partitions, bytes, bytes)
    return EnvoyProcessor(
        table=table,
        state=HeldTable(TableWriter(table, batches, outputs.deliver)),
        names=TopicNames(settings.kafka.topic_prefix),
        status_topic=topics.status_changes,
        deadletter_topic=topics.deadletter,
        rules=envoy_rules(settings),
        guard=guard,
        catch_up=CatchUp(app, guard),
        outputs=outputs,
        metrics=metrics,
        clock=clock,
        max_event_bytes=settings.processor.max_event_bytes,
        group_by=tuple(settings.fleet.group_by),
    )


def fleet_aggregator(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    guard: DeliveryGuard,
    outputs: Outputs,
    batches: BatchProducer,
    metrics: Metrics,
    clock: Callable[[], float],
) -> FleetAggregator:
    parts = declare_table(app, settings, "fleet-parts", 1, str, FleetPartsType)
    state = declare_table(app, settings, "fleet-state", 1, str, FleetStateType)
    return FleetAggregator(
        app=app,
        parts=HeldTable(TableWriter(parts, batches, outputs.deliver)),
        state=HeldTable(TableWriter(state, batches, outputs.deliver)),
        partials_topic=topics.partials,
        convergence_topic=topics.convergence,
        guard=guard,
        outputs=outputs,
        partitions=settings.kafka.partitions,
        interval_s=settings.checkin.interval_s,
        threshold=settings.threshold,
        metrics=metrics,
        clock=clock,
        groups=group_settings(settings),
    )


def add_agents(vigo: Vigo, topics: Topics) -> None:
    app, envoys, fleet, aggregator = vigo.app, vigo.envoys, vigo.fleet, vigo.aggregator

    # The envoy agent takes its records in the batches they were fetched in, not through
    # a Faust stream (`faust_compat.InputBatches`: 9x less overhead per record).
    inputs = InputBatches(app, frozenset(topics.envoy_inputs.topics), max_records=BATCH_MAX)
    inputs.install()
    app.topics.add(topics.envoy_inputs)
    checkpoints = Checkpoints(envoys, inputs, vigo.settings.processor.commit_interval / 1000)

    @app.task
    async def envoy_agent() -> None:
        envoys.guard.agent = asyncio.current_task()  # a stall's warning says where it waits
        frozen = freeze_startup_objects()  # no full collection walks them again
        log.debug("start-up: %d objects out of the full collections", frozen)
        try:
            async for batch in inputs.batches():
                envoys.process_batch(batch)
                await envoys.publish()
                if await checkpoints.after(batch):
                    # After a checkpoint, so the partials count only changes published
                    # and states written (the fleet numbers are never ahead of the
                    # status-change topic; ticks bring the agent here every second).
                    await fleet.publish_partials_when_due()
                    if envoys.resources is not None:
                        await envoys.resources.publish_when_due()
                await envoys.guard.settle()
        except Exception as exc:  # a bug: stop the worker rather than stall its partitions
            log.exception("the envoy agent failed")
            await app.crash(exc)

    @app.agent(topics.partials, name="aggregator")
    async def aggregator_agent(stream: Any) -> None:
        async for event in stream.events():
            aggregator.process(event)
            await aggregator.commit()
            await aggregator.guard.settle()


def add_timers(vigo: Vigo, topics: Topics) -> None:
    app, envoys, aggregator = vigo.app, vigo.envoys, vigo.aggregator

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        """The punctuator: ticks into each owned, caught-up input partition (the envoy
        agent sweeps on them and publishes its partials after them), and a tick for
        the fleet owner's aggregator. A broker error ends a step, not the worker."""
        if app.rebalancing or app.in_recovery:
            return
        await envoys.catch_up.broker.attempt("ticks", envoys.send_ticks(topics.ticks))
        for guard in (envoys.guard, aggregator.guard):
            await guard.watch()
        await envoys.catch_up.broker.attempt("ticks", aggregator.send_tick())


def add_signals(vigo: Vigo) -> None:
    app, envoys, fleet, names = vigo.app, vigo.envoys, vigo.fleet, vigo.names

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        envoys.catch_up.on_revoked(revoked)
        for guard in (envoys.guard, vigo.aggregator.guard):
            guard.forget(revoked)
        if vigo.sender is not None:
            vigo.sender.forget_position()
        partitions = {tp.partition for tp in revoked if tp.topic in names.inputs}
        envoys.forget_partitions(partitions)
        fleet.forget_partitions(partitions)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        envoys.catch_up.assignment_received = True
        # Whatever was cached for a partition may be stale after it was away.
        envoys.forget_partitions({tp.partition for tp in assigned})
        fleet.forget_partitions({tp.partition for tp in assigned})


def add_web(vigo: Vigo) -> None:
    """Every worker serves the API, the dashboard, metrics and health (`web`)."""
    vigo.metrics.watch_worker(vigo.app, vigo.aggregator.owns_fleet)
    cluster = Cluster(
        vigo.app,
        fleet_topic=vigo.names.fleet_partials,
        envoy_topic=vigo.names.enrollments,
        partitions=vigo.settings.kafka.partitions,
        token=vigo.settings.web.auth_token,
    )
    pages = {name: dashboard_page(name) for name in ("compliance.html", "envoy.html")}
    register_web(
        WebContext(
            vigo.app,
            vigo.envoys,
            vigo.aggregator,
            vigo.metrics,
            cluster,
            pages,
            alerts=vigo.sender.journal_doc if vigo.sender is not None else None,
            alerts_topic=vigo.names.alerts,
        )
    )


def add_alerting(
    vigo: Vigo,
    topic: faust.TopicT,
    guard: DeliveryGuard,
    outputs: Outputs,
    batches: BatchProducer,
) -> AlertSender | None:
    """The outbox handlers on the detectors, the sender agent on the outbox. Only the
    events listed under `smtp.events` are wired; with none listed there is no sender."""
    app, settings = vigo.app, vigo.settings
    events = settings.smtp.events
    mailed = (events.convergence_threshold, events.envoy_stale, events.rollout_stuck)
    if all(event is None for event in mailed):
        return None
    outbox = Outbox(
        topic=topic, outputs=outputs, metrics=vigo.metrics, stale=events.envoy_stale is not None
    )
    if events.convergence_threshold is not None:
        vigo.aggregator.threshold_handlers.append(outbox.on_threshold)
    if events.convergence_recovered is not None:
        vigo.aggregator.recovery_handlers.append(partial(outbox.on_threshold, recovery=True))
    if events.envoy_stale is not None:
        vigo.envoys.stale_handlers.append(outbox.on_stale)
    if events.rollout_stuck is not None and vigo.aggregator.rollouts is not None:
        vigo.aggregator.rollouts.alert = outbox.write  # SPEC 11.2
    sender = AlertSender(
        app=app,
        topic=topic,
        sent_table=declare_table(app, settings, "alerts-sent", 1, bytes, AlertSentType),
        guard=guard,
        smtp=settings.smtp,
        mail=mail_settings(settings),
        metrics=vigo.metrics,
        journal_table=declare_table(app, settings, "alerts-journal", 1, bytes, bytes),
        outputs=outputs,
        batches=batches,
        windows_table=(
            declare_table(app, settings, "alerts-windows", 1, bytes, bytes)
            if events.envoy_stale
            else None
        ),
        digest_over=events.envoy_stale.digest_over if events.envoy_stale else 1,
        window_ms=events.envoy_stale.digest_window_ms if events.envoy_stale else 1,
    )

    @app.agent(topic, name="alert-sender")
    async def alert_sender(stream: Any) -> None:
        async for event in stream.events():
            await sender.handle(event)

    @app.timer(interval=SENDER_WATCH_INTERVAL_S)
    async def watch_sender() -> None:
        await sender.watch()

    @app.timer(interval=OUTBOX_TICK_INTERVAL_S)
    async def tick_outbox() -> None:
        await vigo.envoys.catch_up.broker.attempt("outbox tick", sender.tick())

    return sender
