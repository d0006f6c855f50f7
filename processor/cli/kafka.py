"""What the command lines that talk to Kafka directly share (`vigo-publish`, `vigocli
deadletters`): the worker's configuration as a Kafka target, one-line errors, and the
exit statuses of SPEC 10.8 (64 usage, 2 Kafka cannot be reached)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import IO, Any

import click

from processor.config import ConfigError, Settings, load_settings
from topics.decode import DEFAULT_MAX_BYTES
from topics.escape import mask_credentials, printable
from topics.names import DEFAULT_PREFIX, TopicNames

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
EXIT_USAGE = 64


class OneLineError(click.ClickException):
    """One line on stderr, prefixed with the program name, and an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        ctx = click.get_current_context(silent=True)
        self.prog = (ctx.find_root().info_name if ctx is not None else None) or "vigo"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.prog}: {printable(self.format_message())}", err=True, file=file)


class UsageExit64Group(click.Group):
    """A group whose usage errors, and those of its subcommands, exit with 64 (SPEC 10.8),
    so that 2 keeps meaning "cannot reach Kafka"."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE
            raise


@dataclass(frozen=True)
class KafkaTarget:
    """Where and how to connect, and the topic names there."""

    bootstrap_servers: str
    topic_prefix: str = DEFAULT_PREFIX
    client_options: dict[str, object] = field(default_factory=dict)
    replication_factor: int = 1
    max_event_bytes: int = DEFAULT_MAX_BYTES

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def shown_servers(self) -> str:
        """`bootstrap_servers` as messages show it: credentials in it masked."""
        return mask_credentials(self.bootstrap_servers)


def target_from_config(path: str | None) -> KafkaTarget:
    """The worker's Kafka settings (`--config PATH`, else `VIGO_CONFIG`; `VIGO_` overrides
    apply), security included. A bad configuration is a usage error: one line, exit 64."""
    try:
        settings = load_settings(path)
        from processor.app import kafka_client_options  # Faust: only when needed

        options = kafka_client_options(settings)
    except ConfigError as exc:
        raise OneLineError(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # the SASL password file, read for the client
        raise OneLineError(f"config kafka.sasl_password_file: {exc.strerror}", EXIT_USAGE) from None
    return _target(settings, options)


def _target(settings: Settings, options: dict[str, object]) -> KafkaTarget:
    kafka = settings.kafka
    return KafkaTarget(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=kafka.topic_prefix,
        client_options=options,
        replication_factor=kafka.replication_factor,
        max_event_bytes=settings.processor.max_event_bytes,
    )


def quiet_kafka_logs() -> None:
    """aiokafka logs every failed connection attempt; the commands say it in one line."""
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    logging.getLogger("aiokafka").propagate = False
