"""Publishing input events (SPEC 10.6): the producer library for envoys and the Vigo server.

`Publisher` sends enrollments, revocations, check-ins and runs keyed by `envoy_id`
(UTF-8) with aiokafka's default partitioner, which is Kafka's murmur2 (as the Java client
and kcat with `murmur2_random`), so all of an envoy's events land in the same partition
number of every input topic. Each event is judged before it is sent by the processor's
own reference decoder (`decode_input_slow`): a bad event raises `EventRefused` with the
very text its dead letter would carry (`schema_violation: labels.env: value is 256 bytes
of UTF-8, limit 255`), and nothing is sent.

The one module of `topics` that talks to a broker: the SPEC puts the producer next
to the contract it produces (`tests/test_layout.py` names this exception).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownTopicOrPartitionError
from aiokafka.structs import RecordMetadata

from topics.decode import DEFAULT_MAX_BYTES, decode_input_slow
from topics.escape import mask_credentials
from topics.events import DeadLetter, RecordMeta
from topics.jsonschemas import CHECKIN_V1, ENROLLMENT_V1, RUN_V1
from topics.names import DEFAULT_PREFIX, TopicNames

DEFAULT_TIMEOUT_S: Final = 10.0


class EventRefused(ValueError):
    """A bad event, refused before it was sent; the message names the problem the way
    its dead letter would (`<reason>: <error>`)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


class PublishError(Exception):
    """Kafka could not be reached, or did not acknowledge the event (it may or may not
    have been written: a retry is safe, the processor applies a run once by `run_id`)."""


def now_rfc3339() -> str:
    """The current time as the processor writes it: RFC 3339, UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enrollment_doc(
    envoy_id: str,
    action: str = "enrolled",
    *,
    labels: Mapping[str, str] | None = None,
    interval_s: int | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """A `vigo.enrollment/1` document (not yet validated)."""
    doc: dict[str, Any] = {
        "schema": ENROLLMENT_V1,
        "envoy_id": envoy_id,
        "action": action,
        "at": at or now_rfc3339(),
    }
    if labels:
        doc["labels"] = dict(labels)
    if interval_s is not None:
        doc["checkin_interval_s"] = interval_s
    return doc


def checkin_doc(envoy_id: str, *, at: str | None = None) -> dict[str, Any]:
    """A `vigo.checkin/1` document (not yet validated)."""
    return {"schema": CHECKIN_V1, "envoy_id": envoy_id, "at": at or now_rfc3339()}


def run_doc(envoy_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A `vigo.run/1` document from a run's fields (at least `resources`): `schema`,
    `envoy_id`, `run_id` (a fresh UUID) and `started_at`/`finished_at` (now) are filled in
    when absent. A field given, even a wrong one, is kept, so validation can name it."""
    if not isinstance(fields, Mapping):
        raise EventRefused("schema_violation", "event: the run must be a JSON object")
    now = now_rfc3339()
    finished_at = fields.get("finished_at", now)
    doc: dict[str, Any] = {
        "schema": RUN_V1,
        "envoy_id": envoy_id,
        "run_id": str(uuid.uuid4()),
        "started_at": finished_at if isinstance(finished_at, str) else now,
        "finished_at": finished_at,
    }
    doc.update(fields)
    return doc


def encode_checked(
    envoy_id: str, doc: Mapping[str, Any], schema: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[bytes, bytes]:
    """(key, value) of an event the processor would apply, else `EventRefused`.

    The judge is the processor's reference decoder, so a refusal reads exactly like the
    dead letter the event would have become: JSON Schema, byte limits, size, key.
    """
    if doc.get("schema") != schema:
        raise EventRefused("unknown_schema", f"schema: must be {schema!r} here")
    try:
        value = orjson.dumps(doc)
    except TypeError as exc:
        raise EventRefused("schema_violation", f"event: not JSON-serialisable ({exc})") from None
    key = envoy_id.encode("utf-8", errors="surrogatepass")
    decoded = decode_input_slow(key, value, RecordMeta("", 0, 0, 0), max_bytes=max_bytes)
    if isinstance(decoded, DeadLetter):
        raise EventRefused(decoded.reason, decoded.error)
    return key, value


class Publisher:
    """An async producer of input events: `async with Publisher("host:9092") as p:`.

    `client_options` are extra aiokafka client arguments (security: `security_protocol`,
    `ssl_context`, `sasl_*`). Every send waits for the broker's acknowledgement (acks=all)
    and returns its `RecordMetadata`; `timeout_s` bounds connecting and each send.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = DEFAULT_PREFIX,
        client_options: Mapping[str, Any] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_event_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = TopicNames(topic_prefix)
        self.timeout_s = timeout_s
        self.max_event_bytes = max_event_bytes
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            request_timeout_ms=int(timeout_s * 1000),
            max_request_size=max(max_event_bytes + 4096, 1_048_576),
            **dict(client_options or {}),
        )
        self._started = False

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._producer.start(), self.timeout_s)
        except (KafkaConnectionError, TimeoutError, OSError) as exc:
            await self._producer.stop()
            why = (
                f"no broker answered within {self.timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else "no broker accepted a connection"
            )
            raise PublishError(
                f"cannot reach Kafka at {mask_credentials(self.bootstrap_servers)}: {why}"
            ) from None
        except KafkaError as exc:  # e.g. refused credentials
            await self._producer.stop()
            raise PublishError(
                f"Kafka at {mask_credentials(self.bootstrap_servers)}: {exc}"
            ) from None
        self._started = True

    async def stop(self) -> None:
        await self._producer.stop()
        self._started = False

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def enroll(
        self,
        envoy_id: str,
        labels: Mapping[str, str] | None = None,
        interval_s: int | None = None,
        at: str | None = None,
    ) -> RecordMetadata:
        doc = enrollment_doc(envoy_id, labels=labels, interval_s=interval_s, at=at)
        return await self.send(self.topics.enrollments, envoy_id, doc, ENROLLMENT_V1)

    async def revoke(self, envoy_id: str, at: str | None = None) -> RecordMetadata:
        doc = enrollment_doc(envoy_id, "revoked", at=at)
        return await self.send(self.topics.enrollments, envoy_id, doc, ENROLLMENT_V1)

    async def checkin(self, envoy_id: str, at: str | None = None) -> RecordMetadata:
        doc = checkin_doc(envoy_id, at=at)
        return await self.send(self.topics.checkins, envoy_id, doc, CHECKIN_V1)

    async def run(self, envoy_id: str, run: Mapping[str, Any]) -> RecordMetadata:
        """Publish a run; `run` holds its fields, at least `resources` (see `run_doc`)."""
        return await self.send(self.topics.runs, envoy_id, run_doc(envoy_id, run), RUN_V1)

    async def send(
        self, topic: str, envoy_id: str, doc: Mapping[str, Any], schema: str
    ) -> RecordMetadata:
        """Validate, then send keyed by `envoy_id` and wait for the acknowledgement."""
        key, value = encode_checked(envoy_id, doc, schema, max_bytes=self.max_event_bytes)
        if not self._started:
            raise PublishError("the publisher is not started (use `async with Publisher(...)`)")
        try:
            metadata: RecordMetadata = await self._producer.send_and_wait(topic, value, key=key)
        except UnknownTopicOrPartitionError:
            raise PublishError(
                f"topic {topic} does not exist at {self.bootstrap_servers}: a worker creates "
                "the input topics when it starts (check the topic prefix)"
            ) from None
        except (KafkaError, TimeoutError, OSError) as exc:
            raise PublishError(
                f"Kafka at {self.bootstrap_servers} did not acknowledge the event on {topic}: "
                f"{exc or type(exc).__name__}"
            ) from None
        return metadata
