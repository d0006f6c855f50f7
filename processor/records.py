"""Every byte of our own records: the values of the changelog-backed tables and of the
internal topics (fleet partials, ticks), and the Faust codecs that put them in tables.

The public topics' bytes live in `topics`; these are ours alone, but changelogs
outlive releases, so every record kind carries a format number and decoding tolerates
the unnumbered forms of the first release and fields added later.

- table `envoys`: envoy id -> `StoredEnvoy` as raw bytes (the table keeps them encoded,
  in memory too: about 520 bytes an envoy with a full history), encoded in
  `processor.records_envoy` and re-exported here; format 4 is msgpack with a tail
  compressed by zstd and our dictionary (laid out there), format 3 the same with LZ4;
  formats 1 and 2 were JSON objects with the format in `"f"` and still decode (format 2
  added the counts of changed/failed resources and errored modules to each history entry,
  and stores `"iv"` null for an envoy without its own interval, which then follows the
  configured default; format 1 entries are read with the counts of their lists and
  bounded, and format 1's interval, the default frozen at enrollment, is read as the
  envoy's own since the two cannot be told apart);
- table `fleet-parts`: partition -> `FleetPart` (its counts and, with `fleet.group_by`, its
  bounded group counts), JSON, `FLEET_PARTS_FORMAT` in `"f"` (format 2 added `"groups"`);
- table `fleet-state`: `threshold` -> `ThresholdState`, `history` -> `ConvergenceHistory`,
  `threshold/<key>=<value>` -> the `ThresholdState` of a group with its own threshold,
  the rollout marks and first-seen times (`processor.records_rollouts`);
  JSON, `FLEET_STATE_FORMAT` in `"f"`;
- table `alerts-sent`: alert id -> outbox record time (ms), `[ALERT_SENT_FORMAT, ms]`;
- table `alerts-windows`: `WINDOWS_PROGRESS_KEY` -> `Progress`, `w/<start ms>` -> `Window`
  (the stale digest windows, `alerts.window`), raw bytes encoded here, JSON arrays
  with `ALERT_WINDOW_FORMAT` first;
- table `alerts-journal`: alert id -> `Entry` (`alerts.journal`), raw bytes encoded
  here, a JSON array with `ALERT_JOURNAL_FORMAT` first;
- topic `fleet.partials`: `p<partition>` -> one partition's counts, `vigo.fleet-partial/1`
  (with an optional `"groups"`: key -> value -> by-status map, zeros left out);
- topic `envoy.ticks` (and ticks on `fleet.partials`): `TICK_KEY` -> empty;
- topic `alerts`: besides the `vigo.alert/1` records, `OUTBOX_TICK_KEY` -> empty, written
  by the sender while a digest window is open (its record time closes windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from alerts.journal import Entry
from alerts.window import Member, Progress, Window
from processor.faust_compat.codecs import EncodeDecode, register_value_codecs, value_type
from processor.records_envoy import ENVOY_FORMAT as ENVOY_FORMAT
from processor.records_envoy import EnvoyHead as EnvoyHead
from processor.records_envoy import StoredEnvoy as StoredEnvoy
from processor.records_envoy import decode_envoy_head as decode_envoy_head
from processor.records_envoy import decode_stored_envoy as decode_stored_envoy
from processor.records_envoy import encode_stored_envoy as encode_stored_envoy
from processor.records_envoy import head_labels as head_labels
from processor.records_rollouts import (
    EMPTY_ROLLOUTS,
    ROLLOUT_KINDS,
    FirstSeen,
    PartRollouts,
    decode_rollout_state,
    decode_rollouts,
    encode_rollout_state,
    encode_rollouts,
)
from projections.fleet import FleetCounts
from projections.groups import Groups
from projections.history import ConvergenceHistory
from projections.rollouts import RolloutMarks
from projections.threshold import ThresholdState

FLEET_PARTS_FORMAT: Final = 2
FLEET_STATE_FORMAT: Final = 1
ALERT_SENT_FORMAT: Final = 1
ALERT_WINDOW_FORMAT: Final = 1
ALERT_JOURNAL_FORMAT: Final = 1

#: The key of tick records, on the ticks topic and on the fleet-partials topic.
TICK_KEY: Final = b"tick"
#: Ticks older than this (by record time) are replays from before a restart: ignored.
TICK_MAX_AGE_MS: Final = 30_000
#: The key of the sender's tick records on the alerts outbox (an alert id never starts
#: with `_`).
OUTBOX_TICK_KEY: Final = b"__tick__"
WINDOWS_PROGRESS_KEY: Final = b"progress"


PARTIAL_SCHEMA = "vigo.fleet-partial/1"


@dataclass(frozen=True, slots=True)
class FleetPart:
    """One partition's numbers as the fleet owner keeps them: its counts and its group
    counts (bounded per key by the publishing worker; empty without `fleet.group_by`)."""

    counts: FleetCounts
    groups: Groups = field(default_factory=dict)
    #: SPEC 11.2: its envoys per `config_version` (`processor.records_rollouts`).
    rollouts: PartRollouts = EMPTY_ROLLOUTS


def group_threshold_key(label: str) -> str:
    """The `fleet-state` key of a group's threshold detector (`label` is `KEY=VALUE`)."""
    return f"threshold/{label}"


