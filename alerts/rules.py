"""The alert rules: detector output -> `vigo.alert/1` records with deterministic ids.

The detectors (the fleet aggregator's threshold check, the envoy sweep) already decide
*when* an alert condition starts and number it (`ThresholdState.crossings`, the envoy's
stale episode), both kept in changelog-backed tables. The ids are built from those
numbers only, never from the clock, so a replay after a crash gives the same id, and the
sender (and the mail client, through the Message-ID) can recognise the duplicate.

An id is valid as the left part of a Message-ID (RFC 5322 dot-atom-text) as it stands:
the mail's Message-ID is `<alert-id@domain>`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from projections.fleet import FleetCounts
from topics.events import Alert
from topics.timestamps import iso_from_ms

CONVERGENCE_THRESHOLD: Final = "convergence.threshold"
CONVERGENCE_RECOVERED: Final = "convergence.recovered"
ENVOY_STALE: Final = "envoy.stale"

#: A digest lists at most this many envoys (the count is always exact): the window's table
#: value and the mail stay far below Kafka's and SMTP servers' size limits whatever the
#: storm. Also the cap of `digest_over`, so that singles are always among the listed.
DIGEST_LIST_MAX: Final = 200
#: Labels are free-form and unbounded in the input; what an alert carries of them is cut.
LABEL_KEY_MAX: Final = 64
LABEL_VALUE_MAX: Final = 128
LABELS_TOTAL_MAX: Final = 1024

# An envoy id used verbatim in an alert id: dot-atom-text without '/', which separates
# the parts of the id. Anything else is replaced by a hash, marked by a leading '='
# (which this pattern excludes, so the two forms cannot collide).
_PLAIN_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_PLAIN_TOKEN_MAX: Final = 64
_HASH_CHARS: Final = 24  # 96 bits of sha256, hex


class StaleLike(Protocol):
    """What the envoy sweep reports for an envoy that just went stale."""

    @property
    def envoy_id(self) -> str: ...
    @property
    def episode(self) -> int: ...
    @property
    def last_seen_ms(self) -> int: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


# -- ids ---------------------------------------------------------------------------------


def envoy_token(envoy_id: str) -> str:
    """The envoy id itself when it is safe in a Message-ID, else `=` + a sha256 prefix."""
    if len(envoy_id) <= _PLAIN_TOKEN_MAX and _PLAIN_TOKEN.fullmatch(envoy_id):
        return envoy_id
    return "=" + _sha256(envoy_id)[:_HASH_CHARS]


def threshold_alert_id(crossings: int, group: tuple[str, str] | None = None) -> str:
    """`convergence.threshold/<n>`: the n-th fall below the threshold; for a group (SPEC
    10.2) `convergence.threshold/<key>=<value>/<n>`, the group hashed (`=` + a sha256
    prefix) when its key or value is not safe in a Message-ID."""
    if group is None:
        return f"{CONVERGENCE_THRESHOLD}/{crossings}"
    return f"{CONVERGENCE_THRESHOLD}/{group_token(*group)}/{crossings}"


def recovered_alert_id(crossings: int, group: tuple[str, str] | None = None) -> str:
    """`convergence.recovered/<n>` (per group `convergence.recovered/<key>=<value>/<n>`):
    the end of the threshold alert numbered n (SPEC 10.4)."""
    if group is None:
        return f"{CONVERGENCE_RECOVERED}/{crossings}"
    return f"{CONVERGENCE_RECOVERED}/{group_token(*group)}/{crossings}"


def group_token(key: str, value: str) -> str:
    """`key=value` when both are plain tokens, else `=` + a sha256 prefix of the pair."""
    if all(len(t) <= _PLAIN_TOKEN_MAX and _PLAIN_TOKEN.fullmatch(t) for t in (key, value)):
        return f"{key}={value}"
    return "=" + _sha256(f"{key}\x00{value}")[:_HASH_CHARS]


def stale_alert_id(envoy_id: str, episode: int) -> str:
    """`envoy.stale/<envoy>/<n>`: the envoy's n-th transition to stale."""
    return f"{ENVOY_STALE}/{envoy_token(envoy_id)}/{episode}"


def digest_alert_id(window_start_ms: int) -> str:
    """`envoy.stale.digest/<window start ms>`: the stale alerts of one digest window
    (`alerts.window`), mailed together."""
    return f"{ENVOY_STALE}.digest/{window_start_ms}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- rules -------------------------------------------------------------------------------


def threshold_alert(
    crossings: int,
    counts: FleetCounts,
    threshold: float,
    now_ms: int,
    group: tuple[str, str] | None = None,
    *,
    recovery: bool = False,
) -> Alert:
    """The alert for a fall below the threshold (the detector calls once per crossing),
    of the fleet or of one group `(key, value)` (its label cut like envoys' labels); with
    `recovery`, the `convergence.recovered` alert that ends fall number `crossings`."""
    details: dict[str, Any] = {
        "crossings": crossings,
        "percent": counts.percent,
        "threshold": threshold,
        "active": counts.active,
        "compliant": counts.compliant,
        "by_status": counts.as_dict(),
    }
    subject = "fleet"
    if group is not None:
        key, value = _cut(group[0], LABEL_KEY_MAX), _cut(group[1], LABEL_VALUE_MAX)
        details["group"] = {"key": key, "value": value}
        subject = f"{key}={value}"
    make_id = recovered_alert_id if recovery else threshold_alert_id
    return Alert(
        alert_id=make_id(crossings, group),
        event=CONVERGENCE_RECOVERED if recovery else CONVERGENCE_THRESHOLD,
        at=iso_from_ms(now_ms),
        subject=subject,
        details=details,
    )


def stale_alerts(partition: int, envoys: Sequence[StaleLike], now_ms: int) -> list[Alert]:
    """One alert per envoy that went stale in this sweep. Whether they go out alone or in
    a digest is the sender's decision (`alerts.window`), over the whole fleet."""
    at = iso_from_ms(now_ms)
    return [
        Alert(
            alert_id=stale_alert_id(e.envoy_id, e.episode),
            event=ENVOY_STALE,
            at=at,
            subject=e.envoy_id,
            details={
                "digest": False,
                "partition": partition,
                "count": 1,
                "omitted": 0,
                "envoys": [envoy_details(e)],
            },
        )
        for e in envoys
    ]


def envoy_details(envoy: StaleLike) -> dict[str, Any]:
    """How an alert lists an envoy."""
    return {
        "envoy_id": envoy.envoy_id,
        "episode": envoy.episode,
        "last_seen": iso_from_ms(envoy.last_seen_ms),
        "labels": bounded_labels(envoy.labels),
    }


def bounded_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Labels sorted by key, each cut, and no more than `LABELS_TOTAL_MAX` characters in
    all: an alert record must never exceed the broker's message size."""
    kept: dict[str, str] = {}
    total = 0
    for key in sorted(labels):
        k = _cut(key, LABEL_KEY_MAX)
        v = _cut(str(labels[key]), LABEL_VALUE_MAX)
        total += len(k) + len(v)
        if total > LABELS_TOTAL_MAX:
            break
        kept[k] = v
    return kept


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
