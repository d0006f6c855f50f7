"""Outputs first, then the state that records them.

An agent's batch produces records (status changes, dead letters, alerts, fleet numbers)
and new table state. Faust sends both through one producer, but to different partitions,
so a crash can land the changelog record of a state without the status change that state
records: the restored state then never publishes it again, and consumers see a gap in the
envoy's versions (or an alert is lost). So the agents hold their table writes
(`HeldWrites`) until every record the batch sent is acknowledged by the broker
(`Outputs.acknowledged`), then write the state. A crash in between leaves the old state
and the committed offset: the batch is read again and, the rules being deterministic,
sends the same records again, which consumers drop as duplicates by `(envoy_id, version)`
or alert id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import faust
from faust.types import EventT, TableT

from processor.faust_compat import Record, write_under

log = logging.getLogger(__name__)


class PartitionSender(Protocol):
    """Sends records to one partition in batches (`faust_compat.BatchProducer`)."""

    async def send(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[int, asyncio.Future[Any]]]: ...


@dataclass
class Outputs:
    """The records sent since the last `acknowledged`, shared by every agent's writer.
    Records for a given partition (status changes) go out as producer batches when the
    batch is acknowledged; others (keyed dead letters, alerts) one by one through Faust."""

    batches: PartitionSender
    _sent: list[asyncio.Future[Any]] = field(default_factory=list)
    _to_partitions: dict[tuple[str, int], list[Record]] = field(default_factory=dict)

    def send(
        self, topic: faust.TopicT, *, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        if partition is None:
            self._sent.append(topic.send_soon(key=key, value=value))
        else:
            destination = (topic.get_topic_name(), partition)
            self._to_partitions.setdefault(destination, []).append((key, value))

    async def acknowledged(self) -> None:
        """Wait until the broker acknowledged every record sent so far. A record the
        broker refuses for good (too large) is logged: retrying cannot help, and holding
        the state back for ever would stop the agent."""
        to_partitions, self._to_partitions = self._to_partitions, {}
        for (topic, partition), records in to_partitions.items():
            for _, future in await self.batches.send(topic, partition, records):
                self._sent.append(future)
        sent, self._sent = self._sent, []
        if not sent:
            return
        for result in await asyncio.gather(*sent, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("a record was not accepted by the broker: %r", result)


@dataclass
class HeldWrites:
    """Table writes of one batch, each kept with the event it belongs under (its
    changelog record goes to that event's partition) until `apply`. Reads see them."""

    _writes: dict[tuple[int, Any], tuple[TableT[Any, Any], Any, Any, EventT[Any]]] = field(
        default_factory=dict
    )

    def put(self, table: TableT[Any, Any], key: Any, value: Any, event: EventT[Any]) -> None:
        self._writes[(id(table), key)] = (table, key, value, event)

    def get(self, table: TableT[Any, Any], key: Any) -> Any:
        held = self._writes.get((id(table), key))
        return held[2] if held is not None else table.get(key)

    def values(self, table: TableT[Any, Any]) -> list[tuple[Any, Any]]:
        """The held (key, value) pairs of one table."""
        return [(k, v) for (tid, _), (_, k, v, _) in self._writes.items() if tid == id(table)]

    def apply(self, stream: faust.Stream[Any]) -> None:
        writes = list(self._writes.values())
        self._writes.clear()
        for table, key, value, event in writes:
            write_under(stream, event, partial(table.__setitem__, key, value))
