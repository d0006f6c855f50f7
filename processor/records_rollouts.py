"""The bytes of rollouts by `config_version` (SPEC 11.2) in our own records; listed with
the others in `processor.records`, which calls these.

- In a fleet partial and in table `fleet-parts`, an optional `"rollouts"` object (absent in
  the partials of earlier releases: no rollouts until the next partial):
  `{"v": {version: [envoys, converged, offline, first seen ms or null]},
  "g": {key: {value: {version: [...]}}}, "s": {version: [[envoy id, [group values]]]}}`,
  `"s"` a bounded sample of the active, online envoys on each version (the stuck mail
  names some).
- In table `fleet-state`: `rollout-first-seen` -> `FirstSeen` (version -> ms) and
  `rollout` / `rollout/<key>=<value>` -> `RolloutMarks`, JSON objects with `"k"`.
- The version of an envoy record read from its tail, without decoding the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from processor.records_envoy import EnvoyHead, decompressed_tail
from projections.rollouts import GroupVersions, RolloutMarks, VersionCounts, Versions

FIRST_SEEN_KIND: Final = "rollout-first-seen"
MARKS_KIND: Final = "rollout-marks"
ROLLOUT_KINDS: Final = frozenset({FIRST_SEEN_KIND, MARKS_KIND})

#: A sampled envoy: its id and its values of `fleet.group_by` (None: without the label).
Sampled = tuple[str, tuple[str | None, ...]]


@dataclass(frozen=True, slots=True)
class PartRollouts:
    """One partition's rollout counts as its partial carries them (bounded)."""

    fleet: Versions = field(default_factory=dict)
    groups: GroupVersions = field(default_factory=dict)
    #: version -> a few active, online envoys on it, in id order.
    samples: Mapping[str, tuple[Sampled, ...]] = field(default_factory=dict)


EMPTY_ROLLOUTS: Final = PartRollouts()


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """The fleet owner's durable first-seen times, version -> record time (ms)."""

    times: Mapping[str, int] = field(default_factory=dict)


def _counts_doc(versions: Versions) -> dict[str, list[Any]]:
    return {v: [c.envoys, c.converged, c.offline, c.first_seen_ms] for v, c in versions.items()}


def _counts(raw: object) -> dict[str, VersionCounts]:
    if not isinstance(raw, dict):
        raise ValueError("rollout versions are not an object")
    out: dict[str, VersionCounts] = {}
    for version, numbers in raw.items():
        envoys, converged, offline, seen = numbers
        out[str(version)] = VersionCounts(
            int(envoys), int(converged), int(offline), None if seen is None else int(seen)
        )
    return out


def encode_rollouts(part: PartRollouts) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": _counts_doc(part.fleet)}
    if part.groups:
        doc["g"] = {
            key: {value: _counts_doc(versions) for value, versions in values.items()}
            for key, values in part.groups.items()
        }
    if part.samples:
        doc["s"] = {v: [[e, list(values)] for e, values in s] for v, s in part.samples.items()}
    return doc


def decode_rollouts(raw: object) -> PartRollouts:
    """The inverse of `encode_rollouts` (None: a record without rollouts); raises
    ValueError (or KeyError, TypeError) on anything else."""
    if raw is None:
        return EMPTY_ROLLOUTS
    if not isinstance(raw, dict):
        raise ValueError("rollouts is not an object")
    groups = raw.get("g") or {}
    samples = raw.get("s") or {}
    if not isinstance(groups, dict) or not isinstance(samples, dict):
        raise ValueError("rollout groups or samples are not objects")
    return PartRollouts(
        _counts(raw.get("v") or {}),
        {
            str(key): {str(value): _counts(versions) for value, versions in values.items()}
            for key, values in groups.items()
        },
        {
            str(v): tuple((str(e), tuple(values)) for e, values in entries)
            for v, entries in samples.items()
        },
    )


def encode_rollout_state(value: FirstSeen | RolloutMarks) -> dict[str, Any]:
    if isinstance(value, FirstSeen):
        return {"f": 1, "k": FIRST_SEEN_KIND, "t": dict(value.times)}
    return {
        "f": 1,
        "k": MARKS_KIND,
        "v": value.version,
        "r50": value.reached_50_ms,
        "r90": value.reached_90_ms,
        "stuck": value.stuck_alerted,
    }


def decode_rollout_state(raw: Mapping[str, Any]) -> FirstSeen | RolloutMarks:
    if raw["k"] == FIRST_SEEN_KIND:
        return FirstSeen({str(v): int(t) for v, t in raw["t"].items()})
    return RolloutMarks(raw["v"], raw["r50"], raw["r90"], bool(raw["stuck"]))


# -- an envoy's version from its record -------------------------------------------------------


class _TailVersion(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The tail up to the remembered `config_version` (`processor.records_envoy`'s layout),
    every field before it left undecoded."""

    envoy_id: msgspec.Raw
    labels: msgspec.Raw
    last_seen_at: msgspec.Raw
    outcome: msgspec.Raw
    last_finished: msgspec.Raw
    consecutive: msgspec.Raw
    stale_episodes: msgspec.Raw
    version: msgspec.Raw
    offsets: msgspec.Raw
    recent: msgspec.Raw
    history: msgspec.Raw
    config_version: str | None = None


_UNPACK_TAIL_VERSION: Final = msgspec.msgpack.Decoder(_TailVersion).decode


def head_version(head: EnvoyHead) -> str | None:
    """An envoy's remembered `config_version` from its head's tail (a tail written before
    the field reads as None)."""
    return _UNPACK_TAIL_VERSION(decompressed_tail(head)).config_version
