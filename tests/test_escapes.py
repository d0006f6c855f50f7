"""Untrusted text never reaches a terminal or a mail raw (SPEC 11.4): ESC, BEL, C1
controls and bidi overrides in ids, labels, run ids, resource ids, origins and messages
are shown as `\\x1b`, `\\u202e` by `vigocli` (against a real HTTP server serving crafted
JSON), by `vigocli deadletters` and in every part of a rendered mail."""

from __future__ import annotations

import contextlib
import email
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

from alerts.mail import MailSettings, header_text, render
from processor.alerting.smtp import render_message
from processor.cli import deadletters as deadletters_cli
from processor.cli.deadletter_topic import DeadLetterRecord
from processor.cli.deadletters import ReplayOutcome
from processor.cli.kafka import KafkaTarget
from processor.cli.vigocli import cli
from topics.escape import mask_credentials, printable
from topics.events import Alert

#: What must never come out raw: ESC, BEL, CSI (C1), RLO, LRI, LRM, ALM, DEL, CR, NEL.
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066", "\u200e", "\u061c", "\x7f", "\r", "\x85")
#: A clipboard write (OSC 52), a screen clear, a C1 CSI and a right-to-left override.
EVIL = "db\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\u202etxt.exe\u2066\u200e\u061c\x7f\r\x85"


def assert_clean(text: str, *, shown: bool = True) -> None:
    for char in RAW:
        assert char not in text, (char, text)
    if shown:
        assert "\\x1b" in text and "\\u202e" in text  # shown, not dropped


def evil(tag: str) -> str:
    return f"{tag}-{EVIL}"


# -- the escaper -----------------------------------------------------------------------------


def test_printable_escapes_controls_and_format_characters() -> None:
    assert printable("plain ascii, é, 日本, emoji \U0001f600") == (
        "plain ascii, é, 日本, emoji \U0001f600"
    )
    assert printable("a\x1bb\x07c\x9bd\u202ee\u2069f\x00g\x7fh\ni\u2028j\ufeffk\ud800") == (
        "a\\x1bb\\x07c\\x9bd\\u202ee\\u2069f\\x00g\\x7fh\\x0ai\\u2028j\\ufeffk\\ud800"
    )
    assert printable("\U000e0001") == "\\U000e0001"  # a format character outside the BMP
    assert printable(printable(EVIL)) == printable(EVIL)  # escaping twice changes nothing
    assert_clean(printable(EVIL))
    printable(EVIL).encode("utf-8")  # a lone surrogate would not encode


def test_mask_credentials() -> None:
    assert mask_credentials("user:pass@k1:9092,k2:9092") == "***@k1:9092,k2:9092"
    assert mask_credentials("https://u:p@vigo.example/x?y@z") == "https://***@vigo.example/x?y@z"
    assert mask_credentials("https://vigo.example/a@b") == "https://vigo.example/a@b"
    assert mask_credentials("k1:9092, u:p@k2:9092") == "k1:9092, ***@k2:9092"
    assert mask_credentials("localhost:9092") == "localhost:9092"


# -- vigocli against crafted answers ----------------------------------------------------------

ENVOY = {
    "envoy_id": evil("envoy"),
    "status": evil("status"),
    "since": evil("since"),
    "last_seen": evil("seen"),
    "last_reported_at": evil("reported"),
    "interval_s": evil("interval"),
    "consecutive_changed_runs": evil("runs"),
    "stale": False,
    "labels": {evil("key"): evil("value")},
    "history": [
        {
            "run_id": evil("run"),
            "finished_at": evil("finished"),
            "outcome": evil("outcome"),
            "changed": [evil("resource")],
            "changed_count": 3,
            "failed": [evil("failed")],
            "errored_modules": [evil("module")],
        }
    ],
}
COMPLIANCE = {
    "percent": 50.0,
    "active": 2,
    "compliant": 1,
    "threshold": 90,
    "breached": False,
    "at": evil("at"),
    "label": evil("label"),
    "by_status": {"converged": 1, "failed": 1},
    "groups": {"env": {evil("group"): {"percent": 50.0, "active": 2, "compliant": 1}}},
}
ROUTES: dict[str, tuple[int, Any]] = {
    "/api/envoys/x": (200, ENVOY),
    "/api/envoys": (200, {"envoys": [ENVOY], "next_cursor": None}),
    "/api/compliance": (200, COMPLIANCE),
    "/api/envoys/broken": (500, {"error": evil("error")}),
}


class Crafted(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, doc = ROUTES.get(urlsplit(self.path).path, (404, {"error": "not found"}))
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Crafted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def vigocli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"VIGO_TOKEN": None, "VIGO_URL": None})


@pytest.mark.parametrize(
    "args",
    [
        ("envoys", "show", "x"),
        ("envoys", "list"),
        ("doctor",),
        ("doctor", "--by", "env"),
        ("envoys", "show", "broken"),
    ],
)
def test_vigocli_escapes_every_field(api_url: str, args: tuple[str, ...]) -> None:
    done = vigocli("--url", api_url, *args)
    assert "Traceback" not in done.output
    assert_clean(done.stdout + done.stderr)


