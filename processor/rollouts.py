"""Rollouts by `config_version` (SPEC 11.2), stage 1: on the worker that owns an input
partition, the envoy agent keeps the partition's `RolloutTally` (`projections.rollouts`)
and its envoy keys by version next to its counts (built from the envoys' records after an
assignment, then moved with every state it puts, as groups are), and the fleet partial
carries them, bounded (`RolloutPartials`). Stage 2, on the fleet owner, is
`processor.rollouts_fleet`.

The keys by version answer `GET /api/envoys?config_version=V` from an index (SPEC 11.4):
a page reads the version's keys after the cursor and checks each one's status and label.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Final, Protocol

import orjson

from processor.envoy_list_index import PartitionKeys, SortedKeys, merged_after
from processor.records import EnvoyHead, StoredEnvoy, head_labels
from processor.records_rollouts import PartRollouts, Sampled, head_version
from projections.envoy import EnvoyState
from projections.groups import Groups, in_group
from projections.rollouts import (
    DEFAULT_MAX_VERSIONS,
    NONE_VERSION,
    OTHER_VERSION,
    RECENT_NAMED,
    RolloutTally,
    VersionCounts,
    Versions,
    bound_versions,
    fold_groups,
)
from topics.statuses import ACTIVE_STATUSES, Status

#: Envoys a partial names per version as candidates for the stuck mail, which names 20.
SAMPLE_MAX: Final = 20
#: Keys looked at per version to find them (offline ones are skipped).
SAMPLE_SCAN: Final = 200
#: JSON bytes of the samples in one partial, and of the named versions of one group key:
#: with the group counts' own budget (`processor.fleet`), a partial stays under 1 MiB.
SAMPLE_BYTES: Final = 48 * 1024
VERSION_BYTES_PER_KEY: Final = 40 * 1024
_COUNTS_ALLOWANCE: Final = 40
_ONLINE: Final = frozenset(ACTIVE_STATUSES) - {Status.OFFLINE}


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """`rollouts.*` and `smtp.events.rollout.stuck`."""

    max_versions: int = DEFAULT_MAX_VERSIONS
    stuck_after_ms: int = 3_600_000
    #: None: the stuck mail is not configured.
    max_stuck: int | None = None


def version_of(config_version: str | None) -> str:
    return NONE_VERSION if config_version is None else config_version


@dataclass
class PartitionRollouts:
    """One partition's tally and its envoy keys by version (every envoy of the table,
    whatever its status: the listing filters by status)."""

    tally: RolloutTally
    keys: dict[str, SortedKeys] = field(default_factory=dict)

    @classmethod
    def of_heads(
        cls, group_by: tuple[str, ...], heads: Mapping[bytes, EnvoyHead]
    ) -> PartitionRollouts:
        versions = {key: head_version(head) for key, head in heads.items()}
        no_labels: Mapping[str, str] = {}
        envoys = (
            (h.status, versions[k], head_labels(h) if group_by else no_labels)
            for k, h in heads.items()
        )
        collected: dict[str, list[bytes]] = {}
        for key, version in versions.items():
            collected.setdefault(version_of(version), []).append(key)
        keys = {version: SortedKeys(found) for version, found in collected.items()}
        seen = (h.t0 - (h.enrolled if h.last_seen is None else h.last_seen) for h in heads.values())
        return cls(RolloutTally.of_envoys(group_by, envoys, seen), keys)

    def move(self, key: bytes, old: EnvoyState | None, new: EnvoyState | None, at_ms: int) -> None:
        """One envoy's new state (None: purged) at record time `at_ms`."""
        self.tally.move_state(old, new, at_ms)
        old_version = None if old is None else version_of(old.config_version)
        new_version = None if new is None else version_of(new.config_version)
        if old_version == new_version:
            return
        if old_version is not None and (keys := self.keys.get(old_version)) is not None:
            keys.discard(key)
            if not keys:
                del self.keys[old_version]
        if new_version is not None:
            self.keys.setdefault(new_version, SortedKeys()).add(key)

    def samples(
        self, versions: Iterable[str], listing: PartitionKeys | None
    ) -> dict[str, tuple[Sampled, ...]]:
        """Up to `SAMPLE_MAX` active, online envoys of each version (lowest ids first),
        with their group values, within `SAMPLE_BYTES`."""
        if listing is None:
            return {}
        out: dict[str, tuple[Sampled, ...]] = {}
        budget = SAMPLE_BYTES
        for version in versions:
            keys = self.keys.get(version)
            if keys is None or version in (NONE_VERSION, OTHER_VERSION):
                continue
            found: list[Sampled] = []
            for key in islice(keys, SAMPLE_SCAN):
                place = listing.places.get(key)
                if place is None or place[0] not in _ONLINE:
                    continue
                budget -= len(key) + 8 + sum(len(v or "") + 4 for v in place[1])
                if budget < 0:
                    break
                found.append((key.decode("utf-8", "replace"), place[1]))
                if len(found) >= SAMPLE_MAX:
                    break
            if found:
                out[version] = tuple(found)
            if budget < 0:
                break
        return out


