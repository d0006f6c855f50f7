"""orjson encoders for the output topics (SPEC section 3) and the dead-letter topic.

Encoders are deliberately thin, a dict handed to orjson: the JSON Schema files are the
contract, and the tests check every encoder's output against them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final, Literal

import fastjsonschema
import orjson

from topics.events import Alert, DeadLetter
from topics.jsonschemas import (
    ALERT_V1,
    DEADLETTER_V1,
    FLEET_CONVERGENCE_V1,
    ROLLOUT_V1,
    STATUS_CHANGE_V1,
    VALIDATORS,
)
from topics.statuses import ACTIVE_STATUSES

#: Every status of SPEC section 4, in the order dashboards show them.
FLEET_STATUSES: Final = tuple(status.value for status in ACTIVE_STATUSES)

ERROR_MAX_CHARS: Final = 500
#: Kafka's default message limit is ~1 MiB: a cut value (<= 4/3 of this once base64'd)
#: plus a cut key still fits, so a huge input can never make the dead-letter write fail.
DEADLETTER_MAX_VALUE_BYTES: Final = 512 * 1024
DEADLETTER_MAX_KEY_BYTES: Final = 1024
#: The largest encoded dead letter, with room to spare: a base64'd cut value (699,052
#: bytes), an escaped cut key (6 KiB), an escaped error (3,000 bytes) and the fields. The
#: worker's producer must accept records of this size whatever `max_event_bytes` is.
DEADLETTER_MAX_RECORD_BYTES: Final = 720 * 1024
_ESCAPE_FREE_BYTES: Final = 64 * 1024

Encoding = Literal["utf-8", "base64"]


def truncate_error(text: str, limit: int = ERROR_MAX_CHARS) -> str:
    """Cut an error text to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_status_change(
    envoy_id: str,
    from_status: str | None,
    to_status: str,
    at: str,
    version: int,
    cause: str,
    run_id: str | None,
    consecutive_changed_runs: int,
    labels: Mapping[str, str],
) -> bytes:
    """A ``vigo.status-change/1`` value; key it by ``envoy_id``."""
    return orjson.dumps(
        {
            "schema": STATUS_CHANGE_V1,
            "envoy_id": envoy_id,
            "from": from_status,
            "to": to_status,
            "at": at,
            "version": version,
            "cause": cause,
            "run_id": run_id,
            "consecutive_changed_runs": consecutive_changed_runs,
            "labels": dict(labels),
        }
    )


