"""Envoy statuses and the SPEC section 4 table that picks one (first match wins)."""

from __future__ import annotations

from topics.statuses import RunOutcome, Status

#: What `--status errors` and `?status=errors` mean.
STATUS_ALIASES: dict[str, tuple[Status, ...]] = {"errors": (Status.FAILED, Status.DEGRADED)}

DIVERGED_AFTER = 3


def derive_status(
    *, offline: bool, last_outcome: RunOutcome | None, consecutive_changed: int
) -> Status:
    """The status table of SPEC section 4, evaluated top to bottom."""
    if offline:
        return Status.OFFLINE
    if last_outcome is None:
        return Status.NO_DATA
    if last_outcome is RunOutcome.FAILED:
        return Status.FAILED
    if last_outcome is RunOutcome.PARTIAL:
        return Status.DEGRADED
    if consecutive_changed >= DIVERGED_AFTER:
        return Status.DIVERGED
    if consecutive_changed == 2:
        return Status.RELAPSED
    if consecutive_changed == 1:
        return Status.DRIFTED
    return Status.CONVERGED


def parse_status_filter(text: str) -> frozenset[Status]:
    """`relapsed`, `errors`, or a comma list of both; ValueError names the unknown word."""
    wanted: set[Status] = set()
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        if word in STATUS_ALIASES:
            wanted.update(STATUS_ALIASES[word])
            continue
        try:
            wanted.add(Status(word))
        except ValueError:
            known = ", ".join([*(s.value for s in Status), *STATUS_ALIASES])
            raise ValueError(f"unknown status {word!r}; use one of: {known}") from None
    return frozenset(wanted)
