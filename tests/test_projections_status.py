"""One case per row and edge of the SPEC section 4 status table, through apply_event."""

from __future__ import annotations

from typing import Any

import pytest

from projections.envoy import (
    Cause,
    EnvoyState,
    Position,
    Rules,
    StatusChange,
    apply_event,
    next_deadline_ms,
    sweep_envoy,
)
from projections.liveness import StaleAfter
from projections.runs import classify_run
from projections.status import parse_status_filter
from tests.eventgen import T0, checkin, enrolled, revoked, run
from topics.events import InputEvent, Run
from topics.statuses import RunOutcome, Status

RULES = Rules(default_interval_s=60)


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


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([], Status.NO_DATA),
        ([run("ok")], Status.CONVERGED),
        ([run("ok", "ok", "ok")], Status.CONVERGED),
        ([run()], Status.CONVERGED),  # a run with no modules has zero failures
        ([run("changed")], Status.DRIFTED),
        ([run("changed"), run("ok", "changed")], Status.RELAPSED),
        ([run("changed"), run("changed"), run("changed")], Status.DIVERGED),
        ([run("changed")] * 0 + [run("changed") for _ in range(5)], Status.DIVERGED),
        ([run("changed"), run("changed"), run("ok")], Status.CONVERGED),  # clean resets
        ([run("changed"), run("ok"), run("changed")], Status.DRIFTED),
        ([run("failed")], Status.FAILED),
        ([run("files:failed", "files:ok")], Status.FAILED),  # one module, it errored
        ([run("files:failed", "packages:failed")], Status.FAILED),
        ([run(module_errors=("users",))], Status.FAILED),  # only module, via module_errors
        ([run("files:ok", module_errors=("files",))], Status.FAILED),
        ([run("files:ok", "services:failed")], Status.DEGRADED),
        ([run("files:changed", "services:failed")], Status.DEGRADED),  # failure beats change
        ([run("files:ok", module_errors=("users",))], Status.DEGRADED),
        ([run("changed"), run("a:ok", "b:failed"), run("changed")], Status.DRIFTED),
        ([run("changed"), run("changed"), run("failed"), run("changed")], Status.DRIFTED),
        ([run("changed"), run("changed"), run("a:ok", "b:failed")], Status.DEGRADED),
        ([run("failed"), run("ok")], Status.CONVERGED),
    ],
    ids=lambda v: "-" if isinstance(v, list) else str(v),
)
def test_status_table_rows(runs: list[InputEvent], expected: Status) -> None:
    state, _ = fold([enrolled(), *runs])
    assert state.status == expected


def test_consecutive_counts_only_changed_runs_without_failures() -> None:
    state, _ = fold([enrolled(), run("changed"), run("changed"), run("changed"), run("changed")])
    assert state.consecutive_changed == 4
    state, _ = fold([enrolled(), run("changed"), run("a:changed", "b:failed")])
    assert state.consecutive_changed == 0


def test_enrollment_gives_no_data_with_from_null() -> None:
    _, changes = fold([enrolled(role="web")])
    (change,) = changes
    assert (change.from_status, change.to_status, change.version, change.cause) == (
        None,
        Status.NO_DATA,
        1,
        Cause.ENROLLMENT,
    )
    assert change.labels == {"role": "web"}


def test_implicit_enrollment_by_first_run_goes_straight_to_its_status() -> None:
    first = run("changed")
    state, changes = fold([first])
    assert [(c.from_status, c.to_status, c.version, c.cause) for c in changes] == [
        (None, Status.DRIFTED, 1, Cause.RUN)
    ]
    assert changes[0].run_id == first.run_id
    assert changes[0].consecutive_changed_runs == 1
    assert state.labels == {}
    # No own interval: it follows the configured default (None stored, 60 s judged).
    assert state.interval_s is None
    assert state.effective_interval_s(RULES) == RULES.default_interval_s


def test_implicit_enrollment_by_checkin_gives_no_data() -> None:
    _, changes = fold([checkin()])
    assert [(c.from_status, c.to_status, c.cause) for c in changes] == [
        (None, Status.NO_DATA, Cause.CHECKIN)
    ]


