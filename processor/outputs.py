"""Outputs first, then the state that records them; an output is never forgotten.

An agent's batch produces records (status changes, dead letters, alerts, fleet numbers)
and new table state. Both go to the broker, but to different partitions, so a crash could
land the changelog record of a state without the status change that state records: the
restored state would never publish it again, and consumers would see a gap in the envoy's
versions (or an alert would be lost). So every output goes through `Outputs`, and the
agents hold their table writes until `Outputs.acknowledged` returned
(`processor.state.flush`). A crash in between leaves the old state and the committed
offset: the batch is read again and, the rules being deterministic, sends the same
records again, which consumers drop as duplicates by `(envoy_id, version)` or alert id.

A failed send (SPEC 11.4 "Outputs before progress") is judged by `judge`:
- refused for its size: the one record that may be dropped (logged with topic, key and
  size; `vigo_outputs_dropped_total{topic,reason}`), since sending it again cannot help;
- refused for want of an ACL: the worker stops with one line naming the topic and the
  ACL, and nothing it did since the last acknowledgement moves on;
- anything else (a timeout, `NOT_ENOUGH_REPLICAS`, a broker away): sent again, with
  backoff, for as long as it takes; the state and the offsets wait. Records of one
  partition are sent again from the first failed batch on, so the partition's last
  record of a key is still the newest.
The changelog records of `TableWriter` go through `deliver` too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import faust
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from processor.faust_compat import Record

log = logging.getLogger(__name__)

#: Backoff between sends of records the broker did not take: from, doubling, up to.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
FORBIDDEN = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

Verdict = Literal["drop", "forbidden", "retry"]


def judge(error: BaseException) -> Verdict:
    """What to do with a record the broker did not take (see the module text)."""
    if isinstance(error, TOO_LARGE):
        return "drop"
    if isinstance(error, FORBIDDEN):
        return "forbidden"
    return "retry"


def forbidden_line(topic: str, error: BaseException) -> str:
    """The one line an operator reads when an ACL is missing."""
    return (
        f"the broker refused a write to topic {topic} ({type(error).__name__}): grant this "
        f"worker's principal WRITE (and DESCRIBE) on topic {topic}, then start it again"
    )


class PartitionSender(Protocol):
    """Sends records in producer batches (`faust_compat.BatchProducer`)."""

    async def send(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[int, asyncio.Future[Any]]]: ...

    async def send_keyed(self, topic: str, record: Record) -> asyncio.Future[Any]: ...


def _no_drop(topic: str, reason: str) -> None:
    return None


#: The exit status after a missing ACL (EX_CONFIG): not a crash, a configuration to fix.
EXIT_FORBIDDEN = 78


def stop_worker(line: str) -> None:
    """A missing ACL: one line, then the process ends at once (no graceful stop: Faust's
    would wait for ever for the batch that waits for the refused record). Nothing that
    waited for it moves on: not the state, not the offsets; a restart reads it again."""
    log.critical("%s", line)
    logging.shutdown()
    os._exit(EXIT_FORBIDDEN)


@dataclass
class Outputs:
    """The records sent since the last `acknowledged`, shared by every agent's writer.
    Records for a given partition (status changes) go out as producer batches; others
    (keyed dead letters, alerts, fleet numbers) one by one, partitioned by their key."""

    batches: PartitionSender
    #: Counts a dropped record: (topic, reason).
    dropped: Callable[[str, str], None] = _no_drop
    #: Stops the worker after a missing ACL: called once with the line to log.
    stop: Callable[[str], None] = stop_worker
    _keyed: list[tuple[str, Record]] = field(default_factory=list)
    _to_partitions: dict[tuple[str, int], list[Record]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopping: bool = False

    def send(
        self, topic: faust.TopicT, *, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        name = topic.get_topic_name()
        if partition is None:
            self._keyed.append((name, (key, value)))
        else:
            self._to_partitions.setdefault((name, partition), []).append((key, value))

    async def acknowledged(self) -> None:
        """Wait until the broker took every record sent so far (see the module text)."""
        async with self._lock:  # two agents: the second waits for the first's records too
            keyed, self._keyed = self._keyed, []
            to_partitions, self._to_partitions = self._to_partitions, {}
            await asyncio.gather(
                *(self.deliver(t, p, records) for (t, p), records in to_partitions.items()),
                *(self._deliver_keyed(topic, record) for topic, record in keyed),
            )

    async def deliver(
        self, topic: str, partition: int, records: Sequence[Record]
    ) -> list[tuple[int, Any]]:
        """Send `records` to one partition until the broker took each (or refused it for
        its size); per batch taken, its record count and metadata (base offset)."""
        taken: list[tuple[int, Any]] = []
        pending = [list(records)]
        attempt = 0
        while pending:
            sent: list[tuple[list[Record], asyncio.Future[Any]]] = []
            for batch in pending:
                start = 0
                for count, future in await self.batches.send(topic, partition, batch):
                    sent.append((batch[start : start + count], future))
                    start += count
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            pending = []
            for part, result in zip((part for part, _ in sent), results, strict=True):
                if pending:  # after a failed batch, the rest go again (order per key)
                    pending.append(part)
                elif not isinstance(result, BaseException):
                    taken.append((len(part), result))
                elif len(part) > 1 and judge(result) == "drop":
                    pending.extend([record] for record in part)  # find the large one
                else:
                    pending.extend(await self._failed(topic, part, result, attempt))
            if pending:
                await self._backoff(topic, attempt)
                attempt += 1
        if attempt:
            log.info("topic %s[%d]: the broker took the records sent again", topic, partition)
        return taken

    async def _deliver_keyed(self, topic: str, record: Record) -> None:
        attempt = 0
        while True:
            try:
                await (await self.batches.send_keyed(topic, record))
                return
            except Exception as exc:  # judged: dropped, stopped on, or sent again
                if not await self._failed(topic, [record], exc, attempt):
                    return
            await self._backoff(topic, attempt)
            attempt += 1

    async def _failed(
        self, topic: str, records: list[Record], error: BaseException, attempt: int
    ) -> list[list[Record]]:
        """The records to send again after `error`: none when dropped; never returns when
        an ACL is missing (the worker stops, nothing moves on)."""
        verdict = judge(error)
        if verdict == "drop":
            for key, value in records:
                size = len(value or b"")
                log.error(
                    "topic %s: a record the broker refused for its size is dropped "
                    "(key %r, %d bytes): %s",
                    topic,
                    (key or b"")[:64],
                    size,
                    type(error).__name__,
                )
                self.dropped(topic, "too_large")
            return []
        if verdict == "forbidden":
            if not self._stopping:
                self._stopping = True
                self.stop(forbidden_line(topic, error))
            await asyncio.Event().wait()  # cancelled by the shutdown
        if attempt == 0:
            log.warning("topic %s: the broker did not take %d record(s) (%r): sending "
                        "again until it does; state and offsets wait",
                        topic, len(records), error)  # fmt: skip
        return [records]

    async def _backoff(self, topic: str, attempt: int) -> None:
        await asyncio.sleep(min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt))
