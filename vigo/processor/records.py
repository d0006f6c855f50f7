"""Every byte of our own records: the values of the changelog-backed tables and of the
internal topics (fleet partials, ticks), and the Faust codecs that put them in tables.

The public topics' bytes live in `vigo.topics`; these are ours alone, but changelogs
outlive releases, so every record kind carries a format number and decoding tolerates
the unnumbered forms of the first release and fields added later.

- table `envoys`: envoy id -> `StoredEnvoy`, a JSON object, `ENVOY_FORMAT` in `"f"`
  (format 2 adds the counts of changed/failed resources and errored modules to each
  history entry, and stores `"iv"` null for an envoy without its own interval, which then
  follows the configured default; format 1 entries are read with the counts of their lists
  and bounded, and format 1's interval, the default frozen at enrollment, is read as the
  envoy's own since the two cannot be told apart);
- table `fleet` (first release only, no longer declared): envoy id -> `StoredFleetEntry`;
- table `fleet-parts`: partition -> `FleetCounts`, JSON, `FLEET_PARTS_FORMAT` in `"f"`;
- table `fleet-state`: `threshold` -> `ThresholdState`, `history` -> `ConvergenceHistory`,
  JSON, `FLEET_STATE_FORMAT` in `"f"`;
- table `alerts-sent`: alert id -> outbox record time (ms), `[ALERT_SENT_FORMAT, ms]`;
- topic `fleet.partials`: `p<partition>` -> one partition's counts, `vigo.fleet-partial/1`;
- topic `envoy.ticks` (and ticks on `fleet.partials`): `TICK_KEY` -> empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
from faust.serializers import codecs

from vigo.projections.envoy import EnvoyState
from vigo.projections.fleet import FleetCounts, FleetEntry
from vigo.projections.history import ConvergenceHistory
from vigo.projections.runs import MAX_IDS_PER_RUN, RunSummary, bound_history_ids
from vigo.projections.threshold import ThresholdState
from vigo.topics.statuses import RunOutcome, Status

ENVOY_FORMAT: Final = 2
FLEET_ENTRY_FORMAT: Final = 1
FLEET_PARTS_FORMAT: Final = 1
FLEET_STATE_FORMAT: Final = 1
ALERT_SENT_FORMAT: Final = 1

#: The key of tick records, on the ticks topic and on the fleet-partials topic.
TICK_KEY: Final = b"tick"
#: Ticks older than this (by record time) are replays from before a restart: ignored.
TICK_MAX_AGE_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class StoredEnvoy:
    """An envoy's state and the input partition it lives in, so that per-partition
    indexes (liveness deadlines) can be rebuilt after a rebalance without rehashing."""

    partition: int
    state: EnvoyState


def encode_stored_envoy(record: StoredEnvoy) -> bytes:
    s = record.state
    return orjson.dumps(
        {
            "f": ENVOY_FORMAT,
            "p": record.partition,
            "id": s.envoy_id,
            "rv": s.revoked,
            "lb": s.labels,
            "iv": s.interval_s,
            "en": s.enrolled_at_ms,
            "ls": s.last_seen_ms,
            "la": s.last_seen_at,
            "lo": s.last_outcome,
            "lf": s.last_run_finished_ms,
            "cc": s.consecutive_changed,
            "of": s.offline,
            "st": s.stale,
            "se": s.stale_episodes,
            "s": s.status,
            "ss": s.status_since_ms,
            "v": s.version,
            "ri": s.recent_run_ids,
            "h": [
                [
                    r.run_id,
                    r.finished_at,
                    r.finished_at_ms,
                    r.outcome,
                    r.changed,
                    r.failed,
                    r.errored_modules,
                    r.changed_count,
                    r.failed_count,
                    r.errored_modules_count,
                ]
                for r in s.history
            ],
            "o": s.offsets,
        }
    )


def decode_stored_envoy(data: bytes) -> StoredEnvoy:
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


@dataclass(frozen=True, slots=True)
class StoredFleetEntry:
    partition: int
    entry: FleetEntry


def encode_fleet_entry(record: StoredFleetEntry) -> bytes:
    return orjson.dumps(
        [FLEET_ENTRY_FORMAT, record.partition, record.entry.version, record.entry.status]
    )


def decode_fleet_entry(data: bytes) -> StoredFleetEntry:
    _fmt, partition, version, status = orjson.loads(data)
    return StoredFleetEntry(partition, FleetEntry(version, Status(status)))


PARTIAL_SCHEMA = "vigo.fleet-partial/1"


def encode_fleet_partial(partition: int, counts: FleetCounts, at_ms: int) -> bytes:
    """Internal: one partition's fleet counts, summed by the fleet owner."""
    by_status = counts.as_dict()
    return orjson.dumps(
        {"schema": PARTIAL_SCHEMA, "partition": partition, "by_status": by_status, "at_ms": at_ms}
    )


def decode_fleet_partial(data: bytes) -> tuple[int, FleetCounts] | None:
    """None for anything that is not a well-formed partial."""
    try:
        raw = orjson.loads(data)
        if raw.get("schema") != PARTIAL_SCHEMA:
            return None
        partition = raw["partition"]
        by_status = {str(k): int(v) for k, v in raw["by_status"].items()}
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(partition, int):
        return None
    return partition, FleetCounts.from_dict(by_status)


def encode_fleet_parts(counts: FleetCounts) -> bytes:
    return orjson.dumps({"f": FLEET_PARTS_FORMAT, "by_status": counts.as_dict()})


def decode_fleet_parts(data: bytes) -> FleetCounts:
    raw = orjson.loads(data)
    # The first release stored the bare by-status map.
    by_status = raw["by_status"] if "f" in raw else raw
    return FleetCounts.from_dict(by_status)


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


# -- Faust codecs --------------------------------------------------------------------------
#
# Faust derives a table's changelog codec from its `value_type` (`_options.serializer`), for
# writing and for recovery alike, and rebuilds values through `from_data`; a table declared
# with a codec in `schema` only would recover nothing. So each table's value type names one
# of these codecs.


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
    "vigo_envoy": (encode_stored_envoy, decode_stored_envoy),
    "vigo_fleet_entry": (encode_fleet_entry, decode_fleet_entry),
    "vigo_fleet_parts": (encode_fleet_parts, decode_fleet_parts),
    "vigo_fleet_state": (encode_fleet_state, decode_fleet_state),
    "vigo_alert_sent": (encode_alert_sent, decode_alert_sent),
}

EnvoyRecordType: Final = _value_type("vigo_envoy")
FleetPartsType: Final = _value_type("vigo_fleet_parts")
FleetStateType: Final = _value_type("vigo_fleet_state")
AlertSentType: Final = _value_type("vigo_alert_sent")


def register_codecs() -> None:
    for name, (dumps, loads) in _CODECS.items():
        codecs.register(name, _Codec(dumps, loads))
