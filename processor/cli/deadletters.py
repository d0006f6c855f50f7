"""`vigocli deadletters list|replay` (SPEC 10.5): the dead-letter topic, read with the
worker's configuration, straight from Kafka (no consumer group, nothing committed).

Each command reads the dead-letter topic from the beginning up to the end offsets it
found when it started, and the compacted topic `<prefix>deadletter.replays`, whose keys
are the coordinates (`<topic>/<partition>/<offset>` in the dead-letter topic) of every
dead letter already replayed. `replay` republishes a dead letter's original key and value
to its original topic with the header `vigo-replayed-from: <topic>/<partition>/<offset>`
(the original record's coordinates) and, once the broker has acknowledged it, records the
dead letter's coordinates there: a second replay of the same dead letter sends nothing.
A dead letter whose key or value was cut (`key_truncated`, `value_truncated`), or whose
topic is not one of the configured input topics, is listed and never replayed.

Exit statuses: 0 done, 2 Kafka cannot be reached, 64 a usage error or a bad configuration.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from processor.cli.kafka import (
    EXIT_UNREACHABLE,
    KafkaTarget,
    OneLineError,
    UsageExit64Group,
    quiet_kafka_logs,
    target_from_config,
)
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
        replayed = {
            m.key.decode("utf-8", "replace")
            async for m in self.read(names.deadletter_replays)
            if m.key is not None
        }
        records.sort(key=lambda r: (r.partition, r.offset))
        return Scan(records, replayed, unreadable)

    async def read(self, topic: str) -> AsyncIterator[Any]:
        """Every record of `topic` up to the end offsets of now; nothing if it is absent."""
        if topic not in await self.admin.list_topics():
            return
        described = await self.admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        end = await self.consumer.end_offsets(tps)
        waiting = {tp for tp in tps if end[tp] > await self.consumer.position(tp)}
        while waiting:
            batch = await self.consumer.getmany(*waiting, timeout_ms=int(self.timeout_s * 1000))
            if not batch:
                raise OneLineError(
                    f"Kafka at {self.target.bootstrap_servers} sent nothing of {topic} "
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
            f"cannot reach Kafka at {target.bootstrap_servers} (kafka.bootstrap_servers)",
            EXIT_UNREACHABLE,
        ) from None
    except KafkaError as exc:
        raise OneLineError(
            f"Kafka at {target.bootstrap_servers}: {exc}", EXIT_UNREACHABLE
        ) from None


@contextlib.asynccontextmanager
async def opened(target: KafkaTarget, timeout_s: float) -> AsyncIterator[Reader]:
    reader = Reader(target, timeout_s)
    try:
        await reader.start()
        yield reader
    finally:
        await reader.stop()


def matching(scan: Scan, reason: str | None, envoy: str | None) -> list[DeadLetterRecord]:
    return [
        r
        for r in scan.records
        if (reason is None or r.doc["reason"] == reason)
        and (envoy is None or (r.doc.get("key") == envoy and r.doc.get("key_encoding") == "utf-8"))
    ]


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


# -- the commands ----------------------------------------------------------------------------


@click.group(cls=UsageExit64Group)
def deadletters() -> None:
    """Dead letters, read from Kafka with the worker's configuration: list them, replay
    them to their input topics (exit 2: Kafka cannot be reached; 64: usage)."""


def _kafka_options(command: Any) -> Any:
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds to wait for Kafka.",
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="The worker's configuration file (default: VIGO_CONFIG; VIGO_ variables override).",
    )(command)


_reason_choice = click.Choice(REASONS)
_envoy_help = "Only dead letters whose record key is this envoy id."


@deadletters.command("list")
@_kafka_options
@click.option("--reason", type=_reason_choice, help="Only this reason.")
@click.option("--envoy", help=_envoy_help)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_deadletters(
    config_path: str | None,
    timeout: float,
    reason: str | None,
    envoy: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Dead letters in topic order, with their state: replayable, replayed, truncated
    (never replayed) or foreign (not from an input topic)."""
    target = target_from_config(config_path)
    scan = _run(target, _scan(target, timeout))
    found = matching(scan, reason, envoy)[:limit]
    inputs = target.topics.inputs
    if as_json:
        rows = [r.as_json(r.state(scan.replayed, inputs)) for r in found]
        click.echo(json.dumps({"deadletters": rows, "unreadable": scan.unreadable}, indent=2))
        return
    if scan.unreadable:
        click.echo(f"({scan.unreadable} records are no {DEADLETTER_V1}: skipped)", err=True)
    if not found:
        click.echo("no dead letters" + (f" with reason {reason}" if reason else ""))
        return
    header = ("DEADLETTER", "REASON", "ORIGIN", "KEY", "STATE", "ERROR")
    rows_text = [
        (
            f"{r.partition}/{r.offset}",
            r.doc["reason"],
            r.origin,
            _cell(r.key_text or "-", 40),
            r.state(scan.replayed, inputs),
            _cell(r.doc["error"], 70),
        )
        for r in found
    ]
    click.echo(render_table(header, rows_text))


