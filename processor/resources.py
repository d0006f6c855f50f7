"""Resources that drift (SPEC 11.3), in two stages like the fleet numbers
(`processor.fleet`):

1. on the worker that owns an input partition, the envoy agent tells `ResourceCounter` of
   every run it applied (a late one included, a duplicate never); each (partition,
   kind, hour, scope) has a Space-Saving summary (`projections.resources`) in the
   changelog-backed table `resources`, held in memory between checkpoints and written at
   each checkpoint *before* the envoy states, with the highest runs offset it counted:
   a crash between the two writes replays runs the summaries already hold, and those are
   skipped by offset, so a run is counted exactly once;
2. after a checkpoint, every summary written since the last publish goes, whole, to the
   partials topic (key `r/<partition>/<kind>/<slot>/<scope>`, compacted: the latest
   wins), and the fleet owner keeps them in its table `resources-parts`
   (`ResourceParts`) and merges the live hours on request (`/api/resources/top`).

Bounds: the hours live in a ring of `bucket_count(window)` slots per partition, kind and
scope (a fixed set of keys, no deletes needed); a summary has at most
`resources.capacity` counters and `SUMMARY_BYTES` of them, so every record is far below
the broker's 1 MiB whatever the resource ids hold. Scopes are the fleet and the groups
named in `resources.groups` (by default those with a threshold of their own): a fixed,
small set, so a label with a million values cannot multiply the summaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
from faust.types import TableT
from prometheus_client import Gauge

from processor.state import HeldTable
from projections.groups import in_group, parse_label
from projections.resources import (
    KINDS,
    Bucket,
    Kind,
    SpaceSaving,
    bucket_count,
    bucket_of,
    envoy_hash,
    is_live,
    non_idempotent,
    run_resources,
    slot_of,
)
from topics.events import InputEvent, Run
from topics.statuses import RunOutcome

if TYPE_CHECKING:
    import faust

    from processor.config import Settings
    from projections.envoy import Applied

RESOURCES_FORMAT: Final = 1
#: Bytes of counters in one summary (ids and modules in UTF-8 plus `ENTRY_OVERHEAD`
#: each): a record stays under a fifth of the broker's 1 MiB whatever the ids hold.
SUMMARY_BYTES: Final = 192 * 1024
#: Summaries are sent to the fleet owner at most this often (whole, when they changed).
PUBLISH_EVERY_S: Final = 2.0
KEY_PREFIX: Final = b"r/"
#: The scope of the whole fleet; a group's scope is its label `KEY=VALUE`.
FLEET: Final = ""


@dataclass(frozen=True, slots=True)
class ResourceSettings:
    """`resources.window`, `resources.capacity` and the groups counted on their own."""

    window_ms: int = 24 * 3_600_000
    capacity: int = 1000
    groups: tuple[str, ...] = ()

    @property
    def buckets(self) -> int:
        return bucket_count(self.window_ms)

    @property
    def scopes(self) -> tuple[str, ...]:
        return (FLEET, *self.groups)

    def scopes_of(self, labels: Mapping[str, str]) -> list[str]:
        """The fleet, and each counted group the envoy is in."""
        scopes = [FLEET]
        for label in self.groups:
            parsed = parse_label(label)
            if parsed is not None and in_group(labels, *parsed):
                scopes.append(label)
        return scopes


def resource_settings(settings: Settings) -> ResourceSettings:
    config = settings.resources
    groups = config.groups if config.groups is not None else list(settings.group_thresholds)
    return ResourceSettings(config.window * 1000, config.capacity, tuple(groups))


# -- records ---------------------------------------------------------------------------------


def bucket_key(partition: int, kind: str, slot: int, scope: str) -> bytes:
    return f"r/{partition}/{kind}/{slot}/{scope}".encode("utf-8", "surrogatepass")


def parse_key(key: bytes) -> tuple[int, str, str] | None:
    """(partition, kind, scope) of a summary's key; None for anything else."""
    parts = key.decode("utf-8", "surrogatepass").split("/", 4)
    if len(parts) != 5 or parts[0] != "r" or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2], parts[4]


def encode_bucket(bucket: Bucket) -> bytes:
    """msgpack `[format, scope, kind, partition, hour start ms, upto offset, floor,
    [[id, module, count, error, [envoy hash...]], ...]]`."""
    floor, entries = bucket.summary.to_wire()
    return msgspec.msgpack.encode(
        [
            RESOURCES_FORMAT,
            bucket.scope,
            bucket.kind,
            bucket.partition,
            bucket.start_ms,
            bucket.upto,
            floor,
            entries,
        ]
    )


def decode_bucket(data: bytes, capacity: int) -> Bucket | None:
    """None for anything that is not a well-formed summary (never raises)."""
    try:
        raw = msgspec.msgpack.decode(data)
        fmt, scope, kind, partition, start_ms, upto, floor, entries = raw
        if fmt != RESOURCES_FORMAT or kind not in KINDS:
            return None
        summary = SpaceSaving.from_wire(capacity, SUMMARY_BYTES, [floor, entries])
        return Bucket(str(scope), kind, int(partition), int(start_ms), int(upto), summary)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None


# -- stage 1: per partition, in the envoy agent ------------------------------------------------


