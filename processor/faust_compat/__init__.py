"""Every use of faust-streaming's internals, in one module. Verified on faust-streaming
0.15.x, the series `pyproject.toml` pins; re-verify each item before moving the pin.

- `write_under(stream, event, write)`: Faust refuses a table write outside an event's
  context and sends each changelog record to the partition of the stream's *current*
  event. The fleet aggregator writes its state after an await (outputs first), so it names
  the event the write belongs to (private `Stream._set_current_event`; no public API
  exists upstream) and puts the previous one back at once: a stream reads
  `Stream.current_event` after its awaits, and an event left there by the agent is taken
  in place of the one that arrived, which is lost (seen here with `take_events`).
- `committed_offset(app, tp)`: where consumption of a partition resumed. Faust keeps it
  (private `Consumer._committed_offset`); asking the broker would cost a round trip on
  every check.
- `DeliveryGuard`: faust-streaming has a history of leaving records out of a stream:
  around recovery and rebalances it can resume fetching before it seeks to the committed
  offsets (upstream #216, #221), and its consumer treats any jump in the offsets it
  fetched as a gap that is "acked" and committed past (upstream #606, #312). Seen here:
  outbox offsets delivered 1, 3, 4 after a restart with a backlog, and partitions kept
  assigned but never fetched again after a second rebalance. The guard checks that each
  agent's offsets on a partition follow each other; on a hole it takes the hole out of
  Faust's gap list (so the commit cannot pass it), drops what follows, asks the broker
  (a second read, by a client of our own) which record really comes first, accepts what
  is not in the log (compaction, transaction markers, retention) and seeks back to it.
  Every `STALL_S` it also seeks partitions that have records but make no progress, which
  restarts a fetch Faust stopped.
- `InputBatches`: faust-streaming hands every fetched record to the agents one at a time:
  per record its consumer's drain loop starts two tasks (`Service.wait_first` of the
  conductor callback and the flow-control wait), the conductor takes a lock, builds an
  `Event` and queues it, and the stream's iterator acks, sets the current event and runs
  sensors. Measured here with an agent that does nothing: 11,000 records/s; the same
  records handed over as the batches the consumer fetched them in: 101,000/s. So the envoy
  agent's topics are drained in batches (private `Consumer._drain_messages`, replaced on
  the consumer Faust creates, with the same offset and gap bookkeeping as upstream's loop);
  every other topic goes through Faust's own callback. Records of an older consumer
  generation or read while the flow is suspended are dropped, as Faust's streams do.
  A batch is tracked (its last record in `Consumer._unacked_messages`) while the agent
  works on it, so a rebalance waits for the batch; records are acked with the public
  `Consumer.ack`, and their offsets go to the monitor's read offsets (Faust's sensors
  would), which the lag metric reads.
- `BatchProducer`: records for one partition sent as aiokafka producer batches
  (`AIOKafkaProducer.create_batch`/`send_batch`, through Faust's private
  `Producer._ensure_producer`) instead of a Faust `FutureMessage` and an aiokafka future per
  record. Used for the changelog (`TableWriter`) and for status changes (`Outputs`).
- `TableWriter`: Faust sends one changelog record per table write (`Table.send_changelog`
  with a `FutureMessage`, about 100 us each here, the largest single cost of the worker).
  The writer puts a batch of entries into the table's store and sends their changelog
  records as one aiokafka batch per partition (`AIOKafkaProducer.send_batch`, through
  Faust's private `Producer._ensure_producer`), with the bytes Faust would send, then
  records the persisted changelog offset for RocksDB as `Table._on_changelog_sent` does.
  The RocksDB store finds the partition of a write from the current event (private
  `faust.streams._current_event`); the writer sets a stand-in with that partition.
- `PromptTableManager`: Faust's table manager sleeps a fixed second before it starts
  recovery (`TableManager.on_start`, to let tables declared late register); every table
  of ours is declared before the app starts, so the second is a third of a worker's
  start-up for nothing. Its `on_start` does the same without the sleep (private
  `_update_channels`); installed through Faust's public `TableManager` setting.
- `ChangelogTable` and `ResumableMemoryStore` (installed through Faust's public `Table`
  setting; `audit_recoveries`): table state lost with the memory store around
  rebalances. Seen here once in the long chaos soak: a worker restored a partition from
  its start, and the two envoys whose only records were the oldest of that changelog were
  missing from its table (and from the fleet numbers) until the end; never with RocksDB,
  which keeps each partition and its applied offset and so rarely reads from the start.
  Faust's memory store (since upstream PR #199) also deletes, whenever a recovery ends
  (Faust signals that even when a rebalance cut the read short), the restored keys of
  every partition not then active, and reports no persisted offset, so Recovery resumes
  a partition from whatever offset it kept for it; and its changelog reader
  (`Recovery._slurp_changelogs`) lets a record of a partition that is neither active nor
  standby any more fall through with the previous record's table and offsets. The
  resumable memory store prunes nothing and reports, per partition, the offset its data
  is applied up to (from recovery and from every acknowledged write), which Recovery
  resumes from; the table applies only records of its own changelog. And since the loss
  in the soak happened on a plain read from the start, the store audits each recovery:
  before Faust resumes the streams it reads again, with a client of our own, the range
  the recovery read, and puts back the newest record of any key the recovery missed (a
  warning names the table, partition, range, count and keys). `AuditedRocksDBStore`
  audits Faust's RocksDB store the same way: a fresh node reads each partition from its
  start too (a restart with local state reads only what is new, and so does its audit).
  Tables of raw bytes only (the envoys, the alert journal and windows); the cost is a
  second read of what a recovery reads.
- `quiet_root_logger()`: at `-l warn` and above, Faust's worker sets the root logger to
  DEBUG so that its terminal spinner turns on every record (`Worker._setup_spinner_handler`):
  every `logger.debug` call of Faust, mode and aiokafka on the hot path then builds a record
  that nothing prints (about 6% of the worker's time on a backlog). The root logger goes
  back to the level of the handler that prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol, cast

import faust
from aiokafka.errors import KafkaError
from faust.stores import memory, rocksdb
from faust.streams import _current_event
from faust.tables import TableManager
from faust.types import TP, EventT, Message, StoreT, TableT
from yarl import URL

log = logging.getLogger(__name__)

#: A partition with records but without progress for this long is fetched again.
STALL_S = 10.0
#: The envoy agent commits when it has worked off what was fetched, at most this often.
COMMIT_CAUGHT_UP_S = 0.5
#: The longest a memory store's audit may read one changelog partition again.
AUDIT_TIMEOUT_S = 120.0


def write_under(stream: faust.Stream[Any], event: EventT[Any], write: Callable[[], None]) -> None:
    """Run `write` (table writes) with `event` as the stream's current event, then put the
    previous current event back (see above)."""
    previous = stream.current_event
    stream._set_current_event(event)
    try:
        write()
    finally:
        stream._set_current_event(previous)


class PromptTableManager(TableManager):
    """Faust's table manager without the second of sleep before recovery (see above)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await cast(Any, self)._update_channels()
            await self.recovery.start()


