"""Every byte of our own records: the values of the changelog-backed tables and of the
internal topics (fleet partials, ticks), and the Faust codecs that put them in tables.

The public topics' bytes live in `topics`; these are ours alone, but changelogs
outlive releases, so every record kind carries a format number and decoding tolerates
the unnumbered forms of the first release and fields added later.

- table `envoys`: envoy id -> `StoredEnvoy` as raw bytes (the table keeps them encoded,
  in memory too: about 790 bytes an envoy with a full history); format 3 is msgpack
  (laid out in the format 3 section below); formats 1 and 2 were JSON objects with
  the format in `"f"` and still decode (format 2 added the counts of changed/failed
  resources and errored modules to each history entry, and stores `"iv"` null for an
  envoy without its own interval, which then follows the configured default; format 1
  entries are read with the counts of their lists and bounded, and format 1's interval,
  the default frozen at enrollment, is read as the envoy's own since the two cannot be
  told apart);
- table `fleet-parts`: partition -> `FleetPart` (its counts and, with `fleet.group_by`, its
  bounded group counts), JSON, `FLEET_PARTS_FORMAT` in `"f"` (format 2 added `"groups"`);
- table `fleet-state`: `threshold` -> `ThresholdState`, `history` -> `ConvergenceHistory`,
  `threshold/<key>=<value>` -> the `ThresholdState` of a group with its own threshold;
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
from operator import attrgetter
from typing import Any, Final

import lz4.block
import msgspec
import orjson
from faust.serializers import codecs

from alerts.journal import Entry
from alerts.window import Member, Progress, Window
from projections.envoy import EnvoyState
from projections.fleet import FleetCounts
from projections.groups import Groups
from projections.history import ConvergenceHistory
from projections.runs import MAX_IDS_PER_RUN, RunSummary, bound_history_ids
from projections.threshold import ThresholdState
from topics.statuses import RunOutcome, Status

ENVOY_FORMAT: Final = 3
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


@dataclass(frozen=True, slots=True)
class StoredEnvoy:
    """An envoy's state and the input partition it lives in, so that per-partition
    indexes (liveness deadlines) can be rebuilt after a rebalance without rehashing."""

    partition: int
    state: EnvoyState


# -- envoy records, format 3 -----------------------------------------------------------------
#
# The table keeps every envoy as these bytes (the memory store too) and the agent decodes
# one per event, so the format is small and quick to read. One msgpack array, fields by
# position, times as integers, the status and the last outcome as the small codes below:
#
#   3, partition, status code, flags (revoked 1, offline 2, stale 4, forgotten 8: a revoked
#   envoy shrunk after purge_after, SPEC 10.3), own interval or nil,
#   status since (ms), enrolled at and last seen or nil (both as "status since minus"),
#   tail
#
# The first eight are the head, read alone by `decode_envoy_head`. The tail is the rest, a
# msgpack array compressed with LZ4 (block format, its size first). What dominates it is
# text: run ids, timestamps, resource ids that recur from run to run; LZ4 takes a full
# history's tail from about 1,340 bytes to 760 in 2 us (raw deflate at its fastest level:
# 580 bytes in 20 us, which would be the worker's largest single cost per event), where
# front-coding or a string table of our own measured less for a Python step per string:
#
#   envoy id, labels, last seen at, last outcome code or nil, last run finished
#   ("status since minus") or nil, consecutive changed, stale episodes, version, offsets,
#   recent run ids (an int n when they are the run ids of the first n history entries,
#   as they are but after a late run; else the ids), history, remembered config version
#   or nil (SPEC 10.1; a tail without it, as format 3 was first written, reads as nil),
#   inactive since ("status since minus") or nil (SPEC 10.3; absent in the records of
#   earlier releases: nil, as they had no inactive envoys)
#
# and the history is `RunSummary` Structs as msgspec writes them (`array_like`): each
# entry, newest first, is the array of its fields in their order (run id, finished_at,
# finished_at_ms, outcome as its text, changed, failed, errored modules, the three
# counts). msgspec encodes the history and decodes it straight into `RunSummary`s, with
# no Python step per entry. Outcome codes and times as deltas, as format 3 first had them
# before any release, were about 65 bytes a record smaller (of 790 with a full history)
# but took a Python step per entry: decoding 8 us instead of 6, encoding 11 instead of 9
# (`bench_memory.py`).
#
# The codes are append-only (changelogs hold them). Formats 1 and 2 are JSON objects;
# their first byte tells them apart.

_STATUSES: Final = (
    Status.OFFLINE,
    Status.NO_DATA,
    Status.FAILED,
    Status.DEGRADED,
    Status.DIVERGED,
    Status.RELAPSED,
    Status.DRIFTED,
    Status.CONVERGED,
    Status.REVOKED,
    Status.INACTIVE,
    Status.PURGED,
)
_OUTCOMES: Final = (
    RunOutcome.CLEAN,
    RunOutcome.CHANGED,
    RunOutcome.PARTIAL,
    RunOutcome.FAILED,
    RunOutcome.INTENTIONAL,
)
_STATUS_CODE: Final = {status: code for code, status in enumerate(_STATUSES)}
_OUTCOME_CODE: Final = {outcome: code for code, outcome in enumerate(_OUTCOMES)}

_PACK: Final = msgspec.msgpack.Encoder().encode
_PACK_INTO: Final = msgspec.msgpack.Encoder().encode_into


class _Tail(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A format 3 record's tail, decompressed (see above)."""

    envoy_id: str
    labels: dict[str, str]
    last_seen_at: str | None
    last_outcome: int | None
    last_finished: int | None
    consecutive_changed: int
    stale_episodes: int
    version: int
    offsets: tuple[int, ...]
    recent: int | tuple[str, ...]
    history: tuple[RunSummary, ...]
    #: Added before format 3 was released (SPEC 10.1); absent: nothing remembered.
    config_version: str | None = None
    #: SPEC 10.3, as "status since minus"; absent in older records: not inactive.
    inactive_since: int | None = None


