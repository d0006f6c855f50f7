"""A real SMTP server for the alert tests: aiosmtpd on loopback, in a thread of the test
process, recording every mail it accepts; plus throwaway TLS certificates made with the
`openssl` command line."""

from __future__ import annotations

import asyncio
import email
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.harness import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool
    login: str | None

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def subject(self) -> str:
        # A long subject is folded onto the next line; Python's parser keeps the
        # leading space of such a value, where mail clients drop it.
        return str(self.message["Subject"]).strip()


@dataclass
class Recorder:
    """aiosmtpd handler: records each mail when its data arrives, then (optionally) holds
    the reply, so a test can kill the client while a mail is in flight."""

    messages: list[Received] = field(default_factory=list)
    #: Seconds to hold the reply to the next `hold_count` mails.
    hold_s: float = 0.0
    hold_count: int = 0
    #: Set when a held mail has arrived.
    holding: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Message-IDs answered with a 554 at the end of DATA, every time; the next mail is
    #: accepted as usual. Each refusal is recorded in `rejected`.
    reject_ids: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            if str(message["Message-ID"]) in self.reject_ids:
                self.rejected.append(str(message["Message-ID"]))
                return "554 5.7.1 Message refused by policy"
        login = session.auth_data if session.authenticated else None
        tls = server.transport.get_extra_info("ssl_object") is not None
        with self.lock:
            self.messages.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    message=message,
                    tls=tls,
                    login=login,
                )
            )
            hold = self.hold_count > 0
            if hold:
                self.hold_count -= 1
        if hold:
            self.holding.set()
            await asyncio.sleep(self.hold_s)
        return "250 OK"


class SmtpServer:
    """Start, stop and start again on the same port; the recorder survives restarts."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        self.port = port or free_port()
        self.options = smtp_options
        self.recorder = Recorder()
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        self.controller = Controller(
            self.recorder, hostname="127.0.0.1", port=self.port, **self.options
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages]

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        """At least `count` mails, or an AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.messages
            if len(messages) >= count:
                return messages
            time.sleep(0.2)
        raise AssertionError(
            f"expected {count} mails, got {len(self.messages)}: {self.message_ids()}"
        )


def login_authenticator(user: str, password: str) -> Any:
    """An aiosmtpd authenticator accepting exactly one login/password."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return authenticate


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certs(directory: Path) -> Certs:
    """A CA and a server certificate for localhost / 127.0.0.1, valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=Vigo Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return Certs(ca=ca, cert=cert, key=key)


class _RecordingSMTP(SMTP):
    """aiosmtpd's server, noting each STARTTLS, AUTH and MAIL command as it arrives, and
    whether the connection was encrypted at that moment."""

    def __init__(self, handler: Any, commands: list[tuple[str, bool]], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._commands = commands

    def _note(self, verb: str) -> None:
        transport = self.transport
        encrypted = transport is not None and transport.get_extra_info("ssl_object") is not None
        self._commands.append((verb, encrypted))

    async def smtp_STARTTLS(self, arg: str) -> None:
        self._note("STARTTLS")
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        self._note("AUTH")
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        self._note("MAIL")
        await super().smtp_MAIL(arg)


class _RecordingController(Controller):
    def __init__(self, handler: Any, commands: list[tuple[str, bool]], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.commands = commands

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, self.commands, **self.SMTP_kwargs)


class CommandRecordingServer(SmtpServer):
    """An `SmtpServer` that also records, in `commands`, every STARTTLS, AUTH and MAIL it
    receives as `(verb, encrypted)`: what a client sent before and after encryption."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        super().__init__(port, **smtp_options)
        self.commands: list[tuple[str, bool]] = []

    def start(self) -> CommandRecordingServer:
        self.controller = _RecordingController(
            self.recorder, self.commands, hostname="127.0.0.1", port=self.port, **self.options
        )
        self.controller.start()
        return self

    def __enter__(self) -> CommandRecordingServer:
        return self.start()

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.commands]
