"""Raw Kafka input record -> typed event, or a dead letter saying exactly why not.

``decode_input`` never raises, whatever the bytes: SPEC section 9 says no input may stop an
agent. It has two paths. The fast path (`decode_fast`) parses and validates a plain valid
record in one msgspec pass (the shapes are in `topics.wire`) and returns None for
anything else. The slow path (`decode_input_slow`) is the reference: orjson, the JSON
Schemas, the byte limits; it decides every record the fast path leaves, so every dead
letter and its message come from it. The invariant, checked by a property test: what the
fast path accepts, the slow path accepts too, as an equal event.

In the slow path the checks run cheapest first and each failure maps to one dead-letter
reason: too_large -> malformed_json -> unknown_schema -> schema_violation -> key_mismatch.
The ``schema`` field, not the topic, decides the event type. The size limits of SPEC 10.9
are in the JSON Schemas where JSON Schema can say them (counts, characters) and checked
here in bytes (`_limit_violation`), so that no event can grow an envoy's stored state.
"""

from __future__ import annotations

from typing import Any, Final

import fastjsonschema
import msgspec
import orjson

from topics.codec import truncate_error
from topics.events import (
    Checkin,
    DeadLetter,
    DeadLetterReason,
    Enrollment,
    InputEvent,
    ModuleError,
    RecordMeta,
    Resource,
    Run,
)
from topics.jsonschemas import (
    CHECKIN_V1,
    ENROLLMENT_V1,
    INPUT_SCHEMAS,
    RUN_V1,
    VALIDATORS,
    is_timestamp,
    parse_timestamp_ms,
)
from topics.limits import (
    MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES,
    MAX_LABELS_BYTES,
    MAX_NAME_BYTES,
    json_text_bytes,
    utf8_bytes,
)
from topics.timestamps import record_time_problem
from topics.wire import WIRE_DECODER, CheckinWire, RunWire

DEFAULT_MAX_BYTES: Final = 1_048_576

_INPUT_VALIDATORS: Final = {sid: VALIDATORS[sid] for sid in INPUT_SCHEMAS}


def decode_input(
    key: bytes | None,
    value: bytes | None,
    meta: RecordMeta,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    now_ms: int | None = None,
) -> InputEvent | DeadLetter:
    """Decode one input record (any topic) into an Enrollment, Checkin or Run.

    Returns a DeadLetter (never raises) with reason too_large, malformed_json,
    unknown_schema, schema_violation, key_mismatch or (given the worker's clock `now_ms`)
    bad_time, and a short specific error.
    """
    if now_ms is not None:
        problem = record_time_problem(meta.timestamp_ms, now_ms)
        if problem is not None:
            return _dead(meta, key, value, "bad_time", problem)
    if value is not None and len(value) <= max_bytes:
        try:
            event = decode_fast(key, value)
        except Exception:  # a fast-path bug may cost speed, never a wrong answer
            event = None
        if event is not None:
            return event
    return decode_input_slow(key, value, meta, max_bytes=max_bytes)