def test_strict_enrollment_refuses_unknown_envoys() -> None:
    strict = Rules(default_interval_s=60, strict_enrollment=True)
    applied = apply_event(None, run("ok"), T0, strict)
    assert (applied.state, applied.change, applied.outcome) == (None, None, "not_enrolled")
    state, _ = fold([enrolled(), run("ok")], strict)
    assert state.status == Status.CONVERGED


def test_versions_increase_by_one_and_non_changes_publish_nothing() -> None:
    _, changes = fold(
        [enrolled(), run("ok"), run("ok"), checkin(), run("changed"), run("changed"), run("ok")]
    )
    assert [(c.from_status, c.to_status) for c in changes] == [
        (None, Status.NO_DATA),
        (Status.NO_DATA, Status.CONVERGED),
        (Status.CONVERGED, Status.DRIFTED),
        (Status.DRIFTED, Status.RELAPSED),
        (Status.RELAPSED, Status.CONVERGED),
    ]
    assert [c.version for c in changes] == [1, 2, 3, 4, 5]


def test_never_checked_in_goes_offline_counted_from_enrollment() -> None:
    state, _ = fold([enrolled(interval_s=60)])
    assert sweep_envoy(state, T0 + 120_000, RULES).change is None  # exactly 2 x
    swept = sweep_envoy(state, T0 + 120_001, RULES)
    assert swept.change is not None
    assert (swept.change.from_status, swept.change.to_status, swept.change.cause) == (
        Status.NO_DATA,
        Status.OFFLINE,
        Cause.SWEEP,
    )
    assert swept.state.status_since_ms == T0 + 120_001


def test_offline_beats_every_run_status_and_a_checkin_restores_it() -> None:
    state, _ = fold([enrolled(interval_s=60), run("changed"), run("changed")])
    assert state.status == Status.RELAPSED
    last_seen = state.last_seen_ms
    assert last_seen is not None
    swept = sweep_envoy(state, last_seen + 120_001, RULES)
    assert swept.state.status == Status.OFFLINE
    again = sweep_envoy(swept.state, last_seen + 130_000, RULES)
    assert again.change is None  # offline once, not on every sweep
    back = apply_event(swept.state, checkin(), last_seen + 140_000, RULES)
    assert back.change is not None
    assert (back.change.from_status, back.change.to_status, back.change.cause) == (
        Status.OFFLINE,
        Status.RELAPSED,
        Cause.CHECKIN,
    )


def test_offline_uses_the_record_timestamp_not_the_envoys_clock() -> None:
    state, _ = fold([enrolled(interval_s=60)])
    # The envoy's `at` claims a far future; the record timestamp is what counts.
    applied = apply_event(state, checkin(at_ms=T0 + 10**9), T0 + 1000, RULES)
    assert applied.state is not None
    assert applied.state.last_seen_ms == T0 + 1000
    assert sweep_envoy(applied.state, T0 + 1000 + 120_001, RULES).state.offline


def test_stale_fires_once_and_again_only_after_a_checkin() -> None:
    state, _ = fold([enrolled(interval_s=60), checkin()])
    seen = state.last_seen_ms
    assert seen is not None
    policy = Rules(default_interval_s=60, stale_after=StaleAfter.parse(3))
    assert not sweep_envoy(state, seen + 180_000, policy).became_stale
    first = sweep_envoy(state, seen + 180_001, policy)
    assert first.became_stale and first.state.stale_episodes == 1
    assert not sweep_envoy(first.state, seen + 500_000, policy).became_stale
    refreshed = apply_event(first.state, checkin(), seen + 600_000, RULES).state
    assert refreshed is not None and not refreshed.stale
    second = sweep_envoy(refreshed, seen + 600_000 + 180_001, policy)
    assert second.became_stale and second.state.stale_episodes == 2


def test_stale_after_a_duration_is_independent_of_the_interval() -> None:
    state, _ = fold([enrolled(interval_s=900), checkin()])
    seen = state.last_seen_ms
    assert seen is not None
    policy = Rules(default_interval_s=60, stale_after=StaleAfter.parse("20m"))
    assert not sweep_envoy(state, seen + 1_200_000, policy).became_stale
    swept = sweep_envoy(state, seen + 1_200_001, policy)
    assert swept.became_stale
    assert swept.change is None  # stale is an alert condition, not a status


