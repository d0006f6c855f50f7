"""Run classification: which modules errored, and whether a run was clean, changed,
partial or failed (SPEC section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from vigo.topics.events import Run
from vigo.topics.statuses import RunOutcome


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the drift history keeps of a run."""

    run_id: str
    finished_at: str
    finished_at_ms: int
    outcome: RunOutcome
    changed: tuple[str, ...]
    failed: tuple[str, ...]
    errored_modules: tuple[str, ...]


def errored_modules(run: Run) -> frozenset[str]:
    """A module errored when it has a module_errors entry or any failed resource."""
    errored = {e.module for e in run.module_errors}
    errored.update(r.module for r in run.resources if r.result == "failed")
    return frozenset(errored)


def classify_run(run: Run) -> RunSummary:
    modules = {r.module for r in run.resources}
    modules.update(e.module for e in run.module_errors)
    errored = errored_modules(run)
    changed = tuple(r.id for r in run.resources if r.result == "changed")
    failed = tuple(r.id for r in run.resources if r.result == "failed")
    if errored and errored >= modules:
        outcome = RunOutcome.FAILED
    elif errored:
        outcome = RunOutcome.PARTIAL
    elif changed:
        outcome = RunOutcome.CHANGED
    else:
        # Includes a run with no modules at all: zero changes, zero failures.
        outcome = RunOutcome.CLEAN
    return RunSummary(
        run_id=run.run_id,
        finished_at=run.finished_at,
        finished_at_ms=run.finished_at_ms,
        outcome=outcome,
        changed=changed,
        failed=failed,
        errored_modules=tuple(sorted(errored)),
    )


def next_consecutive_changed(previous: int, outcome: RunOutcome) -> int:
    """Counts back over runs with changes and no failed module; anything else resets."""
    return previous + 1 if outcome is RunOutcome.CHANGED else 0
