"""Pure alert logic, no Kafka: deterministic ids, the digest mail, the outbox codec,
and mail rendering, including that no envoy id or label can inject a header."""

from __future__ import annotations

import email
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.mail import (
    MailSettings,
    body_text,
    dashboard_base,
    header_text,
    message_id,
    message_id_domain,
    render,
)
from alerts.rules import (
    DIGEST_LIST_MAX,
    LABELS_TOTAL_MAX,
    bounded_labels,
    digest_alert_id,
    envoy_token,
    recovered_alert_id,
    stale_alert_id,
    stale_alerts,
    threshold_alert,
    threshold_alert_id,
)
from alerts.window import LIST_MAX, Window, digest_alert, member_of
from processor.alerting.sender import backoff_s
from projections.fleet import FleetCounts
from topics.codec import decode_alert, encode_alert
from topics.jsonschemas import validate

T0 = 1_795_781_104_000
MAIL = MailSettings(
    sender="vigo@example.org",
    recipients=("ops@example.org", "oncall@example.org"),
    domain="vigo",
    dashboard="https://vigo.example.org",
)
# RFC 5322 msg-id with a dot-atom left part and a dot-atom right part.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"<{_ATEXT}(\.{_ATEXT})*@{_ATEXT}(\.{_ATEXT})*>")
EXPECTED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "x-vigo-event",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


@dataclass(frozen=True)
class Stale:
    envoy_id: str
    episode: int = 1
    last_seen_ms: int = T0 - 60_000
    labels: dict[str, str] = field(default_factory=dict)


def counts(**by_status: int) -> FleetCounts:
    return FleetCounts.from_dict(by_status)


def reparse(msg: EmailMessage) -> EmailMessage:
    """What a recipient sees: the serialized bytes parsed back."""
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- ids -----------------------------------------------------------------------------------


def test_ids_are_deterministic_and_valid_message_ids() -> None:
    assert threshold_alert_id(3) == "convergence.threshold/3"
    assert stale_alert_id("web-01", 2) == "envoy.stale/web-01/2"
    for alert_id in ("convergence.threshold/3", "envoy.stale/web-01/2"):
        assert MSG_ID.fullmatch(message_id(alert_id, "vigo"))
    assert message_id("convergence.threshold/3", "vigo") == "<convergence.threshold/3@vigo>"


@pytest.mark.parametrize(
    "envoy_id",
    ["web 01", "web/01", "a@b", "<x>", "wéb", "web\r\nBcc: evil@x", ".web", "web.", "x" * 65, "=x"],
)
def test_unsafe_envoy_ids_are_hashed(envoy_id: str) -> None:
    token = envoy_token(envoy_id)
    assert token.startswith("=") and len(token) == 25
    assert token == envoy_token(envoy_id)
    assert MSG_ID.fullmatch(message_id(stale_alert_id(envoy_id, 1), "vigo"))


def test_distinct_envoys_and_episodes_get_distinct_ids() -> None:
    ids = {stale_alert_id(e, n) for e in ("a", "b", "a b", "=a") for n in (1, 2)}
    assert len(ids) == 8


def test_digest_id_is_the_window_start() -> None:
    assert digest_alert_id(T0) == f"envoy.stale.digest/{T0}"
    assert MSG_ID.fullmatch(message_id(digest_alert_id(T0), "vigo"))


def test_message_id_domain_per_deployment() -> None:
    assert message_id_domain("vigo.") == "vigo"
    assert message_id_domain("staging.") == "staging.vigo"
    assert message_id_domain("t1a2b3c4d.") == "t1a2b3c4d.vigo"
    assert message_id_domain("a_b..c.") == "a.b.c.vigo"
    assert message_id_domain("") == "vigo"


def test_foreign_alert_ids_are_hashed_into_a_valid_message_id() -> None:
    assert MSG_ID.fullmatch(message_id("not an id <@>", "vigo"))
    assert message_id("x y", "vigo") == message_id("x y", "vigo")


# -- rules ---------------------------------------------------------------------------------


def test_threshold_alert() -> None:
    alert = threshold_alert(2, counts(converged=11, drifted=5, offline=4), 60.0, T0)
    assert alert.alert_id == "convergence.threshold/2"
    assert alert.event == "convergence.threshold"
    assert alert.subject == "fleet"
    assert alert.details["percent"] == 55.0
    assert alert.details["active"] == 20
    assert alert.details["by_status"]["drifted"] == 5


