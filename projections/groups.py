"""Groups by label (SPEC 10.2): the fleet's numbers for each value of each `group_by` key.

A group is a `(key, value)` pair and its numbers are a `FleetCounts`, moved and merged by
FleetCounts' own methods, so whatever FleetCounts counts, a group counts the same way.
Envoys without the label are in the value `(none)`.

- `GroupTally` keeps one partition's exact counts, moved by (old state, new state) pairs:
  an envoy moves between groups when its labels change even if its status does not (a
  re-enrollment with new labels).
- `bounded` names at most `cap` values per key (the ones with the most envoys, ties in
  byte order) and sums the rest under `(other)`; `(none)` and `(other)` take no slot,
  pinned values (those with a threshold of their own) are always named, and a value with
  no envoys disappears. Partials are bounded this way per partition, and the fleet-wide
  numbers again after the partials are merged.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from projections.fleet import FleetCounts
from topics.statuses import Status

NONE_VALUE: Final = "(none)"
OTHER_VALUE: Final = "(other)"
SPECIAL_VALUES: Final = frozenset({NONE_VALUE, OTHER_VALUE})
MAX_GROUP_KEYS: Final = 4
DEFAULT_MAX_GROUP_VALUES: Final = 200

#: key -> value -> that group's numbers.
Groups = Mapping[str, Mapping[str, FleetCounts]]

_EMPTY: Final = FleetCounts()


class EnvoyLike(Protocol):
    """What groups need of an envoy's state (`EnvoyState`)."""

    @property
    def status(self) -> Status: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


def group_values(labels: Mapping[str, str], group_by: Sequence[str]) -> tuple[str, ...]:
    """The value of each `group_by` key in `labels`, `(none)` where the label is absent."""
    return tuple([labels.get(key, NONE_VALUE) for key in group_by])


def envoys_in(counts: FleetCounts) -> int:
    """The number of envoys a group has, which ranks it for the cap."""
    return counts.active


def is_empty(counts: FleetCounts) -> bool:
    return counts == _EMPTY


def parse_label(text: str) -> tuple[str, str] | None:
    """`KEY=VALUE` split at the first `=` (keys never contain one); None without one."""
    key, eq, value = text.partition("=")
    if not key or not eq:
        return None
    return key, value


def in_group(labels: Mapping[str, str], key: str, value: str) -> bool:
    """Whether an envoy with `labels` is in the group `key=value`: `(none)` is the group of
    envoys without the label."""
    if value == NONE_VALUE:
        return key not in labels
    return labels.get(key) == value


@dataclass
class GroupTally:
    """One partition's exact group numbers, moved in place (the envoy agent's hot path
    calls `move` only when an envoy's status or labels changed)."""

    group_by: tuple[str, ...]
    counts: dict[str, dict[str, FleetCounts]] = field(default_factory=dict)
    #: Increases with every move, so a caller can tell that nothing changed.
    version: int = 0

    def __post_init__(self) -> None:
        for key in self.group_by:
            self.counts.setdefault(key, {})

    @classmethod
    def of_envoys(
        cls, group_by: Sequence[str], envoys: Iterable[tuple[Status, Mapping[str, str]]]
    ) -> GroupTally:
        """Recomputed from (status, labels) of every envoy of the partition: statuses
        collected per group first, each group counted once (a partition is rebuilt on
        assignment, from all of its envoys)."""
        tally = cls(tuple(group_by))
        if not group_by:
            return tally
        collected: dict[str, dict[str, list[Status]]] = {key: {} for key in group_by}
        for status, labels in envoys:
            for key in group_by:
                collected[key].setdefault(labels.get(key, NONE_VALUE), []).append(status)
        for key, values in collected.items():
            for value, statuses in values.items():
                _put(tally.counts[key], value, FleetCounts.of_statuses(statuses))
        return tally

    def move_state(self, old: EnvoyLike | None, new: EnvoyLike) -> None:
        """One envoy from its old state (None before its first event) to its new one:
        the (old, new) pair, so a change of labels alone moves it too."""
        if old is None:
            self.move(None, None, new.status, new.labels)
        elif old.status != new.status or old.labels != new.labels:
            self.move(old.status, old.labels, new.status, new.labels)

    def move(
        self,
        old_status: Status | None,
        old_labels: Mapping[str, str] | None,
        new_status: Status | None,
        new_labels: Mapping[str, str] | None,
    ) -> None:
        """One envoy from (old status, old labels) to (new status, new labels); None for a
        state that does not exist (before the first event)."""
        group_by = self.group_by
        if not group_by:
            return
        old_values = group_values(old_labels or {}, group_by)
        new_values = group_values(new_labels or {}, group_by)
        if old_status == new_status and old_values == new_values:
            return
        self.version += 1
        for key, old_value, new_value in zip(group_by, old_values, new_values, strict=True):
            values = self.counts[key]
            if old_value == new_value:
                _put(values, old_value, values.get(old_value, _EMPTY).moved(old_status, new_status))
            else:
                _put(values, old_value, values.get(old_value, _EMPTY).moved(old_status, None))
                _put(values, new_value, values.get(new_value, _EMPTY).moved(None, new_status))


