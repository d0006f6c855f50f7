"""Rollouts by `config_version` (SPEC 11.2): how many active envoys are on each version, per
fleet and per label group, which version is the newest, how far it got, who is stuck.

An envoy's version is `EnvoyState.config_version` (the last applied, non-late run with no
errored module that named one), `(none)` when it has none. Only active envoys count
(inactive and revoked are outside, as in `FleetCounts`); for each version the counts keep
how many are `converged` (for "converged on the newest") and `offline` (never stuck).

- `RolloutTally` keeps one partition's exact counts, moved by (old state, new state)
  pairs like `GroupTally`, with, per version, the earliest record time at which an envoy
  was counted on it in this partition (`first_seen_ms`; None when the partition was
  rebuilt from its table, the latest record time of its envoys on it: an upper bound,
  which the fleet owner's durable times, kept as the earliest seen, override).
- `bound_versions` names the `cap` versions with the most envoys (ties in byte order),
  the `recent` most recently first seen and the pinned ones; `(none)` is kept, the rest
  sum up under `(other)`.
- `rollout_view` is the answer for the fleet or a group, given the first-seen times the
  fleet owner keeps, the time, and `rollouts.stuck_after`; `advance` records when the
  newest version reached 50% and 90% converged.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from projections.groups import NONE_VALUE, OTHER_VALUE, group_values
from topics.statuses import ACTIVE_STATUSES, Status

NONE_VERSION: Final = "(none)"
OTHER_VERSION: Final = "(other)"
SPECIAL_VERSIONS: Final = frozenset({NONE_VERSION, OTHER_VERSION})
DEFAULT_MAX_VERSIONS: Final = 20
#: Besides its `cap` most common versions, a partial names the versions its partition saw
#: first most recently: a rollout that has just started has few envoys, and the fleet's
#: newest version must not disappear into `(other)` on its way to the fleet owner.
RECENT_NAMED: Final = 3

_COUNTED: Final = frozenset(ACTIVE_STATUSES)


@dataclass(frozen=True, slots=True)
class VersionCounts:
    """Active envoys on one version: all of them, the converged, the offline; and the
    earliest record time one was counted on it (None: not known here)."""

    envoys: int = 0
    converged: int = 0
    offline: int = 0
    first_seen_ms: int | None = None

    def plus(self, other: VersionCounts) -> VersionCounts:
        return VersionCounts(
            self.envoys + other.envoys,
            self.converged + other.converged,
            self.offline + other.offline,
            earliest(self.first_seen_ms, other.first_seen_ms),
        )


#: version -> its counts.
Versions = Mapping[str, VersionCounts]
#: group key -> value -> versions.
GroupVersions = Mapping[str, Mapping[str, Versions]]


def earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


class EnvoyLike(Protocol):
    """What rollouts need of an envoy's state (`EnvoyState`)."""

    @property
    def status(self) -> Status: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def config_version(self) -> str | None: ...


#: Where an envoy counts: (version, converged, offline); None when it is not active.
Place = tuple[str, bool, bool]


def place_of(status: Status, config_version: str | None) -> Place | None:
    if status not in _COUNTED:
        return None
    version = NONE_VERSION if config_version is None else config_version
    return version, status is Status.CONVERGED, status is Status.OFFLINE


def _moved(versions: dict[str, VersionCounts], place: Place, sign: int, at_ms: int | None) -> None:
    version, converged, offline = place
    old = versions.get(version)
    if old is None and sign < 0:
        return  # cannot happen for a consistent tally; never go negative
    old = old or VersionCounts()
    new = VersionCounts(
        old.envoys + sign,
        old.converged + sign * converged,
        old.offline + sign * offline,
        earliest(old.first_seen_ms, at_ms) if sign > 0 else old.first_seen_ms,
    )
    if new.envoys <= 0:
        versions.pop(version, None)
    else:
        versions[version] = new


