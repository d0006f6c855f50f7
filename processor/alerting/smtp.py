"""The SMTP client of the sender: the message, one transaction, and the retries around it.

Apart from the sender's tables so that the mail side can be read (and tested against a
real server, `tests/test_alerts_smtp.py`) on its own: `SmtpClient.send` returns once the
server accepted or parked the mail, or once the worker is rebalancing or stopping, and
writes nothing itself; the sender keeps the journal and the marks through its hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Final

import aiosmtplib
import orjson

from alerts.mail import MailSettings, header_text, message_id, render
from processor.config import SmtpConfig
from processor.metrics import Metrics
from topics.escape import printable
from topics.events import Alert

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
#: How often a waiting sender looks at whether the worker is rebalancing or stopping.
POLL_S: Final = 0.25
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
    """A 5xx answer: the server refuses this mail as it is (counted as `failed`); or AUTH
    refused by us over a connection that is not encrypted (the configuration's)."""
    if isinstance(exc, PlaintextAuthRefused):
        return True
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


class PlaintextAuthRefused(aiosmtplib.SMTPException):
    """AUTH would go over a connection that is not encrypted (SPEC 11.4): not sent.
    Counted as a failure (`is_permanent`) and retried: the operator fixes the setting."""


def start_tls_flag(smtp: SmtpConfig) -> bool | None:
    """aiosmtplib's `start_tls`: None upgrades when the server offers STARTTLS (`auto`),
    True requires it, False never upgrades (and implicit TLS needs no upgrade)."""
    if smtp.tls:
        return False
    return None if smtp.starttls == "auto" else bool(smtp.starttls)


async def deliver(msg: EmailMessage, smtp: SmtpConfig, context: ssl.SSLContext) -> None:
    """One SMTP transaction; returns once the server accepted the mail, raises otherwise.

    The envelope comes from the configuration, never from the headers. The client logs
    in only after the connection is encrypted (implicit TLS or STARTTLS), unless
    `smtp.allow_plaintext_auth`: the password never crosses the wire in clear text."""
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        use_tls=smtp.tls,
        start_tls=start_tls_flag(smtp),
        timeout=smtp.timeout_s,
        tls_context=context,
    )
    async with client:  # connects, and upgrades with STARTTLS as configured
        if smtp.username:
            if client.get_transport_info("sslcontext") is None and not smtp.allow_plaintext_auth:
                raise PlaintextAuthRefused(
                    f"the server offers no STARTTLS (smtp.starttls: {_word(smtp.starttls)}): "
                    "AUTH not sent over a connection that is not encrypted; use smtp.tls, "
                    "a server with STARTTLS, or smtp.allow_plaintext_auth: true"
                )
            await client.login(smtp.username, smtp.password or "")
        errors, _ = await client.send_message(msg, sender=smtp.from_, recipients=list(smtp.to))
    if errors:
        log.warning("alert %s: recipients refused: %s", msg["Message-ID"], sorted(errors))


def _word(value: object) -> str:
    return str(value).lower()


def render_message(alert: Alert, mail: MailSettings) -> EmailMessage:
    """The mail of an alert; a rendering bug must not lose the alert: it is sent raw."""
    try:
        return render(alert, mail)
    except Exception:
        log.exception("alert %s: rendering failed; sending the record as is", alert.alert_id)
        msg = EmailMessage()
        msg["From"] = header_text(mail.sender, 998)
        msg["To"] = header_text(", ".join(mail.recipients), 998)
        msg["Subject"] = header_text(f"[Vigo] {alert.event}: {alert.subject}")
        msg["Message-ID"] = message_id(alert.alert_id, mail.domain)
        details = orjson.dumps(dict(alert.details), option=orjson.OPT_INDENT_2)
        text = details.decode("utf-8", "replace")
        msg.set_content("\n".join(printable(line) for line in text.split("\n")))
        return msg


class SmtpClient:
    """Sends one mail until the server accepts or parks it, with capped exponential
    backoff; gives up only when `interrupted` says a rebalance or a stop is waiting."""

    def __init__(
        self,
        smtp: SmtpConfig,
        metrics: Metrics,
        interrupted: Callable[[], bool],
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.smtp = smtp
        self.metrics = metrics
        self.interrupted = interrupted
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.context = tls_context(smtp)

    async def send(
        self,
        alert: Alert,
        msg: EmailMessage,
        *,
        before_attempt: Callable[[], Awaitable[None]],
        attempted: Callable[[], None],
    ) -> Delivery:
        """SENT once the server accepted the mail, REJECTED once it refused it as such
        `REJECTS_TO_PARK` times; INTERRUPTED if a rebalance or stop came first.
        `before_attempt` runs before every attempt, `attempted` after every one that
        got an answer (or a failure) from the server."""
        attempt = 0
        rejections = 0
        while not self.interrupted():
            await before_attempt()
            try:
                if not await self._attempt(msg):
                    return Delivery.INTERRUPTED
                attempted()
                return Delivery.SENT
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempted()
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
                delay = self._failed(alert, exc, attempt)
            attempt += 1
            if not await self._sleep(delay):
                return Delivery.INTERRUPTED
        return Delivery.INTERRUPTED

    def _failed(self, alert: Alert, exc: Exception, attempt: int) -> float:
        """Count and log a failed attempt; the delay before the next one."""
        permanent = is_permanent(exc)
        self.metrics.alerts.labels(
            event=alert.event, outcome="failed" if permanent else "retried"
        ).inc()
        delay = backoff_s(attempt, self.backoff_initial_s, self.backoff_max_s)
        # Every attempt until the delay reaches its cap, then every tenth. A rejection is
        # a warning until it is parked (one error line then).
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
        return delay

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


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
