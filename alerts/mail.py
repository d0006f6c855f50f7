"""Mail rendering: one `vigo.alert/1` record -> an `email.message.EmailMessage`.

Pure and deterministic (the Date header is the alert's time, the Message-ID its id), so a
resend after a crash is byte-for-byte the same mail.

Envoy ids and labels are data. Whatever goes into a header passes `header_text`, which
shows every line-breaking or control character as an escape before the standard library
builds the header, so neither CR/LF nor the Unicode line separators that `str.splitlines`
honours (NEL, U+2028, U+2029, ...) can end a header line and start a new one; the
envelope recipients come from the configuration, never from the headers. In the body the
same characters are shown escaped, so they cannot forge lines either.

Both use `topics.escape.printable`, the one escaper of every CLI output and mail (SPEC
11.4): C0 and C1 controls, DEL, format characters (bidi overrides and isolates, LRM/RLM,
ALM, zero-width characters) and line separators are shown as `\\x1b`, `\\u202e`, in the
subject and in every line of the body; nothing can reorder, hide or recolour the text.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import quote

from alerts.rollouts import ROLLOUT_STUCK, stuck_body, stuck_subject
from alerts.rules import CONVERGENCE_RECOVERED, CONVERGENCE_THRESHOLD
from topics.codec import FLEET_STATUSES
from topics.escape import printable
from topics.events import Alert
from topics.jsonschemas import parse_timestamp_ms

SUBJECT_MAX: Final = 200
#: The `Message-ID` right-hand side for the default topic prefix.
DEFAULT_DOMAIN: Final = "vigo"
STATUS_ORDER: Final = FLEET_STATUSES

_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM: Final = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Who sends, who receives, and what the links and Message-IDs point at."""

    sender: str
    recipients: tuple[str, ...]
    #: Right-hand side of the Message-ID; distinct per deployment (see `message_id_domain`).
    domain: str
    #: The dashboard's base URL, without a trailing slash.
    dashboard: str


# -- safe text ---------------------------------------------------------------------------


