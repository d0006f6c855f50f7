"""SPEC 10.3, the envoy lifecycle, through the pure rules: `inactive` at the exact
deadline, reactivation by a check-in, a run (a late one too) or an enrollment with one
change from `inactive`, purge after purge_after, and a revoked envoy that shrinks but is
never forgotten. Times are record timestamps; nothing here reads a clock."""

from __future__ import annotations

import pytest

from projections.envoy import (
    Cause,
    EnvoyState,
    Rules,
    StatusChange,
    apply_event,
    forget_revoked,
    next_deadline_ms,
    sweep_envoy,
)
from projections.fleet import FleetCounts
from projections.liveness import deactivate_deadline_ms, purge_deadline_ms
from tests.eventgen import T0, checkin, enrolled, revoked, run
from topics.events import InputEvent
from topics.statuses import ACTIVE_STATUSES, Status

DAY = 86_400_000
RULES = Rules(default_interval_s=60, deactivate_after_ms=7 * DAY, purge_after_ms=30 * DAY)


def fold(events: list[InputEvent], rules: Rules = RULES) -> tuple[EnvoyState, list[StatusChange]]:
    state: EnvoyState | None = None
    changes: list[StatusChange] = []
    for i, event in enumerate(events):
        applied = apply_event(state, event, T0 + i * 1000, rules)
        state = applied.state
        if applied.change:
            changes.append(applied.change)
    assert state is not None
    return state, changes


def swept_until(state: EnvoyState, now_ms: int, rules: Rules = RULES) -> list[StatusChange]:
    """Every change the sweep makes by `now_ms`, tick by tick at each next deadline, as
    the worker's deadline heap drives it; the state then is the last one."""
    changes = []
    while (deadline := next_deadline_ms(state, rules)) is not None and deadline <= now_ms:
        swept = sweep_envoy(state, deadline, rules)
        if swept.change is not None:
            changes.append(swept.change)
        if swept.purged:
            break
        assert swept.state != state, "a due deadline must change the state"
        state = swept.state
    return changes


def inactive_envoy() -> tuple[EnvoyState, int]:
    """An envoy last seen by a clean run at T0 + 1 s, swept at its deactivation deadline."""
    state, _ = fold([enrolled(), run("ok")])
    last_seen = T0 + 1000
    assert state.last_alive_ms == last_seen
    at = deactivate_deadline_ms(last_seen, RULES.deactivate_after_ms)
    assert at == last_seen + 7 * DAY
    # Offline first, at its own deadline; then inactive.
    state = sweep_envoy(state, at - 1, RULES).state
    assert state.status is Status.OFFLINE
    swept = sweep_envoy(state, at, RULES)
    assert swept.state.status is Status.INACTIVE
    return swept.state, at


def test_pure_deadlines() -> None:
    assert deactivate_deadline_ms(1000, 5000) == 6000
    assert deactivate_deadline_ms(1000, None) is None
    assert purge_deadline_ms(6000, 10) == 6010
    assert purge_deadline_ms(6000, None) is None


def test_an_envoy_silent_for_deactivate_after_goes_inactive_at_the_exact_deadline() -> None:
    state, _ = fold([enrolled(), run("ok")])
    at = T0 + 1000 + 7 * DAY
    state = sweep_envoy(state, at - 1, RULES).state  # offline, not inactive yet
    assert (state.status, state.inactive_since_ms) == (Status.OFFLINE, None)
    assert next_deadline_ms(state, RULES) == at
    swept = sweep_envoy(state, at, RULES)
    assert swept.change == StatusChange(
        envoy_id="web-01",
        from_status=Status.OFFLINE,
        to_status=Status.INACTIVE,
        at_ms=at,  # the deadline that expired (SPEC 10.9)
        version=state.version + 1,
        cause=Cause.SWEEP,
        run_id=None,
        consecutive_changed_runs=0,
        labels={},
    )
    assert swept.state.inactive_since_ms == at == swept.state.status_since_ms
    assert not swept.became_stale and not swept.purged
    # Inactive: no more offline or stale; the purge is the only deadline left.
    assert next_deadline_ms(swept.state, RULES) == at + 30 * DAY
    assert sweep_envoy(swept.state, at + 30 * DAY - 1, RULES).state == swept.state


