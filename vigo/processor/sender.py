"""The SMTP sender: a Faust agent on the `vigo.alerts` outbox (one partition), one record
at a time, in order.

A record is acknowledged (and so its offset committed) only once the SMTP server accepted
the mail; while the server is down the agent retries with capped exponential backoff,
forever, and later alerts wait behind it. Two things may not wait that long: a rebalance
and a shutdown both wait for the record in progress. When either starts, the attempt is
abandoned and the record is appended to the outbox again (same key and value) before it
is acknowledged; Faust flushes that write before it commits, so the alert is not lost, it
only moves to the end of the queue.

Duplicates: the ids of sent alerts are kept in a small changelog-backed table, written
after the server's accept, and an id already there is skipped. A crash between the accept
and that write resends the mail, with the same Message-ID (SPEC section 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from email.message import EmailMessage
from typing import Any, Final

import aiosmtplib
import orjson
from faust.types import TP

from vigo.alerts.mail import MailSettings, header_text, message_id, render
from vigo.processor.config import SmtpConfig
from vigo.processor.faust_compat import DeliveryGuard
from vigo.processor.metrics import Metrics
from vigo.topics.codec import decode_alert
from vigo.topics.events import Alert

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: How often a waiting sender looks at whether the worker is rebalancing or stopping.
POLL_S: Final = 0.25
#: Ids of sent alerts are kept this long (by outbox record time): duplicates come from
#: replays of recent records, so the table stays small however long the worker runs.
SENT_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
PRUNE_EVERY: Final = 500


def backoff_s(
    attempt: int, initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_MAX_S
) -> float:
    """Delay before retry number `attempt` (0-based): 0.5, 1, 2, 4, ... capped at 30 s."""
    return min(cap, initial * 2.0 ** min(attempt, 32))


def is_permanent(exc: BaseException) -> bool:
    """A 5xx answer: the server refuses this mail as it is (counted as `failed`)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(r.code >= 500 for r in exc.recipients)
    return isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 500


def tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    """Verifying context: the system's trust store, or `smtp.ca_file`."""
    return ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)


async def deliver(msg: EmailMessage, smtp: SmtpConfig, context: ssl.SSLContext) -> None:
    """One SMTP transaction; returns once the server accepted the mail, raises otherwise.

    The envelope comes from the configuration, never from the headers."""
    errors, _ = await aiosmtplib.send(
        msg,
        sender=smtp.from_,
        recipients=list(smtp.to),
        hostname=smtp.host,
        port=smtp.port,
        username=smtp.username,
        password=smtp.password if smtp.username else None,
        use_tls=smtp.tls,
        start_tls=smtp.starttls,
        timeout=smtp.timeout_s,
        tls_context=context,
    )
    if errors:
        log.warning("alert %s: recipients refused: %s", msg["Message-ID"], sorted(errors))