class ChangelogReader(Protocol):
    """End offsets and ranges of a changelog, read by a client of our own."""

    async def __call__(self, tps: Iterable[TP]) -> Mapping[TP, int]: ...

    async def read(
        self,
        tp: TP,
        start: int,
        end: int,
        timeout_s: float,
        on_batch: Callable[[list[tuple[int, bytes | None, bytes | None]]], None],
    ) -> bool: ...


class _AuditsRecovery:
    """What both of our stores share: where each recovery started (Recovery asks
    `persisted_offset` once per rebalance for each partition it will read), and the
    audit of each recovery against the changelog (see above)."""

    app: Any
    table: Any
    _unaudited: dict[TP, int]
    #: Set by the topology for tables of raw bytes; without it nothing is audited.
    reader: ChangelogReader | None
    #: Keys the audits found missing or stale, since start.
    repaired: int
    #: Told (table name, keys) of every repair.
    on_repair: Callable[[str, int], None] | None

    def _init_audit(self) -> None:
        #: Per partition, the offset the oldest recovery not yet audited started after.
        self._unaudited = {}
        self.reader = None
        self.repaired = 0
        self.on_repair = None

    def _recovery_starts(self, tp: TP, offset: int | None) -> None:
        self._unaudited.setdefault(tp, -1 if offset is None else offset)

    def _partition_data(self, tp: TP) -> Any:
        """The partition's keys and values: `get`, item assignment and `pop`."""
        raise NotImplementedError

    def _applied_up_to(self, tp: TP, offset: int) -> None:
        raise NotImplementedError

    async def _audit_recovery(self, active_tps: set[TP]) -> None:
        """Reads again, with a client of our own, what this recovery should have read of
        each active partition, and puts back what it missed. Faust awaits this (the
        store's `on_recovery_completed`) before the streams resume, so no write of ours
        can be overwritten by an older record."""
        reader = self.reader
        pending = sorted(tp for tp in active_tps if tp in self._unaudited)
        if reader is None or not pending:
            return
        if cast(Any, self.app.tables).recovery.signal_recovery_start.is_set():
            # Faust calls this also when a rebalance cut the read short; the next
            # recovery goes on from there, and its audit starts where this one would.
            return
        try:
            ends = await reader(pending)
        except (TimeoutError, KafkaError, OSError) as exc:
            name = self.table.name
            log.warning("table %s: recovery not audited yet, no end offsets: %r", name, exc)
            return
        read = 0
        for tp in pending:
            start = self._unaudited[tp]
            if ends[tp] > start + 1:
                audit = _RecoveryAudit(self._partition_data(tp))
                try:
                    done = await reader.read(tp, start + 1, ends[tp], AUDIT_TIMEOUT_S, audit.check)
                except (TimeoutError, KafkaError, OSError) as exc:
                    done, audit.error = False, repr(exc)
                if not done:
                    # Left for the next recovery's audit, which starts where this one would.
                    log.warning(
                        "table %s: %s[%d] from offset %d could not be read again (%s); "
                        "its recovery is not audited yet",
                        self.table.name,
                        tp.topic,
                        tp.partition,
                        start + 1,
                        audit.error or f"not within {AUDIT_TIMEOUT_S:.0f} s",
                    )
                    continue
                self._repair(tp, audit)
                read += audit.records
            del self._unaudited[tp]
        log.info(
            "table %s: recovery audited, %d changelog records read again (%d keys put back "
            "since start)",
            self.table.name,
            read,
            self.repaired,
        )

    def _repair(self, tp: TP, audit: _RecoveryAudit) -> None:
        data = audit.data
        for key, value in audit.wrong.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        if audit.last_offset is not None:
            self._applied_up_to(tp, audit.last_offset)
        missed = len(audit.wrong)
        if missed:
            self.repaired += missed
            if self.on_repair is not None:
                self.on_repair(self.table.name, missed)
            log.warning(
                "table %s: recovery of %s[%d] offsets %d..%d missed the newest record of "
                "%d keys (faust-streaming recovery), e.g. %s; put back from the changelog",
                self.table.name,
                tp.topic,
                tp.partition,
                audit.first_offset,
                audit.last_offset,
                missed,
                ", ".join(_key_text(key) for key in list(audit.wrong)[:3]),
            )