def header_text(text: str, limit: int = SUBJECT_MAX) -> str:
    """Text safe in a header: control, format and line-breaking characters shown escaped
    (`printable`), runs of spaces collapsed, cut to `limit` characters."""
    cleaned = " ".join(printable(text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def body_text(text: str) -> str:
    """Text safe on one body line: control, format and line-breaking characters shown
    escaped (`printable`)."""
    return printable(text)


# -- identities and links ------------------------------------------------------------------


def message_id_domain(topic_prefix: str) -> str:
    """`vigo` for the default prefix, `<prefix>.vigo` otherwise: two deployments mailing
    the same mailbox must not share Message-IDs (clients drop a repeated one)."""
    label = re.sub(r"[^A-Za-z0-9-]+", ".", topic_prefix).strip(".")
    return DEFAULT_DOMAIN if label in ("", DEFAULT_DOMAIN) else f"{label}.{DEFAULT_DOMAIN}"


def message_id(alert_id: str, domain: str) -> str:
    """`<alert-id@domain>`; an id that is not valid there (not one of ours) is hashed."""
    left = alert_id if _DOT_ATOM.fullmatch(alert_id) else "alert." + _sha(alert_id)
    right = domain if _DOT_ATOM.fullmatch(domain) else DEFAULT_DOMAIN
    return f"<{left}@{right}>"


def dashboard_base(public_url: str | None, host: str, port: int) -> str:
    """`web.public_url`, else this worker's web server."""
    if public_url:
        return public_url.rstrip("/")
    return f"http://{host}:{port}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# -- rendering ---------------------------------------------------------------------------


def render(alert: Alert, settings: MailSettings) -> EmailMessage:
    """The mail for one alert: headers through the email package, plain-text body."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = header_text(settings.sender, 998)
    msg["To"] = header_text(", ".join(settings.recipients), 998)
    msg["Subject"] = subject(alert)
    msg["Date"] = format_datetime(_when(alert.at))
    msg["Message-ID"] = message_id(alert.alert_id, settings.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg["X-Vigo-Event"] = header_text(alert.event)
    msg.set_content(body(alert, settings.dashboard))
    return msg


def subject(alert: Alert) -> str:
    if alert.event == ROLLOUT_STUCK:  # SPEC 11.2 (`alerts.rollouts`)
        return header_text(stuck_subject(alert))
    d = alert.details
    if alert.event in (CONVERGENCE_THRESHOLD, CONVERGENCE_RECOVERED):
        group = _group(d)
        what = "Fleet convergence" if group is None else f"Convergence of {group[0]}={group[1]}"
        percent, threshold = _num(d.get("percent")), _num(d.get("threshold"))
        if alert.event == CONVERGENCE_THRESHOLD:
            text = f"[Vigo] {what} {percent}% is below the {threshold}% threshold"
        else:
            text = f"[Vigo] {what} recovered: {percent}% is at or above the {threshold}% threshold"
    elif d.get("digest"):
        text = f"[Vigo] {_int(d.get('count'))} envoys went stale"
    else:
        envoy = _envoys(d)[0] if _envoys(d) else {"envoy_id": alert.subject}
        text = f"[Vigo] Envoy {_str(envoy.get('envoy_id'))} is stale"
        labels = _labels_text(envoy.get("labels"))
        if labels:
            text += f" ({labels})"
    return header_text(text)


def body(alert: Alert, dashboard: str) -> str:
    if alert.event in (CONVERGENCE_THRESHOLD, CONVERGENCE_RECOVERED):
        lines = _threshold_body(alert, dashboard)
    elif alert.event == ROLLOUT_STUCK:
        lines = stuck_body(alert, dashboard)
    else:
        lines = _stale_body(alert, dashboard)
    lines += ["", f"Alert id: {body_text(alert.alert_id)}"]
    # Every field is escaped where it is written; this pass also covers the lines made
    # of several (a status name in the `vigocli` hint, ...): escaping twice changes nothing.
    return "\n".join(printable(line) for line in lines) + "\n"


def _threshold_body(alert: Alert, dashboard: str) -> list[str]:
    d = alert.details
    threshold = _num(d.get("threshold"))
    active = _int(d.get("active"))
    compliant = _int(d.get("compliant"))
    by_status = d.get("by_status") if isinstance(d.get("by_status"), Mapping) else {}
    assert isinstance(by_status, Mapping)
    group = _group(d)
    label = None if group is None else f"{group[0]}={group[1]}"
    recovery = alert.event == CONVERGENCE_RECOVERED
    if recovery:
        opening = (
            "Fleet convergence is back at or above the alert threshold."
            if label is None
            else "Convergence of a group of envoys is back at or above its alert threshold."
        )
    else:
        opening = (
            "Fleet convergence fell below the alert threshold."
            if label is None
            else "Convergence of a group of envoys fell below its alert threshold."
        )
    lines = [
        opening,
        "",
        *([] if label is None else [f"  Group:        {body_text(label)}"]),
        f"  Convergence:  {_num(d.get('percent'))}% "
        f"({compliant} of {active} active envoys converged)",
        f"  Threshold:    {threshold}%",
        f"  Detected at:  {body_text(alert.at)}",
        "",
        "Envoys by status:",
    ]
    statuses = [s for s in STATUS_ORDER if s in by_status]
    statuses += sorted(str(s) for s in by_status if s not in STATUS_ORDER)
    width = max((len(s) for s in statuses), default=0)
    lines += [f"  {body_text(s).ljust(width)}  {_int(by_status.get(s)):>6}" for s in statuses]
    concerned = [s for s in statuses if s != "converged" and _int(by_status.get(s)) > 0]
    in_group = "" if label is None else f"&label={quote(label, safe='')}"
    if concerned:
        wanted = ",".join(concerned)
        cli_label = "" if label is None else f" --label {body_text(shlex.quote(label))}"
        lines += [
            "",
            f"The {active - compliant} envoys not converged:",
            f"  {dashboard}/api/envoys?status={quote(wanted, safe=',')}{in_group}",
            f"  vigocli envoys list --status {wanted}{cli_label}",
        ]
    page = "/compliance" if label is None else f"/compliance?label={quote(label, safe='')}"
    lines += [
        "",
        f"Dashboard: {dashboard}{page}",
        "",
        *(
            [
                f"This ends the alert {body_text(_ended_alert_id(alert))}, sent when",
                "convergence fell below the threshold.",
            ]
            if recovery
            else [
                "This alert fires once each time convergence falls below the threshold; it fires",
                f"again only after convergence has recovered to {threshold}% or more.",
            ]
        ),
    ]
    return lines


def _ended_alert_id(alert: Alert) -> str:
    """The threshold alert a recovery ends: the same id under the other event."""
    return CONVERGENCE_THRESHOLD + alert.alert_id.removeprefix(CONVERGENCE_RECOVERED)


def _stale_body(alert: Alert, dashboard: str) -> list[str]:
    d = alert.details
    envoys = _envoys(d)
    if d.get("digest"):
        count = _int(d.get("count"))
        lines = [
            f"{count} envoys went stale within the same digest window: they have not checked",
            "in for longer than checkin.stale_after. Listed in one mail instead of one each,",
            "those seen longest ago first.",
            "",
            f"  Window:       {body_text(_str(d.get('window_start')))} to "
            f"{body_text(_str(d.get('window_end')))}",
            "",
        ]
        for envoy in envoys:
            labels = _labels_text(envoy.get("labels"), escape=True)
            lines.append(
                f"  {body_text(_str(envoy.get('envoy_id')))}  "
                f"last seen {body_text(_str(envoy.get('last_seen')))}"
                + (f"  ({labels})" if labels else "")
            )
        omitted = _int(d.get("omitted"))
        if omitted:
            lines.append(f"  ... and {omitted} more (see the dashboard)")
    else:
        envoy = envoys[0] if envoys else {"envoy_id": alert.subject}
        envoy_id = _str(envoy.get("envoy_id"))
        lines = [
            "An envoy has not checked in for longer than checkin.stale_after.",
            "",
            f"  Envoy:        {body_text(envoy_id)}",
            f"  Labels:       {_labels_text(envoy.get('labels'), escape=True) or '-'}",
            f"  Last seen:    {body_text(_str(envoy.get('last_seen')))}",
            f"  Detected at:  {body_text(alert.at)}",
            f"  Details:      {dashboard}/envoys/{quote(envoy_id, safe='')}",
        ]
    lines += [
        "",
        f"Dashboard: {dashboard}/compliance",
        "",
        "A check-in ends the stale state; an envoy that goes stale again is reported again.",
    ]
    return lines


# -- defensive readers: `details` is free-form JSON, rendering must never raise ------------


def _group(details: Mapping[str, Any]) -> tuple[str, str] | None:
    """The `(key, value)` of a group's threshold alert; None for the fleet's."""
    raw = details.get("group")
    if not isinstance(raw, Mapping):
        return None
    return _str(raw.get("key")), _str(raw.get("value"))


def _envoys(details: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = details.get("envoys")
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return []
    return [e for e in raw if isinstance(e, Mapping)]


def _labels_text(raw: Any, *, escape: bool = False) -> str:
    if not isinstance(raw, Mapping):
        return ""
    text = ", ".join(f"{k}={v}" for k, v in sorted((str(k), str(v)) for k, v in raw.items()))
    return body_text(text) if escape else text


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "?"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "?"


def _when(at: str) -> datetime:
    ms = parse_timestamp_ms(at)
    if ms is None:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromtimestamp(ms / 1000, UTC)
