"""The SMTP sender: a Faust agent on the `vigo.alerts` outbox (one partition), one record
at a time, in order.

A record is acknowledged (and so its offset committed) only once the SMTP server accepted
the mail; while the server is down the agent retries with capped exponential backoff,
forever, and later alerts wait behind it. Two things may not wait that long: a rebalance
and a shutdown both wait for the record in progress. When either starts, the attempt is
abandoned and the record is appended to the outbox again (same key and value); the
broker acknowledges that append before the record is acknowledged, so the alert is not
lost, it only moves to the end of the queue.

Duplicates: the ids of sent alerts are kept in a small changelog-backed table, marked
after the server's accept, and an id already there is skipped. A crash between the accept
and that mark resends the mail, with the same Message-ID (SPEC section 6).

State: the three tables (sent ids, digest windows, journal) are written the one way every
agent writes (`processor.state`): held, so that the sender's own reads see them, then
flushed after the outputs. The sender flushes before each SMTP attempt and at the end of
each record, before `handle` returns: so a record is acknowledged only once the mark of
what it mailed is in the changelog, acknowledged, and a replay after a crash finds it.

Stale alerts are not mailed as they arrive: each joins a digest window (SPEC 10.4, the
rules in `alerts.window`, the table in `windows.py`), and is acknowledged. A window
closes when the sender reads an outbox record written at or after its end; while one is
open, `tick` appends an empty record keyed `OUTBOX_TICK_KEY` to the outbox so that there
is one to read. Closing mails the digest or the alerts one by one, as above, and only
then deletes the window: a restart or a rebalance on the way closes it again, and what
was mailed already is skipped by id.

Rejected: a mail the server refuses as such (5xx to the end of DATA, or to RCPT TO for
every recipient) `REJECTS_TO_PARK` times is parked: marked like a sent one, counted
`rejected`, logged once as an error, and the sender moves on. Every other failure holds
the outbox and is retried (`smtp.py`).

Each mail's progress is kept in a small journal table for `GET /api/alerts`
(`journal.py`, `alerts.journal`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from faust.types import TP, TableT

from alerts.mail import MailSettings, dashboard_base, message_id_domain
from alerts.window import Member, Window, member_of
from processor.alerting.journal import MailJournal
from processor.alerting.smtp import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    POLL_S,
    REJECTS_TO_PARK,
    Delivery,
    SmtpClient,
    backoff_s,
    deliver,
    is_permanent,
    is_rejection,
    render_message,
    tls_context,
)
from processor.alerting.windows import DigestWindows
from processor.config import Settings, SmtpConfig
from processor.faust_compat import BatchProducer, DeliveryGuard, TableWriter
from processor.metrics import Metrics
from processor.outputs import Outputs
from processor.records import OUTBOX_TICK_KEY
from processor.state import HeldTable, flush
from topics.codec import decode_alert
from topics.events import Alert

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "POLL_S",
    "REJECTS_TO_PARK",
    "AlertSender",
    "Delivery",
    "SentIds",
    "backoff_s",
    "deliver",
    "is_permanent",
    "is_rejection",
    "tls_context",
]

log = logging.getLogger(__name__)

#: Ids of sent alerts are kept this long (by outbox record time): duplicates come from
#: replays of recent records, so the table stays small however long the worker runs.
SENT_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
PRUNE_EVERY: Final = 500
#: The outbox, and so every sender table, has one partition.
PARTITION = 0


#: How often the sender's progress is checked (and the pending gauge refreshed).
SENDER_WATCH_INTERVAL_S: Final = 5.0
#: How often the sender ticks the outbox while a digest window is due to close.
OUTBOX_TICK_INTERVAL_S: Final = 2.0


class SentIds:
    """The ids of mailed (and parked) alerts, each with the outbox record time it was
    marked at, so that a replay skips them and old ones can be forgotten."""

    def __init__(self, table: HeldTable) -> None:
        self.table = table
        self._marked = 0

    def __contains__(self, alert_id: str) -> bool:
        return self.table.get(alert_id.encode("utf-8")) is not None

    def mark(self, alert_id: str, record_ms: int) -> None:
        self.table.put(PARTITION, alert_id.encode("utf-8"), record_ms)

    def prune(self, record_ms: int) -> None:
        """Every `PRUNE_EVERY` calls, forget ids marked long before this record."""
        self._marked += 1
        if self._marked % PRUNE_EVERY:
            return
        horizon = record_ms - SENT_RETENTION_MS
        old = [k for k, sent_ms in self.table.items() if sent_ms is None or sent_ms < horizon]
        for key in old:
            self.table.put(PARTITION, key, None)


def waiting_for_the_sender(app: Any) -> bool:
    """A rebalance or a shutdown is waiting for the record in progress. Faust suspends
    flow control when partitions are revoked, right before it waits for the agents, and
    resumes it before it delivers records again (`app.rebalancing` stays set a little
    longer, while records already flow: not a usable signal)."""
    return bool(app.should_stop or not app.flow_control.is_active())


def owns(app: Any, tp: TP) -> bool:
    """Whether this worker actively owns the partition now."""
    try:
        return tp in app.assignor.assigned_actives()
    except Exception:  # not started, or between assignments
        return False


def mail_settings(settings: Settings) -> MailSettings:
    """Sender, recipients, Message-ID domain and dashboard links of every mail."""
    web = settings.web
    host = socket.gethostname() if web.host in ("", "0.0.0.0", "::") else web.host
    return MailSettings(
        sender=settings.smtp.from_,
        recipients=tuple(settings.smtp.to),
        domain=message_id_domain(settings.kafka.topic_prefix),
        # A wildcard listen address is no address for a link: the host name is.
        dashboard=dashboard_base(web.public_url, host, web.port),
    )


class AlertSender:
    """Sends the outbox; `handle` is called by the agent for each record. Composes the
    SMTP client, the sent ids, the digest windows and the journal, and flushes their
    tables (see the module text)."""

    def __init__(
        self,
        *,
        app: Any,
        topic: Any,
        sent_table: TableT[Any, Any],
        guard: DeliveryGuard,
        smtp: SmtpConfig,
        mail: MailSettings,
        metrics: Metrics,
        journal_table: TableT[Any, Any],
        outputs: Outputs,
        batches: BatchProducer,
        windows_table: TableT[Any, Any] | None = None,
        digest_over: int = 10,
        window_ms: int = 60_000,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.topic = topic
        self.tp = TP(topic.get_topic_name(), PARTITION)
        self.guard = guard
        self.mail = mail
        self.metrics = metrics
        self.outputs = outputs
        self.clock = clock
        self.interrupted = partial(waiting_for_the_sender, app)
        self.smtp = SmtpClient(smtp, metrics, self.interrupted, backoff_initial_s, backoff_max_s)
        # Flushed in this order: a mark before the journal and the window it finishes.
        self._tables = [HeldTable(writer=TableWriter(sent_table, batches, outputs.deliver))]
        self.sent = SentIds(self._tables[0])
        self._tables.append(HeldTable(writer=TableWriter(journal_table, batches, outputs.deliver)))
        self.journal = MailJournal(self._tables[-1], clock)
        #: None when stale alerts are not mailed: no windows then.
        self.windows: DigestWindows | None = None
        if windows_table is not None:
            self._tables.append(
                HeldTable(writer=TableWriter(windows_table, batches, outputs.deliver))
            )
            self.windows = DigestWindows(
                self._tables[-1], digest_over=digest_over, window_ms=window_ms
            )
        self._busy = False

    async def handle(self, event: Any) -> None:
        message = event.message
        if not self.guard.accept(message.tp, message.offset):
            await self.guard.settle()  # a hole before this record: read it again first
            return
        self._busy = True
        try:
            await self._handle(message)
            await self._flush()  # the record is acknowledged when this returns
        finally:
            self._busy = False
            self.refresh_pending()

    async def _flush(self) -> None:
        """Outputs (a requeued record) acknowledged, then the held table writes."""
        await flush(self.outputs, *self._tables)

    async def _handle(self, message: Any) -> None:
        record_ms = int(message.timestamp * 1000)
        if message.key == OUTBOX_TICK_KEY:
            await self._windows_step(message.offset, record_ms, None)
            return
        try:
            alert = decode_alert(message.value or b"")
        except ValueError as exc:
            # Only this app writes the outbox; a record it cannot read is skipped, not
            # retried forever in front of every later alert.
            log.error("outbox record at offset %s skipped: %s", message.offset, exc)
            self.metrics.alerts.labels(event="unknown", outcome="failed").inc()
            await self._windows_step(message.offset, record_ms, None)
            return
        member = member_of(alert) if self.windows is not None else None
        if member is not None and member.alert_id in self.sent:
            log.info("alert %s already sent: skipped", alert.alert_id)
            self.metrics.alerts.labels(event=alert.event, outcome="duplicate").inc()
            await self._windows_step(message.offset, record_ms, None)
            return
        if member is not None:
            # Acknowledged once it is in its window, whether or not the windows it closes
            # go out now: they stay in the table until they have.
            await self._windows_step(message.offset, record_ms, member)
            return
        closed_all = await self._windows_step(message.offset, record_ms, None)
        if not closed_all or await self.deliver(alert, record_ms) is Delivery.INTERRUPTED:
            self.outputs.send(self.topic, key=message.key, value=message.value)
            log.warning("alert %s not sent before a rebalance/stop: requeued", alert.alert_id)

    async def deliver(self, alert: Alert, record_ms: int) -> Delivery:
        """Mail one alert unless it was mailed (or parked) already; mark it after."""
        if alert.alert_id in self.sent:
            log.info("alert %s already sent: skipped", alert.alert_id)
            self.metrics.alerts.labels(event=alert.event, outcome="duplicate").inc()
            return Delivery.SENT
        msg = render_message(alert, self.mail)
        self.journal.entry(alert)  # pending from the first attempt on (flushed before it)
        outcome = await self.smtp.send(
            alert, msg, before_attempt=self._flush, attempted=partial(self.journal.attempted, alert)
        )
        if outcome is Delivery.INTERRUPTED:
            return outcome
        self.sent.mark(alert.alert_id, record_ms)  # parked mail too: a replay must not retry it
        self.metrics.alerts.labels(event=alert.event, outcome=outcome.value).inc()
        self.journal.finished(alert, "sent" if outcome is Delivery.SENT else "rejected")
        if outcome is Delivery.SENT:
            log.info("alert %s sent", alert.alert_id)
        self.sent.prune(record_ms)
        return outcome

    async def _windows_step(self, offset: int, record_ms: int, member: Member | None) -> bool:
        """Add a stale record to its window and close the windows the record's time ends;
        False if a rebalance or stop came first (those windows stay open)."""
        if self.windows is None:
            return True
        for window in self.windows.step(offset, record_ms, member):
            if not await self._close(self.windows, window):
                return False
        return True

    async def _close(self, windows: DigestWindows, window: Window) -> bool:
        sending = windows.mails(window)
        for alert in sending:
            if await self.deliver(alert, window.end_ms) is Delivery.INTERRUPTED:
                return False
        if len(sending) == 1 and sending[0].details.get("digest"):
            # A duplicate write of a listed alert, read later, is not mailed again.
            for member in window.members:
                self.sent.mark(member.alert_id, window.end_ms)
        windows.closed(window, len(sending))
        return True

    def held(self) -> int:
        """Stale alerts in open windows."""
        return self.windows.held() if self.windows is not None else 0

    async def tick(self) -> None:
        """Timer: while a window that should have closed is open, append a tick to the
        outbox, so that the sender reads a record whose time closes it (not while a record
        is in progress: its end decides)."""
        if self.windows is None or self._busy or self.interrupted() or self.app.rebalancing:
            return
        if not owns(self.app, self.tp):
            return
        now_s = self.clock()
        if self.windows.due(now_s * 1000):
            await self.topic.send(key=OUTBOX_TICK_KEY, value=b"", partition=0, timestamp=now_s)

    def journal_doc(self) -> dict[str, Any] | None:
        """`GET /api/alerts` where this worker owns the outbox; None elsewhere."""
        return self.journal.doc() if owns(self.app, self.tp) else None

    def refresh_pending(self) -> int | None:
        """`vigo_alert_outbox_pending`: records from the one being sent to the end, and
        the stale alerts held in open digest windows, on the worker that owns the outbox;
        0 elsewhere, so a sum over workers is right.
        Returns the count where it is known."""
        gauge = self.metrics.alert_outbox_pending
        try:
            if self.tp not in self.app.assignor.assigned_actives():
                gauge.set(0)
                return None
            highwater = self.app.consumer.highwater(self.tp)
        except Exception:  # not started, or between assignments
            return None
        if highwater is None:
            return None
        in_progress = 1 if self._busy else 0
        behind = int(highwater) - self.guard.position(self.tp) + in_progress
        pending = max(0, behind) + self.held()
        gauge.set(pending)
        return pending

    async def watch(self) -> None:
        """Timer: refresh the gauge, and let the delivery guard restart a stalled fetch
        (not while a record is in progress: an SMTP outage is no stall)."""
        self.refresh_pending()
        if not (self._busy or self.interrupted() or self.app.rebalancing):
            await self.guard.watch()

    def forget_position(self) -> None:
        """On revocation: the partition may come back after another worker moved it on.
        Writes still held belong to a record that was not acknowledged (its flush was cut
        short): it is read again, so they go."""
        self.guard.forget([self.tp])
        for table in self._tables:
            table.take()
        if self.windows is not None:
            self.windows.forget()