class ResumableMemoryStore(_AuditsRecovery, memory.Store):  # type: ignore[type-arg]
    """A memory store that keeps every partition it was given, knows per partition the
    changelog offset its data is applied up to, and audits each recovery (see above)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._applied: dict[TP, int] = {}
        self._init_audit()

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        data, applied = self.data, self._applied
        for event in batch:
            message = event.message
            key = to_key(event.key)
            if message.value is None:
                data.pop(key, None)
            else:
                data[key] = to_value(event.value)
            if message.offset > applied.get(message.tp, -1):
                applied[message.tp] = message.offset

    def persisted_offset(self, tp: TP) -> int | None:
        """Where Recovery starts reading, and the audit after it. -1 for a partition
        never seen: Recovery then reads it from its start, instead of from an offset it
        may have kept from a record it should not have taken."""
        applied = self._applied.get(tp, -1)
        self._recovery_starts(tp, applied)
        return applied

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        if offset > self._applied.get(tp, -1):
            self._applied[tp] = offset

    def _partition_data(self, tp: TP) -> Any:
        return self.data

    def _applied_up_to(self, tp: TP, offset: int) -> None:
        self.set_persisted_offset(tp, offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Prunes nothing: what is kept of a partition that moved away is exact up to its
        offset, and is brought up to date from there if the partition comes back."""
        await self._audit_recovery(active_tps)