def test_a_sweep_that_notices_late_dates_the_change_by_the_deadline() -> None:
    """A worker back after two weeks: straight from converged to inactive, dated by the
    deadline, however late the tick; the stale alert is not sent for a leaving envoy."""
    state, _ = fold([enrolled(), run("ok")])
    at = T0 + 1000 + 7 * DAY
    a = sweep_envoy(state, at + 7 * DAY, RULES)
    b = sweep_envoy(state, at, RULES)
    assert a == b
    assert a.change is not None
    assert (a.change.from_status, a.change.to_status, a.change.at_ms) == (
        Status.CONVERGED,
        Status.INACTIVE,
        at,
    )
    assert not a.became_stale


def test_never_enrolled_or_never_seen_counts_from_the_enrollment() -> None:
    state, _ = fold([enrolled()])
    assert next_deadline_ms(state, Rules(default_interval_s=10**6, deactivate_after_ms=5)) == T0 + 5


@pytest.mark.parametrize(
    ("event", "cause", "to"),
    [
        (checkin(), Cause.CHECKIN, Status.CONVERGED),
        (run("changed", finished_ms=T0 + 10 * DAY), Cause.RUN, Status.DRIFTED),
        # A late run (finished before the last applied one) reactivates too; it does not
        # change the run status, so the envoy comes back as it was.
        (run("failed", finished_ms=T0 - 60_000), Cause.RUN, Status.CONVERGED),
        (enrolled(role="web"), Cause.ENROLLMENT, Status.CONVERGED),
    ],
)
def test_any_sign_of_life_reactivates_with_one_change_from_inactive(
    event: InputEvent, cause: Cause, to: Status
) -> None:
    state, at = inactive_envoy()
    later = at + DAY
    applied = apply_event(state, event, later, RULES)
    assert applied.change is not None
    assert applied.change.from_status is Status.INACTIVE
    assert applied.change.to_status is to
    assert applied.change.cause is cause
    assert applied.change.version == state.version + 1
    back = applied.state
    assert back is not None
    assert (back.status, back.inactive_since_ms, back.offline) == (to, None, False)
    # Liveness counts from the sign of life: offline again only after it.
    assert back.last_alive_ms == later
    assert next_deadline_ms(back, RULES) == later + 2 * 60_000 + 1
    # One change: the next identical sign of life changes nothing.
    if cause is not Cause.RUN:
        assert apply_event(back, event, later + 1, RULES).change is None


def test_an_enrollment_reactivation_takes_its_labels() -> None:
    state, _ = inactive_envoy()
    applied = apply_event(state, enrolled(env="prod"), state.status_since_ms + 5, RULES)
    assert applied.state is not None and applied.state.labels == {"env": "prod"}


def test_purge_after_purge_after_counted_from_the_change_to_inactive() -> None:
    state, at = inactive_envoy()
    purge_at = at + 30 * DAY
    assert sweep_envoy(state, purge_at - 1, RULES) == sweep_envoy(state, at, RULES)
    swept = sweep_envoy(state, purge_at + 12_345, RULES)
    assert swept.purged
    assert swept.change == StatusChange(
        envoy_id="web-01",
        from_status=Status.INACTIVE,
        to_status=Status.PURGED,
        at_ms=purge_at,
        version=state.version + 1,
        cause=Cause.SWEEP,
        run_id=None,
        consecutive_changed_runs=0,
        labels={},
    )
    # After the purge the shell deletes the envoy: a later event starts a new one.
    fresh = apply_event(None, checkin(), purge_at + DAY, RULES)
    assert fresh.change is not None
    assert (fresh.change.from_status, fresh.change.version) == (None, 1)
    strict = Rules(default_interval_s=60, strict_enrollment=True)
    assert apply_event(None, checkin(), purge_at + DAY, strict).outcome == "not_enrolled"


def test_the_whole_life_tick_by_tick() -> None:
    state, _ = fold([enrolled(), run("ok")])
    changes = swept_until(state, T0 + 40 * DAY)
    assert [(c.from_status, c.to_status) for c in changes] == [
        (Status.CONVERGED, Status.OFFLINE),
        (Status.OFFLINE, Status.INACTIVE),
        (Status.INACTIVE, Status.PURGED),
    ]
    assert [c.version for c in changes] == [3, 4, 5]