def test_next_deadline_is_the_earliest_pending_one() -> None:
    state, _ = fold([enrolled(interval_s=60), checkin()])
    seen = state.last_seen_ms
    assert seen is not None
    assert next_deadline_ms(state, RULES) == seen + 120_001
    offline = sweep_envoy(state, seen + 120_001, RULES).state
    assert next_deadline_ms(offline, RULES) == seen + 180_001
    gone = sweep_envoy(offline, seen + 180_001, RULES).state
    assert next_deadline_ms(gone, RULES) is None


def test_revoked_envoy_refuses_events_until_reenrolled() -> None:
    state, changes = fold([enrolled(), run("ok"), revoked()])
    assert state.status == Status.REVOKED
    assert (changes[-1].to_status, changes[-1].cause) == (Status.REVOKED, Cause.REVOCATION)
    assert apply_event(state, checkin(), T0 + 99_000, RULES).outcome == "revoked"
    assert apply_event(state, run("ok"), T0 + 99_000, RULES).outcome == "revoked"
    assert sweep_envoy(state, T0 + 10**9, RULES).change is None
    back = apply_event(state, enrolled(), T0 + 100_000, RULES)
    assert back.change is not None
    assert (back.change.from_status, back.change.to_status, back.change.cause) == (
        Status.REVOKED,
        Status.NO_DATA,
        Cause.ENROLLMENT,
    )
    assert back.state is not None and back.state.enrolled_at_ms == T0 + 100_000


def test_duplicate_run_id_changes_nothing() -> None:
    first = run("changed")
    state, _ = fold([enrolled(), first])
    again = apply_event(state, first, T0 + 50_000, RULES)
    assert (again.state, again.change, again.outcome) == (state, None, "duplicate")


def test_redelivered_record_by_offset_changes_nothing_even_for_enrollments() -> None:
    state = apply_event(None, enrolled(), T0, RULES, Position(0, 10)).state
    state = apply_event(state, revoked(), T0 + 1, RULES, Position(0, 11)).state
    state = apply_event(state, enrolled(), T0 + 2, RULES, Position(0, 12)).state
    assert state is not None and state.status == Status.NO_DATA
    replay = apply_event(state, revoked(), T0 + 1, RULES, Position(0, 11))
    assert (replay.state, replay.change, replay.outcome) == (state, None, "duplicate")


def test_late_run_is_kept_in_history_but_changes_nothing() -> None:
    newer = run("changed", finished_ms=T0 + 20_000)
    late = run("failed", finished_ms=T0 + 10_000)
    state, _ = fold([enrolled(), newer])
    applied = apply_event(state, late, T0 + 30_000, RULES)
    assert applied.outcome == "late"
    assert applied.change is None
    assert applied.state is not None
    assert applied.state.status == Status.DRIFTED
    assert [r.run_id for r in applied.state.history] == [newer.run_id, late.run_id]


def test_history_is_newest_first_with_changed_and_failed_resources() -> None:
    state, _ = fold([enrolled(), run("a:ok", "b:changed"), run("a:failed", "b:ok")])
    newest, oldest = state.history
    assert (newest.outcome, newest.failed, newest.changed) == (RunOutcome.PARTIAL, ("r0",), ())
    assert (oldest.outcome, oldest.changed) == (RunOutcome.CHANGED, ("r1",))


def test_classify_run_names_errored_modules() -> None:
    summary = classify_run(run("files:failed", "pkgs:ok", module_errors=("users",)))
    assert summary.errored_modules == ("files", "users")
    assert summary.outcome == RunOutcome.PARTIAL


def test_status_filter_aliases_and_errors() -> None:
    assert parse_status_filter("errors") == {Status.FAILED, Status.DEGRADED}
    assert parse_status_filter("relapsed,diverged") == {Status.RELAPSED, Status.DIVERGED}
    with pytest.raises(ValueError, match="unknown status 'relapse'"):
        parse_status_filter("relapse")


def test_envoys_without_their_own_interval_follow_a_changed_default() -> None:
    """An operator raising checkin.interval from 60 s to 180 s: an envoy enrolled under
    60 s without its own interval is judged by 180 s, so it is not offline at 120 s."""
    state, _ = fold([enrolled(), checkin()])
    seen = state.last_seen_ms
    assert seen is not None
    raised = Rules(default_interval_s=180)
    assert next_deadline_ms(state, raised) == seen + 360_001
    assert not sweep_envoy(state, seen + 120_001, raised).state.offline
    assert sweep_envoy(state, seen + 360_001, raised).state.offline
    # Under the old default the same state would have been offline at 120 s.
    assert sweep_envoy(state, seen + 120_001, RULES).state.offline