def test_a_sweep_writes_one_alert_per_envoy() -> None:
    """The per-sweep digest is gone: grouping is the sender's, over the whole fleet."""
    many = stale_alerts(3, [Stale(f"e{i}") for i in range(40)], T0)
    assert [a.alert_id for a in many] == [f"envoy.stale/e{i}/1" for i in range(40)]
    assert all(not a.details["digest"] and a.details["count"] == 1 for a in many)
    assert stale_alerts(0, [], T0) == []


def digest_of(envoys: list[Stale], start_ms: int = T0, width_ms: int = 60_000) -> Window:
    members = [member_of(a) for a in stale_alerts(0, envoys, T0)]
    listed = sorted((m for m in members if m is not None), key=lambda m: m.order)
    return Window(start_ms, start_ms + width_ms, len(envoys), tuple(listed[:LIST_MAX]))


def test_digest_lists_a_bounded_number_of_envoys() -> None:
    storm = [Stale(f"e{i:05d}", last_seen_ms=T0 - i) for i in range(DIGEST_LIST_MAX + 50)]
    digest = digest_alert(digest_of(storm))
    assert digest.alert_id == f"envoy.stale.digest/{T0}"
    assert digest.details["count"] == DIGEST_LIST_MAX + 50
    assert digest.details["omitted"] == 50
    assert len(digest.details["envoys"]) == DIGEST_LIST_MAX
    # Longest silent first.
    assert digest.details["envoys"][0]["envoy_id"] == f"e{DIGEST_LIST_MAX + 49:05d}"


def test_labels_are_bounded() -> None:
    huge = {f"k{i:03d}": "v" * 10_000 for i in range(64)}
    kept = bounded_labels(huge)
    assert sum(len(k) + len(v) for k, v in kept.items()) <= LABELS_TOTAL_MAX
    assert all(len(v) <= 128 for v in kept.values())
    assert bounded_labels({"b": "2", "a": "1"}) == {"a": "1", "b": "2"}


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_s(10_000) == 30


# -- the outbox codec ------------------------------------------------------------------------


