"""The stale digest windows (SPEC 10.4), pure: window assignment, closing, digest or
singles, and that any interleaving of stale records and ticks, with crashes and replays
anywhere, mails every stale alert exactly once and always the same mails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.journal import JOURNAL_MAX, Entry, alerts_doc, attempted, finished, started
from alerts.journal import to_prune as journal_to_prune
from alerts.rules import digest_alert_id, stale_alerts
from alerts.window import (
    LIST_MAX,
    Member,
    Progress,
    Window,
    add,
    closed,
    due,
    mails,
    member_of,
    single_alert,
    step,
    window_start,
)
from processor.records import (
    decode_journal_entry,
    decode_progress,
    decode_window,
    encode_journal_entry,
    encode_progress,
    encode_window,
)
from tests.test_alerts_units import Stale
from topics.events import Alert

W = 30_000
T0 = 1_795_781_100_000  # a multiple of W


def member(
    envoy: str, last_seen_ms: int = T0 - 10_000, labels: Mapping[str, str] | None = None
) -> Member:
    (alert,) = stale_alerts(
        2, [Stale(envoy, last_seen_ms=last_seen_ms, labels=dict(labels or {}))], T0
    )
    found = member_of(alert)
    assert found is not None
    return found


def test_windows_are_on_a_grid_from_the_last_closed_end() -> None:
    assert window_start(T0 + 29_999, 0, W) == T0
    assert window_start(T0 + 30_000, 0, W) == T0 + W
    # A late record (a skewed clock) joins the current window, never a closed one.
    assert window_start(T0 - 50_000, T0, W) == T0
    assert window_start(T0 + 5, T0 + 7, W) == T0 + 7
    assert window_start(T0 + 7 + W + 1, T0 + 7, W) == T0 + 7 + W


def test_a_window_closes_on_a_record_at_or_after_its_end() -> None:
    a = add(None, T0, W, member("a"))
    b = add(None, T0 + W, W, member("b"))
    assert due([b, a], T0 + W - 1) == []
    assert due([b, a], T0 + W) == [a]
    assert due([b, a], T0 + 5 * W) == [a, b]
    assert closed(Progress(0, 7), a) == Progress(T0 + W, 7)


def test_more_than_digest_over_is_one_digest_else_singles() -> None:
    window: Window | None = None
    for i in range(11):
        window = add(window, T0, W, member(f"e{i:02d}", last_seen_ms=T0 - i))
    assert window is not None and window.count == 11
    singles = mails(window, digest_over=11)
    assert sorted(a.alert_id for a in singles) == sorted(
        f"envoy.stale/e{i:02d}/1" for i in range(11)
    )
    (digest,) = mails(window, digest_over=10)
    assert digest.alert_id == f"envoy.stale.digest/{T0}"
    assert digest.details["count"] == 11 and digest.details["omitted"] == 0
    # Seen longest ago first.
    assert [e["envoy_id"] for e in digest.details["envoys"]][:2] == ["e10", "e09"]


def test_a_window_counts_exactly_and_lists_a_bounded_number() -> None:
    window: Window | None = None
    for i in range(LIST_MAX + 30):
        window = add(window, T0, W, member(f"e{i:04d}", last_seen_ms=T0 - i))
    assert window is not None
    assert window.count == LIST_MAX + 30 and len(window.members) == LIST_MAX
    assert window.members[0].envoy_id == f"e{LIST_MAX + 29:04d}"
    # The same alert again (a duplicate write of the outbox) is not counted twice.
    assert add(window, T0, W, window.members[3]) == window
    (digest,) = mails(window, digest_over=10)
    assert digest.details["count"] == LIST_MAX + 30 and digest.details["omitted"] == 30


def test_single_alert_is_the_alert_the_sweep_wrote() -> None:
    (alert,) = stale_alerts(5, [Stale("web-1", episode=3, labels={"env": "prod"})], T0)
    found = member_of(alert)
    assert found is not None and single_alert(found) == alert
    assert member_of(Alert("x", "convergence.threshold", alert.at, "fleet", {})) is None
    assert member_of(Alert("y", "envoy.stale", alert.at, "x", {"digest": True})) is None


def test_window_values_are_bounded_in_bytes() -> None:
    big = {f"k{i:02d}": "é" * 127 for i in range(60)}
    window: Window | None = None
    for i in range(LIST_MAX):
        window = add(window, T0, W, member("x" * 60 + f"{i:04d}", labels=big))
    assert window is not None
    assert len(encode_window(window)) < 512 * 1024
    assert decode_window(encode_window(window)) == window


def test_a_window_keeps_the_offset_that_opened_it_and_an_older_record_reads_as_unknown() -> None:
    window = add(add(None, T0, W, member("a"), offset=7), T0, W, member("b"), offset=9)
    assert window.opened == 7 and decode_window(encode_window(window)) == window
    assert due([window], T0 + W, offset=7) == [] and due([window], T0 + W, offset=8) == [window]
    earlier_release = orjson.dumps(orjson.loads(encode_window(window))[:5])
    assert decode_window(earlier_release).opened == -1
    assert due([decode_window(earlier_release)], T0 + W, offset=0) != []


def test_codecs_round_trip() -> None:
    assert decode_progress(encode_progress(Progress(T0, 42))) == Progress(T0, 42)
    entry = Entry(
        3, "envoy.stale/a/1", "envoy.stale", "2026-11-27T12:00:00.000Z", None, "pending", 2
    )
    assert decode_journal_entry(encode_journal_entry(entry)) == entry


def test_journal_keeps_the_newest_first_and_prunes() -> None:
    entries: list[Entry] = []
    for i in range(JOURNAL_MAX + 5):
        entries.append(started(entries, f"a/{i}", "envoy.stale", f"t{i}"))
    assert started(entries, "a/3", "envoy.stale", "t3") == entries[3]
    pruned = journal_to_prune(entries)
    assert pruned == [f"a/{i}" for i in range(4, -1, -1)]
    done = finished(attempted(attempted(entries[-1])), "rejected", "now")
    assert (done.outcome, done.attempts, done.sent_at) == ("rejected", 2, None)
    doc = alerts_doc([*entries[:-1], done])
    assert len(doc["alerts"]) == JOURNAL_MAX
    assert doc["alerts"][0] == {
        "id": f"a/{JOURNAL_MAX + 4}",
        "event": "envoy.stale",
        "created_at": f"t{JOURNAL_MAX + 4}",
        "sent_at": None,
        "outcome": "rejected",
        "attempts": 2,
    }


# -- the whole flow, with crashes ------------------------------------------------------------


@dataclass
class Sender:
    """The sender's use of the window functions, with its durable state (the tables) and
    a crash that can strike between any two mails."""

    digest_over: int
    progress: Progress = field(default_factory=Progress)
    windows: dict[int, Window] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    mailed: list[Alert] = field(default_factory=list)
    #: Mails left before the crash (None: no crash).
    crash_after: int | None = None

    def read(self, offset: int, record_ms: int, alert: Alert | None) -> bool:
        """False when it crashed."""
        found = member_of(alert) if alert is not None else None
        if found is not None and found.alert_id in self.sent:
            found = None
        done = step(self.progress, self.windows, offset, record_ms, found, W)
        if done.added is not None:
            self.windows[done.added.start_ms] = done.added
            self.progress = done.progress
        for window in done.closing:
            for mail in mails(window, self.digest_over):
                if mail.alert_id in self.sent:
                    continue
                if self.crash_after is not None:
                    if self.crash_after == 0:
                        return False
                    self.crash_after -= 1
                self.mailed.append(mail)
                self.sent.add(mail.alert_id)
            if mails(window, self.digest_over)[0].details.get("digest"):
                self.sent.update(m.alert_id for m in window.members)
            del self.windows[window.start_ms]
            self.progress = closed(self.progress, window)
        return True


Record = tuple[int, Alert | None]  # (record time, a stale alert or None for a tick)


@st.composite
def outboxes(draw: st.DrawFn) -> list[Record]:
    """Stale alerts and ticks, times mostly rising with skew (late records), duplicates."""
    records: list[Record] = []
    now = T0 + draw(st.integers(0, W))
    envoys = 0
    for _ in range(draw(st.integers(1, 60))):
        now += draw(st.integers(0, W // 2))
        skew = draw(st.sampled_from([0, 0, 0, -W, -3 * W, 2_000]))
        if draw(st.booleans()):
            records.append((now + skew, None))
            continue
        if records and draw(st.integers(0, 9)) == 0:  # a duplicate write of an alert
            earlier = [r for r in records if r[1] is not None]
            if earlier:
                records.append((now + skew, draw(st.sampled_from(earlier))[1]))
                continue
        envoys += 1
        (alert,) = stale_alerts(
            envoys % 4,
            [Stale(f"e{envoys}", last_seen_ms=now - draw(st.integers(0, 99_000)))],
            now,
        )
        records.append((now + skew, alert))
    records.append((now + 10 * W, None))  # a last tick closes everything
    return records


def run(records: list[Record], digest_over: int, crashes: list[tuple[int, int, int]]) -> Sender:
    """Read the outbox; at each crash (record index, mails to go, replay back by) the
    process dies and reading resumes from an earlier offset with the tables as they were."""
    sender = Sender(digest_over)
    position, pending = 0, sorted(crashes)
    while position < len(records):
        crash = pending[0] if pending and pending[0][0] == position else None
        sender.crash_after = crash[1] if crash else None
        ok = sender.read(position, *records[position])
        if crash:
            pending.pop(0)
        if ok and crash is None:
            position += 1
            continue
        # Died (or was killed right after the record): the committed offset lags.
        position = max(0, position + (0 if not ok else 1) - (crash[2] if crash else 0))
    return sender


def test_a_replay_over_a_tick_older_than_a_late_alerts_window_closes_as_before() -> None:
    """Found by a newcomer's run of the property below: a tick, then a late alert (a
    skewed clock) whose window that tick's time would close, then a second alert into
    that window. A crash right after the late alert replays the tick over a table that
    already holds the window; the tick must not close it (it did not the first time), or
    the two alerts go out as two mails instead of one digest."""
    now = T0 + 100_000

    def alert(n: int, at: int) -> Alert:
        (found,) = stale_alerts(n % 4, [Stale(f"e{n}", last_seen_ms=at - 60_000)], at)
        return found

    records: list[Record] = [
        (now, alert(1, now)),
        (now, None),
        (now - W, alert(2, now - W)),  # late: its window ends at or before `now`
        (now - W, alert(3, now - W)),
        (now, None),
        (now + 10 * W, None),
    ]
    clean = run(records, 1, [])
    assert [m.alert_id for m in clean.mailed][:1] == [digest_alert_id(T0 + 60_000)]
    crashed = run(records, 1, [(2, 0, 2)])  # killed after the late alert, back to the tick
    assert crashed.mailed == clean.mailed


@settings(max_examples=300, deadline=None)
@given(
    records=outboxes(),
    digest_over=st.integers(1, 12),
    crashes=st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 5), st.integers(0, 8)), max_size=4
    ),
)
def test_every_stale_alert_is_mailed_exactly_once_whatever_the_crashes(
    records: list[Record], digest_over: int, crashes: list[tuple[int, int, int]]
) -> None:
    crashes = list({c[0]: c for c in crashes if c[0] < len(records)}.values())
    clean = run(records, digest_over, [])
    crashed = run(records, digest_over, crashes)
    stale_ids = {a.alert_id for _, a in records if a is not None}
    for sender in (clean, crashed):
        ids = [m.alert_id for m in sender.mailed]
        assert len(ids) == len(set(ids))  # no mail twice
        singles = {i for i in ids if not i.startswith("envoy.stale.digest/")}
        digests = [m for m in sender.mailed if m.details.get("digest")]
        assert all(m.details["count"] > digest_over for m in digests)
        listed = {e["envoy_id"] for m in digests for e in m.details["envoys"]}
        assert sum(m.details["count"] for m in digests) + len(singles) == len(stale_ids)
        assert singles.isdisjoint({f"envoy.stale/{e}/1" for e in listed})
        assert sender.windows == {}
    # A replay closes exactly as the first reading did.
    assert [m.alert_id for m in crashed.mailed] == [m.alert_id for m in clean.mailed]
    assert crashed.mailed == clean.mailed