def decode_input_slow(
    key: bytes | None,
    value: bytes | None,
    meta: RecordMeta,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> InputEvent | DeadLetter:
    """`decode_input` without the fast path: the reference the fast path is tested
    against, and the judge of every record the fast path does not accept."""
    try:
        return _decode(key, value, meta, max_bytes)
    except Exception as exc:  # the last line of defence: a decoder bug must not stop agents
        return _dead(meta, key, value, "schema_violation", f"undecodable event ({exc!r})")


def decode_fast(key: bytes | None, value: bytes) -> InputEvent | None:
    """The event of a valid record whose key matches, in one msgspec pass; None when the
    record is anything else (the slow path then says why). Size is the caller's check.

    Checks that msgspec cannot state exactly use the slow path's own functions, so an
    accepted record is one the slow path accepts, giving an equal event.
    """
    try:
        wire = WIRE_DECODER.decode(value)
    except msgspec.DecodeError:  # msgspec.ValidationError is one too
        return None
    if key is None or key != wire.envoy_id.encode():
        return None
    if isinstance(wire, RunWire):
        finished_at_ms = parse_timestamp_ms(wire.finished_at)
        if finished_at_ms is None or not is_timestamp(wire.started_at):
            return None
        return Run(
            envoy_id=wire.envoy_id,
            run_id=wire.run_id,
            started_at=wire.started_at,
            finished_at=wire.finished_at,
            finished_at_ms=finished_at_ms,
            resources=wire.resources,
            module_errors=wire.module_errors or (),
            config_version=wire.config_version,
        )
    if not is_timestamp(wire.at):
        return None
    if isinstance(wire, CheckinWire):
        return Checkin(envoy_id=wire.envoy_id, at=wire.at)
    labels = wire.labels or {}
    if labels and _labels_violation(labels) is not None:
        return None
    return Enrollment(
        envoy_id=wire.envoy_id,
        action=wire.action,
        at=wire.at,
        labels=labels,
        checkin_interval_s=wire.checkin_interval_s,
    )


def _dead(
    meta: RecordMeta,
    key: bytes | None,
    value: bytes | None,
    reason: DeadLetterReason,
    error: str,
) -> DeadLetter:
    return DeadLetter(meta=meta, key=key, value=value, reason=reason, error=truncate_error(error))


def _decode(
    key: bytes | None, value: bytes | None, meta: RecordMeta, max_bytes: int
) -> InputEvent | DeadLetter:
    if value is None:
        return _dead(meta, key, value, "malformed_json", "record has no value (tombstone)")
    if len(value) > max_bytes:
        return _dead(
            meta, key, value, "too_large", f"value is {len(value)} bytes, limit {max_bytes}"
        )
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _dead(meta, key, value, "malformed_json", f"not JSON: {exc}")
    if not isinstance(doc, dict):
        kind = "null" if doc is None else type(doc).__name__
        return _dead(meta, key, value, "malformed_json", f"JSON {kind} is not an object")

    schema = doc.get("schema")
    if schema is None:
        return _dead(meta, key, value, "unknown_schema", "missing 'schema' field")
    if not isinstance(schema, str):
        return _dead(meta, key, value, "unknown_schema", "'schema' is not a string")
    validator = _INPUT_VALIDATORS.get(schema)
    if validator is None:
        return _dead(meta, key, value, "unknown_schema", f"unknown schema {schema[:100]!r}")
    try:
        validator(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _dead(meta, key, value, "schema_violation", _describe(exc))
    violation = _limit_violation(schema, doc)
    if violation is not None:
        return _dead(meta, key, value, "schema_violation", violation)

    event = _build(schema, doc)
    if event is None:  # unreachable while the schemas check date-time; kept as a guard
        return _dead(meta, key, value, "schema_violation", "finished_at: must be date-time")

    envoy_id: str = doc["envoy_id"]
    if key is None:
        return _dead(meta, key, value, "key_mismatch", f"no key; envoy_id is {envoy_id!r}")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError:
        return _dead(meta, key, value, "key_mismatch", "key is not UTF-8")
    if key_text != envoy_id:
        return _dead(
            meta,
            key,
            value,
            "key_mismatch",
            f"key {key_text[:253]!r} differs from envoy_id {envoy_id!r}",
        )
    return event


def _limit_violation(schema: str, doc: dict[str, Any]) -> str | None:
    """The byte limits JSON Schema cannot express, on a schema-valid document."""
    if schema == ENROLLMENT_V1:
        return _labels_violation(doc.get("labels") or {})
    if schema == RUN_V1:
        return _names_violation(doc)
    return None


def _labels_violation(labels: dict[str, str]) -> str | None:
    total = 0
    for name, text in labels.items():
        if (size := utf8_bytes(name)) > MAX_LABEL_KEY_BYTES:
            return (
                f"labels: key {name[:64]!r} is {size} bytes of UTF-8, limit {MAX_LABEL_KEY_BYTES}"
            )
        if (size := utf8_bytes(text)) > MAX_LABEL_VALUE_BYTES:
            return f"labels.{name}: value is {size} bytes of UTF-8, limit {MAX_LABEL_VALUE_BYTES}"
        total += json_text_bytes(name) + json_text_bytes(text)
    if total > MAX_LABELS_BYTES:
        return (
            f"labels: keys and values take {total} bytes (escapes counted), "
            f"limit {MAX_LABELS_BYTES} (8 KiB)"
        )
    return None


def _names_violation(doc: dict[str, Any]) -> str | None:
    """Resource ids and module names of a run. A character is at most 4 bytes, so text of
    up to a quarter of the limit in characters is never encoded: the hot path stays cheap."""
    short = MAX_NAME_BYTES // 4
    for i, resource in enumerate(doc["resources"]):
        for field in ("id", "module"):
            text: str = resource[field]
            if len(text) > short and (size := utf8_bytes(text)) > MAX_NAME_BYTES:
                return f"resources[{i}].{field}: {size} bytes of UTF-8, limit {MAX_NAME_BYTES}"
    for i, error in enumerate(doc.get("module_errors") or ()):
        module: str = error["module"]
        if len(module) > short and (size := utf8_bytes(module)) > MAX_NAME_BYTES:
            return f"module_errors[{i}].module: {size} bytes of UTF-8, limit {MAX_NAME_BYTES}"
    return None


def _build(schema: str, doc: dict[str, Any]) -> InputEvent | None:
    """The typed event of a schema-valid document (None only if a timestamp is invalid)."""
    if schema == RUN_V1:
        finished_at_ms = parse_timestamp_ms(doc["finished_at"])
        if finished_at_ms is None:
            return None
        return Run(
            envoy_id=doc["envoy_id"],
            run_id=doc["run_id"],
            started_at=doc["started_at"],
            finished_at=doc["finished_at"],
            finished_at_ms=finished_at_ms,
            resources=tuple(
                Resource(r["id"], r["module"], r["result"], r.get("message"))
                for r in doc["resources"]
            ),
            module_errors=tuple(
                ModuleError(module=m["module"], message=m["message"])
                for m in doc.get("module_errors") or ()
            ),
            config_version=doc.get("config_version"),
        )
    if schema == CHECKIN_V1:
        return Checkin(envoy_id=doc["envoy_id"], at=doc["at"])
    assert schema == ENROLLMENT_V1
    interval = doc.get("checkin_interval_s")
    return Enrollment(
        envoy_id=doc["envoy_id"],
        action=doc["action"],
        at=doc["at"],
        labels=dict(doc.get("labels") or {}),
        # JSON Schema "integer" admits 300.0; the event carries a real int.
        checkin_interval_s=None if interval is None else int(interval),
    )


def _describe(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """'resources[2].result: must be one of ok, changed, failed' from a fastjsonschema error."""
    name = exc.name or "data"
    where = name.removeprefix("data").lstrip(".") or "event"
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [field for field in exc.rule_definition or () if field not in exc.value]
        return f"{where}: missing required field(s) {', '.join(map(str, missing))}"
    if exc.rule == "propertyNames":
        rule = exc.rule_definition if isinstance(exc.rule_definition, dict) else {}
        low, high = rule.get("minLength", 0), rule.get("maxLength")
        return f"{where}: every key must be {low} to {high} characters long"
    if exc.rule == "enum":
        options = ", ".join("null" if o is None else str(o) for o in exc.rule_definition or ())
        return f"{where}: must be one of {options}"
    message = exc.message or ""
    detail = message[len(name) :].strip() if message.startswith(name) else message
    return f"{where}: {detail}"
