"""The `rollout.stuck` alert (SPEC 11.2): one per newest version (and group), when its
stuck count first exceeds `max_stuck`; the fleet owner's marks (`RolloutMarks`) decide
when, this module builds the record and renders its mail.

The id is built from the version (and the group) only: `rollout.stuck/<version>`, or
`rollout.stuck/<key>=<value>/<version>`; a version or group not safe in a Message-ID is
replaced by `=` and a sha256 prefix (`alerts.rules`), so a replay gives the same id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from alerts.rules import envoy_token, group_token
from projections.rollouts import RolloutView
from topics.events import Alert
from topics.timestamps import iso_from_ms

ROLLOUT_STUCK: Final = "rollout.stuck"
#: The mail names at most this many stuck envoys; the count is always exact.
STUCK_LIST_MAX: Final = 20
_VERSION_MAX: Final = 128
_ID_MAX: Final = 253


def stuck_alert_id(version: str, group: tuple[str, str] | None = None) -> str:
    token = envoy_token(version)
    if group is None:
        return f"{ROLLOUT_STUCK}/{token}"
    return f"{ROLLOUT_STUCK}/{group_token(*group)}/{token}"


def stuck_alert(
    view: RolloutView,
    stuck_envoys: Sequence[tuple[str, str]],
    max_stuck: int,
    now_ms: int,
    group: tuple[str, str] | None = None,
) -> Alert:
    """The alert for `view` (its newest version set, its stuck count over `max_stuck`),
    naming `stuck_envoys` (envoy id, version) up to `STUCK_LIST_MAX`."""
    newest = view.newest or ""
    counts = view.newest_counts
    listed = sorted(stuck_envoys)[:STUCK_LIST_MAX]
    details: dict[str, Any] = {
        "version": newest[:_VERSION_MAX],
        "first_seen": None if counts.first_seen_ms is None else iso_from_ms(counts.first_seen_ms),
        "stuck": view.stuck,
        "max_stuck": max_stuck,
        "active": view.active,
        "on_newest": counts.envoys,
        "converged": counts.converged,
        "envoys": [{"envoy_id": e[:_ID_MAX], "version": v[:_VERSION_MAX]} for e, v in listed],
        "omitted": max(0, view.stuck - len(listed)),
    }
    subject = "fleet"
    if group is not None:
        details["group"] = {"key": group[0][:64], "value": group[1][:128]}
        subject = f"{group[0][:64]}={group[1][:128]}"
    return Alert(
        alert_id=stuck_alert_id(newest, group),
        event=ROLLOUT_STUCK,
        at=iso_from_ms(now_ms),
        subject=subject,
        details=details,
    )


def stuck_subject(alert: Alert) -> str:
    """The subject line, before `alerts.mail` makes it header-safe."""
    d = alert.details
    where = "" if not isinstance(d.get("group"), Mapping) else f" in {alert.subject}"
    return (
        f"[Vigo] {_int(d.get('stuck'))} envoys stuck before config_version "
        f"{_str(d.get('version'))}{where}"
    )


def stuck_body(alert: Alert, dashboard: str) -> list[str]:
    """The body's lines, before `alerts.mail` escapes each of them."""
    d = alert.details
    version = _str(d.get("version"))
    group = d.get("group")
    label = (
        f"{_str(group.get('key'))}={_str(group.get('value'))}"
        if isinstance(group, Mapping)
        else None
    )
    lines = [
        "Envoys are still on an older config_version, rollouts.stuck_after after the newest",
        "version was first seen, and they are not offline.",
        "",
        *([] if label is None else [f"  Group:        {label}"]),
        f"  Newest:       {version} (first seen {_str(d.get('first_seen'))})",
        f"  On it:        {_int(d.get('on_newest'))} of {_int(d.get('active'))} active envoys "
        f"({_int(d.get('converged'))} converged)",
        f"  Stuck:        {_int(d.get('stuck'))} (alert when more than {_int(d.get('max_stuck'))})",
        f"  Detected at:  {alert.at}",
        "",
        "Stuck envoys:",
    ]
    envoys = d.get("envoys")
    for envoy in envoys if isinstance(envoys, list) else []:
        if isinstance(envoy, Mapping):
            lines.append(f"  {_str(envoy.get('envoy_id'))}  on {_str(envoy.get('version'))}")
    omitted = _int(d.get("omitted"))
    if omitted:
        lines.append(f"  ... and {omitted} more (vigocli rollouts, the dashboard)")
    cli_label = "" if label is None else f" --label {label}"
    lines += [
        "",
        f"  vigocli rollouts{cli_label}",
        f"Dashboard: {dashboard}/compliance",
        "",
        "This alert fires once per newest version (and group).",
    ]
    return lines


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "?"
