"""The stale digest across the fleet (SPEC 10.4): tumbling windows over the outbox.

Pure: no clock, no I/O. The sender (`processor.alerting.sender`) keeps the state in a
changelog-backed table and calls these functions for every outbox record it reads.

- A stale alert joins the window its outbox record time falls in: windows are `width`
  long, on a grid that starts at the end of the newest window already closed (at the
  epoch before any closed), so a late record from a worker with a skewed clock joins the
  current window rather than one that has gone out already.
- A window closes when the sender reads any outbox record (an alert, or a tick its timer
  writes while a window is open) whose time is at or after the window's end and whose
  offset is after the record that opened the window. Closing is driven by record times
  and offsets only, so a replay of the outbox closes exactly as the first reading did: a
  record read again after a crash, older in the outbox than a window the table already
  holds, did not see that window the first time and does not close it now (a late alert,
  written behind a tick of a later time, opens a window that tick cannot close).
- A closed window with more than `digest_over` alerts is one mail,
  `envoy.stale.digest/<window start ms>`, listing the `LIST_MAX` envoys seen longest ago
  and the exact count; otherwise each alert is its own mail, with its own id.
- `Progress.through` is the outbox offset up to which stale records were added: a replay
  after a crash re-reads records whose addition is already in the table.

A window keeps the exact count and at most `LIST_MAX` members, each bounded in bytes
(`MEMBER_LABEL_BYTES`), so its table value stays far below Kafka's record size limit
whatever the storm. `digest_over` is at most `LIST_MAX` (the configuration caps it), so a
window mailed as singles always has every one of them listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from alerts.rules import (
    DIGEST_LIST_MAX,
    ENVOY_STALE,
    bounded_labels,
    digest_alert_id,
    envoy_details,
)
from topics.events import Alert
from topics.jsonschemas import parse_timestamp_ms
from topics.timestamps import iso_from_ms

#: A window lists at most this many envoys (its count is exact); also the cap of
#: `digest_over`.
LIST_MAX: Final = DIGEST_LIST_MAX
#: The UTF-8 bytes of a member's labels kept in the window (the outbox record allows
#: more): 200 members of at most ~2.3 KB each stay under half a megabyte.
MEMBER_LABEL_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Member:
    """What a window keeps of one stale alert: enough to mail it alone, or list it."""

    alert_id: str
    at: str
    envoy_id: str
    episode: int
    last_seen_ms: int
    partition: int
    labels: Mapping[str, str]

    @property
    def order(self) -> tuple[int, str, str]:
        """Digest order: seen longest ago first."""
        return (self.last_seen_ms, self.envoy_id, self.alert_id)


@dataclass(frozen=True, slots=True)
class Window:
    start_ms: int
    end_ms: int
    #: Every stale alert added, exactly.
    count: int
    #: At most `LIST_MAX`, oldest last-seen first.
    members: tuple[Member, ...]
    #: The outbox offset of the record that opened the window; only later records close
    #: it. -1: unknown (a window written by an earlier release), any record closes it.
    opened: int = -1


@dataclass(frozen=True, slots=True)
class Progress:
    #: The end of the newest window closed (0: none yet).
    closed_end_ms: int = 0
    #: Outbox offsets below this were added to windows already.
    through: int = 0


# -- members -----------------------------------------------------------------------------


def member_of(alert: Alert) -> Member | None:
    """The member for a single `envoy.stale` alert; None for anything else (a digest of an
    earlier release, a record this release cannot read as one), which is mailed at once."""
    d = alert.details
    if alert.event != ENVOY_STALE or d.get("digest") is not False:
        return None
    envoys = d.get("envoys")
    if not isinstance(envoys, list) or len(envoys) != 1 or not isinstance(envoys[0], dict):
        return None
    envoy: dict[str, Any] = envoys[0]
    envoy_id, episode, partition = envoy.get("envoy_id"), envoy.get("episode"), d.get("partition")
    raw_seen = envoy.get("last_seen")
    last_seen = parse_timestamp_ms(raw_seen) if isinstance(raw_seen, str) else None
    labels = envoy.get("labels", {})
    if (
        not isinstance(envoy_id, str)
        or not isinstance(episode, int)
        or not isinstance(partition, int)
        or isinstance(episode, bool)
        or isinstance(partition, bool)
        or last_seen is None
        or not isinstance(labels, dict)
    ):
        return None
    return Member(
        alert_id=alert.alert_id,
        at=alert.at,
        envoy_id=envoy_id,
        episode=episode,
        last_seen_ms=last_seen,
        partition=partition,
        labels=_labels_within(labels, MEMBER_LABEL_BYTES),
    )


def single_alert(member: Member) -> Alert:
    """The member's own alert, as the sweep wrote it (labels as the window kept them)."""
    return Alert(
        alert_id=member.alert_id,
        event=ENVOY_STALE,
        at=member.at,
        subject=member.envoy_id,
        details={
            "digest": False,
            "partition": member.partition,
            "count": 1,
            "omitted": 0,
            "envoys": [envoy_details(member)],
        },
    )


