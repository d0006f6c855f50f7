"""Outputs first, then the state that records them.

An agent's batch produces records (status changes, dead letters, alerts, fleet numbers)
and new table state. Both go to the broker, but to different partitions, so a crash could
land the changelog record of a state without the status change that state records: the
restored state would never publish it again, and consumers would see a gap in the envoy's
versions (or an alert would be lost). So every output goes through `Outputs`, and the
agents hold their table writes until `Outputs.acknowledged` returned
(`processor.state.flush`). A crash in between leaves the old state and the committed
offset: the batch is read again and, the rules being deterministic, sends the same
records again, which consumers drop as duplicates by `(envoy_id, version)` or alert id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import faust

from processor.faust_compat import Record

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
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def send(
        self, topic: faust.TopicT, *, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        if partition is None:
            self._sent.append(topic.send_soon(key=key, value=value))
        else:
            destination = (topic.get_topic_name(), partition)
            self._to_partitions.setdefault(destination, []).append((key, value))

    async def acknowledged(self) -> None:
        """Wait until the broker answered every record sent so far. A record the broker
        refused (for any reason, after the producer's own retries) is logged and not sent
        again: the state moves on without it."""
        async with self._lock:  # two agents: the second waits for the first's records too
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