@deadletters.command("replay")
@_kafka_options
@click.option("--reason", type=_reason_choice, required=True, help="Replay this reason.")
@click.option("--envoy", help=_envoy_help)
@click.option("--dry-run", is_flag=True, help="Only list what would be replayed; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def replay_deadletters(
    config_path: str | None,
    timeout: float,
    reason: str,
    envoy: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Republish the dead letters of one reason to their original topics (for example
    after enrolling an envoy that strict mode refused); each dead letter at most once."""
    target = target_from_config(config_path)
    outcome = _run(target, _replay(target, timeout, reason, envoy, dry_run))
    if as_json:
        click.echo(json.dumps(outcome.as_json(), indent=2))
    else:
        click.echo(outcome.render())


@dataclass
class ReplayOutcome:
    reason: str
    dry_run: bool
    #: Each chosen dead letter, its state before the replay and where it went (if sent).
    rows: list[tuple[DeadLetterRecord, str, str | None]]

    def count(self, state: str) -> int:
        return sum(1 for _, s, _ in self.rows if s == state)

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "replayed": sum(1 for _, _, sent in self.rows if sent),
            "deadletters": [{**r.as_json(s), "replayed_as": sent} for r, s, sent in self.rows],
        }

    def render(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        todo = self.count(REPLAYABLE)
        summary = (
            f"{verb} {todo} {self.reason} dead letter{'s' * (todo != 1)}; "
            f"{self.count(REPLAYED)} replayed before, "
            f"{self.count(TRUNCATED) + self.count(FOREIGN)} not replayable"
        )
        if not self.rows:
            return summary
        results = {
            REPLAYED: "already replayed",
            TRUNCATED: "not replayed: value or key was cut",
            FOREIGN: "not replayed: not an input topic",
        }
        rows = [
            (
                f"{r.partition}/{r.offset}",
                r.origin,
                _cell(r.key_text or "-", 40),
                f"replayed as {sent}" if sent else results.get(state, verb),
            )
            for r, state, sent in self.rows
        ]
        return render_table(("DEADLETTER", "ORIGIN", "KEY", "RESULT"), rows) + "\n" + summary


async def _scan(target: KafkaTarget, timeout: float) -> Scan:
    async with opened(target, timeout) as reader:
        return await reader.scan()


async def _replay(
    target: KafkaTarget, timeout: float, reason: str, envoy: str | None, dry_run: bool
) -> ReplayOutcome:
    async with opened(target, timeout) as reader:
        scan = await reader.scan()
        chosen = matching(scan, reason, envoy)
        states = [r.state(scan.replayed, target.topics.inputs) for r in chosen]
        outcome = ReplayOutcome(
            reason, dry_run, [(r, s, None) for r, s in zip(chosen, states, strict=True)]
        )
        if dry_run or REPLAYABLE not in states:
            return outcome
        async with Replayer(reader) as replayer:
            for i, (record, state, _) in enumerate(outcome.rows):
                if state == REPLAYABLE:
                    sent = await _replay_one(replayer, record, outcome)
                    outcome.rows[i] = (record, state, sent)
        return outcome


async def _replay_one(replayer: Replayer, record: DeadLetterRecord, outcome: ReplayOutcome) -> str:
    try:
        return await replayer.replay(record)
    except KafkaError as exc:
        done = sum(1 for _, _, sent in outcome.rows if sent)
        raise OneLineError(
            f"Kafka did not acknowledge the replay of {record.coordinates}: {exc}; "
            f"{done} replayed before it (a new replay goes on from there)",
            EXIT_UNREACHABLE,
        ) from None


def _run(target: KafkaTarget, work: Any) -> Any:
    quiet_kafka_logs()
    try:
        return asyncio.run(work)
    except KafkaError as exc:
        raise OneLineError(
            f"Kafka at {target.bootstrap_servers}: {exc or type(exc).__name__}", EXIT_UNREACHABLE
        ) from None


def _cell(text: str, width: int) -> str:
    """One table cell: control characters shown escaped, cut to `width`."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    columns = list(zip(header, *rows, strict=True))
    widths = [max(map(len, column)) for column in columns]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )
