"""The status vocabulary of the wire contract: envoy statuses in display order and run
outcomes. Both the topics' encoders and the pure rules take it from here."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OFFLINE = "offline"
    NO_DATA = "no_data"
    FAILED = "failed"
    DEGRADED = "degraded"
    DIVERGED = "diverged"
    RELAPSED = "relapsed"
    DRIFTED = "drifted"
    CONVERGED = "converged"
    # Not statuses of an active envoy: the target of a revocation status change, of the
    # lifecycle sweep's deactivation, and the last change of a purged envoy (SPEC 10.3).
    REVOKED = "revoked"
    INACTIVE = "inactive"
    PURGED = "purged"


class RunOutcome(StrEnum):
    CLEAN = "clean"
    CHANGED = "changed"
    PARTIAL = "partial"
    FAILED = "failed"
    #: Changes made by a new `config_version` (SPEC 10.1): a rollout, not drift.
    INTENTIONAL = "intentional"


#: Statuses counted in the fleet breakdown, in display order; the breakdown sums to active.
ACTIVE_STATUSES: tuple[Status, ...] = (
    Status.CONVERGED,
    Status.DRIFTED,
    Status.RELAPSED,
    Status.DIVERGED,
    Status.DEGRADED,
    Status.FAILED,
    Status.OFFLINE,
    Status.NO_DATA,
)