def test_an_envoys_own_interval_ignores_the_default() -> None:
    state, _ = fold([enrolled(interval_s=900), checkin()])
    seen = state.last_seen_ms
    assert seen is not None
    for default in (10, 60, 86_400):
        rules = Rules(default_interval_s=default)
        assert state.effective_interval_s(rules) == 900
        assert next_deadline_ms(state, rules) == seen + 1_800_001


def test_an_enrollment_dropping_its_interval_follows_the_default_again() -> None:
    state, _ = fold([enrolled(interval_s=900), checkin()])
    applied = apply_event(state, enrolled(), T0 + 99_000, RULES)
    assert applied.outcome == "applied" and applied.state is not None
    assert applied.state.interval_s is None
    assert applied.state.effective_interval_s(RULES) == 60


@pytest.mark.parametrize(("text", "number"), [("3", 3), (" 2.5 ", 2.5), ("+4", 4), ("10", 10)])
def test_stale_after_as_text_is_the_same_multiple_as_the_number(text: str, number: float) -> None:
    """Environment values arrive as text: "3" is 3 intervals, exactly as YAML's 3."""
    assert StaleAfter.parse(text) == StaleAfter.parse(number) == StaleAfter(float(number))


@pytest.mark.parametrize(("text", "ms"), [("20m", 1_200_000), ("90s", 90_000), ("1h", 3_600_000)])
def test_stale_after_with_a_unit_is_a_duration(text: str, ms: int) -> None:
    assert StaleAfter.parse(text) == StaleAfter(intervals=None, duration_ms=ms)


@pytest.mark.parametrize("bad", ["0", "-3", "0.0", "abc", "3x", float("inf"), float("nan"), True])
def test_stale_after_refuses_what_is_neither(bad: str | float) -> None:
    with pytest.raises(ValueError):
        StaleAfter.parse(bad)


# -- SPEC 10.1: intentional and corrective changes ---------------------------------------------


def versioned(*results: str, version: str | None, **kwargs: Any) -> Run:
    return run(*results, config_version=version, **kwargs)


def test_changes_under_a_new_version_are_intentional_and_converged() -> None:
    state, changes = fold(
        [
            enrolled(),
            run("changed"),
            run("changed"),  # relapsed, from changes without a version
            versioned("ok", version="v1"),
            versioned("changed", "ok", version="v2"),
        ]
    )
    assert state.status == Status.CONVERGED
    assert state.consecutive_changed == 0
    assert state.config_version == "v2"
    assert state.last_outcome == RunOutcome.INTENTIONAL
    assert state.history[0].outcome == RunOutcome.INTENTIONAL
    assert state.history[1].outcome == RunOutcome.CLEAN
    assert [c.to_status for c in changes][-2:] == [Status.RELAPSED, Status.CONVERGED]


def test_an_intentional_run_resets_the_count_of_a_diverged_envoy() -> None:
    state, _ = fold(
        [
            enrolled(),
            versioned("ok", version="v1"),
            *(versioned("changed", version="v1") for _ in range(3)),
            versioned("changed", version="v2"),
        ]
    )
    assert (state.status, state.consecutive_changed) == (Status.CONVERGED, 0)


def test_changes_again_under_the_same_version_drift_then_relapse() -> None:
    rollout: list[InputEvent] = [
        enrolled(),
        versioned("ok", version="v1"),
        versioned("changed", version="v2"),
    ]
    state, _ = fold([*rollout, versioned("changed", version="v2")])
    assert (state.status, state.consecutive_changed) == (Status.DRIFTED, 1)
    assert state.history[0].outcome == RunOutcome.CHANGED
    state, _ = fold([*rollout, versioned("changed", version="v2"), run("changed")])
    assert (state.status, state.consecutive_changed) == (Status.RELAPSED, 2)
    assert state.config_version == "v2"