_UNPACK_TAIL: Final = msgspec.msgpack.Decoder(_Tail).decode
_RUN_ID: Final = attrgetter("run_id")


class EnvoyHead(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A format 3 record without its tail: what the per-partition indexes are built from
    when a partition is assigned, and what listings filter on, read in under a
    microsecond (msgspec skips the tail) where the whole record takes several."""

    format: int
    partition: int
    status_code: int
    flags: int
    interval_s: int | None
    #: Status since (ms); the two times below are stored as "t0 minus".
    t0: int
    enrolled: int
    last_seen: int | None
    tail: bytes

    @property
    def status(self) -> Status:
        return _STATUSES[self.status_code]

    def liveness(self) -> EnvoyState:
        """A state with the fields liveness deadlines depend on (`next_deadline_ms`), the
        others (the id too) at their defaults: for scheduling only."""
        t0, flags, last_seen = self.t0, self.flags, self.last_seen
        status = _STATUSES[self.status_code]
        return EnvoyState(
            envoy_id="",
            revoked=bool(flags & 1),
            interval_s=self.interval_s,
            enrolled_at_ms=t0 - self.enrolled,
            last_seen_ms=None if last_seen is None else t0 - last_seen,
            offline=bool(flags & 2),
            stale=bool(flags & 4),
            status=status,
            status_since_ms=t0,
            # An envoy became inactive when its status did (the tail has it too).
            inactive_since_ms=t0 if status is Status.INACTIVE else None,
            forgotten=bool(flags & 8),
        )


_UNPACK_HEAD: Final = msgspec.msgpack.Decoder(EnvoyHead).decode


class _TailLabels(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The start of a tail: enough for the group indexes (the rest is not decoded)."""

    envoy_id: str
    labels: dict[str, str]


_UNPACK_TAIL_LABELS: Final = msgspec.msgpack.Decoder(_TailLabels).decode


def head_labels(head: EnvoyHead) -> dict[str, str]:
    """An envoy's labels from its head's tail, without decoding its history."""
    return _UNPACK_TAIL_LABELS(lz4.block.decompress(head.tail)).labels


def encode_stored_envoy(record: StoredEnvoy) -> bytes:
    """Format 3 (see above)."""
    s = record.state
    t0 = s.status_since_ms
    last_seen, last_finished = s.last_seen_ms, s.last_run_finished_ms
    recent, history = s.recent_run_ids, s.history
    inactive_since = s.inactive_since_ms
    tail = _PACK(
        (
            s.envoy_id,
            s.labels,
            s.last_seen_at,
            None if s.last_outcome is None else _OUTCOME_CODE[s.last_outcome],
            None if last_finished is None else t0 - last_finished,
            s.consecutive_changed,
            s.stale_episodes,
            s.version,
            s.offsets,
            len(recent) if recent == tuple(map(_RUN_ID, history[: len(recent)])) else recent,
            history,
            s.config_version,
            None if inactive_since is None else t0 - inactive_since,
        )
    )
    # Into a buffer, then copied: msgspec's `encode` returns its growing buffer as it is,
    # half as large again as the record, and the memory store would keep all of it.
    record_buffer = bytearray()
    _PACK_INTO(
        (
            ENVOY_FORMAT,
            record.partition,
            _STATUS_CODE[s.status],
            s.revoked | s.offline << 1 | s.stale << 2 | s.forgotten << 3,
            s.interval_s,
            t0,
            t0 - s.enrolled_at_ms,
            None if last_seen is None else t0 - last_seen,
            lz4.block.compress(tail),
        ),
        record_buffer,
    )
    return bytes(record_buffer)


def decode_stored_envoy(data: bytes) -> StoredEnvoy:
    """A record of any format: 3, or the JSON objects of formats 1 and 2 that changelogs
    written by earlier releases hold."""
    if data[:1] == b"{":
        return _decode_json_envoy(data)
    head = _UNPACK_HEAD(data)
    tail = _UNPACK_TAIL(lz4.block.decompress(head.tail))
    t0, flags, last_seen, last_finished = head.t0, head.flags, head.last_seen, tail.last_finished
    recent, history, last_outcome = tail.recent, tail.history, tail.last_outcome
    inactive_since = tail.inactive_since
    state = EnvoyState(
        tail.envoy_id,
        bool(flags & 1),
        tail.labels,
        head.interval_s,
        t0 - head.enrolled,
        None if last_seen is None else t0 - last_seen,
        tail.last_seen_at,
        None if last_outcome is None else _OUTCOMES[last_outcome],
        None if last_finished is None else t0 - last_finished,
        tail.consecutive_changed,
        bool(flags & 2),
        bool(flags & 4),
        tail.stale_episodes,
        _STATUSES[head.status_code],
        t0,
        tail.version,
        tuple(map(_RUN_ID, history[:recent])) if isinstance(recent, int) else recent,
        history,
        tail.offsets,
        tail.config_version,
        None if inactive_since is None else t0 - inactive_since,
        bool(flags & 8),
    )
    return StoredEnvoy(head.partition, state)


def decode_envoy_head(data: bytes) -> EnvoyHead:
    """The head of a record of any format (formats 1 and 2 are decoded whole)."""
    if data[:1] == b"{":
        data = encode_stored_envoy(_decode_json_envoy(data))
    return _UNPACK_HEAD(data)


# Field order: format 3 stores `RunSummary` as the array of its fields and builds
# `EnvoyState` by position, so a field added to, removed from or moved in either fails
# here at import, not later in a half-built state or a misread changelog.
_RUN_FIELDS: Final = (
    "run_id",
    "finished_at",
    "finished_at_ms",
    "outcome",
    "changed",
    "failed",
    "errored_modules",
    "changed_count",
    "failed_count",
    "errored_modules_count",
)
_ENVOY_FIELDS: Final = (
    "envoy_id",
    "revoked",
    "labels",
    "interval_s",
    "enrolled_at_ms",
    "last_seen_ms",
    "last_seen_at",
    "last_outcome",
    "last_run_finished_ms",
    "consecutive_changed",
    "offline",
    "stale",
    "stale_episodes",
    "status",
    "status_since_ms",
    "version",
    "recent_run_ids",
    "history",
    "offsets",
    "config_version",
    "inactive_since_ms",
    "forgotten",
)
if RunSummary.__struct_fields__ != _RUN_FIELDS or EnvoyState.__struct_fields__ != _ENVOY_FIELDS:
    raise ImportError("records: RunSummary or EnvoyState changed; update format 3")


def _decode_json_envoy(data: bytes) -> StoredEnvoy:
    """Formats 1 and 2 (JSON objects)."""
    raw: dict[str, Any] = orjson.loads(data)
    last_outcome = raw.get("lo")
    state = EnvoyState(
        envoy_id=raw["id"],
        revoked=raw["rv"],
        labels=raw["lb"],
        interval_s=raw["iv"],
        enrolled_at_ms=raw["en"],
        last_seen_ms=raw["ls"],
        last_seen_at=raw["la"],
        last_outcome=RunOutcome(last_outcome) if last_outcome else None,
        last_run_finished_ms=raw["lf"],
        consecutive_changed=raw["cc"],
        offline=raw["of"],
        stale=raw["st"],
        stale_episodes=raw["se"],
        status=Status(raw["s"]),
        status_since_ms=raw["ss"],
        version=raw["v"],
        recent_run_ids=tuple(raw["ri"]),
        history=bound_history_ids([_decode_run_summary(h) for h in raw["h"]]),
        offsets=tuple(raw.get("o", (-1, -1, -1))),
    )
    return StoredEnvoy(partition=raw["p"], state=state)


def _decode_run_summary(h: list[Any]) -> RunSummary:
    """A history entry: format 2 has the counts; format 1 (7 fields) kept every id, so
    its lists are the counts, and `bound_history_ids` then cuts them to today's bounds."""
    counts = h[7:10] if len(h) >= 10 else [len(h[4]), len(h[5]), len(h[6])]
    return RunSummary(
        run_id=h[0],
        finished_at=h[1],
        finished_at_ms=h[2],
        outcome=RunOutcome(h[3]),
        changed=tuple(h[4][:MAX_IDS_PER_RUN]),
        failed=tuple(h[5][:MAX_IDS_PER_RUN]),
        errored_modules=tuple(h[6][:MAX_IDS_PER_RUN]),
        changed_count=counts[0],
        failed_count=counts[1],
        errored_modules_count=counts[2],
    )


PARTIAL_SCHEMA = "vigo.fleet-partial/1"


@dataclass(frozen=True, slots=True)
class FleetPart:
    """One partition's numbers as the fleet owner keeps them: its counts and its group
    counts (bounded per key by the publishing worker; empty without `fleet.group_by`)."""

    counts: FleetCounts
    groups: Groups = field(default_factory=dict)


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
    partition: int, counts: FleetCounts, at_ms: int, groups: Groups | None = None
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
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(partition, int):
        return None
    return partition, FleetPart(FleetCounts.from_dict(by_status, inactive, revoked), groups)


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
    return orjson.dumps(doc)


def decode_fleet_parts(data: bytes) -> FleetPart:
    raw = orjson.loads(data)
    # The first release stored the bare by-status map; format 1 had no groups; without
    # the lifecycle counts (before SPEC 10.3): 0 until the next partial.
    if "f" not in raw:
        return FleetPart(FleetCounts.from_dict(raw))
    counts = FleetCounts.from_dict(raw["by_status"], raw.get("inactive", 0), raw.get("revoked", 0))
    return FleetPart(counts, decode_groups(raw.get("groups")))


def encode_fleet_state(value: ThresholdState | ConvergenceHistory) -> bytes:
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


def decode_fleet_state(data: bytes) -> ThresholdState | ConvergenceHistory:
    raw = orjson.loads(data)
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
        [ALERT_WINDOW_FORMAT, window.start_ms, window.end_ms, window.count, members]
    )


