"""Per-envoy rolling state and the one function that applies an event to it.

`apply_event` and `sweep_envoy` are the only ways state changes; both return the new
state and the status change, if any, so the shell only stores and publishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from projections.liveness import (
    StaleAfter,
    deactivate_deadline_ms,
    offline_deadline_ms,
    purge_deadline_ms,
    stale_deadline_ms,
)
from projections.runs import (
    RunSummary,
    bound_history_ids,
    classify_run,
    next_consecutive_changed,
)
from projections.status import derive_status
from topics.events import Checkin, Enrollment, InputEvent, Run
from topics.statuses import RunOutcome, Status

#: Run ids remembered for idempotence beyond the drift history.
RECENT_RUN_IDS = 8
#: Runs kept in the drift history shown by the API.
HISTORY_RUNS = 10


class Cause(StrEnum):
    RUN = "run"
    CHECKIN = "checkin"
    SWEEP = "sweep"
    ENROLLMENT = "enrollment"
    REVOCATION = "revocation"


Outcome = Literal["applied", "duplicate", "late", "not_enrolled", "revoked"]


@dataclass(frozen=True, slots=True)
class Rules:
    """The configuration the rules depend on, passed in rather than read."""

    default_interval_s: int = 300
    stale_after: StaleAfter = field(default_factory=StaleAfter)
    strict_enrollment: bool = False
    #: `runs.intentional_changes` (SPEC 10.1): changes under a new `config_version` are
    #: a rollout, not drift.
    intentional_changes: bool = True
    #: `lifecycle.deactivate_after` (SPEC 10.3) in ms: silent that long, an envoy becomes
    #: `inactive`. None: never (the configuration's default is 7 days).
    deactivate_after_ms: int | None = None
    #: `lifecycle.purge_after` in ms, counted from the change to `inactive` (or from the
    #: revocation of a revoked envoy): then it is purged. None: never (configured: 30 days).
    purge_after_ms: int | None = None


class EnvoyState(msgspec.Struct, frozen=True, gc=False):
    """What the table keeps of an envoy. A msgspec Struct, not a dataclass: the rules
    `replace` it once or more per event (a tenth of a dataclass's cost) and the envoy
    records decode its history straight into `RunSummary` Structs. gc=False: strings,
    integers, the labels' dict of strings and the history inside, no cycle possible.
    Field order is part of the record format (`processor.records` checks it)."""

    envoy_id: str
    revoked: bool = False
    labels: Mapping[str, str] = msgspec.field(default_factory=dict)
    #: The envoy's own check-in interval (`checkin_interval_s` of its enrollment). None:
    #: it follows `Rules.default_interval_s` as configured when it is judged, so an
    #: operator who raises `checkin.interval` moves the whole fleet's deadlines with it
    #: instead of seeing envoys enrolled earlier go offline at the old interval.
    interval_s: int | None = None
    #: Record timestamp of the (re-)enrollment; liveness counts from it until a check-in.
    enrolled_at_ms: int = 0
    #: Latest Kafka record timestamp of a check-in or run (never the envoy's clock).
    last_seen_ms: int | None = None
    #: The envoy's own `at` of that check-in or run, for display.
    last_seen_at: str | None = None
    last_outcome: RunOutcome | None = None
    last_run_finished_ms: int | None = None
    consecutive_changed: int = 0
    offline: bool = False
    stale: bool = False
    #: How many times the envoy has gone stale: part of the stale alert's id.
    stale_episodes: int = 0
    status: Status = Status.NO_DATA
    status_since_ms: int = 0
    version: int = 0
    recent_run_ids: tuple[str, ...] = ()
    history: tuple[RunSummary, ...] = ()
    #: Last applied offset per input topic (enrollments, check-ins, runs): a redelivered
    #: record is recognised exactly, whatever its type.
    offsets: tuple[int, ...] = (-1, -1, -1)
    #: The last non-null `config_version` of an applied (not late) run with no errored
    #: module (SPEC 10.1); None: nothing remembered, as for state of the first release.
    config_version: str | None = None
    #: When the envoy became `inactive` (SPEC 10.3): the deactivation deadline that
    #: expired; purge_after counts from it. None while it is not inactive.
    inactive_since_ms: int | None = None
    #: A revoked envoy whose state was shrunk to its revocation and last version after
    #: purge_after (SPEC 10.3): nothing more is pending for it.
    forgotten: bool = False

    @property
    def last_alive_ms(self) -> int:
        """The last sign of life: the last check-in or run, or the (re-)enrollment if that
        is later (an enrollment reactivates an inactive envoy and counts from then)."""
        seen = self.last_seen_ms
        if seen is None or seen < self.enrolled_at_ms:
            return self.enrolled_at_ms
        return seen

    @property
    def active(self) -> bool:
        return not self.revoked

    def effective_interval_s(self, rules: Rules) -> int:
        """The interval liveness judges by: the envoy's own, else today's default."""
        return self.interval_s if self.interval_s is not None else rules.default_interval_s


class StatusChange(msgspec.Struct, frozen=True, gc=False):
    envoy_id: str
    from_status: Status | None
    to_status: Status
    at_ms: int
    version: int
    cause: Cause
    run_id: str | None
    consecutive_changed_runs: int
    labels: Mapping[str, str]


class Applied(msgspec.Struct, frozen=True, gc=False):
    """The result of applying one event; `state` is None only for a refused first event."""

    state: EnvoyState | None
    change: StatusChange | None
    outcome: Outcome
    #: The outcome of the run applied (late or not; `vigo_runs_total`), else None.
    run_outcome: RunOutcome | None = None


class Swept(msgspec.Struct, frozen=True, gc=False):
    state: EnvoyState
    change: StatusChange | None
    #: True on the transition into stale: the `envoy.stale` alert condition.
    became_stale: bool
    #: SPEC 10.3: the envoy is to be deleted from the tables; `state` and `change` are
    #: its last state and its last change (`to: purged`), published before the delete.
    purged: bool = False


class Position(msgspec.Struct, frozen=True, gc=False):
    """Where an event sits in its input topic: `topic_index` into (enrollments,
    check-ins, runs), and the record offset within the envoy's partition."""

    topic_index: int
    offset: int


def apply_event(
    state: EnvoyState | None,
    event: InputEvent,
    record_ms: int,
    rules: Rules,
    position: Position | None = None,
) -> Applied:
    """Apply one input event with its Kafka record timestamp and position.

    A record at or before the last applied offset of its topic is a redelivery (a replay
    after a crash) and changes nothing.
    """
    redelivered = (
        position is not None
        and state is not None
        and position.offset <= state.offsets[position.topic_index]
    )
    if redelivered:
        return Applied(state, None, "duplicate")
    if isinstance(event, Enrollment):
        applied = _apply_enrollment(state, event, record_ms)
    elif state is None and rules.strict_enrollment:
        return Applied(None, None, "not_enrolled")
    elif state is None:
        fresh = EnvoyState(envoy_id=event.envoy_id, enrolled_at_ms=record_ms)
        # An implicit enrollment publishes its first change with from: null.
        applied = _apply_liveness_event(fresh, event, record_ms, rules, position, first=True)
    elif state.revoked:
        applied = Applied(state, None, "revoked")
    else:
        applied = _apply_liveness_event(state, event, record_ms, rules, position, first=False)
    # Every record moves its topic's offset, refused or not (check-ins and runs that
    # change the state carry it already).
    if position is None or applied.state is None:
        return applied
    if applied.state.offsets[position.topic_index] == position.offset:
        return applied
    offsets = _with_offset(applied.state.offsets, position)
    return Applied(
        replace(applied.state, offsets=offsets),
        applied.change,
        applied.outcome,
        applied.run_outcome,
    )


def _with_offset(offsets: tuple[int, ...], position: Position) -> tuple[int, ...]:
    updated = list(offsets)
    updated[position.topic_index] = position.offset
    return tuple(updated)


def _apply_enrollment(state: EnvoyState | None, event: Enrollment, record_ms: int) -> Applied:
    #: None when the envoy gives no interval: it follows the configured default.
    interval_s = event.checkin_interval_s
    if event.action == "revoked":
        if state is None:
            # Nothing to revoke yet; remember it so later events are refused as `revoked`.
            fresh = EnvoyState(
                envoy_id=event.envoy_id,
                revoked=True,
                labels=event.labels,
                interval_s=interval_s,
                enrolled_at_ms=record_ms,
                status=Status.REVOKED,
                status_since_ms=record_ms,
            )
            return Applied(fresh, None, "applied")
        if state.revoked:
            return Applied(state, None, "duplicate")
        revoked = replace(state, revoked=True, stale=False, offline=False, inactive_since_ms=None)
        return _with_status(revoked, Status.REVOKED, record_ms, Cause.REVOCATION, None, first=False)
    if state is None:
        fresh = EnvoyState(
            envoy_id=event.envoy_id,
            labels=event.labels,
            interval_s=interval_s,
            enrolled_at_ms=record_ms,
        )
        return _with_status(fresh, Status.NO_DATA, record_ms, Cause.ENROLLMENT, None, first=True)
    if state.revoked:
        # Re-enrollment is a fresh start: no runs, liveness counted from now. Run ids and
        # the last finish time stay, so a replayed old run is still a duplicate or late.
        back = replace(
            state,
            revoked=False,
            labels=event.labels,
            interval_s=interval_s,
            enrolled_at_ms=record_ms,
            last_seen_ms=None,
            last_seen_at=None,
            last_outcome=None,
            consecutive_changed=0,
            offline=False,
            stale=False,
            inactive_since_ms=None,
            forgotten=False,
        )
        # An envoy revoked before it was ever enrolled has published nothing yet.
        first = state.version == 0
        return _with_status(back, Status.NO_DATA, record_ms, Cause.ENROLLMENT, None, first=first)
    if state.status is Status.INACTIVE:
        # SPEC 10.3: an enrollment reactivates it, liveness counted from now; one change
        # from `inactive` to its recomputed status.
        back = replace(
            state,
            labels=event.labels,
            interval_s=interval_s,
            enrolled_at_ms=record_ms,
            offline=False,
            stale=False,
            inactive_since_ms=None,
        )
        status = derive_status(
            offline=False,
            last_outcome=state.last_outcome,
            consecutive_changed=state.consecutive_changed,
        )
        return _with_status(back, status, record_ms, Cause.ENROLLMENT, None, first=False)
    if state.labels == event.labels and state.interval_s == interval_s:
        return Applied(state, None, "duplicate")
    return Applied(replace(state, labels=event.labels, interval_s=interval_s), None, "applied")


def _apply_liveness_event(
    state: EnvoyState,
    event: Checkin | Run,
    record_ms: int,
    rules: Rules,
    position: Position | None,
    *,
    first: bool,
) -> Applied:
    """A check-in or run: alive again, and for a run its history and counters. The new
    state, its status and offsets included, is built in one `replace` (a dataclass's was
    the rules' main cost per event; a Struct's costs a tenth of it)."""
    if isinstance(event, Run) and _seen_run(state, event.run_id):
        return Applied(state, None, "duplicate")
    fields: dict[str, Any] = {"offline": False, "stale": False}
    if position is not None:
        fields["offsets"] = _with_offset(state.offsets, position)
    if state.last_seen_ms is None or record_ms >= state.last_seen_ms:
        fields["last_seen_ms"] = record_ms
        fields["last_seen_at"] = event.finished_at if isinstance(event, Run) else event.at
    late = False
    run_outcome = None
    if isinstance(event, Run):
        summary = classify_run(event)
        last_finished = state.last_run_finished_ms
        late = last_finished is not None and event.finished_at_ms < last_finished
        if rules.intentional_changes and is_intentional(
            summary.outcome, event.config_version, state.config_version
        ):
            summary = replace(summary, outcome=RunOutcome.INTENTIONAL)
        run_outcome = summary.outcome
        if position is not None:
            summary = replace(summary, offset=position.offset)
        fields["recent_run_ids"] = (event.run_id, *state.recent_run_ids)[:RECENT_RUN_IDS]
        fields["history"] = _insert_history(state.history, summary)
        if not late:
            if event.config_version is not None and summary.outcome in _REMEMBERS_VERSION:
                fields["config_version"] = event.config_version
            fields["last_outcome"] = summary.outcome
            fields["last_run_finished_ms"] = event.finished_at_ms
            fields["consecutive_changed"] = next_consecutive_changed(
                state.consecutive_changed, summary.outcome
            )
    consecutive_changed = fields.get("consecutive_changed", state.consecutive_changed)
    status = derive_status(
        offline=False,
        last_outcome=fields.get("last_outcome", state.last_outcome),
        consecutive_changed=consecutive_changed,
    )
    change = None
    if first or status != state.status:
        version = state.version + 1
        fields.update(status=status, status_since_ms=record_ms, version=version)
        if state.inactive_since_ms is not None:
            # SPEC 10.3: any check-in or run, a late one included, reactivates it.
            fields["inactive_since_ms"] = None
        change = _change(
            state,
            status,
            record_ms,
            Cause.RUN if isinstance(event, Run) else Cause.CHECKIN,
            event.run_id if isinstance(event, Run) else None,
            consecutive_changed,
            first=first,
        )
    # Late: kept in the history, but it changes neither the status nor the counts.
    return Applied(replace(state, **fields), change, "late" if late else "applied", run_outcome)


#: Outcomes of runs with no errored module: their `config_version` is remembered.
_REMEMBERS_VERSION = frozenset((RunOutcome.CLEAN, RunOutcome.CHANGED, RunOutcome.INTENTIONAL))


def is_intentional(outcome: RunOutcome, config_version: str | None, remembered: str | None) -> bool:
    """SPEC 10.1: changes, no errored module, and a version that differs from the one
    remembered; with nothing remembered (a first run) the run is judged as in section 4."""
    return (
        outcome is RunOutcome.CHANGED
        and config_version is not None
        and remembered is not None
        and config_version != remembered
    )


def sweep_envoy(state: EnvoyState, now_ms: int, rules: Rules) -> Swept:
    """Apply the deadlines that passed at `now_ms`: stale, offline, inactive, purge.

    Every change is dated by the deadline that expired, not by the tick that noticed it:
    a replayed sweep publishes the same content (SPEC 10.9)."""
    if state.revoked:
        return _sweep_revoked(state, now_ms, rules)
    if state.status is Status.INACTIVE:
        return _sweep_inactive(state, now_ms, rules)
    inactive_at = deactivate_deadline_ms(state.last_alive_ms, rules.deactivate_after_ms)
    if inactive_at is not None and now_ms >= inactive_at:
        # Silent for deactivate_after: inactive, whatever else expired meanwhile (it leaves
        # every count and is judged neither offline nor stale any more).
        inactive = replace(state, offline=True, inactive_since_ms=inactive_at)
        result = _with_status(
            inactive, Status.INACTIVE, inactive_at, Cause.SWEEP, None, first=False
        )
        assert result.state is not None
        return Swept(result.state, result.change, False)
    swept = state
    became_stale = False
    interval_s = state.effective_interval_s(rules)
    if not state.stale and now_ms >= stale_deadline_ms(
        state.last_alive_ms, interval_s, rules.stale_after
    ):
        swept = replace(swept, stale=True, stale_episodes=swept.stale_episodes + 1)
        became_stale = True
    change = None
    offline_at_ms = offline_deadline_ms(state.last_alive_ms, interval_s)
    if not state.offline and now_ms >= offline_at_ms:
        swept = replace(swept, offline=True)
        result = _with_status(swept, Status.OFFLINE, offline_at_ms, Cause.SWEEP, None, first=False)
        assert result.state is not None
        swept, change = result.state, result.change
    return Swept(swept, change, became_stale)


def _inactive_since_ms(state: EnvoyState) -> int:
    since = state.inactive_since_ms
    return since if since is not None else state.status_since_ms


def _sweep_inactive(state: EnvoyState, now_ms: int, rules: Rules) -> Swept:
    """Purge after purge_after: the last change, `to: purged`, and the shell deletes it."""
    purge_at = purge_deadline_ms(_inactive_since_ms(state), rules.purge_after_ms)
    if purge_at is None or now_ms < purge_at:
        return Swept(state, None, False)
    result = _with_status(state, Status.PURGED, purge_at, Cause.SWEEP, None, first=False)
    assert result.state is not None
    return Swept(result.state, result.change, False, purged=True)


def _sweep_revoked(state: EnvoyState, now_ms: int, rules: Rules) -> Swept:
    """A revoked envoy is never forgotten (its events stay dead-lettered `revoked`), but
    after purge_after, counted from the revocation, it shrinks to the revocation and its
    last version; offsets, the last finish time and the stale episodes stay (a few
    integers), so a redelivery is still recognised and a later stale alert id is new."""
    purge_at = purge_deadline_ms(state.status_since_ms, rules.purge_after_ms)
    if state.forgotten or purge_at is None or now_ms < purge_at:
        return Swept(state, None, False)
    return Swept(forget_revoked(state), None, False)


def forget_revoked(state: EnvoyState) -> EnvoyState:
    """What is kept of a revoked envoy after purge_after (SPEC 10.3)."""
    return EnvoyState(
        envoy_id=state.envoy_id,
        revoked=True,
        enrolled_at_ms=state.enrolled_at_ms,
        last_run_finished_ms=state.last_run_finished_ms,
        stale_episodes=state.stale_episodes,
        status=Status.REVOKED,
        status_since_ms=state.status_since_ms,
        version=state.version,
        offsets=state.offsets,
        forgotten=True,
    )


def next_deadline_ms(state: EnvoyState, rules: Rules) -> int | None:
    """The next instant a sweep could change this envoy, or None if nothing is pending.

    Computed from the rules of the moment: a changed default interval moves the deadlines
    of every envoy without its own interval."""
    if state.revoked:
        if state.forgotten:
            return None
        return purge_deadline_ms(state.status_since_ms, rules.purge_after_ms)
    if state.status is Status.INACTIVE:
        return purge_deadline_ms(_inactive_since_ms(state), rules.purge_after_ms)
    interval_s = state.effective_interval_s(rules)
    last_alive_ms = state.last_alive_ms
    pending = []
    if not state.offline:
        pending.append(offline_deadline_ms(last_alive_ms, interval_s))
    if not state.stale:
        pending.append(stale_deadline_ms(last_alive_ms, interval_s, rules.stale_after))
    inactive_at = deactivate_deadline_ms(last_alive_ms, rules.deactivate_after_ms)
    if inactive_at is not None:
        pending.append(inactive_at)
    return min(pending) if pending else None


def _change(
    state: EnvoyState,
    status: Status,
    at_ms: int,
    cause: Cause,
    run_id: str | None,
    consecutive_changed: int,
    *,
    first: bool,
) -> StatusChange:
    """The change from `state` (the next version) to `status`."""
    return StatusChange(
        envoy_id=state.envoy_id,
        from_status=None if first else state.status,
        to_status=status,
        at_ms=at_ms,
        version=state.version + 1,
        cause=cause,
        run_id=run_id,
        consecutive_changed_runs=consecutive_changed,
        labels=state.labels,
    )


def _with_status(
    state: EnvoyState,
    status: Status,
    at_ms: int,
    cause: Cause,
    run_id: str | None,
    *,
    first: bool,
) -> Applied:
    """Publish a change only when the status differs (or on an envoy's very first event)."""
    if not first and status == state.status:
        return Applied(state, None, "applied")
    version = state.version + 1
    change = _change(state, status, at_ms, cause, run_id, state.consecutive_changed, first=first)
    return Applied(
        replace(state, status=status, status_since_ms=at_ms, version=version), change, "applied"
    )


_RUN_ID = attrgetter("run_id")


def _seen_run(state: EnvoyState, run_id: str) -> bool:
    return run_id in state.recent_run_ids or run_id in map(_RUN_ID, state.history)


def _insert_history(history: tuple[RunSummary, ...], summary: RunSummary) -> tuple[RunSummary, ...]:
    """Newest first by finish time, bounded in runs and in ids; a late run lands in its
    place (and may take ids from older runs)."""
    runs = sorted((summary, *history), key=lambda r: r.finished_at_ms, reverse=True)
    if not (summary.changed or summary.failed or summary.errored_modules):
        # A run without ids (most runs) costs nothing of a history that is within its
        # budget already, and dropping the oldest run only frees budget.
        return tuple(runs[:HISTORY_RUNS])
    return bound_history_ids(runs[:HISTORY_RUNS])
