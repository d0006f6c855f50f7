"""`vigo-publish`: publish an input event from a shell (SPEC 10.6).

    vigo-publish [--config PATH | --bootstrap HOST:PORT [--topic-prefix P]] \\
        enroll|revoke|checkin|run ENVOY

Every event is judged before it is sent (`topics.publish`). Exit statuses: 0 sent and
acknowledged; 1 a bad event, refused, nothing sent; 2 Kafka cannot be reached or did not
acknowledge; 64 a usage error (including a bad configuration). Failures are one line.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

import click
import orjson
from aiokafka.structs import RecordMetadata

from processor.cli.kafka import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    KafkaTarget,
    OneLineError,
    UsageExit64Group,
    quiet_kafka_logs,
    target_from_config,
)
from projections.liveness import parse_duration_ms
from topics.escape import printable
from topics.jsonschemas import CHECKIN_V1, ENROLLMENT_V1, RUN_V1
from topics.names import DEFAULT_PREFIX, TopicNames
from topics.publish import (
    EventRefused,
    Publisher,
    PublishError,
    checkin_doc,
    encode_checked,
    enrollment_doc,
    run_doc,
)


@click.group(cls=UsageExit64Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The worker's configuration file: Kafka address, topic prefix, security "
    "(default: VIGO_CONFIG; VIGO_ variables override).",
)
@click.option("--bootstrap", help="HOST:PORT of a Kafka broker, instead of a configuration.")
@click.option("--topic-prefix", help=f"Topic prefix with --bootstrap [default: {DEFAULT_PREFIX}].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for Kafka.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    bootstrap: str | None,
    topic_prefix: str | None,
    timeout: float,
) -> None:
    """Publish an enrollment, revocation, check-in or run of one envoy to Kafka."""
    if config_path and bootstrap:
        raise click.UsageError("--config and --bootstrap exclude each other")
    if topic_prefix is not None and not bootstrap:
        raise click.UsageError("--topic-prefix goes with --bootstrap (else the config's is used)")
    if bootstrap:
        target = KafkaTarget(bootstrap, DEFAULT_PREFIX if topic_prefix is None else topic_prefix)
    else:
        target = target_from_config(config_path)
    ctx.obj = (target, timeout)


def _label(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{text!r} is not KEY=VALUE")
        if name in labels:
            raise click.BadParameter(f"label {name!r} given twice")
        labels[name] = value
    return labels


def _interval(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_duration_ms(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if ms % 1000:
        raise click.BadParameter(f"{value!r} is not a whole number of seconds")
    return ms // 1000


@cli.command()
@click.argument("envoy")
@click.option("--label", "labels", multiple=True, callback=_label, help="KEY=VALUE, repeatable.")
@click.option("--interval", callback=_interval, help="Check-in interval, e.g. 5m or 300.")
@click.option("--at", help="RFC 3339 time of the enrollment [default: now].")
@click.pass_obj
def enroll(
    obj: tuple[KafkaTarget, float],
    envoy: str,
    labels: dict[str, str],
    interval: int | None,
    at: str | None,
) -> None:
    """Enroll ENVOY (again), with its labels and check-in interval."""
    doc = enrollment_doc(envoy, labels=labels, interval_s=interval, at=at)
    _publish(obj, envoy, doc, ENROLLMENT_V1)


@cli.command()
@click.argument("envoy")
@click.option("--at", help="RFC 3339 time of the revocation [default: now].")
@click.pass_obj
def revoke(obj: tuple[KafkaTarget, float], envoy: str, at: str | None) -> None:
    """Revoke ENVOY: it leaves every count until it is enrolled again."""
    _publish(obj, envoy, enrollment_doc(envoy, "revoked", at=at), ENROLLMENT_V1)


@cli.command()
@click.argument("envoy")
@click.option("--at", help="RFC 3339 time of the check-in [default: now].")
@click.pass_obj
def checkin(obj: tuple[KafkaTarget, float], envoy: str, at: str | None) -> None:
    """A check-in of ENVOY."""
    _publish(obj, envoy, checkin_doc(envoy, at=at), CHECKIN_V1)


@cli.command()
@click.argument("envoy")
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    default="-",
    help="The run's fields as a JSON object [default: standard input].",
)
@click.pass_obj
def run(obj: tuple[KafkaTarget, float], envoy: str, source: IO[bytes]) -> None:
    """A run of ENVOY: its fields (at least `resources`) as JSON; `schema`, `envoy_id`,
    `run_id` (a new UUID), `started_at` and `finished_at` (now) are filled in when absent."""
    name = "standard input" if source is sys.stdin.buffer else source.name
    try:
        fields: Any = orjson.loads(source.read())
    except orjson.JSONDecodeError as exc:
        message = f"bad event, nothing sent: {name}: not JSON: {exc}"
        raise OneLineError(message, EXIT_REFUSED) from None
    if not isinstance(fields, dict):
        raise OneLineError(
            f"bad event, nothing sent: {name}: the run must be a JSON object", EXIT_REFUSED
        )
    _publish(obj, envoy, run_doc(envoy, fields), RUN_V1)


#: The input topic of each event type.
_TOPIC: dict[str, Callable[[TopicNames], str]] = {
    ENROLLMENT_V1: lambda t: t.enrollments,
    CHECKIN_V1: lambda t: t.checkins,
    RUN_V1: lambda t: t.runs,
}


def _publish(obj: tuple[KafkaTarget, float], envoy: str, doc: dict[str, Any], schema: str) -> None:
    """Judge the event before connecting (a bad event is 1 even with Kafka down), send it,
    and say where it went."""
    target, timeout = obj
    topic = _TOPIC[schema](target.topics)
    try:
        encode_checked(envoy, doc, schema, max_bytes=target.max_event_bytes)
        metadata = asyncio.run(_send(target, timeout, topic, envoy, doc, schema))
    except EventRefused as exc:
        raise OneLineError(f"bad event, nothing sent: {exc}", EXIT_REFUSED) from None
    except PublishError as exc:
        shown = str(exc).replace(target.bootstrap_servers, target.shown_servers)
        raise OneLineError(shown, EXIT_UNREACHABLE) from None
    where = f"{metadata.topic}/{metadata.partition}/{metadata.offset}"
    run_id = f" run_id {doc['run_id']}" if schema == RUN_V1 else ""
    click.echo(printable(f"sent {schema} of {envoy} to {where}{run_id}"))


async def _send(
    target: KafkaTarget, timeout: float, topic: str, envoy: str, doc: dict[str, Any], schema: str
) -> RecordMetadata:
    publisher = Publisher(
        target.bootstrap_servers,
        topic_prefix=target.topic_prefix,
        client_options=target.client_options,
        timeout_s=timeout,
        max_event_bytes=target.max_event_bytes,
    )
    async with publisher:
        return await publisher.send(topic, envoy, doc, schema)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    quiet_kafka_logs()
    cli.main(args=list(argv) if argv is not None else None, prog_name="vigo-publish")
    sys.exit(0)  # pragma: no cover - click exits itself


if __name__ == "__main__":
    main()