def decode_window(data: bytes) -> Window:
    _, start, end, count, members = orjson.loads(data)
    return Window(
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
# Faust derives a table's changelog codec from its `value_type` (`_options.serializer`), for
# writing and for recovery alike, and rebuilds values through `from_data`; a table declared
# with a codec in `schema` only would recover nothing. So each table's value type names one
# of these codecs (except `envoys`, whose values are raw bytes encoded by its agent).


class _Codec(codecs.Codec):
    def __init__(self, dumps: Any, loads: Any) -> None:
        super().__init__()
        self._encode, self._decode = dumps, loads

    def _dumps(self, obj: Any) -> bytes:
        return bytes(self._encode(obj))

    def _loads(self, s: bytes) -> Any:
        return self._decode(s)


def _value_type(codec_name: str) -> type:
    options = type("_options", (), {"serializer": codec_name})
    return type(
        f"ValueType[{codec_name}]",
        (),
        {
            "_options": options,
            "from_data": classmethod(lambda cls, data, preferred_type=None: data),
        },
    )


_CODECS: Final = {
    "vigo_fleet_parts": (encode_fleet_parts, decode_fleet_parts),
    "vigo_fleet_state": (encode_fleet_state, decode_fleet_state),
    "vigo_alert_sent": (encode_alert_sent, decode_alert_sent),
}

FleetPartsType: Final = _value_type("vigo_fleet_parts")
FleetStateType: Final = _value_type("vigo_fleet_state")
AlertSentType: Final = _value_type("vigo_alert_sent")


def register_codecs() -> None:
    for name, (dumps, loads) in _CODECS.items():
        codecs.register(name, _Codec(dumps, loads))