class AlertSender:
    """Sends the outbox; `handle` is called by the agent for each record."""

    def __init__(
        self,
        *,
        app: Any,
        topic: Any,
        sent_table: Any,
        guard: DeliveryGuard,
        smtp: SmtpConfig,
        mail: MailSettings,
        metrics: Metrics,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.app = app
        self.topic = topic
        self.tp = TP(topic.get_topic_name(), 0)
        self.sent = sent_table
        self.guard = guard
        self.smtp = smtp
        self.mail = mail
        self.metrics = metrics
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.context = tls_context(smtp)
        self._handled = 0
        self._busy = False

    def interrupted(self) -> bool:
        """A rebalance or a shutdown is waiting for the record in progress. Faust
        suspends flow control when partitions are revoked, right before it waits for the
        agents, and resumes it before it delivers records again (`app.rebalancing` stays
        set a little longer, while records already flow: not a usable signal)."""
        return bool(self.app.should_stop or not self.app.flow_control.is_active())

    async def handle(self, event: Any) -> None:
        message = event.message
        if not self.guard.accept(message.tp, message.offset):
            await self.guard.settle()  # a hole before this record: read it again first
            return
        self._busy = True
        try:
            await self._handle(message)
        finally:
            self._busy = False
            self.refresh_pending()

    async def _handle(self, message: Any) -> None:
        try:
            alert = decode_alert(message.value or b"")
        except ValueError as exc:
            # Only this app writes the outbox; a record it cannot read is skipped, not
            # retried forever in front of every later alert.
            log.error("outbox record at offset %s skipped: %s", message.offset, exc)
            self.metrics.alerts.labels(event="unknown", outcome="failed").inc()
            return
        key = alert.alert_id.encode("utf-8")
        record_ms = int(message.timestamp * 1000)
        if self.sent.get(key) is not None:
            log.info("alert %s already sent: skipped", alert.alert_id)
            self.metrics.alerts.labels(event=alert.event, outcome="duplicate").inc()
            return
        msg = self._render(alert)
        if await self._send(alert, msg):
            self.sent[key] = record_ms
            self.metrics.alerts.labels(event=alert.event, outcome="sent").inc()
            log.info("alert %s sent", alert.alert_id)
            self._maybe_prune(record_ms)
        else:
            self.topic.send_soon(key=message.key, value=message.value)
            log.warning("alert %s not sent before a rebalance/stop: requeued", alert.alert_id)

    def _render(self, alert: Alert) -> EmailMessage:
        try:
            return render(alert, self.mail)
        except Exception:  # a rendering bug must not lose the alert: send it raw
            log.exception("alert %s: rendering failed; sending the record as is", alert.alert_id)
            msg = EmailMessage()
            msg["From"] = header_text(self.mail.sender, 998)
            msg["To"] = header_text(", ".join(self.mail.recipients), 998)
            msg["Subject"] = header_text(f"[Vigo] {alert.event}: {alert.subject}")
            msg["Message-ID"] = message_id(alert.alert_id, self.mail.domain)
            details = orjson.dumps(dict(alert.details), option=orjson.OPT_INDENT_2)
            msg.set_content(details.decode("utf-8", "replace"))
            return msg

    async def _send(self, alert: Alert, msg: EmailMessage) -> bool:
        """True once the server accepted the mail; False if interrupted first."""
        attempt = 0
        while not self.interrupted():
            try:
                return await self._attempt(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                permanent = is_permanent(exc)
                self.metrics.alerts.labels(
                    event=alert.event, outcome="failed" if permanent else "retried"
                ).inc()
                delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
                # Every attempt until the delay reaches its cap, then every tenth.
                if attempt < 3 or delay < self.backoff_max_s or attempt % 10 == 0:
                    log.log(
                        logging.ERROR if permanent else logging.WARNING,
                        "alert %s: SMTP %s:%s %s (attempt %d): %s; retrying in %.1fs",
                        alert.alert_id,
                        self.smtp.host,
                        self.smtp.port,
                        "refused the mail" if permanent else "failed",
                        attempt + 1,
                        _describe(exc),
                        delay,
                    )
            attempt += 1
            if not await self._sleep(delay):
                return False
        return False

    async def _attempt(self, msg: EmailMessage) -> bool:
        """One delivery; False if abandoned because the worker is rebalancing/stopping (a
        mail the server got but did not confirm is resent later with the same id)."""
        task = asyncio.ensure_future(deliver(msg, self.smtp, self.context))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=POLL_S)
                if done:
                    task.result()
                    return True
                if self.interrupted():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    return False
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _sleep(self, seconds: float) -> bool:
        """Sleep in short slices; False as soon as the worker is rebalancing/stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if self.interrupted():
                return False
            await asyncio.sleep(min(POLL_S, left))
        return not self.interrupted()

    def _maybe_prune(self, record_ms: int) -> None:
        """Forget ids sent long before this record (inside the stream: table writes need
        the current event)."""
        self._handled += 1
        if self._handled % PRUNE_EVERY:
            return
        horizon = record_ms - SENT_RETENTION_MS
        old = [k for k, sent_ms in list(self.sent.items()) if sent_ms is None or sent_ms < horizon]
        for key in old:
            del self.sent[key]

    def refresh_pending(self) -> int | None:
        """`vigo_alert_outbox_pending`: records from the one being sent to the end, on
        the worker that owns the outbox; 0 elsewhere, so a sum over workers is right.
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
        pending = max(0, int(highwater) - self.guard.position(self.tp) + in_progress)
        gauge.set(pending)
        return pending

    async def watch(self) -> None:
        """Timer: refresh the gauge, and let the delivery guard restart a stalled fetch
        (not while a record is in progress: an SMTP outage is no stall)."""
        self.refresh_pending()
        if not (self._busy or self.interrupted() or self.app.rebalancing):
            await self.guard.watch()

    def forget_position(self) -> None:
        """On revocation: the partition may come back after another worker moved it on."""
        self.guard.forget([self.tp])


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