def encode_groups(groups: Groups) -> dict[str, dict[str, dict[str, int]]]:
    """key -> value -> the non-zero counts, `inactive` and `revoked` beside the statuses
    (label values are data: JSON only)."""
    return {
        key: {value: _nonzero(counts) for value, counts in values.items()}
        for key, values in groups.items()
    }


def _nonzero(counts: FleetCounts) -> dict[str, int]:
    numbers = {**counts.as_dict(), "inactive": counts.inactive, "revoked": counts.revoked}
    return {name: n for name, n in numbers.items() if n}


def decode_groups(raw: object) -> dict[str, dict[str, FleetCounts]]:
    """The inverse of `encode_groups`; raises ValueError on anything else."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("groups is not an object")
    groups: dict[str, dict[str, FleetCounts]] = {}
    for key, values in raw.items():
        if not isinstance(values, dict):
            raise ValueError("group values are not an object")
        groups[key] = {value: _counts(by_status) for value, by_status in values.items()}
    return groups


def _counts(raw: object) -> FleetCounts:
    if not isinstance(raw, Mapping):
        raise ValueError("counts are not an object")
    numbers = {str(k): int(v) for k, v in raw.items()}
    return FleetCounts.from_dict(numbers, numbers.get("inactive", 0), numbers.get("revoked", 0))


def encode_fleet_partial(
    partition: int,
    counts: FleetCounts,
    at_ms: int,
    groups: Groups | None = None,
    rollouts: PartRollouts | None = None,
) -> bytes:
    """Internal: one partition's fleet counts (and group counts), summed by the fleet
    owner."""
    doc: dict[str, object] = {
        "schema": PARTIAL_SCHEMA,
        "partition": partition,
        "by_status": counts.as_dict(),
        "inactive": counts.inactive,
        "revoked": counts.revoked,
        "at_ms": at_ms,
    }
    if groups:
        doc["groups"] = encode_groups(groups)
    if rollouts is not None:
        doc["rollouts"] = encode_rollouts(rollouts)
    return orjson.dumps(doc)


def decode_fleet_partial(data: bytes) -> tuple[int, FleetPart] | None:
    """None for anything that is not a well-formed partial."""
    try:
        raw = orjson.loads(data)
        if raw.get("schema") != PARTIAL_SCHEMA:
            return None
        partition = raw["partition"]
        by_status = {str(k): int(v) for k, v in raw["by_status"].items()}
        # Partials of earlier releases have no lifecycle counts (SPEC 10.3): 0.
        inactive, revoked = int(raw.get("inactive", 0)), int(raw.get("revoked", 0))
        groups = decode_groups(raw.get("groups"))
        rollouts = decode_rollouts(raw.get("rollouts"))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(partition, int):
        return None
    counts = FleetCounts.from_dict(by_status, inactive, revoked)
    return partition, FleetPart(counts, groups, rollouts)


def encode_fleet_parts(part: FleetPart | FleetCounts) -> bytes:
    if isinstance(part, FleetCounts):
        part = FleetPart(part)
    counts = part.counts
    doc: dict[str, object] = {
        "f": FLEET_PARTS_FORMAT,
        "by_status": counts.as_dict(),
        "inactive": counts.inactive,
        "revoked": counts.revoked,
    }
    if part.groups:
        doc["groups"] = encode_groups(part.groups)
    if part.rollouts is not EMPTY_ROLLOUTS:
        doc["rollouts"] = encode_rollouts(part.rollouts)
    return orjson.dumps(doc)


def decode_fleet_parts(data: bytes) -> FleetPart:
    raw = orjson.loads(data)
    # The first release stored the bare by-status map; format 1 had no groups; without
    # the lifecycle counts (before SPEC 10.3): 0 until the next partial.
    if "f" not in raw:
        return FleetPart(FleetCounts.from_dict(raw))
    counts = FleetCounts.from_dict(raw["by_status"], raw.get("inactive", 0), raw.get("revoked", 0))
    rollouts = decode_rollouts(raw.get("rollouts"))
    return FleetPart(counts, decode_groups(raw.get("groups")), rollouts)


def encode_fleet_state(
    value: ThresholdState | ConvergenceHistory | FirstSeen | RolloutMarks,
) -> bytes:
    if isinstance(value, FirstSeen | RolloutMarks):
        return orjson.dumps(encode_rollout_state(value))
    if isinstance(value, ThresholdState):
        return orjson.dumps(
            {"f": FLEET_STATE_FORMAT, "k": "threshold", "below": value.below, "n": value.crossings}
        )
    return orjson.dumps(
        {
            "f": FLEET_STATE_FORMAT,
            "k": "history",
            "bucket_ms": value.bucket_ms,
            "points": [list(point) for point in value.points],
        }
    )


def decode_fleet_state(
    data: bytes,
) -> ThresholdState | ConvergenceHistory | FirstSeen | RolloutMarks:
    raw = orjson.loads(data)
    if isinstance(raw, dict) and raw.get("k") in ROLLOUT_KINDS:
        return decode_rollout_state(raw)
    if isinstance(raw, list):  # the first release: [below, crossings] or [bucket, points]
        if isinstance(raw[0], bool):
            return ThresholdState(below=raw[0], crossings=raw[1])
        return ConvergenceHistory(raw[0], tuple((p[0], p[1]) for p in raw[1]))
    if raw["k"] == "threshold":
        return ThresholdState(below=raw["below"], crossings=raw["n"])
    return ConvergenceHistory(raw["bucket_ms"], tuple((p[0], p[1]) for p in raw["points"]))


def encode_alert_sent(record_ms: int) -> bytes:
    return orjson.dumps([ALERT_SENT_FORMAT, record_ms])


def decode_alert_sent(data: bytes) -> int:
    raw = orjson.loads(data)
    return int(raw[1]) if isinstance(raw, list) else int(raw)  # first release: bare int


# -- alert windows and journal ---------------------------------------------------------------


def window_key(start_ms: int) -> bytes:
    return b"w/%d" % start_ms


def encode_progress(progress: Progress) -> bytes:
    return orjson.dumps([ALERT_WINDOW_FORMAT, progress.closed_end_ms, progress.through])


def decode_progress(data: bytes) -> Progress:
    raw = orjson.loads(data)
    return Progress(closed_end_ms=int(raw[1]), through=int(raw[2]))


def encode_window(window: Window) -> bytes:
    members = [
        [m.alert_id, m.at, m.envoy_id, m.episode, m.last_seen_ms, m.partition, dict(m.labels)]
        for m in window.members
    ]
    return orjson.dumps(
        [ALERT_WINDOW_FORMAT, window.start_ms, window.end_ms, window.count, members, window.opened]
    )


def decode_window(data: bytes) -> Window:
    """A window; one written before it kept the offset that opened it (five fields) has
    `opened` -1, and any record closes it, as then."""
    raw = orjson.loads(data)
    _, start, end, count, members = raw[:5]
    return Window(
        opened=int(raw[5]) if len(raw) > 5 else -1,
        start_ms=int(start),
        end_ms=int(end),
        count=int(count),
        members=tuple(
            Member(
                alert_id=m[0],
                at=m[1],
                envoy_id=m[2],
                episode=int(m[3]),
                last_seen_ms=int(m[4]),
                partition=int(m[5]),
                labels=dict(m[6]),
            )
            for m in members
        ),
    )


def encode_journal_entry(entry: Entry) -> bytes:
    return orjson.dumps(
        [
            ALERT_JOURNAL_FORMAT,
            entry.seq,
            entry.alert_id,
            entry.event,
            entry.created_at,
            entry.sent_at,
            entry.outcome,
            entry.attempts,
        ]
    )


def decode_journal_entry(data: bytes) -> Entry:
    _, seq, alert_id, event, created_at, sent_at, outcome, attempts = orjson.loads(data)
    return Entry(int(seq), alert_id, event, created_at, sent_at, outcome, int(attempts))


# -- Faust codecs --------------------------------------------------------------------------
#
# Each table's value type names one of these codecs (except `envoys`, whose values are raw
# bytes encoded by its agent); how Faust uses a value type: `processor.faust_compat.codecs`.

_CODECS: Final[Mapping[str, EncodeDecode]] = {
    "vigo_fleet_parts": (encode_fleet_parts, decode_fleet_parts),
    "vigo_fleet_state": (encode_fleet_state, decode_fleet_state),
    "vigo_alert_sent": (encode_alert_sent, decode_alert_sent),
}

FleetPartsType: Final = value_type("vigo_fleet_parts")
FleetStateType: Final = value_type("vigo_fleet_state")
AlertSentType: Final = value_type("vigo_alert_sent")


def register_codecs() -> None:
    register_value_codecs(_CODECS)
