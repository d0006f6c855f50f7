"""Behaviour the other projection tests left unchecked, found by mutation testing
(scripts/mutation): what an operator sees of each rule (statuses, changes, counts, the
fields of an envoy's state), never how the rule computes it."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from projections.envoy import (
    Cause,
    EnvoyState,
    Position,
    Rules,
    StatusChange,
    Swept,
    apply_event,
    next_deadline_ms,
    sweep_envoy,
)
from projections.fleet import FleetCounts
from projections.groups import NONE_VALUE, OTHER_VALUE, bounded, in_group
from projections.history import DAY_MS, ConvergenceHistory, history_bucket_ms, record_point
from projections.liveness import parse_duration_ms
from projections.runs import RunSummary, bound_history_ids
from projections.status import parse_status_filter
from projections.threshold import ThresholdState, check_threshold, recovered
from tests.eventgen import T0, checkin, enrolled, iso, revoked, run
from topics.events import Enrollment, InputEvent
from topics.statuses import RunOutcome, Status

RULES = Rules(default_interval_s=60)
MINUTE = 60_000


def fold(events: list[InputEvent], rules: Rules = RULES) -> tuple[EnvoyState, list[StatusChange]]:
    """The events applied one second apart from T0; the final state and every change."""
    state: EnvoyState | None = None
    changes: list[StatusChange] = []
    for i, event in enumerate(events):
        applied = apply_event(state, event, T0 + i * 1000, rules)
        state = applied.state
        if applied.change:
            changes.append(applied.change)
    assert state is not None
    return state, changes


def revocation(envoy: str = "web-01", interval_s: int | None = None, **labels: str) -> Enrollment:
    return Enrollment(envoy, "revoked", iso(T0), labels, interval_s)


# -- enrollments and revocations ---------------------------------------------------------------


def test_a_revocation_before_any_enrollment_is_remembered_as_revoked() -> None:
    """An envoy revoked before it was ever seen: kept as revoked (so its events are
    refused), dated by the record, with the labels and interval the revocation names;
    nothing is published for an envoy nobody has seen."""
    applied = apply_event(None, revocation("db-07", 120, env="prod"), T0 + 5, RULES)
    assert (applied.change, applied.outcome) == (None, "applied")
    state = applied.state
    assert state is not None
    assert (state.envoy_id, state.revoked, state.status) == ("db-07", True, Status.REVOKED)
    assert (state.labels, state.interval_s) == ({"env": "prod"}, 120)
    assert (state.enrolled_at_ms, state.status_since_ms, state.version) == (T0 + 5, T0 + 5, 0)
    # Its check-ins are refused, and so is a second revocation (as a duplicate).
    assert apply_event(state, checkin("db-07"), T0 + 10, RULES).outcome == "revoked"
    again = apply_event(state, revocation("db-07"), T0 + 10, RULES)
    assert (again.state, again.change, again.outcome) == (state, None, "duplicate")


def test_an_envoy_revoked_before_its_enrollment_publishes_its_first_change_on_enrollment() -> None:
    state = apply_event(None, revocation("db-07"), T0, RULES).state
    applied = apply_event(state, enrolled("db-07", role="db"), T0 + 1000, RULES)
    assert applied.change == StatusChange(
        envoy_id="db-07",
        from_status=None,  # nothing was ever published for it
        to_status=Status.NO_DATA,
        at_ms=T0 + 1000,
        version=1,
        cause=Cause.ENROLLMENT,
        run_id=None,
        consecutive_changed_runs=0,
        labels={"role": "db"},
    )


def test_a_revoked_envoy_is_neither_offline_nor_stale() -> None:
    """Revoking an envoy that had gone silent (offline and stale): it leaves those alert
    conditions, and its one change is from offline to revoked, dated by the record."""
    state, _ = fold([enrolled(interval_s=60), checkin()])
    swept = sweep_envoy(state, T0 + 1000 + 10 * MINUTE, RULES).state
    assert (swept.status, swept.offline, swept.stale) == (Status.OFFLINE, True, True)
    applied = apply_event(swept, revoked(), T0 + 11 * MINUTE, RULES)
    assert applied.outcome == "applied"
    gone = applied.state
    assert gone is not None
    assert (gone.status, gone.revoked, gone.offline, gone.stale) == (
        Status.REVOKED,
        True,
        False,
        False,
    )
    assert gone.status_since_ms == T0 + 11 * MINUTE
    assert applied.change is not None
    assert (applied.change.from_status, applied.change.to_status, applied.change.at_ms) == (
        Status.OFFLINE,
        Status.REVOKED,
        T0 + 11 * MINUTE,
    )
    assert applied.change.version == swept.version + 1


def test_a_reenrollment_is_a_fresh_start() -> None:
    """An envoy that drifted twice, went offline and stale, and was revoked, comes back:
    no runs, no last sign of life, liveness counted from the re-enrollment, its new labels
    and interval; and its next change streak starts at one."""
    state, _ = fold([enrolled(interval_s=60, env="dev"), run("changed"), run("changed"), checkin()])
    assert (state.status, state.consecutive_changed) == (Status.RELAPSED, 2)
    state = sweep_envoy(state, T0 + 20 * MINUTE, RULES).state
    assert (state.offline, state.stale) == (True, True)
    gone = apply_event(state, revoked(), T0 + 21 * MINUTE, RULES).state
    assert gone is not None
    back_at = T0 + 30 * MINUTE
    applied = apply_event(gone, enrolled(interval_s=300, env="prod"), back_at, RULES)
    assert applied.outcome == "applied"
    back = applied.state
    assert back is not None
    assert (back.status, back.revoked, back.offline, back.stale) == (
        Status.NO_DATA,
        False,
        False,
        False,
    )
    assert (back.labels, back.interval_s, back.enrolled_at_ms) == ({"env": "prod"}, 300, back_at)
    assert (back.last_seen_ms, back.last_seen_at, back.last_outcome) == (None, None, None)
    assert (back.consecutive_changed, back.inactive_since_ms, back.forgotten) == (0, None, False)
    assert back.last_alive_ms == back_at
    assert next_deadline_ms(back, RULES) == back_at + 2 * 300_000 + 1
    assert applied.change is not None
    assert (applied.change.from_status, applied.change.labels) == (Status.REVOKED, {"env": "prod"})
    # Its first changed run after the return is a drift, not a third change in a row.
    after = apply_event(back, run("changed", finished_ms=back_at + 1000), back_at + 1000, RULES)
    assert after.state is not None
    assert (after.state.status, after.state.consecutive_changed) == (Status.DRIFTED, 1)
    assert after.change is not None and after.change.consecutive_changed_runs == 1


def test_a_reenrollment_of_a_forgotten_envoy_is_not_forgotten_any_more() -> None:
    rules = Rules(default_interval_s=60, purge_after_ms=DAY_MS)
    state, _ = fold([enrolled(), run("ok"), revoked()], rules)
    small = sweep_envoy(state, T0 + 2 * DAY_MS, rules).state
    assert small.forgotten
    back = apply_event(small, enrolled(), T0 + 3 * DAY_MS, rules).state
    assert back is not None and back.forgotten is False
    # Not forgotten: it is judged again (offline after two intervals).
    assert next_deadline_ms(back, rules) == T0 + 3 * DAY_MS + 2 * MINUTE + 1


def test_a_first_enrollment_is_dated_by_its_record() -> None:
    applied = apply_event(None, enrolled(interval_s=90, rack="r1"), T0 + 42, RULES)
    assert applied.change is not None and applied.state is not None
    assert (applied.change.at_ms, applied.change.from_status) == (T0 + 42, None)
    assert (applied.state.status_since_ms, applied.state.enrolled_at_ms) == (T0 + 42, T0 + 42)
    assert (applied.state.interval_s, applied.state.labels) == (90, {"rack": "r1"})
    assert applied.state.version == 1


# -- the convergence history (sparklines) ------------------------------------------------------


def test_history_buckets_are_one_interval_but_at_least_a_minute() -> None:
    """A day at one point per minute is MAX_POINTS - 1 buckets: an interval shorter than a
    minute still gets one point a minute."""
    assert history_bucket_ms(61) == 61_000
    assert history_bucket_ms(300) == 300_000
    assert history_bucket_ms(60) == MINUTE
    assert history_bucket_ms(30) == MINUTE
    assert history_bucket_ms(1) == MINUTE


def test_history_keeps_the_latest_value_of_each_bucket() -> None:
    start = T0 - T0 % MINUTE
    history = ConvergenceHistory(MINUTE)
    history = record_point(history, start + 10_000, 50.0)
    history = record_point(history, start + MINUTE + 5_000, 60.0)
    assert history.points == ((start, 50.0), (start + MINUTE, 60.0))
    # The same bucket again: its value replaced, the earlier buckets kept.
    history = record_point(history, start + MINUTE + 50_000, 70.0)
    assert history.points == ((start, 50.0), (start + MINUTE, 70.0))
    # The same value again changes nothing.
    assert record_point(history, start + MINUTE + 59_999, 70.0) == history
    # An empty fleet (None) is a point too.
    history = record_point(history, start + 2 * MINUTE, None)
    assert history.points[-1] == (start + 2 * MINUTE, None)
    # A clock step backwards never rewrites the past.
    assert record_point(history, start + 30_000, 10.0) == history


def test_history_keeps_a_day_and_one_point() -> None:
    half_day = DAY_MS // 2
    history = ConvergenceHistory(half_day)
    for i in range(5):
        history = record_point(history, i * half_day + 7, float(i))
    # A day is two half-day buckets: the points of the last day and the one before.
    assert history.points == ((2 * half_day, 2.0), (3 * half_day, 3.0), (4 * half_day, 4.0))
    # Buckets wider than a day keep one point, the latest.
    wide = ConvergenceHistory(2 * DAY_MS)
    for i in range(3):
        wide = record_point(wide, i * 2 * DAY_MS, float(i))
    assert wide.points == ((4 * DAY_MS, 2.0),)


# -- check-ins and runs ------------------------------------------------------------------------


def test_the_last_sign_of_life_shown_is_the_latest_checkin_or_run() -> None:
    state, _ = fold([enrolled()])
    finished = run("ok", finished_ms=T0 + 5000)
    after_run = apply_event(state, finished, T0 + 6000, RULES)
    assert after_run.outcome == "applied" and after_run.state is not None
    assert (after_run.state.last_seen_ms, after_run.state.last_seen_at) == (
        T0 + 6000,
        finished.finished_at,
    )
    # A check-in in the same millisecond as the run is the newer news: its `at` is shown.
    ping = checkin(at_ms=T0 + 5500)
    after_ping = apply_event(after_run.state, ping, T0 + 6000, RULES)
    assert after_ping.outcome == "applied" and after_ping.state is not None
    assert (after_ping.state.last_seen_ms, after_ping.state.last_seen_at) == (T0 + 6000, ping.at)
    # An older record (a replay from another partition's lag) does not move it back.
    older = apply_event(after_ping.state, checkin(at_ms=T0), T0 + 1000, RULES)
    assert older.state is not None
    assert (older.state.last_seen_ms, older.state.last_seen_at) == (T0 + 6000, ping.at)


def test_a_status_change_by_a_run_is_dated_by_its_record() -> None:
    state, _ = fold([enrolled()])
    applied = apply_event(state, run("changed"), T0 + 77_000, RULES)
    assert applied.outcome == "applied" and applied.state is not None
    assert applied.change is not None and applied.change.at_ms == T0 + 77_000
    assert (applied.state.status, applied.state.status_since_ms) == (Status.DRIFTED, T0 + 77_000)
    # A run that changes no status leaves the date of the status alone.
    same = apply_event(applied.state, run("changed"), T0 + 78_000, RULES).state
    again = apply_event(same, run("ok"), T0 + 79_000, RULES).state
    assert again is not None and again.status_since_ms == T0 + 79_000
    steady = apply_event(again, run("ok"), T0 + 80_000, RULES).state
    assert steady is not None and steady.status_since_ms == T0 + 79_000


def test_a_checkin_is_never_late() -> None:
    state, _ = fold([enrolled(), run("ok", finished_ms=T0 + 50_000)])
    applied = apply_event(state, checkin(at_ms=T0), T0 + 60_000, RULES)
    assert (applied.outcome, applied.change, applied.run_outcome) == ("applied", None, None)


def test_a_replayed_run_older_than_the_last_eight_is_still_a_duplicate() -> None:
    """Run ids are remembered twice: the last eight applied, and the ten runs of the
    history; a run found in either is a duplicate."""
    runs = [run("ok", finished_ms=T0 + i * 1000) for i in range(1, 11)]
    state, _ = fold([enrolled(), *runs])
    assert len(state.history) == 10 and len(state.recent_run_ids) == 8
    for old in runs[:2]:  # in the history only
        replay = apply_event(state, old, T0 + 99_000, RULES)
        assert (replay.state, replay.change, replay.outcome) == (state, None, "duplicate")
    # A late run too old for the history is remembered among the last eight.
    ancient = run("failed", finished_ms=T0 - 10**6)
    with_ancient = apply_event(state, ancient, T0 + 99_000, RULES).state
    assert with_ancient is not None
    assert ancient.run_id not in [r.run_id for r in with_ancient.history]
    replay = apply_event(with_ancient, ancient, T0 + 99_500, RULES)
    assert replay.outcome == "duplicate"


def test_the_history_keeps_what_each_run_held() -> None:
    state, _ = fold(
        [enrolled(), run("a:changed", "a:changed", "b:failed", "c:ok", module_errors=("d",))]
    )
    (summary,) = state.history
    assert summary.finished_at == state.last_seen_at
    assert (summary.changed_count, summary.failed_count, summary.errored_modules_count) == (2, 1, 2)
    assert (summary.changed, summary.failed, summary.errored_modules) == (
        ("r0", "r1"),
        ("r2",),
        ("b", "d"),
    )


# -- sweeps and the lifecycle ------------------------------------------------------------------

LIFECYCLE = Rules(default_interval_s=60, deactivate_after_ms=7 * DAY_MS, purge_after_ms=30 * DAY_MS)


def test_sweeps_report_no_stale_transition_but_the_one_into_stale() -> None:
    state, _ = fold([enrolled(interval_s=60), checkin()], LIFECYCLE)
    seen = T0 + 1000
    offline = sweep_envoy(state, seen + 2 * MINUTE + 1, LIFECYCLE)
    assert offline.became_stale is False and offline.purged is False
    stale = sweep_envoy(offline.state, seen + 3 * MINUTE + 1, LIFECYCLE)
    assert stale.became_stale is True and stale.change is None
    inactive = sweep_envoy(stale.state, seen + 7 * DAY_MS, LIFECYCLE)
    assert inactive.became_stale is False and inactive.purged is False
    # Inactive: silent, so still marked offline, and no longer waiting to go stale.
    assert (inactive.state.status, inactive.state.offline) == (Status.INACTIVE, True)
    waiting = sweep_envoy(inactive.state, seen + 8 * DAY_MS, LIFECYCLE)
    assert waiting == Swept(inactive.state, None, False)
    purged = sweep_envoy(inactive.state, seen + 40 * DAY_MS, LIFECYCLE)
    assert (purged.became_stale, purged.purged) == (False, True)
    assert purged.state.status is Status.PURGED
    assert purged.change is not None and purged.change.to_status is Status.PURGED


def test_an_envoy_going_inactive_straight_from_converged_is_marked_offline() -> None:
    state, _ = fold([enrolled(), run("ok")], LIFECYCLE)
    swept = sweep_envoy(state, T0 + 30 * DAY_MS, LIFECYCLE)
    assert swept.became_stale is False
    assert (swept.state.status, swept.state.offline, swept.state.stale) == (
        Status.INACTIVE,
        True,
        False,
    )


def test_an_inactive_envoy_stored_before_inactive_since_was_kept_purges_from_its_status() -> None:
    """State written before `inactive_since_ms` existed: the purge counts from the date of
    its status, the change to inactive."""
    since = T0 + DAY_MS
    old = EnvoyState(envoy_id="web-01", status=Status.INACTIVE, status_since_ms=since, offline=True)
    assert next_deadline_ms(old, LIFECYCLE) == since + 30 * DAY_MS
    assert not sweep_envoy(old, since + 30 * DAY_MS - 1, LIFECYCLE).purged
    assert sweep_envoy(old, since + 30 * DAY_MS, LIFECYCLE).purged


def test_a_revoked_envoy_shrinks_to_what_recognises_its_replays() -> None:
    """After purge_after a revoked envoy keeps its id, enrollment time, last finish time,
    stale episodes and offsets: a redelivery is still recognised and its next stale
    alert id is new."""
    state: EnvoyState | None = None
    last = run("changed", finished_ms=T0 + 3000)
    events: list[InputEvent] = [enrolled("db-02", interval_s=60), checkin("db-02"), last]
    for offset, event in enumerate(events):
        topic = 0 if isinstance(event, Enrollment) else (2 if event is last else 1)
        state = apply_event(
            state, event, T0 + offset * 1000, LIFECYCLE, Position(topic, 40 + offset)
        ).state
    assert state is not None
    state = sweep_envoy(state, T0 + 10 * MINUTE, LIFECYCLE).state
    assert state.stale_episodes == 1
    revoked_at = T0 + 11 * MINUTE
    state = apply_event(state, revoked("db-02"), revoked_at, LIFECYCLE, Position(0, 50)).state
    assert state is not None
    swept = sweep_envoy(state, revoked_at + 30 * DAY_MS, LIFECYCLE)
    assert swept == Swept(swept.state, None, False)
    small = swept.state
    assert (small.envoy_id, small.enrolled_at_ms, small.last_run_finished_ms) == (
        "db-02",
        T0,
        T0 + 3000,
    )
    assert (small.stale_episodes, small.offsets, small.forgotten) == (1, (50, 41, 42), True)
    # Nothing more to do for it: later sweeps change nothing.
    assert sweep_envoy(small, revoked_at + 90 * DAY_MS, LIFECYCLE) == Swept(small, None, False)
    assert sweep_envoy(state, revoked_at + DAY_MS, LIFECYCLE) == Swept(state, None, False)


# -- what the history keeps of ids (SPEC 10.9) -------------------------------------------------


def summary(n: int, changed: tuple[str, ...] = (), errored: tuple[str, ...] = ()) -> RunSummary:
    outcome = RunOutcome.PARTIAL if errored else RunOutcome.CHANGED
    return RunSummary(
        f"run-{n}",
        iso(T0 + n),
        T0 + n,
        outcome,
        changed,
        (),
        errored,
        len(changed),
        0,
        len(errored),
    )


def kept_ids(history: tuple[RunSummary, ...]) -> list[int]:
    return [len(r.changed) + len(r.failed) + len(r.errored_modules) for r in history]


def test_ids_that_fill_the_budget_exactly_are_all_kept() -> None:
    """An id costs its JSON text and 3 bytes: 64 ids of 509 characters are 32 KiB."""
    history = tuple(
        summary(n, tuple(f"{n}{i:02}".ljust(509, "x") for i in range(16))) for n in range(4)
    )
    assert bound_history_ids(history) == history
    one_more = (summary(9, ("y",)), *history)
    bounded = bound_history_ids(one_more)
    assert kept_ids(bounded) == [1, 16, 16, 16, 15]
    # Counts and outcomes never change.
    assert [(r.changed_count, r.outcome) for r in bounded] == [
        (r.changed_count, r.outcome) for r in one_more
    ]


def test_the_newest_ids_are_kept_and_the_oldest_dropped_from_the_first_that_does_not_fit() -> None:
    """Ten runs of 20 errored modules, 20 failed and 20 changed ids of 60 characters (63
    bytes each): 520 ids fit in 32 KiB, newest run first."""

    def full(n: int) -> RunSummary:
        ids = tuple(f"{n}-{i:02}".ljust(60, "z") for i in range(60))
        return RunSummary(
            f"run-{n}",
            iso(T0 + n),
            T0 + n,
            RunOutcome.PARTIAL,
            ids[:20],
            ids[20:40],
            ids[40:],
            20,
            20,
            20,
        )

    history = tuple(full(n) for n in range(10, 0, -1))
    bounded = bound_history_ids(history)
    assert kept_ids(bounded) == [60] * 8 + [40, 0]
    ninth = bounded[8]
    # Errored modules first, then failed, then changed: the ninth run lost its changed ids.
    assert (ninth.errored_modules, ninth.failed, ninth.changed) == (
        history[8].errored_modules,
        history[8].failed,
        (),
    )
    assert bound_history_ids(bounded) == bounded  # idempotent


def test_ids_of_escaped_characters_are_counted_at_their_escaped_size() -> None:
    """A NUL costs 6 bytes in JSON: 200 ids of 27 NULs (165 bytes each) overflow the
    budget by a little over one id, so two are dropped."""
    nuls = tuple("\x00" * 27 for _ in range(20))
    history = tuple(summary(n, nuls) for n in range(10, 0, -1))
    assert kept_ids(bound_history_ids(history)) == [20] * 9 + [18]


def test_a_run_with_ids_bounds_the_history_it_joins() -> None:
    """A history just within its budget (60 ids of 546 bytes), then a run whose few small
    ids overflow it, changed ids or only errored modules: the oldest id goes."""
    state: EnvoyState | None = fold([enrolled()])[0]
    for n in range(3):
        later = run(*(["changed"] * 20), finished_ms=T0 + 10_000 * (n + 1))
        state = apply_event(state, later, T0 + n, RULES).state
    assert state is not None
    fat = tuple(
        replace(r, changed=tuple(f"{r.run_id}-{i:02}".ljust(543, "q") for i in range(20)))
        for r in state.history
    )
    within = replace(state, history=fat)
    changed = run(*(["changed"] * 20), finished_ms=T0 + 90_000)
    errors = run(module_errors=tuple(f"m{i:02}" for i in range(20)), finished_ms=T0 + 90_000)
    for newest in (changed, errors):
        after = apply_event(within, newest, T0 + 90_000, RULES).state
        assert after is not None
        assert kept_ids(after.history) == [20, 20, 20, 19]
        assert after.history[-1].changed_count == 20


# -- configuration values ----------------------------------------------------------------------


def test_durations_in_every_unit_and_as_numbers_of_seconds() -> None:
    assert parse_duration_ms("1ms") == 1
    assert parse_duration_ms("250ms") == 250
    assert parse_duration_ms("90s") == 90_000
    assert parse_duration_ms("5m") == 300_000
    assert parse_duration_ms("1.5h") == 5_400_000
    assert parse_duration_ms(" 2d ") == 172_800_000
    assert parse_duration_ms("45") == 45_000
    assert parse_duration_ms(90) == 90_000
    assert parse_duration_ms(0.25) == 250


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (True, "not a duration: True"),
        ("5 minutes", r"not a duration: '5 minutes' \(use e.g. 90s, 5m, 1h\)"),
        ("-5m", "not a duration: '-5m'"),
        ("0s", "duration must be positive: '0s'"),
        ("0.5ms", "duration must be positive: '0.5ms'"),
        (0, "duration must be positive: 0"),
        (float("inf"), "duration must be positive: inf"),
        (float("nan"), "duration must be positive: nan"),
        ("1" * 400, "duration must be positive"),
    ],
)
def test_what_is_not_a_duration_is_refused_with_its_reason(bad: str | float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(bad)


def test_a_status_filter_skips_empty_words_and_names_every_choice_when_wrong() -> None:
    assert parse_status_filter("errors,relapsed") == {
        Status.FAILED,
        Status.DEGRADED,
        Status.RELAPSED,
    }
    assert parse_status_filter(" ,drifted,, converged ,") == {Status.DRIFTED, Status.CONVERGED}
    known = ", ".join([*(s.value for s in Status), "errors"])
    with pytest.raises(ValueError) as refused:
        parse_status_filter("drifted,nope")
    assert str(refused.value) == f"unknown status 'nope'; use one of: {known}"


def test_the_convergence_percent_is_rounded_to_two_decimals() -> None:
    counts = FleetCounts.of_statuses([Status.CONVERGED, Status.CONVERGED, Status.DRIFTED])
    assert counts.percent == 66.67
    assert FleetCounts.of_statuses([Status.CONVERGED] * 5 + [Status.FAILED] * 2).percent == 71.43
    assert FleetCounts.of_statuses([Status.CONVERGED]).percent == 100.0
    assert FleetCounts.of_statuses([Status.OFFLINE]).percent == 0.0


def test_a_recovered_threshold_is_at_or_above_again() -> None:
    state, fired = check_threshold(ThresholdState(), 50.0, 90.0)
    assert (state, fired) == (ThresholdState(below=True, crossings=1), True)
    after, fired = check_threshold(state, 95.0, 90.0)
    assert (after, fired) == (ThresholdState(below=False, crossings=1), False)
    assert recovered(state, after)


def test_an_envoy_is_in_the_group_of_its_label_value_or_in_none() -> None:
    labels = {"env": "prod"}
    assert in_group(labels, "env", "prod")
    assert not in_group(labels, "env", "dev")
    assert not in_group(labels, "env", NONE_VALUE)
    assert in_group(labels, "role", NONE_VALUE)
    assert not in_group(labels, "role", "prod")


# -- more of enrollments -----------------------------------------------------------------------


def test_an_implicit_enrollment_names_the_envoy_and_dates_it_by_the_record() -> None:
    applied = apply_event(None, checkin("db-09", at_ms=T0 - 5), T0 + 7, RULES)
    state, change = applied.state, applied.change
    assert state is not None and change is not None
    assert (state.envoy_id, state.enrolled_at_ms, state.last_seen_ms) == ("db-09", T0 + 7, T0 + 7)
    assert (state.status_since_ms, change.envoy_id, change.at_ms) == (T0 + 7, "db-09", T0 + 7)


def test_an_enrollment_read_at_an_offset_is_published_and_its_offset_kept() -> None:
    applied = apply_event(None, enrolled(env="prod"), T0, RULES, Position(0, 17))
    assert (applied.outcome, applied.run_outcome) == ("applied", None)
    assert applied.change is not None and applied.change.to_status is Status.NO_DATA
    assert applied.state is not None and applied.state.offsets == (17, -1, -1)
    gone = apply_event(applied.state, revoked(), T0 + 1, RULES, Position(0, 18))
    assert gone.outcome == "applied" and gone.change is not None
    assert gone.change.to_status is Status.REVOKED
    refused = apply_event(gone.state, checkin(), T0 + 2, RULES, Position(1, 3))
    assert (refused.outcome, refused.change) == ("revoked", None)
    assert refused.state is not None and refused.state.offsets == (18, 3, -1)


def test_a_reenrollment_publishes_its_change_dated_by_the_record() -> None:
    state, _ = fold([enrolled(), revoked()])
    applied = apply_event(state, enrolled(), T0 + 9_999, RULES)
    assert applied.change is not None and applied.state is not None
    assert (applied.change.at_ms, applied.state.status_since_ms) == (T0 + 9_999, T0 + 9_999)


def test_an_enrollment_reactivating_an_inactive_envoy_takes_its_interval() -> None:
    state, _ = fold([enrolled(interval_s=60), run("changed")], LIFECYCLE)
    inactive = sweep_envoy(state, T0 + 4 * MINUTE, LIFECYCLE).state
    assert (inactive.offline, inactive.stale) == (True, True)
    inactive = sweep_envoy(inactive, T0 + 8 * DAY_MS, LIFECYCLE).state
    assert inactive.status is Status.INACTIVE
    back_at = T0 + 9 * DAY_MS
    applied = apply_event(inactive, enrolled(interval_s=600), back_at, LIFECYCLE)
    back = applied.state
    assert back is not None and applied.change is not None
    assert (back.status, back.offline, back.stale, back.interval_s) == (
        Status.DRIFTED,
        False,
        False,
        600,
    )
    assert (applied.change.at_ms, back.status_since_ms) == (back_at, back_at)
    assert next_deadline_ms(back, LIFECYCLE) == back_at + 2 * 600_000 + 1


def test_an_enrollment_of_a_live_envoy_updates_its_labels_and_interval() -> None:
    state, _ = fold([enrolled(interval_s=60, env="dev"), run("ok")])
    same = apply_event(state, enrolled(interval_s=60, env="dev"), T0 + 10_000, RULES)
    assert (same.state, same.change, same.outcome) == (state, None, "duplicate")
    relabelled = apply_event(state, enrolled(interval_s=60, env="prod"), T0 + 10_000, RULES)
    assert (relabelled.change, relabelled.outcome) == (None, "applied")
    assert relabelled.state is not None
    assert (relabelled.state.labels, relabelled.state.interval_s) == ({"env": "prod"}, 60)
    assert relabelled.state.status is Status.CONVERGED
    slower = apply_event(state, enrolled(interval_s=120, env="dev"), T0 + 10_000, RULES)
    assert slower.outcome == "applied" and slower.state is not None
    assert (slower.state.labels, slower.state.interval_s) == ({"env": "dev"}, 120)


# -- groups ------------------------------------------------------------------------------------


def test_bounded_groups_leave_out_values_without_envoys() -> None:
    two = FleetCounts.of_statuses([Status.CONVERGED, Status.DRIFTED])
    groups = {
        "env": {"prod": two, "dev": FleetCounts(), "qa": FleetCounts(), NONE_VALUE: FleetCounts()}
    }
    assert bounded(groups, ["env"], cap=5, pinned={"env": frozenset({"qa"})}) == {
        "env": {"prod": two}
    }
    # Named by size, without a budget nothing fits: every value is summed under (other).
    assert bounded(groups, ["env"], cap=5, size=lambda _: 1) == {"env": {OTHER_VALUE: two}}
