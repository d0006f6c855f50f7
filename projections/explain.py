"""Why an envoy has its status (SPEC 11.1): the row of the status table that gave it, and
exactly the runs that row looked at, read from the envoy's state alone.

`derive_status` (SPEC section 4) reads three things: the offline flag, the outcome of the
last applied run, and the count of consecutive changed runs. The evidence is the runs
behind the last two:

- `converged`, `degraded`, `failed`: the last applied run, the one whose outcome is
  `last_outcome`;
- `drifted`, `relapsed`, `diverged`: the streak, the last `consecutive_changed` applied
  runs, as far as the bounded history (10 runs) reaches (`streak_truncated` when it does
  not);
- `no_data`, `offline`, `inactive`, `revoked`: no run; the enrollment, the last sign of
  life and the deadline that expired say why (`Liveness`).

"Applied" excludes late runs: a run that finished before the last applied run of its envoy
is kept in the history (sorted by finish time, where it lands among the others) but
changed neither the status nor the count (SPEC section 3). The history does not mark them;
it does not need to, because each entry keeps the offset of its record in the runs topic,
which is the order the envoy's runs were applied in (one partition per envoy). A run is
late exactly when a run applied before it (a lower offset) finished after it: the last
finish time only ever grows, and the run that set it is never dropped from the history
before a run that finished earlier (`late_in_history`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from projections.envoy import EnvoyState, Rules
from projections.liveness import deactivate_deadline_ms, offline_deadline_ms, stale_deadline_ms
from projections.runs import RunSummary
from topics.statuses import RunOutcome, Status


@dataclass(frozen=True, slots=True)
class Rule:
    """A row of a status table: the status it gives, its text, and the SPEC section."""

    status: Status
    text: str
    section: str


#: SPEC section 4's table, row for row (first match wins), and the statuses of 10.3.
STATUS_RULES: Mapping[Status, Rule] = {
    rule.status: rule
    for rule in (
        Rule(
            Status.OFFLINE,
            "no check-in or run within 2 x the envoy's check-in interval (an envoy that "
            "never checked in counts from its enrollment)",
            "4",
        ),
        Rule(Status.NO_DATA, "enrolled, no runs recorded yet", "4"),
        Rule(Status.FAILED, "last run failed entirely: every module in it errored", "4"),
        Rule(Status.DEGRADED, "last run partial: some modules failed, others succeeded", "4"),
        Rule(Status.DIVERGED, "3 or more consecutive runs with changes (persistent conflict)", "4"),
        Rule(
            Status.RELAPSED,
            "exactly 2 consecutive runs with changes (drift corrected, but recurring)",
            "4",
        ),
        Rule(
            Status.DRIFTED,
            "exactly 1 consecutive run with changes (drift detected and corrected once)",
            "4",
        ),
        Rule(Status.CONVERGED, "last run succeeded with zero changes and zero failures", "4"),
        Rule(
            Status.INACTIVE,
            "no check-in or run for lifecycle.deactivate_after, counted from the last "
            "check-in or run, else the enrollment",
            "10.3",
        ),
        Rule(
            Status.REVOKED,
            "an enrollment event with action revoked: out of every count until an enrolled "
            "event brings it back",
            "3",
        ),
        Rule(
            Status.PURGED,
            "inactive for lifecycle.purge_after: deleted from every table",
            "10.3",
        ),
    )
}
#: SPEC 10.1: a run whose changes came with a new `config_version` gives `converged`.
INTENTIONAL_RULE = Rule(
    Status.CONVERGED,
    "last run's changes were intentional: a new config_version, no errored module "
    "(a rollout, not drift)",
    "10.1",
)

#: The statuses read from the last applied run, and those read from the streak.
_LAST_RUN = frozenset((Status.CONVERGED, Status.DEGRADED, Status.FAILED))
_STREAK = frozenset((Status.DRIFTED, Status.RELAPSED, Status.DIVERGED))


@dataclass(frozen=True, slots=True)
class Liveness:
    """The times liveness judges by (record times, ms) and the deadlines they give."""

    enrolled_at_ms: int
    #: The last check-in or run (None: never seen), and the envoy's own `at` of it.
    last_seen_ms: int | None
    last_reported_at: str | None
    #: What the deadlines count from: the last sign of life, else the (re-)enrollment.
    counted_from_ms: int
    interval_s: int
    #: None when no deadline applies (a revoked envoy): otherwise the first instant the
    #: envoy counts as offline, stale, inactive (None: `deactivate_after` is null).
    offline_at_ms: int | None
    stale_at_ms: int | None
    inactive_at_ms: int | None
    stale: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    envoy_id: str
    status: Status
    since_ms: int
    rule: Rule
    #: The runs the rule looked at, newest first (empty for the statuses read from
    #: liveness or the enrollment alone).
    evidence: tuple[RunSummary, ...]
    consecutive_changed: int
    #: The streak is longer than the history reaches: `evidence` holds its newest runs.
    streak_truncated: bool
    liveness: Liveness
    #: The envoy's version: the last `config_version` of an applied run without errored
    #: modules (SPEC 10.1 judges the next run against it, SPEC 11.2 counts the envoy on
    #: it; None: none yet), and the version of its last applied run, which may differ (a
    #: failed run of a new version, a run without one).
    applied_version: str | None
    last_run_version: str | None


def late_in_history(history: Sequence[RunSummary]) -> tuple[bool, ...]:
    """Per history entry (newest finish first), whether the run was late when applied:
    a run applied before it (a lower runs-topic offset) finished after it.

    Every run that finished after an entry sorts before it, so one pass keeps the lowest
    offset among the runs with a strictly later finish. An unknown offset (-1: a record
    of a release before offsets were kept) reads as applied before every known one;
    between two unknown ones the order cannot be told and the run counts as not late."""
    flags: list[bool] = []
    lowest_before: int | None = None  # among runs that finished strictly later
    group_lowest: int | None = None  # among the runs of the current finish time
    group_finish: int | None = None
    for run in history:
        if run.finished_at_ms != group_finish:
            lowest_before = _lower(lowest_before, group_lowest)
            group_finish, group_lowest = run.finished_at_ms, None
        flags.append(lowest_before is not None and lowest_before < run.offset)
        group_lowest = _lower(group_lowest, run.offset)
    return tuple(flags)


def _lower(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def applied_runs(history: Sequence[RunSummary]) -> tuple[RunSummary, ...]:
    """The history's runs that were not late, the last applied first."""
    late = late_in_history(history)
    return tuple(run for run, was_late in zip(history, late, strict=True) if not was_late)