@dataclass
class RolloutTally:
    """One partition's exact counts per version, fleet-wide and per group."""

    group_by: tuple[str, ...] = ()
    fleet: dict[str, VersionCounts] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, VersionCounts]]] = field(default_factory=dict)
    #: Increases with every move, so a caller can tell that nothing changed.
    version: int = 0

    def __post_init__(self) -> None:
        for key in self.group_by:
            self.groups.setdefault(key, {})

    @classmethod
    def of_envoys(
        cls,
        group_by: Sequence[str],
        envoys: Iterable[tuple[Status, str | None, Mapping[str, str]]],
        seen_ms: Iterable[int | None] | None = None,
    ) -> RolloutTally:
        """Recomputed from (status, version, labels) of every envoy of a partition. When
        the version was first seen is not in the table: with `seen_ms` (each envoy's last
        record time, in the same order) a version's first seen is the earliest of its
        envoys' (a bound from above), else unknown (None)."""
        tally = cls(tuple(group_by))
        times = iter(seen_ms) if seen_ms is not None else None
        # Envoys alike (place and group values) are summed first, then added once: a
        # partition's tally is built on the event loop after every assignment.
        alike: dict[tuple[Place, tuple[str, ...]], tuple[int, int | None]] = {}
        for status, config_version, labels in envoys:
            at_ms = next(times, None) if times is not None else None
            place = place_of(status, config_version)
            if place is None:
                continue
            where = (place, group_values(labels, tally.group_by) if tally.group_by else ())
            seen = alike.get(where)
            alike[where] = (1, at_ms) if seen is None else (seen[0] + 1, earliest(seen[1], at_ms))
        for (place, values), (count, at_ms) in alike.items():
            tally._add_values(place, values, count, at_ms)
        return tally

    def move_state(self, old: EnvoyLike | None, new: EnvoyLike | None, at_ms: int) -> bool:
        """One envoy from its old state (None before its first event) to its new one (None:
        purged), at record time `at_ms`; True when a count moved."""
        old_place = None if old is None else place_of(old.status, old.config_version)
        new_place = None if new is None else place_of(new.status, new.config_version)
        if old_place == new_place and (
            old_place is None
            or not self.group_by
            or old is None
            or new is None
            or old.labels is new.labels
            or group_values(old.labels, self.group_by) == group_values(new.labels, self.group_by)
        ):
            return False
        self.version += 1
        if old_place is not None and old is not None:
            self._add(old_place, old.labels, -1, None)
        if new_place is not None and new is not None:
            self._add(new_place, new.labels, 1, at_ms)
        return True

    def _add(self, place: Place, labels: Mapping[str, str], sign: int, at_ms: int | None) -> None:
        self._add_values(place, group_values(labels, self.group_by), sign, at_ms)

    def _add_values(
        self, place: Place, in_groups: Sequence[str], sign: int, at_ms: int | None
    ) -> None:
        """`sign` envoys (negative: taken away) at `place`, in the groups `in_groups`
        names (a value per `group_by` key)."""
        _moved(self.fleet, place, sign, at_ms)
        for key, value in zip(self.group_by, in_groups, strict=True):
            values = self.groups[key]
            versions = values.setdefault(value, {})
            _moved(versions, place, sign, at_ms)
            if not versions:
                del values[value]


def merge_versions(parts: Iterable[Versions]) -> dict[str, VersionCounts]:
    """The sum over partitions, version by version (first seen: the earliest)."""
    merged: dict[str, VersionCounts] = {}
    for part in parts:
        for version, counts in part.items():
            have = merged.get(version)
            merged[version] = counts if have is None else have.plus(counts)
    return merged


def merge_group_versions(parts: Iterable[GroupVersions]) -> dict[str, dict[str, Versions]]:
    collected: dict[str, dict[str, list[Versions]]] = {}
    for part in parts:
        for key, values in part.items():
            into = collected.setdefault(key, {})
            for value, versions in values.items():
                into.setdefault(value, []).append(versions)
    return {
        key: {value: merge_versions(lists) for value, lists in values.items()}
        for key, values in collected.items()
    }


def _rank(item: tuple[str, VersionCounts]) -> tuple[int, str]:
    return -item[1].envoys, item[0]


def _recency(item: tuple[str, VersionCounts]) -> tuple[int, str]:
    seen = item[1].first_seen_ms
    return -(seen if seen is not None else -(2**62)), item[0]


def bound_versions(
    versions: Versions,
    cap: int,
    recent: int = 0,
    pinned: frozenset[str] = frozenset(),
    size: Callable[[str], int] | None = None,
    budget: int = 0,
) -> dict[str, VersionCounts]:
    """The `cap` versions with the most envoys, the `recent` most recently first seen and
    the `pinned` ones named, `(none)` kept, the rest summed under `(other)` (first seen
    unknown there); ranked by envoys, ties in byte order. With `size`, the named versions
    (pinned aside) stop where their sizes add up to more than `budget`."""
    candidates = [
        (v, c) for v, c in versions.items() if v not in SPECIAL_VERSIONS and v not in pinned
    ]
    named = heapq.nsmallest(cap, candidates, key=_rank)
    if recent:
        chosen = {v for v, _ in named}
        rest = [(v, c) for v, c in candidates if v not in chosen and c.first_seen_ms is not None]
        named += heapq.nsmallest(recent, rest, key=_recency)
    if size is not None:
        named = _within(named, size, budget)
    result = dict(named)
    for version in pinned:
        if version in versions:
            result[version] = versions[version]
    if NONE_VERSION in versions:
        result[NONE_VERSION] = versions[NONE_VERSION]
    others = [c for v, c in versions.items() if v not in result]
    if others:
        other = VersionCounts()
        for counts in others:
            other = other.plus(counts)
        result[OTHER_VERSION] = replace(other, first_seen_ms=None)
    return dict(sorted(result.items(), key=_rank))


def _within(
    named: list[tuple[str, VersionCounts]], size: Callable[[str], int], budget: int
) -> list[tuple[str, VersionCounts]]:
    total = 0
    for i, (version, _) in enumerate(named):
        total += size(version)
        if total > budget:
            return named[:i]
    return named