def _put(values: dict[str, FleetCounts], value: str, counts: FleetCounts) -> None:
    """A value with no envoys disappears (the tally stays as small as the partition)."""
    if is_empty(counts):
        values.pop(value, None)
    else:
        values[value] = counts


def merge_groups(parts: Iterable[Groups]) -> dict[str, dict[str, FleetCounts]]:
    """The sum over partitions, group by group."""
    collected: dict[str, dict[str, list[FleetCounts]]] = {}
    for part in parts:
        for key, values in part.items():
            into = collected.setdefault(key, {})
            for value, counts in values.items():
                into.setdefault(value, []).append(counts)
    return {
        key: {
            value: merged
            for value, lists in values.items()
            if not is_empty(merged := FleetCounts.merged(lists))
        }
        for key, values in collected.items()
    }


def _rank(item: tuple[str, FleetCounts]) -> tuple[int, str]:
    # Code point order of `str` is the byte order of its UTF-8 encoding.
    return -envoys_in(item[1]), item[0]


def bounded(
    groups: Groups,
    group_by: Sequence[str],
    cap: int,
    pinned: Mapping[str, frozenset[str]] | None = None,
    size: Callable[[str], int] | None = None,
    budget: int = 0,
) -> dict[str, dict[str, FleetCounts]]:
    """Per `group_by` key, the `cap` values with the most envoys (ties in byte order) and
    the `pinned` ones named, `(none)` kept, the rest summed under `(other)`; values with
    no envoys left out. Every key of `group_by` is present, in its order.

    With `size`, the named values of one key (pinned ones aside) stop where their sizes
    add up to more than `budget`, so that the record they go into stays bounded in bytes
    whatever the values hold."""
    pinned = pinned or {}
    out: dict[str, dict[str, FleetCounts]] = {}
    for key in group_by:
        values = groups.get(key, {})
        keep = pinned.get(key, frozenset())
        candidates = (
            (v, c)
            for v, c in values.items()
            if v not in SPECIAL_VALUES and v not in keep and not is_empty(c)
        )
        named = heapq.nsmallest(cap, candidates, key=_rank)
        if size is not None:
            named = _within(named, size, budget)
        chosen = {v for v, _ in named} | keep
        result = {v: c for v, c in named}
        for value in sorted(keep):
            counts = values.get(value)
            if counts is not None and not is_empty(counts):
                result[value] = counts
        none = values.get(NONE_VALUE)
        if none is not None and not is_empty(none):
            result[NONE_VALUE] = none
        rest = [c for v, c in values.items() if v not in chosen and v != NONE_VALUE]
        other = FleetCounts.merged(rest) if rest else _EMPTY
        if not is_empty(other):
            result[OTHER_VALUE] = other
        out[key] = dict(sorted(result.items(), key=_rank))
    return out


def _within(
    named: list[tuple[str, FleetCounts]], size: Callable[[str], int], budget: int
) -> list[tuple[str, FleetCounts]]:
    total = 0
    for i, (value, _) in enumerate(named):
        total += size(value)
        if total > budget:
            return named[:i]
    return named


def pinned_values(labels: Iterable[str]) -> dict[str, frozenset[str]]:
    """`{"env=prod", "env=dev"}` -> `{"env": {"prod", "dev"}}`."""
    pinned: dict[str, set[str]] = {}
    for label in labels:
        parsed = parse_label(label)
        if parsed is not None:
            pinned.setdefault(parsed[0], set()).add(parsed[1])
    return {key: frozenset(values) for key, values in pinned.items()}