def encode_fleet_convergence(
    at: str,
    active: int,
    compliant: int,
    percent: float | None,
    by_status: Mapping[str, int],
    inactive: int = 0,
    revoked: int = 0,
    groups: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> bytes:
    """A ``vigo.fleet-convergence/1`` value; key it by ``fleet``.

    Every status is present in ``by_status`` (0 when absent from the input), so consumers
    never have to tell "no envoys" from "not reported". ``inactive`` and ``revoked``
    (SPEC 10.3) count envoys outside ``active``. ``groups`` (SPEC 10.2, only with
    ``fleet.group_by``): key -> value -> ``{"active", "compliant", "percent",
    "by_status", "inactive", "revoked"}``; label keys and values are data, encoded by
    orjson only.
    """
    statuses = {status: by_status.get(status, 0) for status in FLEET_STATUSES}
    statuses.update(by_status)
    doc: dict[str, Any] = {
        "schema": FLEET_CONVERGENCE_V1,
        "at": at,
        "active": active,
        "compliant": compliant,
        "percent": percent,
        "by_status": statuses,
        "inactive": inactive,
        "revoked": revoked,
    }
    if groups is not None:
        doc["groups"] = groups
    return orjson.dumps(doc)


def encode_rollout(at: str, label: str | None, active: int, doc: Mapping[str, Any]) -> bytes:
    """A ``vigo.rollout/1`` value (SPEC 11.2); key it by ``fleet`` or the ``label``.
    ``doc`` is the API's body: ``newest``, ``versions`` and ``stuck``."""
    return orjson.dumps({"schema": ROLLOUT_V1, "at": at, "label": label, "active": active, **doc})


def encode_alert(
    alert_id: str,
    event: str,
    at: str,
    subject: str,
    details: Mapping[str, Any],
) -> bytes:
    """A ``vigo.alert/1`` outbox value; key it by ``alert_id``."""
    return orjson.dumps(
        {
            "schema": ALERT_V1,
            "alert_id": alert_id,
            "event": event,
            "at": at,
            "subject": subject,
            "details": dict(details),
        }
    )


def decode_alert(data: bytes | bytearray | memoryview | str) -> Alert:
    """Parse and validate a ``vigo.alert/1`` value (the inverse of :func:`encode_alert`).

    Raises ValueError, with a short reason, on anything that is not one: the outbox is a
    topic like any other, and its sender must be able to skip what it cannot read.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"alert is not JSON: {exc}") from None
    try:
        VALIDATORS[ALERT_V1](doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(f"not a {ALERT_V1} alert: {exc.message}") from None
    return Alert(
        alert_id=doc["alert_id"],
        event=doc["event"],
        at=doc["at"],
        subject=doc["subject"],
        details=doc["details"],
    )


def raw_bytes_as_json(raw: bytes) -> tuple[str, Encoding]:
    """Raw bytes as a JSON string: text when UTF-8, else base64 (standard, padded).

    One exception keeps the dead-letter size bounded: UTF-8 that JSON-escaping would blow
    up (control characters escape to six bytes each) beyond both its base64 length and
    64 KiB goes as base64 too. Readers must always look at the encoding field.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"
    budget = max(4 * ((len(raw) + 2) // 3), _ESCAPE_FREE_BYTES)
    # Escaping at most multiplies the length by 6: only large values need measuring.
    if len(raw) * 6 > budget and len(orjson.dumps(text)) - 2 > budget:
        return base64.b64encode(raw).decode("ascii"), "base64"
    return text, "utf-8"


def encode_deadletter(
    dead: DeadLetter,
    *,
    max_value_bytes: int = DEADLETTER_MAX_VALUE_BYTES,
    max_key_bytes: int = DEADLETTER_MAX_KEY_BYTES,
) -> bytes:
    """A ``vigo.deadletter/1`` value: where the record came from, why, and its raw bytes.

    Values beyond ``max_value_bytes`` (keys beyond ``max_key_bytes``) are cut and flagged
    (``value_truncated``/``key_truncated``), so that writing the dead letter can never
    exceed the broker's message limit and stop the agent.
    """
    key: str | None = None
    key_encoding: Encoding | None = None
    key_truncated = False
    if dead.key is not None:
        raw_key = bytes(dead.key)
        key_truncated = len(raw_key) > max_key_bytes
        key, key_encoding = raw_bytes_as_json(raw_key[:max_key_bytes])
    value: str | None = None
    value_encoding: Encoding | None = None
    value_size: int | None = None
    value_truncated = False
    if dead.value is not None:
        raw_value = bytes(dead.value)
        value_size = len(raw_value)
        value_truncated = value_size > max_value_bytes
        value, value_encoding = raw_bytes_as_json(raw_value[:max_value_bytes])
    return orjson.dumps(
        {
            "schema": DEADLETTER_V1,
            "topic": dead.meta.topic,
            "partition": dead.meta.partition,
            "offset": dead.meta.offset,
            "timestamp_ms": dead.meta.timestamp_ms,
            "key": key,
            "key_encoding": key_encoding,
            "key_truncated": key_truncated,
            "reason": dead.reason,
            "error": truncate_error(dead.error),
            "value": value,
            "value_encoding": value_encoding,
            "value_size": value_size,
            "value_truncated": value_truncated,
        }
    )