def fold_groups(
    groups: Mapping[str, Mapping[str, Versions]], named: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, dict[str, VersionCounts]]]:
    """Each key's group versions with the values not in `named` (the values a partial or
    the fleet names, `(none)` and `(other)` included) summed into `(other)`, as the
    groups' own counts are."""
    out: dict[str, dict[str, dict[str, VersionCounts]]] = {}
    for key, values in groups.items():
        keep = set(named.get(key, ()))
        folded: dict[str, dict[str, VersionCounts]] = {}
        for value, versions in values.items():
            target = value if value in keep or value == NONE_VALUE else OTHER_VALUE
            have = folded.get(target)
            folded[target] = dict(versions) if have is None else merge_versions((have, versions))
        out[key] = folded
    return out


# -- the answer --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutView:
    """The rollout of the fleet or of a group, as the API, the topic and the metrics show
    it: its versions (bounded; first seen resolved), the newest, and the stuck count."""

    versions: Mapping[str, VersionCounts]
    newest: str | None
    active: int
    stuck: int

    @property
    def newest_counts(self) -> VersionCounts:
        if self.newest is None:
            return VersionCounts()
        return self.versions.get(self.newest, VersionCounts())

    @property
    def converged_ratio(self) -> float | None:
        """Active envoys on the newest version and converged, over active envoys."""
        if self.newest is None or self.active == 0:
            return None
        return self.newest_counts.converged / self.active


def newest_version(versions: Versions) -> str | None:
    """The version first seen last (ties: the greater in byte order); only named versions
    with envoys and a known first-seen time take part."""
    known = [
        (c.first_seen_ms, v)
        for v, c in versions.items()
        if v not in SPECIAL_VERSIONS and c.envoys > 0 and c.first_seen_ms is not None
    ]
    return max(known)[1] if known else None


def rollout_view(
    versions: Versions,
    first_seen: Mapping[str, int],
    now_ms: int,
    stuck_after_ms: int,
    cap: int,
) -> RolloutView:
    """Stuck: active, not offline, on a version other than the newest (`(none)` aside: an
    envoy that names no version cannot be told behind), once `stuck_after_ms` has passed
    since the newest was first seen."""
    resolved = {
        v: replace(c, first_seen_ms=earliest(first_seen.get(v), c.first_seen_ms))
        if v not in SPECIAL_VERSIONS
        else c
        for v, c in versions.items()
    }
    newest = newest_version(resolved)
    pinned = frozenset() if newest is None else frozenset({newest})
    bounded = bound_versions(resolved, cap, pinned=pinned)
    active = sum(c.envoys for c in resolved.values())
    stuck = 0
    if newest is not None:
        seen = resolved[newest].first_seen_ms
        if seen is not None and now_ms - seen >= stuck_after_ms:
            stuck = sum(
                c.envoys - c.offline for v, c in resolved.items() if v not in (newest, NONE_VERSION)
            )
    return RolloutView(bounded, newest, active, stuck)


@dataclass(frozen=True, slots=True)
class RolloutMarks:
    """What the fleet owner remembers of the newest version of the fleet or a group: when
    it reached 50% and 90% of active envoys converged on it, and whether its stuck mail
    went out. Starts over when another version becomes the newest."""

    version: str | None = None
    reached_50_ms: int | None = None
    reached_90_ms: int | None = None
    stuck_alerted: bool = False


def advance(marks: RolloutMarks, view: RolloutView, now_ms: int) -> RolloutMarks:
    """The marks after a look at `view` at `now_ms` (a reached mark is never taken back)."""
    if view.newest is None:
        return marks
    if marks.version != view.newest:
        marks = RolloutMarks(view.newest)
    ratio = view.converged_ratio or 0.0
    if ratio >= 0.5 and marks.reached_50_ms is None:
        marks = replace(marks, reached_50_ms=now_ms)
    if ratio >= 0.9 and marks.reached_90_ms is None:
        marks = replace(marks, reached_90_ms=now_ms)
    return marks


def stuck_fires(marks: RolloutMarks, view: RolloutView, max_stuck: int) -> bool:
    """The stuck mail goes out once per newest version (and group): when its stuck count
    first exceeds `max_stuck`. `marks` must be `advance`d for `view` already."""
    return (
        view.newest is not None
        and marks.version == view.newest
        and not marks.stuck_alerted
        and view.stuck > max_stuck
    )


def kept_first_seen(
    known: Mapping[str, int], versions: Versions, named: Iterable[str], cap: int
) -> dict[str, int]:
    """The durable first-seen times after a look at the merged `versions`: the earliest of
    what was known and what the partials say, kept for the `named` versions and for up to
    `cap` others (most recent first), so the record stays bounded."""
    merged = dict(known)
    for version, counts in versions.items():
        seen = counts.first_seen_ms
        if version not in SPECIAL_VERSIONS and seen is not None:
            merged[version] = min(merged.get(version, seen), seen)
    keep = {v: merged[v] for v in named if v in merged}
    others = sorted(((t, v) for v, t in merged.items() if v not in keep), reverse=True)
    for seen, version in others[:cap]:
        keep[version] = seen
    return keep