def digest_alert(window: Window) -> Alert:
    """One mail for the window: the exact count, the envoys seen longest ago listed. Its
    time is the window's end, so a resend is the same mail."""
    return Alert(
        alert_id=digest_alert_id(window.start_ms),
        event=ENVOY_STALE,
        at=iso_from_ms(window.end_ms),
        subject="fleet",
        details={
            "digest": True,
            "window_start": iso_from_ms(window.start_ms),
            "window_end": iso_from_ms(window.end_ms),
            "count": window.count,
            "omitted": window.count - len(window.members),
            "envoys": [envoy_details(m) for m in window.members],
        },
    )


def _labels_within(labels: Mapping[str, Any], budget: int) -> dict[str, str]:
    kept: dict[str, str] = {}
    used = 0
    for key, value in bounded_labels({str(k): str(v) for k, v in labels.items()}).items():
        used += len(key.encode("utf-8", "replace")) + len(value.encode("utf-8", "replace"))
        if used > budget:
            break
        kept[key] = value
    return kept


# -- windows -----------------------------------------------------------------------------


def window_start(record_ms: int, closed_end_ms: int, width_ms: int) -> int:
    """The start of the window a record at `record_ms` joins: on the grid from the newest
    closed window's end, never before it."""
    if record_ms <= closed_end_ms:
        return closed_end_ms
    return closed_end_ms + (record_ms - closed_end_ms) // width_ms * width_ms


def add(
    window: Window | None, start_ms: int, width_ms: int, member: Member, offset: int = -1
) -> Window:
    """`window` (or a new one at `start_ms`, opened by the record at `offset`) with
    `member` counted and, if among the `LIST_MAX` seen longest ago, listed. An alert
    already listed is not counted again (a duplicate write of the outbox)."""
    if window is None:
        window = Window(start_ms, start_ms + width_ms, 0, (), offset)
    if any(m.alert_id == member.alert_id for m in window.members):
        return window
    members = sorted((*window.members, member), key=lambda m: m.order)[:LIST_MAX]
    return Window(window.start_ms, window.end_ms, window.count + 1, tuple(members), window.opened)


def due(windows: Iterable[Window], record_ms: int, offset: int | None = None) -> list[Window]:
    """The open windows a record at `record_ms` (and `offset`, if given: after the record
    that opened each) closes, oldest first."""
    return sorted(
        (w for w in windows if w.end_ms <= record_ms and (offset is None or offset > w.opened)),
        key=lambda w: w.start_ms,
    )


def closed(progress: Progress, window: Window) -> Progress:
    return Progress(max(progress.closed_end_ms, window.end_ms), progress.through)


def mails(window: Window, digest_over: int) -> list[Alert]:
    """What a closing window sends: one digest, or each alert alone."""
    if window.count > digest_over or window.count > len(window.members):
        return [digest_alert(window)]
    return [single_alert(m) for m in window.members]


# -- one record ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """What reading one outbox record does: the window to write (a stale record not read
    before), the progress to write with it, and the windows to close, oldest first."""

    added: Window | None
    progress: Progress
    closing: list[Window]


def step(
    progress: Progress,
    windows: Mapping[int, Window],
    offset: int,
    record_ms: int,
    member: Member | None,
    width_ms: int,
) -> Step:
    """The record at `offset`, written at `record_ms`: a stale member is added (unless a
    replay re-reads it, or an open window lists it already), then every window it closes
    is named. The record's own window
    ends after `record_ms`, so it is never among those."""
    added: Window | None = None
    if member is not None and any(
        m.alert_id == member.alert_id for w in windows.values() for m in w.members
    ):
        member = None  # a duplicate write of an alert an open window holds already
    if member is not None and offset >= progress.through:
        start = window_start(record_ms, progress.closed_end_ms, width_ms)
        added = add(windows.get(start), start, width_ms, member, offset)
        progress = Progress(progress.closed_end_ms, offset + 1)
    current = dict(windows)
    if added is not None:
        current[added.start_ms] = added
    return Step(added, progress, due(current.values(), record_ms, offset))
