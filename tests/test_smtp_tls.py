"""`smtp.starttls: auto|true|false` and `smtp.allow_plaintext_auth` (SPEC 11.4) against a
real aiosmtpd server on loopback that records every STARTTLS, AUTH and MAIL it receives
and whether the connection was encrypted then: the session is upgraded whenever the
server offers STARTTLS, and the password never crosses a connection that is not
encrypted unless the operator allowed it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from alerts.mail import MailSettings, render
from alerts.rules import threshold_alert
from processor.alerting.smtp import (
    Delivery,
    PlaintextAuthRefused,
    SmtpClient,
    deliver,
    is_permanent,
    is_rejection,
    tls_context,
)
from processor.config import ConfigError, SmtpConfig, load_settings
from processor.metrics import Metrics
from projections.fleet import FleetCounts
from tests.smtpserver import Certs, CommandRecordingServer, login_authenticator, make_certs
from topics.events import Alert

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


def alert() -> Alert:
    return threshold_alert(1, FleetCounts.from_dict({"converged": 1, "failed": 1}), 90.0, T0)


def send(config: SmtpConfig) -> None:
    asyncio.run(deliver(render(alert(), MAIL), config, tls_context(config)))


@pytest.fixture
def offers_starttls(certs: Certs) -> Iterator[CommandRecordingServer]:
    """Offers STARTTLS (self-signed test CA) without requiring it; AUTH only over TLS."""
    with CommandRecordingServer(
        tls_context=certs.server_context(),
        authenticator=login_authenticator("vigo", "s3cret"),
    ) as server:
        yield server


@pytest.fixture
def plain_only() -> Iterator[CommandRecordingServer]:
    """No STARTTLS at all, and it would accept AUTH in clear text."""
    with CommandRecordingServer(
        authenticator=login_authenticator("vigo", "s3cret"), auth_require_tls=False
    ) as server:
        yield server


def test_auto_is_the_default_and_upgrades_before_auth_and_mail(
    offers_starttls: CommandRecordingServer, certs: Certs, password_file: Path
) -> None:
    config = smtp_config(
        offers_starttls.port,
        username="vigo",
        password_file=str(password_file),
        ca_file=str(certs.ca),
    )
    assert config.starttls == "auto"
    send(config)
    assert offers_starttls.commands == [("STARTTLS", False), ("AUTH", True), ("MAIL", True)]
    (mail,) = offers_starttls.messages
    assert mail.tls and mail.login == "vigo"


def test_auto_upgrades_without_credentials_too(
    offers_starttls: CommandRecordingServer, certs: Certs
) -> None:
    send(smtp_config(offers_starttls.port, starttls="auto", ca_file=str(certs.ca)))
    assert offers_starttls.commands == [("STARTTLS", False), ("MAIL", True)]
    assert offers_starttls.messages[0].tls


def test_false_never_upgrades(offers_starttls: CommandRecordingServer) -> None:
    send(smtp_config(offers_starttls.port, starttls=False))
    assert offers_starttls.commands == [("MAIL", False)]


def test_true_requires_starttls(plain_only: CommandRecordingServer) -> None:
    with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
        send(smtp_config(plain_only.port, starttls=True))
    assert plain_only.commands == [] and plain_only.messages == []


def test_no_auth_over_a_plain_connection(
    plain_only: CommandRecordingServer, password_file: Path
) -> None:
    config = smtp_config(plain_only.port, username="vigo", password_file=str(password_file))
    with pytest.raises(PlaintextAuthRefused) as caught:
        send(config)
    reason = str(caught.value)
    assert "\n" not in reason and "s3cret" not in reason
    assert "STARTTLS" in reason and "smtp.allow_plaintext_auth" in reason
    assert "AUTH" not in plain_only.verbs()
    assert plain_only.messages == []
    # Counted as failed (the configuration's), retried, never parked as a rejected mail.
    assert is_permanent(caught.value) and not is_rejection(caught.value)


def test_a_refused_auth_is_counted_as_failed(
    plain_only: CommandRecordingServer, password_file: Path
) -> None:
    config = smtp_config(plain_only.port, username="vigo", password_file=str(password_file))
    metrics = Metrics()
    attempts: list[None] = []
    client = SmtpClient(config, metrics, lambda: len(attempts) >= 1, backoff_initial_s=0.01)

    async def before() -> None:
        pass

    async def run() -> Delivery:
        the_alert = alert()
        msg = render(the_alert, MAIL)
        return await client.send(
            the_alert, msg, before_attempt=before, attempted=lambda: attempts.append(None)
        )

    assert asyncio.run(run()) is Delivery.INTERRUPTED
    failed = metrics.registry.get_sample_value(
        "vigo_alerts_total", {"event": "convergence.threshold", "outcome": "failed"}
    )
    assert failed == 1
    assert "AUTH" not in plain_only.verbs() and plain_only.messages == []


def test_allow_plaintext_auth_sends_it(
    plain_only: CommandRecordingServer, password_file: Path
) -> None:
    config = smtp_config(
        plain_only.port,
        username="vigo",
        password_file=str(password_file),
        allow_plaintext_auth=True,
    )
    send(config)
    assert plain_only.commands == [("AUTH", False), ("MAIL", False)]
    (mail,) = plain_only.messages
    assert mail.login == "vigo" and not mail.tls


def test_starttls_values_old_and_new(tmp_path: Path) -> None:
    for text, value in (("auto", "auto"), ("AUTO", "auto"), ("true", True), ("false", False)):
        assert load_settings(None, {"VIGO_SMTP__STARTTLS": text}).smtp.starttls == value
    assert SmtpConfig.model_validate({"starttls": True}).starttls is True
    assert SmtpConfig.model_validate({"starttls": False}).starttls is False
    default = SmtpConfig.model_validate({})
    assert default.starttls == "auto" and default.allow_plaintext_auth is False
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"VIGO_SMTP__STARTTLS": "maybe"})
    assert str(caught.value) == (
        "config smtp.starttls: must be auto, true or false (from VIGO_SMTP__STARTTLS)"
    )


def test_username_in_clear_text_fails_at_start(tmp_path: Path) -> None:
    env = {"VIGO_SMTP__USERNAME": "vigo", "VIGO_SMTP__STARTTLS": "false"}
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env)
    line = str(caught.value)
    assert "\n" not in line and line.startswith("config smtp")
    assert "smtp.username" in line and "smtp.allow_plaintext_auth" in line
    allowed = load_settings(None, {**env, "VIGO_SMTP__ALLOW_PLAINTEXT_AUTH": "true"})
    assert allowed.smtp.allow_plaintext_auth is True
    # Encrypted one way or the other: fine.
    load_settings(None, {"VIGO_SMTP__USERNAME": "vigo"})
    load_settings(None, {"VIGO_SMTP__USERNAME": "vigo", "VIGO_SMTP__STARTTLS": "true"})
    load_settings(None, {**env, "VIGO_SMTP__TLS": "true"})
