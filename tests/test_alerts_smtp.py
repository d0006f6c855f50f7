"""The SMTP client (`alerts.sender.deliver`) against a real aiosmtpd server on loopback:
STARTTLS with authentication, implicit TLS, certificate verification, and which failures
count as permanent. No Kafka here; the worker-level tests are in test_alerts_worker.py."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from alerts.mail import MailSettings, render
from alerts.rules import threshold_alert
from processor.alerting.sender import deliver, is_permanent, is_rejection, tls_context
from processor.config import SmtpConfig
from projections.fleet import FleetCounts
from tests.harness import free_port
from tests.smtpserver import Certs, SmtpServer, login_authenticator, make_certs

T0 = 1_795_781_104_000
MAIL = MailSettings("vigo@example.org", ("ops@example.org",), "vigo", "http://vigo:6066")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "smtp-password"
    path.write_text("s3cret\n")
    return path


def smtp_config(port: int, **options: Any) -> SmtpConfig:
    return SmtpConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "from": "vigo@example.org",
         "to": ["ops@example.org"], "timeout_s": 5, **options}
    )  # fmt: skip


def send(config: SmtpConfig) -> None:
    alert = threshold_alert(1, FleetCounts.from_dict({"converged": 1, "failed": 1}), 90.0, T0)
    asyncio.run(deliver(render(alert, MAIL), config, tls_context(config)))


@pytest.fixture
def starttls_server(certs: Certs) -> Iterator[SmtpServer]:
    with SmtpServer(
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=login_authenticator("vigo", "s3cret"),
        auth_require_tls=True,
        auth_required=True,
    ) as server:
        yield server


def test_starttls_with_login(
    starttls_server: SmtpServer, certs: Certs, password_file: Path
) -> None:
    config = smtp_config(
        starttls_server.port,
        starttls=True,
        username="vigo",
        password_file=str(password_file),
        ca_file=str(certs.ca),
    )
    send(config)
    (mail,) = starttls_server.messages
    assert mail.tls and mail.login == "vigo"
    assert mail.rcpt_tos == ("ops@example.org",)
    assert mail.message_id == "<convergence.threshold/1@vigo>"


def test_wrong_password_is_a_permanent_failure(
    starttls_server: SmtpServer, certs: Certs, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    config = smtp_config(
        starttls_server.port,
        starttls=True,
        username="vigo",
        password_file=str(wrong),
        ca_file=str(certs.ca),
    )
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        send(config)
    assert is_permanent(caught.value)
    assert not is_rejection(caught.value)  # the operator's to fix: retried, never parked
    assert starttls_server.messages == []


def test_untrusted_certificate_is_refused(starttls_server: SmtpServer) -> None:
    """Without `smtp.ca_file` the test CA is unknown: no mail goes over an unverified
    connection, and the failure is one to retry (the operator fixes the trust)."""
    config = smtp_config(starttls_server.port, starttls=True, username="vigo")
    with pytest.raises(Exception) as caught:
        send(config)
    assert not is_permanent(caught.value)
    assert starttls_server.messages == []


def test_plain_connection_refused_by_a_starttls_only_server(starttls_server: SmtpServer) -> None:
    with pytest.raises(aiosmtplib.SMTPResponseException):
        send(smtp_config(starttls_server.port, starttls=False))
    assert starttls_server.messages == []


def test_implicit_tls(certs: Certs) -> None:
    with SmtpServer(ssl_context=certs.server_context()) as server:
        send(smtp_config(server.port, tls=True, ca_file=str(certs.ca)))
        (mail,) = server.messages
        assert mail.tls and mail.login is None


def test_server_down_is_transient() -> None:
    with pytest.raises(aiosmtplib.SMTPException) as caught:
        send(smtp_config(free_port()))
    assert not is_permanent(caught.value)


def test_rejected_data_is_permanent() -> None:
    class Rejecting:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "554 5.6.0 rejected"

    server = SmtpServer()
    server.recorder = Rejecting()  # type: ignore[assignment]
    with server, pytest.raises(aiosmtplib.SMTPDataError) as caught:
        send(smtp_config(server.port))
    assert is_permanent(caught.value)
    assert is_rejection(caught.value)


class Refusing:
    """Answers RCPT TO with `rcpt` (for the recipients in `refuse`) and MAIL FROM with
    `mail`."""

    def __init__(self, rcpt: str = "250 OK", mail: str = "250 OK", refuse: str = "") -> None:
        self.rcpt, self.mail, self.refuse = rcpt, mail, refuse
        #: (MAIL FROM, RCPT TOs, message) of every mail accepted at the end of DATA.
        self.delivered: list[tuple[str, tuple[str, ...], EmailMessage]] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        envelope.mail_from = address
        return self.mail

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse in address:
            return self.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.delivered.append((envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.mark.parametrize(
    ("handler", "rejection"),
    [
        (Refusing(rcpt="550 5.1.1 no such user"), True),  # every recipient, 5xx: parked
        (Refusing(rcpt="450 4.2.1 try later"), False),  # 4xx: retried
        (Refusing(mail="553 5.7.1 sender not allowed"), False),  # MAIL FROM: retried
    ],
)
def test_which_refusals_park_a_mail(handler: Refusing, rejection: bool) -> None:
    server = SmtpServer()
    server.recorder = handler  # type: ignore[assignment]
    with server, pytest.raises(aiosmtplib.SMTPException) as caught:
        send(smtp_config(server.port))
    assert is_rejection(caught.value) is rejection


def test_one_recipient_refused_of_two_is_delivered() -> None:
    server = SmtpServer()
    refusing = Refusing(rcpt="550 5.1.1 no such user", refuse="second")
    server.recorder = refusing  # type: ignore[assignment]
    with server:
        send(smtp_config(server.port, to=["first@example.org", "second@example.org"]))
    (delivered,) = refusing.delivered
    mail_from, rcpt_tos, message = delivered
    assert mail_from == "vigo@example.org"
    assert rcpt_tos == ("first@example.org",)  # the refused one is not in the envelope
    assert str(message["Message-ID"]) == "<convergence.threshold/1@vigo>"
    assert str(message["Subject"]).strip() == (
        "[Vigo] Fleet convergence 50% is below the 90% threshold"
    )