def test_vigocli_show_keeps_each_field_on_its_line(api_url: str) -> None:
    done = vigocli("--url", api_url, "envoys", "show", "x")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert lines[0] == f"Envoy              {printable(evil('envoy'))}"
    assert any(printable(evil("run")) in line for line in lines)
    assert any(printable(evil("resource")) in line for line in lines)


def test_vigocli_json_output_is_escaped_json(api_url: str) -> None:
    done = vigocli("--url", api_url, "envoys", "show", "x", "--json")
    assert done.exit_code == 0
    for char in RAW:
        assert char not in done.stdout
    assert json.loads(done.stdout)["envoy_id"] == evil("envoy")


# -- vigocli deadletters ----------------------------------------------------------------------


def deadletter(offset: int) -> DeadLetterRecord:
    doc = {
        "topic": evil("topic"),
        "partition": 0,
        "offset": offset,
        "reason": evil("reason"),
        "error": evil("error"),
        "key": evil("key"),
        "key_encoding": "utf-8",
    }
    return DeadLetterRecord("vigo.deadletter", 0, offset, doc)


def test_deadletters_list_escapes_origins_keys_and_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Reader:
        """The dead-letter topic as `Listing` reads it: two hostile records."""

        async def replayed(self) -> set[str]:
            return set()

        async def records(self) -> AsyncIterator[DeadLetterRecord | None]:
            for offset in (1, 2):
                yield deadletter(offset)

    @contextlib.asynccontextmanager
    async def opened(target: KafkaTarget, timeout: float) -> AsyncIterator[Reader]:
        yield Reader()

    monkeypatch.setattr(deadletters_cli, "target_from_config", lambda path: KafkaTarget("k:1"))
    monkeypatch.setattr(deadletters_cli, "opened", opened)
    done = CliRunner().invoke(cli, ["deadletters", "list"])
    assert done.exit_code == 0, done.output
    assert_clean(done.stdout)
    assert printable(f"{evil('topic')}/0/1") in done.stdout
    assert printable(f"{evil('topic')}/0/2") in done.stdout


def test_deadletters_replay_outcome_escapes() -> None:
    record = deadletter(3)
    outcome = ReplayOutcome("unknown_envoy", False, [(record, "replayable", evil("sent"))])
    assert_clean(outcome.render())


# -- mail ---------------------------------------------------------------------------------

MAIL = MailSettings("vigo@example.org", ("ops@example.org",), "vigo", "http://vigo:6066")
AT = "2026-11-27T12:05:00Z"


def alerts() -> list[Alert]:
    envoy = {"envoy_id": evil("envoy"), "labels": {evil("k"): evil("v")}, "last_seen": evil("ls")}
    threshold = {
        "percent": 50.0,
        "threshold": 90,
        "active": 2,
        "compliant": 1,
        "by_status": {"converged": 1, evil("status"): 1},
        "group": {"key": evil("gk"), "value": evil("gv")},
    }
    digest = {
        "digest": True,
        "count": 2,
        "window_start": evil("ws"),
        "window_end": evil("we"),
        "envoys": [envoy, envoy],
        "omitted": 0,
    }
    return [
        Alert(evil("id"), "convergence.threshold", AT, evil("subject"), threshold),
        Alert(evil("id"), "convergence.recovered", AT, evil("subject"), threshold),
        Alert(evil("id"), "envoy.stale", AT, evil("subject"), {"envoys": [envoy]}),
        Alert(evil("id"), "envoy.stale", AT, evil("subject"), {}),
        Alert(evil("id"), "envoy.stale", AT, evil("subject"), digest),
    ]


def reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: f"{a.event}-{sorted(a.details)}")
def test_mail_subject_and_body_escape_every_field(alert: Alert) -> None:
    msg = render(alert, MAIL)
    parsed = reparse(msg)
    assert_clean(str(parsed["Subject"]), shown=not alert.details.get("digest"))
    assert_clean(parsed.get_content().replace("\r\n", "\n"))  # the mail's own line ends
    wire = msg.as_bytes().replace(b"\r\n", b"\n")
    for char in RAW:
        assert char.encode() not in wire


def test_mail_of_an_alert_that_fails_to_render_is_escaped_too() -> None:
    class Broken(Mapping[str, Any]):
        """Details that break the renderer but still dump as JSON."""

        def __init__(self) -> None:
            self.data = {"envoy": evil("envoy")}

        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("broken")

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    alert = Alert("a1", "convergence.threshold", AT, evil("subject"), Broken())
    parsed = reparse(render_message(alert, MAIL))
    assert_clean(str(parsed["Subject"]))
    assert_clean(parsed.get_content().replace("\r\n", "\n"), shown=False)  # JSON: \u001b


def test_header_text_shows_controls_instead_of_dropping_them() -> None:
    assert header_text("a\x1bb\u202ec") == "a\\x1bb\\u202ec"
    assert header_text("a\r\nBcc: x") == "a\\x0d\\x0aBcc: x"