@dataclass
class ResourceCounter:
    """The envoy agent's side: counts applied runs into the partitions' summaries and
    sends the summaries written at a checkpoint to the fleet owner."""

    app: faust.App
    table: TableT[Any, Any]
    #: The summaries changed since the last checkpoint (`Bucket`s, encoded at the flush).
    held: HeldTable
    partials_topic: faust.TopicT
    settings: ResourceSettings
    clock: Callable[[], float]
    counters_gauge: Gauge | None = None
    #: Keys written (or, after an assignment, possibly held) and not yet sent.
    _dirty: set[bytes] = field(default_factory=set)
    #: Counters per key as last written or sent, by kind: `vigo_resource_counters`.
    _sizes: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    _published_at: float = float("-inf")

    def encode(self, bucket: Bucket) -> bytes:
        """The held table's encoder: the record, and its size for the gauge."""
        key = bucket_key(bucket.partition, bucket.kind, self._slot(bucket.start_ms), bucket.scope)
        self._sizes[key] = (bucket.kind, len(bucket.summary))
        return encode_bucket(bucket)

    def _slot(self, start_ms: int) -> int:
        return slot_of(start_ms, self.settings.buckets)

    def on_event(
        self, partition: int, offset: int, record_ms: int, event: InputEvent, applied: Applied
    ) -> None:
        """An input record the envoy agent applied: runs only (late ones too), with the
        envoy's state after it (its labels, and its history for non-idempotence)."""
        if type(event) is not Run or applied.state is None:
            return
        if applied.outcome not in ("applied", "late") or applied.run_outcome is RunOutcome.CLEAN:
            return  # a clean run (most runs) has nothing changed or failed
        # A rollout's changes are the point of the rollout, not drift (SPEC 10.1).
        intentional = applied.run_outcome is RunOutcome.INTENTIONAL
        changed = {} if intentional else run_resources(event, "changed")
        failed = run_resources(event, "failed")
        if not (changed or failed):
            return
        if not is_live(bucket_of(record_ms), int(self.clock() * 1000), self.settings.window_ms):
            return  # a replayed record older than the window: it would be dropped anyway
        stuck: dict[str, str] = {}
        if changed and applied.outcome == "applied":
            ids = non_idempotent(applied.state.history, event, changed)
            stuck = {item: changed[item] for item in ids}
        envoy = envoy_hash(event.envoy_id)
        scopes = self.settings.scopes_of(applied.state.labels)
        counted: tuple[tuple[Kind, dict[str, str]], ...] = (
            ("changed", changed),
            ("failed", failed),
            ("non_idempotent", stuck),
        )
        for kind, found in counted:
            if found:
                for scope in scopes:
                    self._count(partition, offset, record_ms, kind, scope, found, envoy)

    def _count(
        self,
        partition: int,
        offset: int,
        record_ms: int,
        kind: Kind,
        scope: str,
        found: Mapping[str, str],
        envoy: int,
    ) -> None:
        start = bucket_of(record_ms)
        key = bucket_key(partition, kind, self._slot(start), scope)
        bucket = self._load(key)
        if bucket is not None and (bucket.start_ms > start or offset <= bucket.upto):
            return  # an hour that left the ring, or a run counted before a crash
        if bucket is None or bucket.start_ms < start:
            summary = SpaceSaving(self.settings.capacity, SUMMARY_BYTES)
            upto = -1 if bucket is None else bucket.upto
            bucket = Bucket(scope, kind, partition, start, upto, summary)
        for item, module in found.items():
            bucket.summary.add(item, module, envoy)
        bucket.upto = offset
        self.held.put(partition, key, bucket)
        self._dirty.add(key)

    def _load(self, key: bytes) -> Bucket | None:
        held = self.held.held.get(key)
        if held is not None:
            value: Bucket = held[1]
            return value
        data = self.table.get(key)
        return decode_bucket(data, self.settings.capacity) if data else None

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Revoked: nothing of theirs is sent or gauged any more."""
        gone = {f"r/{p}/".encode() for p in partitions}
        self._dirty = {k for k in self._dirty if not k.startswith(tuple(gone))}
        self._sizes = {k: v for k, v in self._sizes.items() if not k.startswith(tuple(gone))}
        self._set_gauge()

    def assigned(self, partitions: Iterable[int]) -> None:
        """Assigned: every summary the partition may hold is sent again once it is
        recovered, so a fleet owner that missed the last publish (a crash between a
        checkpoint and the publish after it) catches up."""
        for partition in partitions:
            for kind in KINDS:
                for slot in range(self.settings.buckets):
                    for scope in self.settings.scopes:
                        self._dirty.add(bucket_key(partition, kind, slot, scope))

    async def publish_when_due(self) -> None:
        """Called by the envoy agent after a checkpoint: what is in the table then has been
        written and acknowledged, so the fleet owner never sees a count the partition's
        changelog does not hold."""
        now = time.monotonic()
        if now - self._published_at < PUBLISH_EVERY_S or not self._dirty:
            return
        if self.app.rebalancing or self.app.in_recovery:
            return
        self._published_at = now
        pending, self._dirty = sorted(self._dirty), set()
        for n, key in enumerate(pending):
            if key in self.held.held:
                self._dirty.add(key)  # changed again since the checkpoint: next time
                continue
            data = self.table.get(key)
            if not data:
                continue
            if key not in self._sizes:
                bucket = decode_bucket(data, self.settings.capacity)
                if bucket is not None:
                    self._sizes[key] = (bucket.kind, len(bucket.summary))
            try:
                await self.partials_topic.send(key=key, value=data)
            except BaseException:
                self._dirty.update(pending[n:])
                raise
        self._set_gauge()

    def _set_gauge(self) -> None:
        if self.counters_gauge is None:
            return
        totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        for kind, size in self._sizes.values():
            totals[kind] = totals.get(kind, 0) + size
        for kind, total in totals.items():
            self.counters_gauge.labels(kind=kind).set(total)
