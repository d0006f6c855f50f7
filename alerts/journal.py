"""The alert journal behind `GET /api/alerts` (SPEC 10.4): the last mails the sender
worked on, newest first, with their outcome. Pure; the sender keeps the entries in a
changelog-backed table (one key per alert id) and prunes it to `JOURNAL_MAX`.

An entry is a mail: a stale alert appears when its window closes, as itself or inside
the digest's one entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

JOURNAL_MAX: Final = 100

Outcome = Literal["pending", "sent", "rejected"]


@dataclass(frozen=True, slots=True)
class Entry:
    #: Order of first appearance: newest is highest.
    seq: int
    alert_id: str
    event: str
    #: The alert's own time (`at` of the record), RFC 3339.
    created_at: str
    sent_at: str | None = None
    outcome: Outcome = "pending"
    #: SMTP attempts made (connection failures included).
    attempts: int = 0


def started(entries: Iterable[Entry], alert_id: str, event: str, created_at: str) -> Entry:
    """The entry for an alert the sender starts on: the existing one (a retry after a
    restart keeps its count), else a new one after the newest."""
    by_id = {e.alert_id: e for e in entries}
    if alert_id in by_id:
        return by_id[alert_id]
    return Entry(max((e.seq for e in by_id.values()), default=0) + 1, alert_id, event, created_at)


def attempted(entry: Entry) -> Entry:
    return replace(entry, attempts=entry.attempts + 1)


def finished(entry: Entry, outcome: Outcome, at: str | None) -> Entry:
    return replace(entry, outcome=outcome, sent_at=at if outcome == "sent" else None)


def to_prune(entries: Iterable[Entry], keep: int = JOURNAL_MAX) -> list[str]:
    """The ids of the oldest entries beyond `keep`."""
    ordered = sorted(entries, key=lambda e: e.seq, reverse=True)
    return [e.alert_id for e in ordered[keep:]]


def alerts_doc(entries: Iterable[Entry], limit: int = JOURNAL_MAX) -> dict[str, Any]:
    """`{"alerts": [...]}`, newest first."""
    ordered = sorted(entries, key=lambda e: e.seq, reverse=True)[:limit]
    return {
        "alerts": [
            {
                "id": e.alert_id,
                "event": e.event,
                "created_at": e.created_at,
                "sent_at": e.sent_at,
                "outcome": e.outcome,
                "attempts": e.attempts,
            }
            for e in ordered
        ]
    }
