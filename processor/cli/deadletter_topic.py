"""The dead-letter topic as `vigocli deadletters` sees it: each `vigo.deadletter/1` record
(`DeadLetterRecord`) and its state, the `Reader` that reads the dead-letter and replays
topics up to their end offsets at start, and the `Replayer` that republishes dead letters
and records each in `<prefix>deadletter.replays`. The click commands that use them, and
the rules they follow, are in `processor.cli.deadletters`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from processor.cli.kafka import EXIT_UNREACHABLE, KafkaTarget, OneLineError
from topics.events import DeadLetterReason
from topics.jsonschemas import DEADLETTER_V1, VALIDATORS
from topics.publish import now_rfc3339

REPLAYED_FROM: Final = "vigo-replayed-from"
REASONS: Final = get_args(DeadLetterReason)
#: Dead-letter states, as `list` shows them.
REPLAYABLE, REPLAYED, TRUNCATED, FOREIGN = "replayable", "replayed", "truncated", "foreign"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic: where it is, and the `vigo.deadletter/1`."""

    topic: str
    partition: int
    offset: int
    doc: dict[str, Any]

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def origin(self) -> str:
        return f"{self.doc['topic']}/{self.doc['partition']}/{self.doc['offset']}"

    @property
    def key_text(self) -> str | None:
        key = self.doc.get("key")
        return key if key is None or self.doc.get("key_encoding") != "base64" else f"b64:{key}"

    def state(self, replayed: set[str], inputs: Sequence[str]) -> str:
        if self.coordinates in replayed:
            return REPLAYED
        if self.doc.get("value_truncated") or self.doc.get("key_truncated"):
            return TRUNCATED
        if self.doc["topic"] not in inputs:
            return FOREIGN
        return REPLAYABLE

    def raw(self, field: str) -> bytes | None:
        """The original key or value bytes (`field` is "key" or "value")."""
        text = self.doc.get(field)
        if text is None:
            return None
        if self.doc.get(f"{field}_encoding") == "base64":
            return base64.b64decode(text, validate=True)
        return str(text).encode("utf-8")

    def as_json(self, state: str) -> dict[str, Any]:
        where = {"topic": self.topic, "partition": self.partition, "offset": self.offset}
        return {"deadletter": where, "state": state, **self.doc}


@dataclass
class Scan:
    """What the dead-letter topic held when the command started."""

    records: list[DeadLetterRecord]
    replayed: set[str]
    #: Records of the dead-letter topic that are no `vigo.deadletter/1` (left alone).
    unreadable: int


def parse_deadletter(
    topic: str, partition: int, offset: int, value: bytes | None
) -> DeadLetterRecord | None:
    """A `DeadLetterRecord`, or None for a record that is no valid dead letter."""
    try:
        doc = orjson.loads(value or b"")
        VALIDATORS[DEADLETTER_V1](doc)
        record = DeadLetterRecord(topic, partition, offset, doc)
        record.raw("key")
        record.raw("value")
    except (ValueError, binascii.Error, UnicodeEncodeError):  # fastjsonschema's too
        return None
    return record