def test_null_durations_mean_never() -> None:
    state, _ = fold([enrolled(), run("ok")])
    never = Rules(default_interval_s=60)
    assert swept_until(state, T0 + 10_000 * DAY, never)[-1].to_status is Status.OFFLINE
    no_purge = Rules(default_interval_s=60, deactivate_after_ms=DAY)
    changes = swept_until(state, T0 + 10_000 * DAY, no_purge)
    assert changes[-1].to_status is Status.INACTIVE
    inactive = sweep_envoy(state, T0 + 10_000 * DAY, no_purge).state
    assert next_deadline_ms(inactive, no_purge) is None


def test_revoked_envoys_do_not_go_inactive_and_shrink_after_purge_after() -> None:
    state, _ = fold([enrolled(env="prod"), run("changed"), revoked()])
    revoked_at = T0 + 2000
    assert (state.status, state.status_since_ms) == (Status.REVOKED, revoked_at)
    assert next_deadline_ms(state, RULES) == revoked_at + 30 * DAY
    assert sweep_envoy(state, revoked_at + 30 * DAY - 1, RULES).state == state
    swept = sweep_envoy(state, revoked_at + 30 * DAY, RULES)
    assert swept.change is None and not swept.purged
    small = swept.state
    assert small == forget_revoked(state)
    assert (small.revoked, small.forgotten, small.status) == (True, True, Status.REVOKED)
    assert (small.version, small.status_since_ms, small.offsets) == (
        state.version,
        state.status_since_ms,
        state.offsets,
    )
    assert (small.labels, small.history, small.recent_run_ids) == ({}, (), ())
    assert next_deadline_ms(small, RULES) is None
    # Its events stay dead-lettered `revoked`; an enrollment brings it back, version on.
    assert apply_event(small, checkin(), revoked_at + 31 * DAY, RULES).outcome == "revoked"
    back = apply_event(small, enrolled(), revoked_at + 31 * DAY, RULES)
    assert back.change is not None and back.state is not None
    assert (back.change.from_status, back.change.to_status) == (Status.REVOKED, Status.NO_DATA)
    assert back.change.version == state.version + 1
    assert not back.state.forgotten


def test_a_revocation_of_an_inactive_envoy_is_one_change() -> None:
    state, at = inactive_envoy()
    applied = apply_event(state, revoked(), at + DAY, RULES)
    assert applied.change is not None and applied.state is not None
    assert (applied.change.from_status, applied.change.to_status) == (
        Status.INACTIVE,
        Status.REVOKED,
    )
    assert applied.state.inactive_since_ms is None
    # Purge now counts from the revocation, and only shrinks it.
    assert next_deadline_ms(applied.state, RULES) == at + DAY + 30 * DAY


def test_counts_keep_inactive_and_revoked_beside_active() -> None:
    counts = FleetCounts.of_statuses([Status.CONVERGED, Status.OFFLINE])
    counts = counts.moved(Status.OFFLINE, Status.INACTIVE)
    assert (counts.active, counts.inactive, counts.revoked) == (1, 1, 0)
    counts = counts.moved(Status.CONVERGED, Status.REVOKED).moved(None, Status.REVOKED)
    assert (counts.active, counts.inactive, counts.revoked, counts.percent) == (0, 1, 2, None)
    counts = counts.moved(Status.INACTIVE, Status.PURGED).moved(Status.REVOKED, Status.NO_DATA)
    assert (counts.active, counts.inactive, counts.revoked) == (1, 0, 1)
    assert sorted(counts.as_dict()) == sorted(s.value for s in ACTIVE_STATUSES)
    assert sum(counts.as_dict().values()) == counts.active
    statuses = [Status.INACTIVE, Status.REVOKED, Status.REVOKED, Status.DRIFTED]
    assert FleetCounts.merged([counts, FleetCounts.of_statuses(statuses)]) == FleetCounts.from_dict(
        {"no_data": 1, "drifted": 1}, inactive=1, revoked=3
    )
