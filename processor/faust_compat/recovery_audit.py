"""The recovery audit: after each recovery of a table of raw bytes, before Faust resumes
the streams, the range the recovery read is read again by a client of our own and what
the recovery missed is put back. Shared by both of our stores (`stores`).
Why and how: docs/faust-traps.md#recovery-audit
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

#: The package's one logger, `processor.faust_compat`.
log = logging.getLogger(__package__)

#: The longest a store's audit may read one changelog partition again.
AUDIT_TIMEOUT_S = 120.0


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


class AuditsRecovery:
    """What both of our stores share: where each recovery started (Recovery asks
    `persisted_offset` once per rebalance for each partition it will read), and the
    audit of each recovery against the changelog."""

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


def audit_recoveries(
    app: faust.App, reader: ChangelogReader, on_repair: Callable[[str, int], None]
) -> None:
    """Every table of raw bytes keys and values on one of our stores (memory or RocksDB)
    audits its recoveries with `reader` and reports repairs to `on_repair` (tables of other
    types are not read again: their records would need Faust's serializers)."""
    for table in app.tables.values():
        store = table.data
        if isinstance(store, AuditsRecovery) and table.key_type is table.value_type is bytes:
            store.reader, store.on_repair = reader, on_repair
