"""Hypothesis properties of the pure rules: incremental state equals a recomputation from
the whole history, replays and duplicates change nothing, counts add up."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.envoy import (
    EnvoyState,
    Position,
    Rules,
    StatusChange,
    apply_event,
    next_deadline_ms,
    sweep_envoy,
)
from projections.fleet import FleetCounts
from projections.history import ConvergenceHistory, history_bucket_ms, record_point
from projections.liveness import offline_deadline_ms
from projections.threshold import ThresholdState, check_threshold, recovered
from tests.eventgen import T0, checkin, enrolled, input_events, runs
from topics.events import Enrollment, InputEvent, Run
from topics.statuses import Status

RULES = Rules(default_interval_s=60)
TOPIC_INDEX = {"Enrollment": 0, "Checkin": 1, "Run": 2}


def fold(
    events: list[InputEvent], positions: bool = False, rules: Rules = RULES
) -> tuple[EnvoyState | None, list[StatusChange]]:
    state: EnvoyState | None = None
    changes: list[StatusChange] = []
    for i, event in enumerate(events):
        pos = Position(TOPIC_INDEX[type(event).__name__], i) if positions else None
        applied = apply_event(state, event, T0 + i, rules, pos)
        state = applied.state
        if applied.change:
            changes.append(applied.change)
    return state, changes


def reference_status(history: list[Run], intentional_changes: bool = True) -> Status:
    """SPEC section 4 recomputed from the whole run history, independently of the
    incremental counters: dedupe by run_id, skip late runs, read the trailing runs."""
    seen: set[str] = set()
    applied: list[Run] = []
    for r in history:
        if r.run_id in seen:
            continue
        seen.add(r.run_id)
        if applied and r.finished_at_ms < applied[-1].finished_at_ms:
            continue
        applied.append(r)
    if not applied:
        return Status.NO_DATA

    def outcome(r: Run) -> str:
        modules: dict[str, bool] = {}
        for res in r.resources:
            modules[res.module] = modules.get(res.module, False) or res.result == "failed"
        for err in r.module_errors:
            modules[err.module] = True
        if modules and all(modules.values()):
            return "failed"
        if any(modules.values()):
            return "partial"
        return "changed" if any(res.result == "changed" for res in r.resources) else "clean"

    # SPEC 10.1: the remembered version, replayed over the applied runs in order.
    outcomes: list[str] = []
    remembered: str | None = None
    for r in applied:
        o = outcome(r)
        version = r.config_version
        new_version = version is not None and remembered not in (None, version)
        if intentional_changes and o == "changed" and new_version:
            o = "intentional"
        if o != "partial" and o != "failed" and version is not None:
            remembered = version
        outcomes.append(o)

    last = outcomes[-1]
    if last == "failed":
        return Status.FAILED
    if last == "partial":
        return Status.DEGRADED
    trailing = 0
    for o in reversed(outcomes):
        if o != "changed":
            break
        trailing += 1
    return {0: Status.CONVERGED, 1: Status.DRIFTED, 2: Status.RELAPSED}.get(
        trailing, Status.DIVERGED
    )


@given(
    st.lists(st.one_of(runs(), runs(errors=False), st.just(checkin())), max_size=40),
    st.booleans(),
)
def test_incremental_status_equals_recomputation_from_history(
    events: list[Run | object], intentional_changes: bool
) -> None:
    history: list[InputEvent] = [enrolled(), *events]  # type: ignore[list-item]
    rules = Rules(default_interval_s=60, intentional_changes=intentional_changes)
    state, _ = fold(history, rules=rules)
    assert state is not None
    run_history = [e for e in history if isinstance(e, Run)]
    assert state.status == reference_status(run_history, intentional_changes)


@settings(max_examples=500)
@given(st.lists(st.one_of(runs(), runs(errors=False), runs(errors=False)), max_size=8))
def test_incremental_status_equals_recomputation_from_runs_in_order(history: list[Run]) -> None:
    """The same without late runs (random finish times make most runs late), so that
    every run counts: which runs set the remembered version is exercised run by run."""
    in_order = sorted(history, key=lambda r: r.finished_at_ms)
    state, _ = fold([enrolled(), *in_order])
    assert state is not None
    assert state.status == reference_status(in_order)


@given(st.lists(input_events(), min_size=1, max_size=40))
def test_changes_form_a_gapless_chain(events: list[InputEvent]) -> None:
    state, changes = fold(events)
    for i, change in enumerate(changes):
        assert change.version == i + 1
        assert change.from_status != change.to_status
        assert change.from_status == (changes[i - 1].to_status if i else None)
    if state is not None and changes:
        assert (state.version, state.status) == (changes[-1].version, changes[-1].to_status)


@given(st.lists(input_events(), min_size=1, max_size=30), st.data())
def test_replaying_any_suffix_changes_nothing(
    events: list[InputEvent], data: st.DataObject
) -> None:
    state, _ = fold(events, positions=True)
    start = data.draw(st.integers(0, len(events) - 1))
    replayed = state
    for i in range(start, len(events)):
        applied = apply_event(
            replayed, events[i], T0 + i, RULES, Position(TOPIC_INDEX[type(events[i]).__name__], i)
        )
        assert applied.change is None
        replayed = applied.state
    assert replayed == state


@given(st.lists(runs(), max_size=30))
def test_duplicated_runs_change_nothing(history: list[Run]) -> None:
    doubled: list[InputEvent] = [enrolled()]
    for r in history:
        doubled += [r, r]
    once, once_changes = fold([enrolled(), *history])
    twice, twice_changes = fold(doubled)
    assert once is not None and twice is not None
    assert (once.status, once.version, once.history) == (twice.status, twice.version, twice.history)
    assert [(c.to_status, c.version) for c in once_changes] == [
        (c.to_status, c.version) for c in twice_changes
    ]


@given(
    st.lists(input_events(), min_size=1, max_size=25),
    st.integers(10, 86_400),
    st.integers(10, 86_400),
)
def test_deadlines_follow_the_default_interval_of_the_moment(
    events: list[InputEvent], before_s: int, after_s: int
) -> None:
    """Whatever the default was while events were applied, liveness is judged by the
    default of the moment for envoys without their own interval, and by their own
    interval otherwise: raising the default never makes an envoy offline sooner."""
    state, _ = fold(events)
    if state is None or state.revoked:
        return
    now = Rules(default_interval_s=after_s)
    expected_s = state.interval_s if state.interval_s is not None else after_s
    last_enrollment = [e for e in events if isinstance(e, Enrollment)][-1:]
    own = last_enrollment[0].checkin_interval_s if last_enrollment else None
    assert state.interval_s == own
    deadline = next_deadline_ms(state, now)
    if not state.offline:
        assert deadline == state.last_alive_ms + 2 * expected_s * 1000 + 1
        assert not sweep_envoy(state, deadline - 1, now).state.offline
        assert sweep_envoy(state, deadline, now).state.offline
    before = next_deadline_ms(state, Rules(default_interval_s=before_s))
    if before is not None and deadline is not None and after_s >= before_s:
        assert deadline >= before


percents = st.one_of(st.none(), st.floats(0, 100, allow_nan=False))


@given(st.lists(percents, max_size=50), st.floats(1, 99))
def test_threshold_fires_exactly_once_per_downward_crossing(
    series: list[float | None], threshold: float
) -> None:
    state = ThresholdState()
    fired = 0
    ended: list[int] = []  # the numbers of the falls each recovery ended (SPEC 10.4)
    for percent in series:
        before = state
        state, fires = check_threshold(state, percent, threshold)
        fired += fires
        if recovered(before, state):
            ended.append(state.crossings)
    known = [p for p in series if p is not None]
    crossings = sum(
        1 for i, p in enumerate(known) if p < threshold and (i == 0 or known[i - 1] >= threshold)
    )
    assert fired == crossings == state.crossings
    # Each fall is ended at most once, in order, and every fall but a last one still
    # below is ended.
    assert ended == list(range(1, len(ended) + 1))
    assert len(ended) == crossings - (1 if state.below else 0)


@given(st.lists(st.tuples(st.integers(0, 10**6), percents), max_size=200), st.integers(1, 600))
@settings(max_examples=50)
def test_history_is_bounded_and_ordered(
    samples: list[tuple[int, float | None]], interval_s: int
) -> None:
    history = ConvergenceHistory(history_bucket_ms(interval_s))
    now = T0
    for step, percent in samples:
        now += step * 1000
        history = record_point(history, now, percent)
    buckets = [b for b, _ in history.points]
    assert buckets == sorted(set(buckets))
    assert len(history.points) <= 86_400_000 // history.bucket_ms + 1
    assert len(history.points) <= 1441
    if samples:
        assert history.points[-1][1] == samples[-1][1]


@given(
    st.lists(input_events(), min_size=1, max_size=15),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
)
def test_a_sweep_publishes_the_same_change_whichever_tick_notices_the_deadline(
    events: list[InputEvent], delay_a: int, delay_b: int
) -> None:
    """SPEC 10.9: a replayed sweep (a later or earlier tick past the same deadline) gives
    the same status change, dated by the deadline that expired, not by the tick."""
    state, _ = fold(events)
    if state is None:
        return
    deadline = next_deadline_ms(state, RULES)
    if deadline is None:
        return
    offline_at = offline_deadline_ms(state.last_alive_ms, state.effective_interval_s(RULES))
    a = sweep_envoy(state, offline_at + delay_a, RULES)
    b = sweep_envoy(state, offline_at + delay_b, RULES)
    assert a.change == b.change
    if a.change is not None:
        assert a.change.at_ms == offline_at and a.change.to_status is Status.OFFLINE
        assert a.state.status_since_ms == offline_at


# -- SPEC 10.3: the lifecycle in play ---------------------------------------------------------

HOUR = 3_600_000
LIFECYCLE = Rules(default_interval_s=60, deactivate_after_ms=HOUR, purge_after_ms=2 * HOUR)
#: Silences around every deadline: offline (2 min), stale (3 min), inactive (1 h after the
#: last sign of life) and purge (2 h after that), exactly at them and just past them.
silences = st.sampled_from(
    [1_000, 30_000, 200_000, HOUR, HOUR + 1, 3 * HOUR, 3 * HOUR + 1, 3 * HOUR + 2, 9 * HOUR]
)


def sweep_through(
    state: EnvoyState | None, until_ms: int, changes: list[StatusChange]
) -> EnvoyState | None:
    """The worker's sweeps up to `until_ms`: each deadline swept when it expires, as the
    deadline heap does; a purge deletes the envoy."""
    while state is not None:
        deadline = next_deadline_ms(state, LIFECYCLE)
        if deadline is None or deadline > until_ms:
            return state
        swept = sweep_envoy(state, deadline, LIFECYCLE)
        assert swept.purged or swept.state != state, "a deadline that changes nothing"
        if swept.change is not None:
            changes.append(swept.change)
        state = None if swept.purged else swept.state
    return None


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(silences, st.one_of(runs(), runs(errors=False), st.just(checkin()))),
        max_size=16,
    ),
    silences,
)
def test_incremental_status_equals_recomputation_with_the_lifecycle_in_play(
    timeline: list[tuple[int, Run | InputEvent]], last_silence: int
) -> None:
    """Events apart by silences that cross the offline, inactive and purge deadlines, swept
    in between as the worker does: the status at the end equals one recomputed from the
    whole history (runs of the envoy's current life only: a purge forgets the others),
    and every life's changes are a gapless chain from null that a purge ends."""
    # Unique run ids: a duplicate is no sign of life, and that is tested elsewhere.
    events = [
        replace_run_id(event, f"run-{i}") if isinstance(event, Run) else event
        for i, (_, event) in enumerate(timeline)
    ]
    first = apply_event(None, enrolled(), T0, LIFECYCLE)
    assert first.change is not None
    state, changes = first.state, [first.change]
    now = T0
    # The reference: when the envoy was last alive, and the runs of its current life.
    last_alive, life_runs, purges = T0, list[Run](), 0
    for (silence, _), event in zip(timeline, events, strict=True):
        now += silence
        # The event comes before a tick of its own instant.
        state = sweep_through(state, now - 1, changes)
        applied = apply_event(state, event, now, LIFECYCLE)
        state = applied.state
        if applied.change is not None:
            changes.append(applied.change)
        if last_alive + 3 * HOUR < now:  # inactive after 1 h, purged 2 h later
            life_runs, purges = [], purges + 1
        if isinstance(event, Run):
            life_runs.append(event)
        last_alive = now
    end = now + last_silence
    state = sweep_through(state, end, changes)

    if last_alive + 3 * HOUR <= end:
        assert state is None
        purges += 1
    elif last_alive + HOUR <= end:
        assert state is not None and state.status is Status.INACTIVE
        assert state.inactive_since_ms == last_alive + HOUR
    elif offline_deadline_ms(last_alive, 60) <= end:
        assert state is not None and state.status is Status.OFFLINE
    else:
        assert state is not None and state.status == reference_status(life_runs)

    # Each life: versions 1..n from null, linked; every life but the last ends in purged.
    lives: list[list[StatusChange]] = [[]]
    for change in changes:
        lives[-1].append(change)
        if change.to_status is Status.PURGED:
            lives.append([])
    if not lives[-1]:
        lives.pop()
    assert sum(1 for c in changes if c.to_status is Status.PURGED) == purges
    for life in lives:
        for i, change in enumerate(life):
            assert change.version == i + 1
            assert change.from_status == (life[i - 1].to_status if i else None)
            assert change.from_status != change.to_status
    if state is not None:
        assert (state.version, state.status) == (lives[-1][-1].version, lives[-1][-1].to_status)
    # The counts moved by the changes equal the counts of the end state.
    counts = FleetCounts()
    for change in changes:
        counts = counts.moved(change.from_status, change.to_status)
    assert counts == FleetCounts.of_statuses([state.status] if state is not None else [])


def replace_run_id(event: Run, run_id: str) -> Run:
    return msgspec.structs.replace(event, run_id=run_id)