class Reader:
    """The dead-letter and replays topics up to their end offsets at start."""

    def __init__(self, target: KafkaTarget, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        options = target.client_options
        servers = target.bootstrap_servers
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers, **options)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=servers, group_id=None, enable_auto_commit=False, **options
        )

    async def start(self) -> None:
        await _connect(self.target, self.timeout_s, self.admin.start(), self.consumer.start())

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def scan(self) -> Scan:
        names = self.target.topics
        records: list[DeadLetterRecord] = []
        unreadable = 0
        async for message in self.read(names.deadletter):
            record = parse_deadletter(
                message.topic, message.partition, message.offset, message.value
            )
            if record is None:
                unreadable += 1
            else:
                records.append(record)
        replayed = await self.replayed()
        records.sort(key=lambda r: (r.partition, r.offset))
        return Scan(records, replayed, unreadable)

    async def replayed(self) -> set[str]:
        """The coordinates of every dead letter replayed before (the replays' keys)."""
        return {
            m.key.decode("utf-8", "replace")
            async for m in self.read(self.target.topics.deadletter_replays)
            if m.key is not None
        }

    async def records(self) -> AsyncGenerator[DeadLetterRecord | None, None]:
        """The dead-letter topic in topic order, one record at a time as it is fetched
        (`list` streams them: SPEC 11.4); None for a record that is no dead letter."""
        async for m in self.read(self.target.topics.deadletter, in_order=True):
            yield parse_deadletter(m.topic, m.partition, m.offset, m.value)

    async def read(self, topic: str, in_order: bool = False) -> AsyncIterator[Any]:
        """Every record of `topic` up to the end offsets of now; nothing if it is absent.
        `in_order`: partition after partition, so in (partition, offset) order."""
        if topic not in await self.admin.list_topics():
            return
        described = await self.admin.describe_topics([topic])
        tps = sorted(TopicPartition(topic, p["partition"]) for p in described[0]["partitions"])
        end = await self.consumer.end_offsets(tps)
        for part in [[tp] for tp in tps] if in_order else [tps]:
            async for message in self._read(topic, part, end):
                yield message

    async def _read(
        self, topic: str, tps: list[TopicPartition], end: dict[TopicPartition, int]
    ) -> AsyncIterator[Any]:
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        waiting = {tp for tp in tps if end[tp] > await self.consumer.position(tp)}
        while waiting:
            batch = await self.consumer.getmany(*waiting, timeout_ms=int(self.timeout_s * 1000))
            if not batch:
                raise OneLineError(
                    f"Kafka at {self.target.shown_servers} sent nothing of {topic} "
                    f"for {self.timeout_s:g} s",
                    EXIT_UNREACHABLE,
                )
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset < end[tp]:
                        yield message
            waiting = {tp for tp in waiting if await self.consumer.position(tp) < end[tp]}


async def _connect(target: KafkaTarget, timeout_s: float, *starts: Any) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*starts), timeout_s)
    except (KafkaConnectionError, TimeoutError, OSError):
        raise OneLineError(
            f"cannot reach Kafka at {target.shown_servers} (kafka.bootstrap_servers)",
            EXIT_UNREACHABLE,
        ) from None
    except KafkaError as exc:
        raise OneLineError(f"Kafka at {target.shown_servers}: {exc}", EXIT_UNREACHABLE) from None


@contextlib.asynccontextmanager
async def opened(target: KafkaTarget, timeout_s: float) -> AsyncIterator[Reader]:
    reader = Reader(target, timeout_s)
    try:
        await reader.start()
        yield reader
    finally:
        await reader.stop()


def matching(scan: Scan, reason: str | None, envoy: str | None) -> list[DeadLetterRecord]:
    return [r for r in scan.records if chosen(r, reason, envoy)]


def chosen(record: DeadLetterRecord, reason: str | None, envoy: str | None) -> bool:
    doc = record.doc
    return (reason is None or doc["reason"] == reason) and (
        envoy is None or (doc.get("key") == envoy and doc.get("key_encoding") == "utf-8")
    )


class Replayer:
    """Republishes dead letters, each marked replayed once the broker acknowledged it."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        target = reader.target
        self.producer = AIOKafkaProducer(
            bootstrap_servers=target.bootstrap_servers,
            acks="all",
            request_timeout_ms=int(reader.timeout_s * 1000),
            max_request_size=max(2 * target.max_event_bytes, 1_048_576),
            **target.client_options,
        )

    async def __aenter__(self) -> Replayer:
        await self._ensure_replays_topic()
        await _connect(self.reader.target, self.reader.timeout_s, self.producer.start())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.producer.stop()

    async def _ensure_replays_topic(self) -> None:
        target = self.reader.target
        name = target.topics.deadletter_replays
        if name in await self.reader.admin.list_topics():
            return
        topic = NewTopic(
            name, 1, target.replication_factor, topic_configs={"cleanup.policy": "compact"}
        )
        with contextlib.suppress(TopicAlreadyExistsError):  # another replay won the race
            await self.reader.admin.create_topics([topic])

    async def replay(self, record: DeadLetterRecord) -> str:
        """Republish one dead letter; its new coordinates once acknowledged."""
        sent = await self.producer.send_and_wait(
            record.doc["topic"],
            record.raw("value"),
            key=record.raw("key"),
            headers=[(REPLAYED_FROM, record.origin.encode("utf-8"))],
        )
        replayed_as = f"{sent.topic}/{sent.partition}/{sent.offset}"
        marker = {
            "deadletter": record.coordinates,
            "origin": record.origin,
            "replayed_as": replayed_as,
            "replayed_at": now_rfc3339(),
        }
        await self.producer.send_and_wait(
            self.reader.target.topics.deadletter_replays,
            orjson.dumps(marker),
            key=record.coordinates.encode("utf-8"),
        )
        return replayed_as