def test_a_clean_run_with_a_new_version_is_clean_and_updates_the_memory() -> None:
    state, _ = fold([enrolled(), versioned("ok", version="v1"), versioned("ok", version="v2")])
    assert (state.status, state.last_outcome, state.config_version) == (
        Status.CONVERGED,
        RunOutcome.CLEAN,
        "v2",
    )
    # v2 is remembered now: changes under it are corrective.
    state, _ = fold(
        [
            enrolled(),
            versioned("ok", version="v1"),
            versioned("ok", version="v2"),
            versioned("changed", version="v2"),
        ]
    )
    assert state.status == Status.DRIFTED


def test_a_run_without_a_version_leaves_the_memory_alone() -> None:
    state, _ = fold([enrolled(), versioned("ok", version="v1"), run("changed")])
    assert (state.status, state.config_version) == (Status.DRIFTED, "v1")
    state, _ = fold(
        [enrolled(), versioned("ok", version="v1"), run("ok"), versioned("changed", version="v2")]
    )
    assert (state.status, state.config_version) == (Status.CONVERGED, "v2")


@pytest.mark.parametrize(
    ("results", "module_errors", "expected"),
    [
        (("a:changed", "b:failed"), (), Status.DEGRADED),
        (("failed",), (), Status.FAILED),
        (("a:changed", "b:ok"), ("b",), Status.DEGRADED),
    ],
    ids=["partial", "failed", "module_error"],
)
def test_a_run_with_errored_modules_is_judged_as_before_and_does_not_update_memory(
    results: tuple[str, ...], module_errors: tuple[str, ...], expected: Status
) -> None:
    first = versioned("ok", version="v1")
    errored = versioned(*results, version="v2", module_errors=module_errors)
    state, _ = fold([enrolled(), first, errored])
    assert state.status == expected
    assert state.config_version == "v1"
    # So the rollout's changes, once the module is fixed, are still intentional.
    state, _ = fold([enrolled(), first, errored, versioned("changed", version="v2")])
    assert state.status == Status.CONVERGED


def test_a_first_run_with_nothing_remembered_is_judged_as_in_section_4() -> None:
    state, _ = fold([enrolled(), versioned("changed", version="v1")])
    assert (state.status, state.last_outcome, state.config_version) == (
        Status.DRIFTED,
        RunOutcome.CHANGED,
        "v1",
    )
    # State of the first release remembers nothing either.
    old, _ = fold([enrolled(), run("ok")])
    assert old.config_version is None
    applied = apply_event(old, versioned("changed", version="v7"), T0 + 60_000, RULES)
    assert applied.state is not None and applied.state.status == Status.DRIFTED


def test_a_late_run_does_not_update_the_memory() -> None:
    newer = versioned("ok", version="v2", finished_ms=T0 + 20_000)
    late = versioned("ok", version="v3", finished_ms=T0 + 10_000)
    state, _ = fold([enrolled(), versioned("ok", version="v1", finished_ms=T0 + 5_000), newer])
    applied = apply_event(state, late, T0 + 30_000, RULES)
    assert (applied.outcome, applied.run_outcome) == ("late", RunOutcome.CLEAN)
    assert applied.state is not None and applied.state.config_version == "v2"
    after = apply_event(applied.state, versioned("changed", version="v3"), T0 + 40_000, RULES)
    assert after.state is not None and after.state.status == Status.CONVERGED


def test_intentional_changes_off_gives_the_section_4_rules() -> None:
    off = Rules(default_interval_s=60, intentional_changes=False)
    events: list[InputEvent] = [
        enrolled(),
        versioned("ok", version="v1"),
        versioned("changed", version="v2"),
    ]
    state, _ = fold(events, off)
    assert (state.status, state.consecutive_changed) == (Status.DRIFTED, 1)
    assert state.history[0].outcome == RunOutcome.CHANGED
    # The memory is still kept, so turning it on again judges the next rollout.
    assert state.config_version == "v2"
    assert fold(events)[0].status == Status.CONVERGED


def test_applied_names_the_run_outcome_for_the_runs_metric() -> None:
    state, _ = fold([enrolled(), versioned("ok", version="v1")])
    rollout = apply_event(state, versioned("changed", version="v2"), T0 + 60_000, RULES)
    assert rollout.run_outcome == RunOutcome.INTENTIONAL
    assert apply_event(state, checkin(), T0 + 60_000, RULES).run_outcome is None
    with_position = apply_event(state, run("a:ok", "b:failed"), T0 + 60_000, RULES, Position(2, 9))
    assert with_position.run_outcome == RunOutcome.PARTIAL