def evidence_of(state: EnvoyState) -> tuple[tuple[RunSummary, ...], bool]:
    """The runs `derive_status` read for the envoy's status, and whether the streak goes
    back further than the history."""
    if state.status in _LAST_RUN:
        if state.last_outcome is None:
            return (), False
        return applied_runs(state.history)[:1], False
    if state.status not in _STREAK:
        return (), False
    wanted = state.consecutive_changed
    streak: list[RunSummary] = []
    for run in applied_runs(state.history):
        if len(streak) == wanted or run.outcome is not RunOutcome.CHANGED:
            # The second only with unknown offsets, whose order could not be told: the
            # evidence stops at the runs known to belong to the streak.
            break
        streak.append(run)
    return tuple(streak), len(streak) < wanted


def rule_of(state: EnvoyState) -> Rule:
    if state.status is Status.CONVERGED and state.last_outcome is RunOutcome.INTENTIONAL:
        return INTENTIONAL_RULE
    return STATUS_RULES[state.status]


def liveness_of(state: EnvoyState, rules: Rules) -> Liveness:
    interval_s = state.effective_interval_s(rules)
    alive = state.last_alive_ms
    deadlines: tuple[int | None, int | None, int | None] = (None, None, None)
    if not state.revoked:
        inactive_at = state.inactive_since_ms
        if inactive_at is None:
            inactive_at = deactivate_deadline_ms(alive, rules.deactivate_after_ms)
        deadlines = (
            offline_deadline_ms(alive, interval_s),
            stale_deadline_ms(alive, interval_s, rules.stale_after),
            inactive_at,
        )
    return Liveness(
        enrolled_at_ms=state.enrolled_at_ms,
        last_seen_ms=state.last_seen_ms,
        last_reported_at=state.last_seen_at,
        counted_from_ms=alive,
        interval_s=interval_s,
        offline_at_ms=deadlines[0],
        stale_at_ms=deadlines[1],
        inactive_at_ms=deadlines[2],
        stale=state.stale,
    )


def explain(state: EnvoyState, rules: Rules) -> Explanation:
    """Why `state` has its status, from the state and the rules alone."""
    evidence, truncated = evidence_of(state)
    last = applied_runs(state.history)[:1]
    return Explanation(
        envoy_id=state.envoy_id,
        status=state.status,
        since_ms=state.status_since_ms,
        rule=rule_of(state),
        evidence=evidence,
        consecutive_changed=state.consecutive_changed,
        streak_truncated=truncated,
        liveness=liveness_of(state, rules),
        applied_version=state.config_version,
        last_run_version=last[0].config_version if last else None,
    )
