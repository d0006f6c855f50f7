"""Run classification: which modules errored, and whether a run was clean, changed,
partial or failed (SPEC section 4; whether changes were `intentional`, SPEC 10.1, depends
on the envoy's remembered version and is decided in `envoy.py`); and the bounds on what
the history keeps of runs (SPEC 10.9), so that an envoy's stored state stays small
whatever its runs hold.

The outcome is decided from the whole run before anything is cut, so the bounds never
change a status: statuses depend on outcomes only, and the counts stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Final

from msgspec import Struct
from msgspec.structs import replace

from topics.events import Run
from topics.limits import json_text_bytes
from topics.statuses import RunOutcome

#: Ids kept per run and list (changed resources, failed resources, errored modules).
MAX_IDS_PER_RUN: Final = 20
#: Ids kept over the whole history, measured by `id_cost`; the oldest runs lose theirs first.
MAX_HISTORY_ID_BYTES: Final = 32 * 1024


class RunSummary(Struct, frozen=True, array_like=True, gc=False):
    """What the drift history keeps of a run: some ids, and how many there were.

    A msgspec Struct: the envoy records (`processor.records`, format 3) decode the
    history straight into these, and `replace` costs a tenth of a dataclass's. Stored as
    an array, fields by position: a field added, removed or moved changes the record
    format. gc=False: only strings and integers inside, no cycle possible."""

    run_id: str
    finished_at: str
    finished_at_ms: int
    outcome: RunOutcome
    #: The first changed/failed resource ids and errored modules kept, at most
    #: MAX_IDS_PER_RUN each and fewer when the history's id budget is spent.
    changed: tuple[str, ...]
    failed: tuple[str, ...]
    errored_modules: tuple[str, ...]
    #: How many there were in the run, kept or not.
    changed_count: int
    failed_count: int
    errored_modules_count: int
    #: SPEC 10.1/11.1: the run's `config_version` (None: it gave none), and the offset of
    #: its record in the runs topic (-1: unknown, as in records of earlier releases), so
    #: an explanation can name where each run was read. Trailing fields with defaults: a
    #: history entry written before them decodes with these values.
    config_version: str | None = None
    offset: int = -1


def classify_run(run: Run) -> RunSummary:
    """One pass over the resources (this runs for every run event)."""
    modules: set[str] = set()
    errored = {e.module for e in run.module_errors}
    changed: list[str] = []
    failed: list[str] = []
    for resource in run.resources:
        modules.add(resource.module)
        result = resource.result
        if result == "changed":
            changed.append(resource.id)
        elif result == "failed":
            failed.append(resource.id)
            errored.add(resource.module)
    modules.update(errored)
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
        changed=tuple(changed[:MAX_IDS_PER_RUN]),
        failed=tuple(failed[:MAX_IDS_PER_RUN]),
        errored_modules=tuple(sorted(errored)[:MAX_IDS_PER_RUN]),
        changed_count=len(changed),
        failed_count=len(failed),
        errored_modules_count=len(errored),
        config_version=run.config_version,
    )


def id_cost(text: str) -> int:
    """What one id costs in a stored record: its JSON text, quotes and separator."""
    return json_text_bytes(text) + 3


def bound_history_ids(history: Sequence[RunSummary]) -> tuple[RunSummary, ...]:
    """Keep ids, newest run first (errored modules, failed, changed), while the history's
    budget lasts; from the first id that does not fit, every older id is dropped. Counts
    and outcomes are untouched. Idempotent, so it may run on every insert and restore."""
    if _cost_bound(history) <= MAX_HISTORY_ID_BYTES:
        return tuple(history)  # everything fits: the usual case, decided without `id_cost`
    budget = MAX_HISTORY_ID_BYTES
    bounded = []
    for run in history:
        errored, budget = _take(run.errored_modules, budget)
        failed, budget = _take(run.failed, budget)
        changed, budget = _take(run.changed, budget)
        kept = (errored, failed, changed) == (run.errored_modules, run.failed, run.changed)
        bounded.append(
            run if kept else replace(run, errored_modules=errored, failed=failed, changed=changed)
        )
    return tuple(bounded)


def _cost_bound(history: Sequence[RunSummary]) -> int:
    """At least what `id_cost` charges for all ids: a character costs at most 6 bytes
    (a \\uXXXX escape; UTF-8 takes at most 4)."""
    ids = [
        *chain.from_iterable(
            chain.from_iterable((run.errored_modules, run.failed, run.changed) for run in history)
        )
    ]
    return 6 * sum(map(len, ids)) + 3 * len(ids)


def _take(ids: tuple[str, ...], budget: int) -> tuple[tuple[str, ...], int]:
    """The leading ids that fit in `budget`, and what is left of it (0 once one did not
    fit, so that nothing after it is kept either)."""
    for n, text in enumerate(ids):
        cost = id_cost(text)
        if cost > budget:
            return ids[:n], 0
        budget -= cost
    return ids, budget


def next_consecutive_changed(previous: int, outcome: RunOutcome) -> int:
    """Counts back over runs with changes and no failed module; anything else resets."""
    return previous + 1 if outcome is RunOutcome.CHANGED else 0