class AuditedRocksDBStore(_AuditsRecovery, rocksdb.Store):
    """Faust's RocksDB store, whose recoveries are audited too (see above): a fresh
    node reads every partition from its start, as the memory store does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_audit()

    def persisted_offset(self, tp: TP) -> int | None:
        offset = super().persisted_offset(tp)
        self._recovery_starts(tp, offset)
        return offset

    def _partition_data(self, tp: TP) -> Any:
        return _PartitionDB(self._db_for_partition(tp.partition))

    def _applied_up_to(self, tp: TP, offset: int) -> None:
        persisted = super().persisted_offset(tp)
        if persisted is None or offset > persisted:
            self.set_persisted_offset(tp, offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        await self._audit_recovery(active_tps)


class _PartitionDB:
    """One partition's RocksDB, raw bytes, seen as the audit reads and repairs it."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        return cast(bytes | None, self._db.get(key))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)

    def pop(self, key: bytes, default: None = None) -> None:
        self._db.delete(key)


def _key_text(key: Any) -> str:
    """A key for a log line: cut to 64 characters, control characters escaped."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    return repr(text[:64])


@dataclass
class _RecoveryAudit:
    """Compares a changelog range, record by record in offset order, with the store's
    partition (`data`):
    a key stays in `wrong` (with its newest value) only if its newest record disagrees
    with the store. Nothing else is held, so a million-record range costs no more
    memory than the keys found wrong (and those whose newest record is still to come)."""

    data: Any
    wrong: dict[Any, bytes | None] = field(default_factory=dict)
    records: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    error: str | None = None

    def check(self, batch: list[tuple[int, bytes | None, bytes | None]]) -> None:
        if not batch:
            return
        data, wrong = self.data, self.wrong
        for _, key, value in batch:
            if data.get(key) == value:
                wrong.pop(key, None)
            else:
                wrong[key] = value
        self.records += len(batch)
        if self.first_offset is None:
            self.first_offset = batch[0][0]
        self.last_offset = batch[-1][0]


class ChangelogTable(faust.Table):  # type: ignore[type-arg]
    """Faust's table with the resumable memory store, applying only records of its own
    changelog (see above)."""

    def _new_store_by_url(self, url: str | URL) -> StoreT[Any, Any]:
        scheme = URL(str(url)).scheme
        ours = {"memory": ResumableMemoryStore, "rocksdb": AuditedRocksDBStore}.get(scheme)
        if ours is None:
            return super()._new_store_by_url(url)
        return cast(
            StoreT[Any, Any],
            ours(
                url,
                self.app,
                self,
                table_name=self.name,
                key_type=self.key_type,
                key_serializer=self.key_serializer,
                value_serializer=self.value_serializer,
                value_type=self.value_type,
                loop=self.loop,
                options=self.options,
            ),
        )

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        own = self.changelog_topic.get_topic_name()
        events = list(batch)
        mine = [event for event in events if event.message.topic == own]
        if len(mine) < len(events):
            stray = next(e.message for e in events if e.message.topic != own)
            log.warning(
                "table %s: recovery handed it %s[%d] offset %d, a record of another "
                "table's changelog; not applied",
                self.name,
                stray.topic,
                stray.partition,
                stray.offset,
            )
        super().apply_changelog_batch(mine)


def audit_recoveries(
    app: faust.App, reader: ChangelogReader, on_repair: Callable[[str, int], None]
) -> None:
    """Every table of raw bytes keys and values on the memory store audits its recoveries
    with `reader` and reports repairs to `on_repair` (tables of other types are not read
    again: their records would need Faust's serializers)."""
    for table in app.tables.values():
        store = table.data
        if isinstance(store, _AuditsRecovery) and table.key_type is table.value_type is bytes:
            store.reader, store.on_repair = reader, on_repair


def quiet_root_logger() -> None:
    """Undo the spinner's DEBUG root level (see above); the printing handlers keep theirs."""
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """The offset consumption of `tp` resumed from, as Faust's consumer knows it."""
    committed = cast(Any, app.consumer)._committed_offset.get(tp)
    return int(committed) if committed is not None else None


def _forget_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Take [start, end) out of the offsets Faust would commit past as a gap (#606)."""
    gaps = cast(Any, app.consumer)._gap.get(tp)
    if gaps:
        gaps.chop(start, end)


def _accept_faust_gap(app: faust.App, tp: TP, start: int, end: int) -> None:
    """Let Faust commit past a confirmed hole [start, end). After a seek Faust counts the
    hole from one past the seek offset, so a hole starting there would hold the commit
    back for ever."""
    cast(Any, app.consumer)._gap[tp].addi(start, end)


class OffsetSource(Protocol):
    """Offsets straight from the broker, off Faust's consumer (`EndOffsets`)."""

    async def __call__(self, tps: Iterable[TP]) -> Mapping[TP, int]: ...

    async def first_offset(self, tp: TP, offset: int) -> int | None: ...


@dataclass
class DeliveryGuard:
    """One agent's check that no record of its topics is skipped (see the module text).

    `accept` is called for every event, in order, before the agent uses it; `settle` after
    each batch resolves the holes it found; `watch` runs from a timer."""

    app: faust.App
    topics: frozenset[str]
    offsets: OffsetSource
    #: Called with the topic of every hole found.
    on_gap: Callable[[str], None] = lambda topic: None
    #: The next offset expected per partition.
    _next: dict[TP, int] = field(default_factory=dict)
    #: Holes found since the last `settle`: tp -> (first missing, first delivered after).
    _found: dict[TP, tuple[int, int]] = field(default_factory=dict)
    #: Partitions sought back, and the offset the re-read must deliver first.
    _pending: dict[TP, int] = field(default_factory=dict)
    _progress_at: dict[TP, float] = field(default_factory=dict)
    _stall_check_at: float = 0.0

    def accept(self, tp: TP, offset: int) -> bool:
        """True when the agent may use the record at `offset`; False for a redelivery of
        something already used, or for a record past a hole that is being read again."""
        pending = self._pending.get(tp)
        if pending is not None:
            if offset != pending:
                return False  # fetched before the seek back took effect
            del self._pending[tp]
            return self._advance(tp, offset)
        if tp in self._found:
            return False  # past a hole: read again after `settle`
        expected = self._next.get(tp)
        if expected is None:
            expected = committed_offset(self.app, tp)
        if expected is None or offset == expected:
            return self._advance(tp, offset)
        if offset < expected:
            return False  # already used: a redelivery
        self._found[tp] = (expected, offset)
        _forget_faust_gap(self.app, tp, expected, offset)
        self.on_gap(tp.topic)
        return False

    def settling(self, partition: int) -> bool:
        """Whether a hole of this partition number is being read again: what the agent
        knows of its envoys may lag behind, so liveness waits."""
        return any(tp.partition == partition for tp in (*self._found, *self._pending))

    def _advance(self, tp: TP, offset: int) -> bool:
        self._next[tp] = offset + 1
        self._progress_at[tp] = time.monotonic()
        return True

    async def settle(self) -> None:
        """For each hole found: ask the broker which record really comes first at the
        hole, accept what is not in the log (deleted, compacted, transaction markers),
        and seek back to that record so that it is read again."""
        found, self._found = self._found, {}
        actives = self.app.assignor.assigned_actives()
        for tp, (missing, delivered) in found.items():
            if tp not in actives:
                continue  # moving away: the next owner starts from the committed offset
            first = await self.offsets.first_offset(tp, missing)
            target = missing if first is None else min(first, delivered)
            if target > missing:
                _accept_faust_gap(self.app, tp, missing, target)
                self._next[tp] = target
            log.warning(
                "%s[%d]: offsets %d..%d were not delivered; %s",
                tp.topic,
                tp.partition,
                missing,
                delivered - 1,
                f"{target - missing} not in the log, reading again from {target}"
                if target > missing
                else "reading them again",
            )
            self._pending[tp] = target
            await self.app.consumer.seek(tp, target)

    def position(self, tp: TP) -> int:
        """The next offset to process: past what was used, or where consumption resumed."""
        known = self._next.get(tp)
        if known is not None:
            return known
        return committed_offset(self.app, tp) or 0

    def forget(self, tps: Iterable[TP]) -> None:
        """On revocation: the partition may come back after another worker moved it on."""
        for tp in tps:
            for state in (self._next, self._found, self._pending, self._progress_at):
                state.pop(tp, None)

    async def watch(self) -> None:
        """Every STALL_S: seek each partition that has records it does not progress on to
        where it stands, which restarts the fetch (what comes twice is a redelivery)."""
        now = time.monotonic()
        if now - self._stall_check_at < STALL_S or self.app.rebalancing:
            return
        self._stall_check_at = now
        assigned = [tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.topics]
        if not assigned:
            return
        ends = await self.offsets(assigned)
        for tp in assigned:
            position = self.position(tp)
            if ends.get(tp, 0) <= position:
                self._progress_at[tp] = now
                continue
            since = self._progress_at.setdefault(tp, now)
            if now - since >= STALL_S:
                log.warning(
                    "%s[%d] made no progress for %.0f s at offset %d of %d: fetching again",
                    tp.topic,
                    tp.partition,
                    now - since,
                    position,
                    ends[tp],
                )
                self._progress_at[tp] = now
                self._found.pop(tp, None)
                self._pending[tp] = position
                await self.app.consumer.seek(tp, position)


# -- input in batches -----------------------------------------------------------------------


@dataclass
class InputBatches:
    """One agent's topics, delivered in the batches the consumer fetched them in (see the
    module text). `install` before the worker starts; the agent loops over `batches()`
    and calls `ack` once a batch's outputs and states are acknowledged."""

    app: faust.App
    topics: frozenset[str]
    #: Records handed to the agent at most at once (several fetches are merged).
    max_records: int
    #: Fetched batches waiting for the agent: the drain loop waits when it is full.
    queue_size: int = 4
    _queue: asyncio.Queue[list[Message]] = field(init=False)
    _committed_at: float = 0.0

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)

    def install(self) -> None:
        """Drain the consumer Faust creates next (the worker's) through `_drain`."""
        app = cast(Any, self.app)
        new_consumer = app._new_consumer

        def consumer_draining_in_batches() -> Any:
            consumer = new_consumer()

            async def drain(fetcher: Any) -> None:
                await self._drain(consumer, fetcher)

            consumer._drain_messages = drain
            return consumer

        app._new_consumer = consumer_draining_in_batches

    async def batches(self) -> AsyncIterator[list[Message]]:
        """The next records for the agent, tracked as in progress until `ack`."""
        while True:
            batch = list(await self._queue.get())
            while len(batch) < self.max_records and not self._queue.empty():
                batch.extend(self._queue.get_nowait())
            generation = self.app.consumer_generation_id
            if not self.app.flow_control.is_active():
                continue  # a rebalance: the owner reads them again from the committed offset
            current = [m for m in batch if m.generation_id == generation]
            if not current:
                continue
            # One unacked message holds a rebalance until the batch is acked (`ack` acks
            # them all); tracking each costs a WeakSet entry per record.
            last = current[-1]
            last.tracked = True
            cast(Any, self.app.consumer)._unacked_messages.add(last)
            read_offsets = self.app.monitor.tp_read_offsets  # the consumer lag metric
            for message in current:
                read_offsets[message.tp] = message.offset
            yield current

    def ack(self, messages: Sequence[Message]) -> None:
        ack = self.app.consumer.ack
        for message in messages:
            ack(message)

    async def commit_when_caught_up(self) -> None:
        """Commit as soon as nothing is waiting (at most every `COMMIT_CAUGHT_UP_S`)
        rather than at Faust's next interval (2.8 s): the committed offsets, which
        operators' lag monitors read, then show a worked-off backlog at once, and a
        restart reads less again."""
        now = time.monotonic()
        if self._queue.empty() and now - self._committed_at >= COMMIT_CAUGHT_UP_S:
            self._committed_at = now
            await self.app.consumer.commit()

    async def _drain(self, consumer: Any, fetcher: Any) -> None:
        """Faust's `Consumer._drain_messages` (0.15.3), except that records of `topics`
        are queued per fetch instead of being passed one by one to the conductor."""
        callback = consumer.callback
        read_offset = consumer._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = consumer._commit_every
        consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await consumer.sleep(0)
                if consumer.should_stop:
                    continue
                fetched: list[Message] = []
                async for tp, message in consumer.getmany(timeout=1.0):
                    offset = message.offset
                    previous = read_offset[tp]
                    if previous is not None and offset < previous:
                        continue  # already read (Faust drops these too)
                    if previous and offset - previous > 1 and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, previous + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if tp.topic in self.topics:
                        fetched.append(message)
                    else:
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    read_offset[tp] = offset
                if fetched:
                    await self._queue.put(fetched)
        except consumer.consumer_stopped_errors:
            if self.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.app.should_stop:
                return
            raise


# -- table writes in batches --------------------------------------------------------------


@contextlib.contextmanager
def _under_partition(partition: int) -> Iterator[None]:
    """A stand-in current event naming `partition`, for the RocksDB store's writes."""
    stand_in = _StandInEvent(SimpleNamespace(partition=partition))
    token = _current_event.set(weakref.ref(cast(Any, stand_in)))
    try:
        yield
    finally:
        _current_event.reset(token)


class _StandInEvent:
    def __init__(self, message: Any) -> None:
        self.message = message


#: A record as sent: key and value bytes (a value None is a tombstone).
Record = tuple[bytes | None, bytes | None]


@dataclass
class BatchProducer:
    """Sends records to a partition in as few producer batches as they fit in."""

    app: faust.App

    async def send(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[int, asyncio.Future[Any]]]:
        """Queue `records` in order; per batch, its record count and the future of its
        metadata (the base offset; None without broker acknowledgements)."""
        producer = cast(Any, self.app.producer)._ensure_producer()
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(
                    (
                        batch.record_count(),
                        await producer.send_batch(batch, topic, partition=partition),
                    )
                )
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            sent.append(
                (batch.record_count(), await producer.send_batch(batch, topic, partition=partition))
            )
        return sent


@dataclass
class TableWriter:
    """Writes one table's entries in batches (see the module text): into the store, and
    into the changelog as one producer batch per partition; `write` returns when the
    broker acknowledged them."""

    table: TableT[Any, Any]
    producer: BatchProducer

    async def write(self, entries: Iterable[tuple[int, Any, Any]]) -> None:
        """Write (partition, key, value) entries; a later entry of a key wins. A value
        None deletes the key: removed from the store (memory or RocksDB), and a tombstone
        (a changelog record with no value) that recovery and compaction honour."""
        table = cast(Any, self.table)
        store, changelog = table.data, table.changelog_topic
        by_partition: dict[int, list[tuple[Any, Any]]] = {}
        for partition, key, value in entries:
            by_partition.setdefault(partition, []).append((key, value))
        records: dict[int, list[Record]] = {}
        for partition, pairs in by_partition.items():
            with _under_partition(partition):
                for key, value in pairs:
                    if value is not None:
                        store[key] = value
                        continue
                    # Never written, or deleted already: the tombstone goes all the same.
                    with contextlib.suppress(KeyError):
                        del store[key]
            records[partition] = self._changelog_records(pairs)
        topic = changelog.get_topic_name()
        sent = [
            (partition, count, future)
            for partition, batch in records.items()
            for count, future in await self.producer.send(topic, partition, batch)
        ]
        done = await asyncio.gather(*(future for _, _, future in sent))
        last: dict[int, int] = {}
        for (partition, count, _), metadata in zip(sent, done, strict=True):
            if metadata is not None:
                last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
        for partition, offset in last.items():
            store.set_persisted_offset(TP(topic, partition), offset)

    def _changelog_records(self, pairs: list[tuple[Any, Any]]) -> list[Record]:
        """The bytes Faust would send; raw bytes keys and values as they are (Faust's
        serializer registry costs more per record than the rest of the write)."""
        table = cast(Any, self.table)
        key_serializer, value_serializer = table.key_serializer, table.value_serializer
        raw = key_serializer == "raw" and value_serializer == "raw"
        if raw and all(type(k) is bytes and (v is None or type(v) is bytes) for k, v in pairs):
            return pairs
        changelog = table.changelog_topic
        return [
            (
                changelog.prepare_key(key, key_serializer)[0],
                None if value is None else changelog.prepare_value(value, value_serializer)[0],
            )
            for key, value in pairs
        ]
