"""The `envoys` table's records: envoy id -> `StoredEnvoy` as raw bytes, format 4 (msgpack,
laid out below, its tail compressed with zstd and a dictionary of ours); format 3 (the
same with LZ4) and the JSON objects of formats 1 and 2 still decode. `processor.records`
lists every record of ours and re-exports these names.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Final

import lz4.block
import msgspec
import orjson

from processor.records_tail import compress_tail, decompress_tail
from projections.envoy import EnvoyState
from projections.runs import MAX_IDS_PER_RUN, RunSummary, bound_history_ids
from topics.statuses import RunOutcome, Status

ENVOY_FORMAT: Final = 4


class StoredEnvoy(msgspec.Struct, frozen=True, gc=False):
    """An envoy's state and the input partition it lives in, so that per-partition
    indexes (liveness deadlines) can be rebuilt after a rebalance without rehashing."""

    partition: int
    state: EnvoyState


# -- envoy records, format 4 -----------------------------------------------------------------
#
# The table keeps every envoy as these bytes (the memory store too) and the agent decodes
# one per event, so the format is small and quick to read. One msgpack array, fields by
# position, times as integers, the status and the last outcome as the small codes below:
#
#   format (4; 3 reads too), partition, status code, flags (revoked 1, offline 2, stale 4,
#   forgotten 8: a revoked envoy shrunk after purge_after, SPEC 10.3), own interval or nil,
#   status since (ms), enrolled at and last seen or nil (both as "status since minus"),
#   tail
#
# The first eight are the head, read alone by `decode_envoy_head`. The tail is the rest, a
# msgpack array, compressed: format 4 with zstd (level 1, one frame, no checksum, no
# dictionary id) and the dictionary `processor/data/envoy-tail-1.zdict`; format 3 with
# LZ4 (block format, its size first). What dominates a tail is text: run ids (hex digits,
# which LZ4 cannot shrink: it finds repeats and has no entropy coding), timestamps,
# resource ids that recur from run to run. A full history's tail of about 1,360 bytes
# (`bench_memory.py`'s envoys) is about 490 bytes with the dictionary against 761 with
# LZ4, for 4.6 us to compress and 2.7 to decompress against 2.2 and 0.6 (entropy coding
# is what shrinks the hex, and what costs); without a dictionary zstd took twice the
# time for 578 bytes, each small frame carrying its own entropy tables. The dictionary
# was trained by `scripts/envoy_dictionary.py` on a synthetic fleet unlike the
# benchmarks' and the simulator's; it is part of the format (`processor.records_tail`
# checks its SHA-256): a new dictionary is a new format number, never the same file
# retrained.
#
# The tail:
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
# counts, and since the third release the run's config version and its runs-topic
# offset). msgspec encodes the history and decodes it straight into `RunSummary`s, with
# no Python step per entry. Outcome codes and times as deltas, as format 3 first had them
# before any release, were about 65 bytes a record smaller (of 790 with a full history)
# but took a Python step per entry: decoding 8 us instead of 6, encoding 11 instead of 9
# (`bench_memory.py`).
#
# The codes are append-only (changelogs hold them). Formats 1 and 2 are JSON objects;
# their first byte tells them apart.


def decompressed_tail(head: EnvoyHead) -> bytes:
    """The head's tail as msgpack: zstd with the dictionary (format 4), or LZ4 (3)."""
    if head.format == 4:
        return decompress_tail(head.tail)
    return lz4.block.decompress(head.tail)  # type: ignore[no-any-return]


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
    """A format 3 or 4 record's tail, decompressed (see above)."""

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
    """A format 3 or 4 record without its tail: what the per-partition indexes are built from
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
    return _UNPACK_TAIL_LABELS(decompressed_tail(head)).labels


def encode_tail(s: EnvoyState) -> bytes:
    """The tail of the state's record, uncompressed (see above)."""
    t0 = s.status_since_ms
    last_finished = s.last_run_finished_ms
    recent, history = s.recent_run_ids, s.history
    inactive_since = s.inactive_since_ms
    return _PACK(
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


def encode_stored_envoy(record: StoredEnvoy) -> bytes:
    """Format 4 (see above)."""
    s = record.state
    t0 = s.status_since_ms
    last_seen = s.last_seen_ms
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
            compress_tail(encode_tail(s)),
        ),
        record_buffer,
    )
    return bytes(record_buffer)


def decode_stored_envoy(data: bytes) -> StoredEnvoy:
    """A record of any format: 4, 3, or the JSON objects of formats 1 and 2 that
    changelogs written by earlier releases hold."""
    if data[:1] == b"{":
        return _decode_json_envoy(data)
    head = _UNPACK_HEAD(data)
    tail = _UNPACK_TAIL(decompressed_tail(head))
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


# Field order: formats 3 and 4 store `RunSummary` as the array of its fields and builds
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
    # Appended in the third release (SPEC 11.1); a history entry written before them has
    # ten fields and decodes with their defaults (None, -1).
    "config_version",
    "offset",
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
    raise ImportError("records: RunSummary or EnvoyState changed; update the format")


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
