"""The fleet projection's numbers: envoys by status over the active ones, moved by each
status change and summed over partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from topics.statuses import ACTIVE_STATUSES, Status

_COUNTED = frozenset(ACTIVE_STATUSES)


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Envoys by status over active (non-revoked) envoys, and beside them (outside
    `active`, SPEC 10.3) the inactive and the revoked ones."""

    by_status: Mapping[Status, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(ACTIVE_STATUSES, 0))
    )
    inactive: int = 0
    revoked: int = 0

    @property
    def active(self) -> int:
        return sum(self.by_status.values())

    @property
    def compliant(self) -> int:
        return self.by_status[Status.CONVERGED]

    @property
    def percent(self) -> float | None:
        """100 x compliant / active, rounded to 2 decimals; None for an empty fleet."""
        return convergence_percent(self.compliant, self.active)

    def moved(self, old: Status | None, new: Status | None) -> FleetCounts:
        """The counts after one envoy moved from `old` to `new` (None: not counted)."""
        if old == new:
            return self
        counts = dict(self.by_status)
        if old in _COUNTED:
            counts[old] -= 1
        if new in _COUNTED:
            counts[new] += 1
        inactive = self.inactive + (new is Status.INACTIVE) - (old is Status.INACTIVE)
        revoked = self.revoked + (new is Status.REVOKED) - (old is Status.REVOKED)
        return FleetCounts(MappingProxyType(counts), inactive, revoked)

    def as_dict(self) -> dict[str, int]:
        return {status.value: self.by_status[status] for status in ACTIVE_STATUSES}

    @classmethod
    def from_dict(cls, raw: Mapping[str, int], inactive: int = 0, revoked: int = 0) -> FleetCounts:
        by_status = MappingProxyType({s: int(raw.get(s.value, 0)) for s in ACTIVE_STATUSES})
        return cls(by_status, int(inactive), int(revoked))

    @classmethod
    def of_statuses(cls, statuses: Iterable[Status]) -> FleetCounts:
        counts = dict.fromkeys(ACTIVE_STATUSES, 0)
        inactive = revoked = 0
        for status in statuses:
            if status in _COUNTED:
                counts[status] += 1
            elif status is Status.INACTIVE:
                inactive += 1
            elif status is Status.REVOKED:
                revoked += 1
        return cls(MappingProxyType(counts), inactive, revoked)

    @classmethod
    def merged(cls, parts: Iterable[FleetCounts]) -> FleetCounts:
        """The fleet total over per-partition counts."""
        counts = dict.fromkeys(ACTIVE_STATUSES, 0)
        inactive = revoked = 0
        for part in parts:
            for status, n in part.by_status.items():
                counts[status] += n
            inactive += part.inactive
            revoked += part.revoked
        return cls(MappingProxyType(counts), inactive, revoked)


def convergence_percent(compliant: int, active: int) -> float | None:
    if active == 0:
        return None
    return round(100.0 * compliant / active, 2)
