"""Explanations (SPEC 11.1) of every state `apply_event` and `sweep_envoy` can reach: the
rule is the status's rule, and the evidence is exactly the runs `derive_status` read,
checked against a record of the runs kept beside the fold (which runs were applied, in
which order, and which were late: what `apply_event` said of each), not against the
history the explanation reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.envoy import EnvoyState, Position, Rules, apply_event, sweep_envoy
from projections.explain import (
    INTENTIONAL_RULE,
    STATUS_RULES,
    Liveness,
    applied_runs,
    explain,
    late_in_history,
)
from projections.runs import RunSummary
from projections.status import derive_status
from tests.eventgen import T0, checkin, config_versions, enrolled, revoked, run, runs
from topics.events import Enrollment, InputEvent, Run
from topics.statuses import ACTIVE_STATUSES, RunOutcome, Status

MINUTE = 60_000
RULES = Rules(default_interval_s=60, deactivate_after_ms=30 * MINUTE, purge_after_ms=90 * MINUTE)
TOPIC_INDEX = {"Enrollment": 0, "Checkin": 1, "Run": 2}
LAST_RUN = {Status.CONVERGED, Status.DEGRADED, Status.FAILED}
STREAK = {Status.DRIFTED, Status.RELAPSED, Status.DIVERGED}


@dataclass(frozen=True)
class Sweep:
    after_ms: int


@dataclass(frozen=True)
class RunNow:
    """A run finishing at the record time it is applied at: runs in order, so that long
    streaks (and a history too short for them) occur, which random finish times rarely
    give."""

    results: tuple[str, ...]
    config_version: str | None


@dataclass(frozen=True)
class Burst:
    """So many changed runs in a row: streaks longer than the history."""

    runs: int


Step = InputEvent | Sweep | RunNow | Burst

#: Silences around the deadlines of `RULES` (offline after 2 minutes, inactive after 30
#: with the default interval; 10 and 30 with an envoy's own 300 s), and purges.
silences = st.sampled_from([1, 30_000, 3 * MINUTE, 11 * MINUTE, 31 * MINUTE, 100 * MINUTE])
steps: st.SearchStrategy[Step] = st.one_of(
    runs(),
    runs(errors=False),
    st.builds(
        RunNow,
        st.lists(st.sampled_from(["ok", "changed", "changed", "failed"]), max_size=3).map(tuple),
        config_versions,
    ),
    st.builds(RunNow, st.just(("changed",)), st.none()),
    st.builds(RunNow, st.just(("changed",)), st.none()),
    st.just(checkin()),
    st.builds(enrolled, st.just("web-01"), st.sampled_from([None, 60, 300])),
    st.builds(Sweep, silences),
    st.builds(Sweep, silences),
    st.just(revoked()),
    st.builds(Burst, st.integers(2, 14)),
)


@dataclass
class Applied:
    """What the fold saw: per applied run (not late), in order since the envoy's runs last
    started over (a re-enrollment after a revocation, or a purge), its key and outcome."""

    runs: list[tuple[tuple[str, int], RunOutcome, str | None]] = field(default_factory=list)


def expanded(script: list[Step]) -> list[InputEvent | Sweep | RunNow]:
    return [
        one
        for step in script
        for one in ([RunNow(("changed",), None)] * step.runs if isinstance(step, Burst) else [step])
    ]


def fold(
    script: list[Step], rules: Rules = RULES, positions: bool = True
) -> list[tuple[EnvoyState, Applied]]:
    """Every state reached, with the record of applied runs as of that state."""
    state: EnvoyState | None = None
    record = Applied()
    seen: list[tuple[EnvoyState, Applied]] = []
    now = T0
    for i, step in enumerate(expanded(script)):
        now += 1000
        if isinstance(step, Sweep):
            if state is None:
                continue
            now += step.after_ms
            swept = sweep_envoy(state, now, rules)
            state = None if swept.purged else swept.state
            if state is None:
                record = Applied()
        else:
            event: InputEvent = step if not isinstance(step, RunNow) else run(
                *step.results, finished_ms=now, config_version=step.config_version
            )  # fmt: skip
            position = Position(TOPIC_INDEX[type(event).__name__], i) if positions else None
            # A re-enrollment after a revocation starts the envoy's runs over.
            if isinstance(event, Enrollment) and state is not None and state.revoked:
                record = Applied() if event.action == "enrolled" else record
            applied = apply_event(state, event, now, rules, position)
            state = applied.state
            if isinstance(event, Run) and applied.outcome == "applied":
                assert applied.run_outcome is not None
                key = (event.run_id, position.offset if position else -1)
                record.runs.append((key, applied.run_outcome, event.config_version))
        if state is not None:
            seen.append((state, Applied(list(record.runs))))
    return seen


def key(run: RunSummary) -> tuple[str, int]:
    return (run.run_id, run.offset)


def check(state: EnvoyState, record: Applied, rules: Rules = RULES) -> None:
    explained = explain(state, rules)
    got = [key(r) for r in explained.evidence]
    in_history = {key(r) for r in state.history}
    assert explained.rule.status == state.status
    if state.status in ACTIVE_STATUSES:
        # The status is the one section 4's table gives for what it reads, and the rule
        # named is that row (or 10.1's, for an intentional last run).
        assert state.status == derive_status(
            offline=state.offline,
            last_outcome=state.last_outcome,
            consecutive_changed=state.consecutive_changed,
        )
        intentional = state.last_outcome is RunOutcome.INTENTIONAL
        want = INTENTIONAL_RULE if state.status is Status.CONVERGED and intentional else None
        assert explained.rule == (want or STATUS_RULES[state.status])
        assert explained.rule.section == ("10.1" if want else "4")
    if state.status in LAST_RUN:
        (last_key, last_outcome, _) = record.runs[-1]
        assert got == [last_key]
        assert last_outcome is state.last_outcome
        assert explained.evidence[0].outcome is state.last_outcome
    elif state.status in STREAK:
        streak = []
        for run_key, outcome, _ in reversed(record.runs):
            if outcome is not RunOutcome.CHANGED:
                break
            streak.append(run_key)
        assert len(streak) == state.consecutive_changed
        # As far as the history reaches: the newest runs of the streak, and those left
        # out are not in the history at all.
        assert got == streak[: len(got)]
        assert not in_history & set(streak[len(got) :])
        assert explained.streak_truncated == (len(got) < len(streak))
        assert all(r.outcome is RunOutcome.CHANGED for r in explained.evidence)
    else:
        assert got == []
        assert not explained.streak_truncated
    if record.runs and not state.forgotten:  # a revoked envoy shrunk after purge_after
        assert explained.last_run_version == record.runs[-1][2]
    assert explained.applied_version == state.config_version
    check_liveness(state, explained.liveness, rules)


def check_liveness(state: EnvoyState, liveness: Liveness, rules: Rules) -> None:
    """The deadlines named are those the sweep acts on."""
    if state.revoked:
        assert (liveness.offline_at_ms, liveness.inactive_at_ms) == (None, None)
        return
    if state.status is Status.INACTIVE:
        assert liveness.inactive_at_ms == state.status_since_ms
        return
    offline_at, inactive_at = liveness.offline_at_ms, liveness.inactive_at_ms
    assert offline_at is not None and inactive_at is not None
    if not state.offline and offline_at < inactive_at:
        assert not sweep_envoy(state, offline_at - 1, rules).state.offline
        assert sweep_envoy(state, offline_at, rules).state.status is Status.OFFLINE
    assert sweep_envoy(state, inactive_at - 1, rules).state.status is not Status.INACTIVE
    assert sweep_envoy(state, inactive_at, rules).state.status is Status.INACTIVE


@settings(max_examples=1000)
@given(st.lists(steps, min_size=5, max_size=60), st.booleans())
def test_every_reachable_state_is_explained_by_its_rule_and_the_runs_it_read(
    script: list[Step], intentional_changes: bool
) -> None:
    rules = Rules(
        default_interval_s=60,
        deactivate_after_ms=30 * MINUTE,
        purge_after_ms=90 * MINUTE,
        intentional_changes=intentional_changes,
    )
    for state, record in fold([enrolled(), *script], rules):
        check(state, record, rules)


@settings(max_examples=200)
@given(st.lists(st.one_of(runs(), runs(errors=False)), max_size=30))
def test_late_runs_are_told_from_applied_ones_by_their_offsets(history: list[Run]) -> None:
    """Random finish times make most runs late: the history's late flags are exactly the
    runs `apply_event` called late (as far as they are in the history)."""
    state: EnvoyState | None = None
    late: dict[tuple[str, int], bool] = {}
    events: list[InputEvent] = [enrolled(), *history]
    for i, event in enumerate(events):
        position = Position(TOPIC_INDEX[type(event).__name__], i)
        applied = apply_event(state, event, T0 + i, RULES, position)
        state = applied.state
        if isinstance(event, Run) and applied.outcome in ("applied", "late"):
            late[(event.run_id, i)] = applied.outcome == "late"
    assert state is not None
    flags = late_in_history(state.history)
    assert [late[key(r)] for r in state.history] == list(flags)


def test_a_streak_longer_than_the_history_is_truncated() -> None:
    script: list[Step] = [RunNow(("ok",), None), *[RunNow(("changed",), None)] * 13]
    state, record = fold([enrolled(), *script])[-1]
    explained = explain(state, RULES)
    assert state.status is Status.DIVERGED and state.consecutive_changed == 13
    assert len(explained.evidence) == 10 and explained.streak_truncated
    check(state, record)


def test_a_late_run_is_not_evidence_even_where_the_history_sorts_it_into_the_streak() -> None:
    """Runs A (10 s) and B (20 s) change, then C (15 s, late) changes too: the history reads
    B, C, A, and the envoy is relapsed by B and A. The same history can come from other
    orders (C applied before B: diverged), which only the offsets tell apart."""
    a, b, c = (run("changed", finished_ms=T0 + s * 1000) for s in (10, 20, 15))
    state, record = fold([enrolled(), a, b, c])[-1]
    assert [r.run_id for r in state.history] == [b.run_id, c.run_id, a.run_id]
    explained = explain(state, RULES)
    assert state.status is Status.RELAPSED
    assert [r.run_id for r in explained.evidence] == [b.run_id, a.run_id]
    check(state, record)
    state, record = fold([enrolled(), a, c, b])[-1]
    assert state.status is Status.DIVERGED
    assert [r.run_id for r in explain(state, RULES).evidence] == [b.run_id, c.run_id, a.run_id]


def test_an_intentional_run_is_named_by_section_10_1() -> None:
    v1 = run("changed", config_version="v1", finished_ms=T0 + 1000)
    v2 = run("changed", config_version="v2", finished_ms=T0 + 2000)
    state, record = fold([enrolled(), v1, v2])[-1]
    explained = explain(state, RULES)
    assert state.status is Status.CONVERGED
    assert explained.rule is INTENTIONAL_RULE
    assert [r.run_id for r in explained.evidence] == [v2.run_id]
    assert explained.evidence[0].outcome is RunOutcome.INTENTIONAL
    assert (explained.applied_version, explained.last_run_version) == ("v2", "v2")
    check(state, record)


@given(st.lists(st.one_of(runs(), runs(errors=False)), max_size=20))
def test_without_offsets_runs_in_order_are_still_read_exactly(history: list[Run]) -> None:
    """Entries stored by a release that kept no offset (-1): their order cannot be told
    from the history, but runs that were never late are read exactly as with offsets."""
    in_order = sorted(history, key=lambda r: r.finished_at_ms)
    for (state, _), (with_offsets, record) in zip(
        fold([enrolled(), *in_order], positions=False),
        fold([enrolled(), *in_order]),
        strict=True,
    ):
        assert not any(late_in_history(state.history))
        got = [r.run_id for r in explain(state, RULES).evidence]
        assert got == [r.run_id for r in explain(with_offsets, RULES).evidence]
        check(with_offsets, record)


def test_without_offsets_a_streak_stops_at_a_run_that_did_not_change() -> None:
    """An unknown order can put a late clean run inside what looks like the streak: the
    evidence stops there rather than name a run the streak did not have."""
    a, b, c = (
        run(result, finished_ms=T0 + s * 1000)
        for result, s in (("changed", 10), ("changed", 20), ("ok", 15))
    )
    state = fold([enrolled(), a, b, c], positions=False)[-1][0]
    assert state.status is Status.RELAPSED
    explained = explain(state, RULES)
    assert [r.run_id for r in explained.evidence] == [b.run_id]
    assert explained.streak_truncated
    assert applied_runs(state.history) == state.history  # nothing could be told late


def test_statuses_read_from_liveness_name_no_run() -> None:
    states = [s for s, _ in fold([enrolled(), RunNow(("ok",), None), Sweep(3 * MINUTE)])]
    offline = states[-1]
    assert offline.status is Status.OFFLINE
    explained = explain(offline, RULES)
    assert explained.evidence == () and explained.rule is STATUS_RULES[Status.OFFLINE]
    assert explained.liveness.offline_at_ms == offline.status_since_ms
    gone = fold([enrolled(), RunNow(("ok",), None), revoked()])[-1][0]
    assert explain(gone, RULES).rule.section == "3"
    assert explain(gone, RULES).evidence == ()