def _version_size(version: str) -> int:
    return len(orjson.dumps(version)) + _COUNTS_ALLOWANCE


def _bounded_values(
    values: Mapping[str, Versions], cap: int
) -> dict[str, dict[str, VersionCounts]]:
    """One group key's values, each with its `cap` most common versions and its most
    recent one named, all of them within `VERSION_BYTES_PER_KEY` (the groups with the
    most envoys first: the rest count under `(other)`)."""
    left = VERSION_BYTES_PER_KEY
    out: dict[str, dict[str, VersionCounts]] = {}
    ranked = sorted(values.items(), key=lambda item: -sum(c.envoys for c in item[1].values()))
    for value, versions in ranked:
        bounded = bound_versions(versions, cap, 1, size=_version_size, budget=max(left, 0))
        left -= sum(_version_size(v) for v in bounded)
        out[value] = bounded
    return out


class _Partitions(Protocol):
    """What the partials need of the envoy agent (`EnvoyProcessor`)."""

    rollouts: dict[int, PartitionRollouts]
    listing: dict[int, PartitionKeys]

    def counts_for(self, partition: int) -> object: ...


@dataclass
class RolloutPartials:
    """Each partition's rollouts as its partial carries them: the `max_versions` most
    common and the `RECENT_NAMED` most recent versions named, per fleet and per group
    value the partial names, with samples; recomputed only when an envoy moved."""

    settings: RolloutSettings = field(default_factory=RolloutSettings)
    _cache: dict[int, tuple[RolloutTally, int, Groups, PartRollouts]] = field(default_factory=dict)

    def part(self, envoys: _Partitions, partition: int, groups: Groups) -> PartRollouts | None:
        envoys.counts_for(partition)  # builds the partition's indexes when missing
        held = getattr(envoys, "rollouts", {}).get(partition)  # a test double may have none
        if held is None:
            return None
        tally = held.tally
        cached = self._cache.get(partition)
        if (
            cached is not None
            and cached[0] is tally
            and cached[1] == tally.version
            and cached[2] is groups
        ):
            return cached[3]
        cap = self.settings.max_versions
        fleet = bound_versions(tally.fleet, cap, RECENT_NAMED)
        named = {key: list(values) for key, values in groups.items()}
        group_versions = {
            key: _bounded_values(values, cap)
            for key, values in fold_groups(tally.groups, named).items()
        }
        samples = held.samples(fleet, envoys.listing.get(partition))
        part = PartRollouts(fleet, group_versions, samples)
        self._cache[partition] = (tally, tally.version, groups, part)
        return part


class _Listed(Protocol):
    """What a listing by version needs of the envoy agent (`EnvoyProcessor`)."""

    rollouts: dict[int, PartitionRollouts]
    listing: dict[int, PartitionKeys]
    group_by: tuple[str, ...]

    def _stored(self, key: bytes) -> StoredEnvoy | None: ...
    def _heads_in(self, partitions: set[int]) -> dict[int, dict[bytes, EnvoyHead]]: ...


def envoys_on_version(
    envoys: _Listed,
    owned: Iterable[int],
    version: str,
    statuses: Container[Status] | None,
    after: str | None,
    first: int | None,
    label: tuple[str, str] | None,
) -> list[EnvoyState]:
    """The owned envoys on `version` (`(none)`: those without one) with one of `statuses`
    in the group `label`, after `after` in id order, the `first` of them: read from the
    keys by version, each key checked (status from the list index where built)."""
    owned = sorted(owned)
    missing = {p for p in owned if p not in envoys.rollouts}
    heads = envoys._heads_in(missing) if missing else {}
    sets: list[SortedKeys] = []
    for partition in owned:
        held = envoys.rollouts.get(partition)
        if held is None:
            held = PartitionRollouts.of_heads(envoys.group_by, heads[partition])
        if (keys := held.keys.get(version)) is not None:
            sets.append(keys)
    after_key = after.encode("utf-8") if after is not None else None
    states = (envoys._stored(k) for k in merged_after(sets, after_key))
    matches = (
        record.state
        for record in states
        if record is not None
        and (statuses is None or record.state.status in statuses)
        and (label is None or in_group(record.state.labels, *label))
    )
    return list(matches if first is None else islice(matches, first))


def move_rollouts(
    rollouts: Mapping[int, PartitionRollouts],
    partition: int,
    key: bytes,
    old: EnvoyState | None,
    new: EnvoyState | None,
    at_ms: int,
) -> None:
    """The envoy agent's hook: every state it puts (None: purged) moves the partition's
    rollouts, once they are built."""
    held = rollouts.get(partition)
    if held is not None:
        held.move(key, old, new, at_ms)
