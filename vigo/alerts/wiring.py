"""`register_alerts`: the outbox handlers on the detectors, the sender agent on the outbox.

Only the events listed under `smtp.events` are wired: an unlisted event writes nothing to
the outbox and sends no mail. With no event listed there is no sender either.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from vigo.alerts.mail import MailSettings, dashboard_base, message_id_domain
from vigo.alerts.outbox import Outbox
from vigo.alerts.sender import AlertSender

if TYPE_CHECKING:
    from vigo.processor.app import Vigo

#: How often the sender's progress is checked (and the pending gauge refreshed).
WATCH_INTERVAL_S = 5.0


def register_alerts(vigo: Vigo) -> AlertSender | None:
    app = vigo.app
    settings = vigo.settings
    events = settings.smtp.events
    if events.convergence_threshold is None and events.envoy_stale is None:
        return None

    topic = app.topic(
        vigo.names.alerts,
        partitions=1,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=True,  # created with one partition by the worker (topics_admin)
    )
    outbox = Outbox(
        topic=topic,
        metrics=vigo.metrics,
        digest_over=events.envoy_stale.digest_over if events.envoy_stale else None,
    )
    if events.convergence_threshold is not None:
        vigo.aggregator.threshold_handlers.append(outbox.on_threshold)
    if events.envoy_stale is not None:
        vigo.envoys.stale_handlers.append(outbox.on_stale)

    # Faust derives the changelog codecs from the types, for writing and recovery alike:
    # bytes keys are raw, the values (record time, ms) JSON.
    sent_table = app.Table("alerts-sent", default=None, partitions=1, key_type=bytes)
    sender = AlertSender(
        app=app,
        topic=topic,
        sent_table=sent_table,
        smtp=settings.smtp,
        mail=MailSettings(
            sender=settings.smtp.from_,
            recipients=tuple(settings.smtp.to),
            domain=message_id_domain(settings.kafka.topic_prefix),
            dashboard=dashboard_base(
                settings.web.public_url, _web_host(settings.web.host), settings.web.port
            ),
        ),
        metrics=vigo.metrics,
    )

    @app.agent(topic, name="alert-sender")
    async def alert_sender(stream: Any) -> None:
        async for event in stream.events():
            await sender.handle(event)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_position(sender_app: Any, revoked: set[Any], **_: Any) -> None:
        sender.forget_position()

    @app.timer(interval=WATCH_INTERVAL_S)
    async def watch_sender() -> None:
        await sender.watch()

    @app.task
    async def declare_outbox() -> None:
        await topic.maybe_declare()

    return sender


def _web_host(host: str) -> str:
    """A wildcard listen address is no address for a link: use the host name."""
    return socket.gethostname() if host in ("", "0.0.0.0", "::") else host
