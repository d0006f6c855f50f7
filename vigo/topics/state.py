"""Bytes of the changelog-backed tables: the envoy record and the fleet entry.

Changelogs outlive releases, so every record carries a format number and decoding
tolerates fields added later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from vigo.projections.envoy import EnvoyState
from vigo.projections.fleet import FleetEntry
from vigo.projections.runs import RunSummary
from vigo.projections.status import RunOutcome, Status

FORMAT = 1


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
            "f": FORMAT,
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
        history=tuple(
            RunSummary(
                run_id=h[0],
                finished_at=h[1],
                finished_at_ms=h[2],
                outcome=RunOutcome(h[3]),
                changed=tuple(h[4]),
                failed=tuple(h[5]),
                errored_modules=tuple(h[6]),
            )
            for h in raw["h"]
        ),
        offsets=tuple(raw.get("o", (-1, -1, -1))),
    )
    return StoredEnvoy(partition=raw["p"], state=state)


@dataclass(frozen=True, slots=True)
class StoredFleetEntry:
    partition: int
    entry: FleetEntry


def encode_fleet_entry(record: StoredFleetEntry) -> bytes:
    return orjson.dumps([FORMAT, record.partition, record.entry.version, record.entry.status])


def decode_fleet_entry(data: bytes) -> StoredFleetEntry:
    _fmt, partition, version, status = orjson.loads(data)
    return StoredFleetEntry(partition, FleetEntry(version, Status(status)))


PARTIAL_SCHEMA = "vigo.fleet-partial/1"


def encode_fleet_partial(partition: int, by_status: dict[str, int], at_ms: int) -> bytes:
    """Internal: one partition's fleet counts, summed by the fleet owner."""
    return orjson.dumps(
        {"schema": PARTIAL_SCHEMA, "partition": partition, "by_status": by_status, "at_ms": at_ms}
    )


def decode_fleet_partial(data: bytes) -> tuple[int, dict[str, int]] | None:
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
    return partition, by_status


def read_status_change(data: bytes) -> tuple[str, int, Status] | None:
    """What the fleet projection needs of a `vigo.status-change/1`: envoy, version, to.
    None when the record is not one (the topic is public; anything may be written to it)."""
    try:
        raw = orjson.loads(data)
        if raw.get("schema") != "vigo.status-change/1":
            return None
        envoy_id, version, to = raw["envoy_id"], raw["version"], Status(raw["to"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(envoy_id, str) or not isinstance(version, int):
        return None
    return envoy_id, version, to
