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
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
from aiokafka.errors import KafkaError

from processor.cli.deadletter_topic import (
    FOREIGN,
    REASONS,
    REPLAYABLE,
    REPLAYED,
    REPLAYED_FROM,
    TRUNCATED,
    DeadLetterRecord,
    Reader,
    Replayer,
    Scan,
    chosen,
    matching,
    opened,
    parse_deadletter,
)
from processor.cli.kafka import (
    EXIT_UNREACHABLE,
    KafkaTarget,
    OneLineError,
    UsageExit64Group,
    quiet_kafka_logs,
    target_from_config,
)
from processor.cli.streamed import StreamedJson, StreamedTable
from topics.escape import printable
from topics.jsonschemas import DEADLETTER_V1

#: The commands, and what reads and replays the topic (`deadletter_topic`), as before.
__all__ = [
    "FOREIGN",
    "REASONS",
    "REPLAYABLE",
    "REPLAYED",
    "REPLAYED_FROM",
    "TRUNCATED",
    "DeadLetterRecord",
    "Reader",
    "ReplayOutcome",
    "Replayer",
    "Scan",
    "deadletters",
    "list_deadletters",
    "matching",
    "opened",
    "parse_deadletter",
    "render_table",
    "replay_deadletters",
]


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
    (never replayed) or foreign (not from an input topic). Printed as they are read, and
    the reading stops at `--limit` (SPEC 11.4)."""
    target = target_from_config(config_path)
    listing = Listing(target.topics.inputs, reason, envoy, limit, as_json)
    _run(target, listing.run(target, timeout))


#: Dead letters printed at a time: the table's widths are measured per chunk.
CHUNK = 100


@dataclass
class Listing:
    """`list`: reads the replays, then the dead letters one by one (`Reader.records`),
    printing a chunk at a time; holds no more than a chunk."""

    inputs: Sequence[str]
    reason: str | None
    envoy: str | None
    limit: int | None
    as_json: bool
    unreadable: int = 0
    shown: int = 0

    async def run(self, target: KafkaTarget, timeout: float) -> None:
        json_out = StreamedJson("deadletters") if self.as_json else None
        table = StreamedTable(
            ("DEADLETTER", "REASON", "ORIGIN", "KEY", "STATE", "ERROR"), (10, 13, 0, 0, 10)
        )
        chunk: list[DeadLetterRecord] = []
        async with opened(target, timeout) as reader:
            replayed = await reader.replayed()
            async with contextlib.aclosing(reader.records()) as records:
                async for record in records:
                    if record is None:
                        self.unreadable += 1
                    elif chosen(record, self.reason, self.envoy):
                        chunk.append(record)
                        self.shown += 1
                    if len(chunk) == CHUNK or self.shown == self.limit:
                        self._print(chunk, replayed, json_out, table)
                        chunk = []
                    if self.shown == self.limit:
                        break
        self._print(chunk, replayed, json_out, table)
        self._close(json_out)

    def _print(
        self,
        chunk: list[DeadLetterRecord],
        replayed: set[str],
        json_out: StreamedJson | None,
        table: StreamedTable,
    ) -> None:
        inputs = self.inputs
        if json_out is not None:
            json_out.items(r.as_json(r.state(replayed, inputs)) for r in chunk)
            return
        table.rows(
            (
                f"{r.partition}/{r.offset}",
                r.doc["reason"],
                r.origin,
                _cell(r.key_text or "-", 40),
                r.state(replayed, inputs),
                _cell(r.doc["error"], 70),
            )
            for r in chunk
        )

    def _close(self, json_out: StreamedJson | None) -> None:
        """`unreadable` counts the records read, up to the last one shown with a limit."""
        if json_out is not None:
            json_out.close(unreadable=self.unreadable)
            return
        if self.unreadable:
            click.echo(f"({self.unreadable} records are no {DEADLETTER_V1}: skipped)", err=True)
        if not self.shown:
            click.echo("no dead letters" + (f" with reason {self.reason}" if self.reason else ""))


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
            f"Kafka at {target.shown_servers}: {exc or type(exc).__name__}", EXIT_UNREACHABLE
        ) from None


def _cell(text: str, width: int) -> str:
    """One table cell: control and format characters shown escaped, cut to `width`."""
    shown = printable(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns; every cell escaped (`printable`, SPEC 11.4): dead letters hold
    whatever a producer wrote, origins and keys included."""
    header = [printable(str(cell)) for cell in header]
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    columns = list(zip(header, *rows, strict=True))
    widths = [max(map(len, column)) for column in columns]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )
