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

Stale alerts are not mailed as they arrive: each joins a digest window (SPEC 10.4, the
rules in `alerts.window`), kept in a changelog-backed table, and is acknowledged. A
window closes when the sender reads an outbox record written at or after its end; while
one is open, `tick` appends an empty record keyed `OUTBOX_TICK_KEY` to the outbox so that
there is one to read. Closing mails the digest or the alerts one by one, as above, and
only then deletes the window: a restart or a rebalance on the way closes it again, and
what was mailed already is skipped by id.

Rejected: a mail the server refuses as such (5xx to the end of DATA, or to RCPT TO for
every recipient) `REJECTS_TO_PARK` times is parked: marked like a sent one, counted
`rejected`, logged once as an error, and the sender moves on. Every other failure holds
the outbox and is retried.

Each mail's progress is kept in a small journal table for `GET /api/alerts`
(`alerts.journal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Final

import aiosmtplib
import orjson
from faust.types import TP

from alerts import journal
from alerts.mail import MailSettings, header_text, message_id, render
from alerts.window import Member, Progress, Window, closed, mails, member_of, step
from processor.config import SmtpConfig
from processor.faust_compat import DeliveryGuard
from processor.metrics import Metrics
from processor.records import (
    OUTBOX_TICK_KEY,
    WINDOWS_PROGRESS_KEY,
    decode_journal_entry,
    decode_progress,
    decode_window,
    encode_journal_entry,
    encode_progress,
    encode_window,
    window_key,
)
from topics.codec import decode_alert
from topics.events import Alert
from topics.timestamps import iso_from_ms

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: How often a waiting sender looks at whether the worker is rebalancing or stopping.
POLL_S: Final = 0.25
#: Ids of sent alerts are kept this long (by outbox record time): duplicates come from
#: replays of recent records, so the table stays small however long the worker runs.
SENT_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
PRUNE_EVERY: Final = 500
#: A mail the server rejects as such this many times is parked.
REJECTS_TO_PARK: Final = 3


class Delivery(enum.Enum):
    SENT = "sent"
    #: Parked: rejected permanently `REJECTS_TO_PARK` times.
    REJECTED = "rejected"
    #: Abandoned for a rebalance or a shutdown.
    INTERRUPTED = "interrupted"


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


def is_rejection(exc: BaseException) -> bool:
    """The server refuses this mail itself, so sending it again cannot help: a 5xx to the
    end of DATA, or to RCPT TO for every recipient. (A 5xx to AUTH or MAIL FROM is the
    configuration's, fixed by the operator: retried.)"""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return is_permanent(exc)
    return isinstance(exc, aiosmtplib.SMTPDataError) and exc.code >= 500


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
        journal_table: Any,
        windows_table: Any = None,
        digest_over: int = 10,
        window_ms: int = 60_000,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.topic = topic
        self.tp = TP(topic.get_topic_name(), 0)
        self.sent = sent_table
        self.guard = guard
        self.smtp = smtp
        self.mail = mail
        self.metrics = metrics
        self.journal = journal_table
        #: None when stale alerts are not mailed: no windows then.
        self.windows = windows_table
        self.digest_over = digest_over
        self.window_ms = window_ms
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.context = tls_context(smtp)
        self._handled = 0
        self._busy = False
        self._decoded: dict[bytes, tuple[bytes, Window]] = {}

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
        if member is not None and self.sent.get(member.alert_id.encode("utf-8")) is not None:
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
            self.topic.send_soon(key=message.key, value=message.value)
            log.warning("alert %s not sent before a rebalance/stop: requeued", alert.alert_id)

    async def deliver(self, alert: Alert, record_ms: int) -> Delivery:
        """Mail one alert unless it was mailed (or parked) already; mark it after."""
        key = alert.alert_id.encode("utf-8")
        if self.sent.get(key) is not None:
            log.info("alert %s already sent: skipped", alert.alert_id)
            self.metrics.alerts.labels(event=alert.event, outcome="duplicate").inc()
            return Delivery.SENT
        msg = self._render(alert)
        outcome = await self._send(alert, msg)
        if outcome is Delivery.INTERRUPTED:
            return outcome
        self.sent[key] = record_ms  # parked mail too: a replay must not try it again
        self.metrics.alerts.labels(event=alert.event, outcome=outcome.value).inc()
        self._journal_finish(alert, outcome)
        if outcome is Delivery.SENT:
            log.info("alert %s sent", alert.alert_id)
        self._maybe_prune(record_ms)
        return outcome

    # -- digest windows ------------------------------------------------------------------

    def _window_state(self) -> tuple[Progress, dict[int, Window]]:
        progress = Progress()
        windows: dict[int, Window] = {}
        if self.windows is None:
            return progress, windows
        for key, value in list(self.windows.items()):
            if value is None:
                continue
            if key == WINDOWS_PROGRESS_KEY:
                progress = decode_progress(value)
                continue
            cached = self._decoded.get(key)
            if cached is None or cached[0] != value:
                cached = (value, decode_window(value))
                self._decoded[key] = cached
            windows[cached[1].start_ms] = cached[1]
        return progress, windows

    async def _windows_step(self, offset: int, record_ms: int, member: Member | None) -> bool:
        """Add a stale record to its window and close the windows the record's time ends;
        False if a rebalance or stop came first (those windows stay open)."""
        if self.windows is None:
            return True
        progress, windows = self._window_state()
        done = step(progress, windows, offset, record_ms, member, self.window_ms)
        if done.added is not None:
            self.windows[window_key(done.added.start_ms)] = encode_window(done.added)
            self.windows[WINDOWS_PROGRESS_KEY] = encode_progress(done.progress)
        for window in done.closing:
            if not await self._close(window):
                return False
        return True

    async def _close(self, window: Window) -> bool:
        sending = mails(window, self.digest_over)
        for alert in sending:
            if await self.deliver(alert, window.end_ms) is Delivery.INTERRUPTED:
                return False
        if len(sending) == 1 and sending[0].details.get("digest"):
            # A duplicate write of a listed alert, read later, is not mailed again.
            for member in window.members:
                self.sent[member.alert_id.encode("utf-8")] = window.end_ms
        key = window_key(window.start_ms)
        del self.windows[key]
        self._decoded.pop(key, None)
        progress, _ = self._window_state()
        self.windows[WINDOWS_PROGRESS_KEY] = encode_progress(closed(progress, window))
        log.info(
            "digest window %s..%s closed: %d stale alerts in %d mails",
            iso_from_ms(window.start_ms),
            iso_from_ms(window.end_ms),
            window.count,
            len(sending),
        )
        return True

    def held(self) -> int:
        """Stale alerts in open windows."""
        _, windows = self._window_state()
        return sum(w.count for w in windows.values())

    async def tick(self) -> None:
        """Timer: while a window that should have closed is open, append a tick to the
        outbox, so that the sender reads a record whose time closes it (not while a record
        is in progress: its end decides)."""
        if self.windows is None or self._busy or self.interrupted() or self.app.rebalancing:
            return
        try:
            if self.tp not in self.app.assignor.assigned_actives():
                return
        except Exception:  # not started, or between assignments
            return
        _, windows = self._window_state()
        now_s = self.clock()
        if any(w.end_ms <= now_s * 1000 for w in windows.values()):
            await self.topic.send(key=OUTBOX_TICK_KEY, value=b"", partition=0, timestamp=now_s)

    # -- journal -------------------------------------------------------------------------

    def _journal_entries(self) -> list[journal.Entry]:
        return [decode_journal_entry(v) for v in list(self.journal.values()) if v is not None]

    def _journal_put(self, entry: journal.Entry) -> None:
        self.journal[entry.alert_id.encode("utf-8")] = encode_journal_entry(entry)

    def _journal_entry(self, alert: Alert) -> journal.Entry:
        raw = self.journal.get(alert.alert_id.encode("utf-8"))
        if raw is not None:
            return decode_journal_entry(raw)
        entries = self._journal_entries()
        entry = journal.started(entries, alert.alert_id, alert.event, alert.at)
        self._journal_put(entry)
        for old in journal.to_prune([*entries, entry]):
            del self.journal[old.encode("utf-8")]
        return entry

    def _journal_attempted(self, alert: Alert) -> None:
        self._journal_put(journal.attempted(self._journal_entry(alert)))

    def _journal_finish(self, alert: Alert, outcome: Delivery) -> None:
        state: journal.Outcome = "sent" if outcome is Delivery.SENT else "rejected"
        now = iso_from_ms(int(self.clock() * 1000))
        self._journal_put(journal.finished(self._journal_entry(alert), state, now))

    def journal_doc(self) -> dict[str, Any] | None:
        """`GET /api/alerts` where this worker owns the outbox; None elsewhere."""
        try:
            if self.tp not in self.app.assignor.assigned_actives():
                return None
        except Exception:
            return None
        return journal.alerts_doc(self._journal_entries())

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

    async def _send(self, alert: Alert, msg: EmailMessage) -> Delivery:
        """SENT once the server accepted the mail, REJECTED once it refused it as such
        `REJECTS_TO_PARK` times; INTERRUPTED if a rebalance or stop came first."""
        self._journal_entry(alert)  # pending from the first attempt on
        attempt = 0
        rejections = 0
        while not self.interrupted():
            try:
                if await self._attempt(msg):
                    self._journal_attempted(alert)
                    return Delivery.SENT
                return Delivery.INTERRUPTED
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._journal_attempted(alert)
                if is_rejection(exc):
                    rejections += 1
                    if rejections >= REJECTS_TO_PARK:
                        log.error(
                            "alert %s parked: SMTP %s:%s rejected the mail %d times (%s); "
                            "not retried, later alerts go on",
                            alert.alert_id,
                            self.smtp.host,
                            self.smtp.port,
                            rejections,
                            _describe(exc),
                        )
                        return Delivery.REJECTED
                permanent = is_permanent(exc)
                self.metrics.alerts.labels(
                    event=alert.event, outcome="failed" if permanent else "retried"
                ).inc()
                delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
                # Every attempt until the delay reaches its cap, then every tenth. A
                # rejection is a warning until it is parked (one error line then).
                if attempt < 3 or delay < self.backoff_max_s or attempt % 10 == 0:
                    log.log(
                        logging.ERROR if permanent and not is_rejection(exc) else logging.WARNING,
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
                return Delivery.INTERRUPTED
        return Delivery.INTERRUPTED

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
        """On revocation: the partition may come back after another worker moved it on."""
        self.guard.forget([self.tp])
        self._decoded.clear()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