def test_alert_codec_round_trip_and_schema() -> None:
    alerts = [
        threshold_alert(1, counts(converged=1, failed=1), 90.0, T0),
        *stale_alerts(0, [Stale("web-01", labels={"env": "prod"})], T0),
        digest_alert(digest_of([Stale(f"e{i}") for i in range(12)])),
    ]
    for alert in alerts:
        raw = encode_alert(alert.alert_id, alert.event, alert.at, alert.subject, alert.details)
        validate("vigo.alert/1", orjson.loads(raw))
        assert decode_alert(raw) == alert


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"schema": "vigo.alert/1"}',
        b'{"schema": "vigo.alert/2", "alert_id": "a", "event": "envoy.stale",'
        b' "at": "2026-11-27T12:00:00Z", "subject": "x", "details": {}}',
        b'{"schema": "vigo.alert/1", "alert_id": "a", "event": "nope",'
        b' "at": "2026-11-27T12:00:00Z", "subject": "x", "details": {}}',
        b'{"schema": "vigo.alert/1", "alert_id": "a", "event": "envoy.stale",'
        b' "at": "yesterday", "subject": "x", "details": {}}',
    ],
)
def test_decode_alert_rejects_what_is_not_an_alert(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_alert(raw)


# -- mail ----------------------------------------------------------------------------------


def test_threshold_mail() -> None:
    alert = threshold_alert(2, counts(converged=11, drifted=5, offline=4), 60.0, T0)
    msg = reparse(render(alert, MAIL))
    assert msg["Subject"] == "[Vigo] Fleet convergence 55% is below the 60% threshold"
    assert msg["Message-ID"] == "<convergence.threshold/2@vigo>"
    assert msg["From"] == "vigo@example.org"
    assert msg["To"] == "ops@example.org, oncall@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] == "Fri, 27 Nov 2026 12:05:04 +0000"
    text = msg.get_content()
    assert "55% (11 of 20 active envoys converged)" in text
    assert "Threshold:    60%" in text
    assert re.search(r"drifted\s+5", text) and re.search(r"offline\s+4", text)
    assert "https://vigo.example.org/compliance" in text
    assert "status=drifted,offline" in text
    assert "Alert id: convergence.threshold/2" in text


def test_stale_mail_names_the_envoy_and_links_it() -> None:
    (alert,) = stale_alerts(
        0, [Stale("web 01", episode=2, labels={"env": "prod", "role": "web"})], T0
    )
    msg = reparse(render(alert, MAIL))
    assert msg["Subject"] == "[Vigo] Envoy web 01 is stale (env=prod, role=web)"
    text = msg.get_content()
    assert "Envoy:        web 01" in text
    assert "https://vigo.example.org/envoys/web%2001" in text
    assert "Last seen:    2026-11-27T12:04:04.000Z" in text


def test_digest_mail_lists_the_envoys() -> None:
    storm = [Stale(f"db-{i:02d}", labels={"env": "prod"}) for i in range(12)]
    alert = digest_alert(digest_of(storm))
    msg = reparse(render(alert, MAIL))
    assert msg["Subject"] == "[Vigo] 12 envoys went stale"
    assert msg["Message-ID"] == f"<envoy.stale.digest/{T0}@vigo>"
    text = msg.get_content()
    assert all(f"db-{i:02d}" in text for i in range(12))
    assert "Window:       2026-11-27T12:05:04.000Z to 2026-11-27T12:06:04.000Z" in text


def test_same_alert_renders_the_same_bytes() -> None:
    alert = threshold_alert(1, counts(converged=1, drifted=1), 90.0, T0)
    assert render(alert, MAIL).as_bytes() == render(alert, MAIL).as_bytes()


def test_dashboard_base() -> None:
    assert dashboard_base("https://vigo.example.org/", "0.0.0.0", 6066) == (
        "https://vigo.example.org"
    )
    assert dashboard_base(None, "vigo-1", 6066) == "http://vigo-1:6066"


# -- header injection ------------------------------------------------------------------------

INJECTIONS = [
    "web-01\r\nBcc: evil@x",
    "web-01\nBcc: evil@x",
    "web-01\rBcc: evil@x",
    "web-01\u2028Bcc: evil@x",
    "web-01\x85Bcc: evil@x",
    "web-01\x0bBcc: evil@x\x0c",
    "web-01\r\n\r\nforged body",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_envoy_id_and_labels_cannot_inject_headers(evil: str) -> None:
    """The JSON Schema forbids C0 controls in envoy_id, but the mail code must not rely on
    it (and NEL or U+2028 pass the schema): an id or label with a line break stays text
    inside the Subject, and the parsed mail has exactly the headers we wrote."""
    (single,) = stale_alerts(0, [Stale(evil, labels={"team": evil})], T0)
    digest = digest_alert(digest_of([Stale(f"{evil}{i}", labels={"t": evil}) for i in range(3)]))
    for alert in (single, digest):
        msg = render(alert, MAIL)
        head = msg.as_bytes().split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"(?mi)^bcc:", head)
        parsed = reparse(msg)
        assert {k.lower() for k in parsed} == EXPECTED_HEADERS
        assert len(parsed.get_all("Subject") or []) == 1
        assert parsed["Bcc"] is None
        assert MSG_ID.fullmatch(parsed["Message-ID"])
        assert "forged body" not in parsed.get_content().split("\n")
    subject = reparse(render(single, MAIL))["Subject"]
    assert "Bcc: evil@x" in subject or "forged body" in subject


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_one_header_line(text: str) -> None:
    cleaned = header_text(text)
    msg = EmailMessage(policy=policy.SMTP)
    msg["Subject"] = cleaned  # the email package raises on anything that breaks a line
    msg.set_content("x")
    parsed = reparse(msg)
    assert {k.lower() for k in parsed} == {
        "subject",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    assert len(body_text(text).splitlines()) <= 1


# -- groups (SPEC 10.2) ----------------------------------------------------------------------


def test_group_threshold_alert_ids() -> None:
    alert = threshold_alert(3, counts(converged=8, drifted=2), 95.0, T0, ("env", "prod"))
    assert alert.alert_id == "convergence.threshold/env=prod/3"
    assert alert.subject == "env=prod"
    assert alert.details["group"] == {"key": "env", "value": "prod"}
    assert MSG_ID.fullmatch(message_id(alert.alert_id, "vigo"))
    assert message_id(alert.alert_id, "vigo") == "<convergence.threshold/env=prod/3@vigo>"
    # Values unsafe in a Message-ID are hashed; distinct groups stay distinct.
    ids = {
        threshold_alert(1, counts(converged=1), 95.0, T0, ("env", value)).alert_id
        for value in ("(none)", "a b", "a\r\nb", "é", "a=b", "a/b", "x" * 65)
    }
    assert len(ids) == 7
    for alert_id in ids:
        assert alert_id.startswith("convergence.threshold/=") and alert_id.endswith("/1")
        assert MSG_ID.fullmatch(message_id(alert_id, "vigo"))
        assert message_id(alert_id, "vigo") == f"<{alert_id}@vigo>"
    # The fleet's id is unchanged.
    assert threshold_alert(1, counts(converged=1), 95.0, T0).alert_id == "convergence.threshold/1"


def test_group_threshold_mail_names_the_group() -> None:
    alert = threshold_alert(1, counts(converged=8, drifted=2), 95.0, T0, ("env", "prod"))
    msg = reparse(render(alert, MAIL))
    assert msg["Subject"] == "[Vigo] Convergence of env=prod 80% is below the 95% threshold"
    assert msg["Message-ID"] == "<convergence.threshold/env=prod/1@vigo>"
    text = msg.get_content()
    assert "Group:        env=prod" in text
    assert "https://vigo.example.org/compliance?label=env%3Dprod" in text
    assert "status=drifted&label=env%3Dprod" in text
    assert "vigocli envoys list --status drifted --label env=prod" in text


HOSTILE_VALUES = [*INJECTIONS, '<script>alert("x")</script>', 'it\'s "quoted"', "prød ✓ 日本"]


@pytest.mark.parametrize("evil", HOSTILE_VALUES)
def test_group_values_cannot_inject_headers(evil: str) -> None:
    alert = threshold_alert(1, counts(converged=1, failed=1), 95.0, T0, ("env", evil))
    msg = render(alert, MAIL)
    head = msg.as_bytes().split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?mi)^bcc:", head)
    parsed = reparse(msg)
    assert {k.lower() for k in parsed} == EXPECTED_HEADERS
    assert parsed["Bcc"] is None
    assert MSG_ID.fullmatch(parsed["Message-ID"])
    subject = str(parsed["Subject"]).strip()  # a long subject is folded: one header still
    assert subject.startswith("[Vigo] Convergence of env=")
    lines = parsed.get_content().replace("\r\n", "\n").split("\n")
    body = "\n".join(lines)
    assert "forged body" not in lines
    assert all(line.isprintable() for line in lines)  # breaks are shown escaped
    if evil.isprintable():
        assert evil in subject
        assert f"Group:        env={evil}" in body


# -- recovery (SPEC 10.4) --------------------------------------------------------------------


def test_recovery_ids_end_the_threshold_alert_of_the_same_number() -> None:
    fleet = threshold_alert(2, counts(converged=10), 90.0, T0, recovery=True)
    assert fleet.alert_id == "convergence.recovered/2" == recovered_alert_id(2)
    assert fleet.event == "convergence.recovered"
    group = threshold_alert(3, counts(converged=10), 95.0, T0, ("env", "prod"), recovery=True)
    assert group.alert_id == "convergence.recovered/env=prod/3"
    hashed = threshold_alert(1, counts(converged=1), 95.0, T0, ("env", "a\r\nb"), recovery=True)
    fell = threshold_alert(1, counts(converged=1), 95.0, T0, ("env", "a\r\nb"))
    assert hashed.alert_id.removeprefix("convergence.recovered") == fell.alert_id.removeprefix(
        "convergence.threshold"
    )
    for alert in (fleet, group, hashed):
        assert MSG_ID.fullmatch(message_id(alert.alert_id, "vigo"))


def test_recovery_mail_says_it_is_back_and_names_the_alert_it_ends() -> None:
    alert = threshold_alert(1, counts(converged=19, drifted=1), 90.0, T0, recovery=True)
    msg = reparse(render(alert, MAIL))
    assert (
        str(msg["Subject"]).strip()
        == "[Vigo] Fleet convergence recovered: 95% is at or above the 90% threshold"
    )
    assert msg["Message-ID"] == "<convergence.recovered/1@vigo>"
    assert msg["X-Vigo-Event"] == "convergence.recovered"
    text = msg.get_content()
    assert "back at or above the alert threshold" in text
    assert "This ends the alert convergence.threshold/1" in text
    group = threshold_alert(2, counts(converged=9), 95.0, T0, ("env", "prod"), recovery=True)
    msg = reparse(render(group, MAIL))
    assert str(msg["Subject"]).strip() == (
        "[Vigo] Convergence of env=prod recovered: 100% is at or above the 95% threshold"
    )
    assert "This ends the alert convergence.threshold/env=prod/2" in msg.get_content()


@pytest.mark.parametrize("evil", HOSTILE_VALUES)
def test_recovery_group_values_cannot_inject_headers(evil: str) -> None:
    alert = threshold_alert(1, counts(converged=1), 95.0, T0, ("env", evil), recovery=True)
    parsed = reparse(render(alert, MAIL))
    assert {k.lower() for k in parsed} == EXPECTED_HEADERS
    assert parsed["Bcc"] is None and MSG_ID.fullmatch(parsed["Message-ID"])
