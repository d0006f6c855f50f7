"""Output encoders and the JSON Schema files: every encoder's output validates against the
schema that producers and consumers in other languages use (SPEC section 3)."""

from __future__ import annotations

import base64
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topics.codec import (
    DEADLETTER_MAX_KEY_BYTES,
    DEADLETTER_MAX_RECORD_BYTES,
    FLEET_STATUSES,
    encode_alert,
    encode_deadletter,
    encode_fleet_convergence,
    encode_status_change,
    truncate_error,
)
from topics.decode import decode_input
from topics.events import DeadLetter, RecordMeta
from topics.jsonschemas import (
    INPUT_SCHEMAS,
    SCHEMA_DIR,
    SCHEMA_FILES,
    VALIDATORS,
    load_schema,
    validate,
)

META = RecordMeta(topic="vigo.envoy.runs", partition=3, offset=42, timestamp_ms=1_795_781_104_000)

SPEC_STATUS_CHANGE = b"""{"schema": "vigo.status-change/1", "envoy_id": "web-01", "from": "converged",
 "to": "relapsed", "at": "2026-11-27T12:10:04Z", "version": 17,
 "cause": "run", "run_id": "0f8e6c1a-...", "consecutive_changed_runs": 2,
 "labels": {"env": "prod", "role": "web"}}"""  # noqa: E501
SPEC_FLEET = b"""{"schema": "vigo.fleet-convergence/1", "at": "2026-11-27T12:10:05Z",
 "active": 1200, "compliant": 1113, "percent": 92.75,
 "by_status": {"converged": 1113, "drifted": 20, "relapsed": 12, "diverged": 3,
               "degraded": 30, "failed": 2, "offline": 15, "no_data": 5}}"""


def is_valid(schema_id: str, document: Any) -> bool:
    try:
        validate(schema_id, document)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


# --- the schema files --------------------------------------------------------------------


def test_every_schema_file_is_registered() -> None:
    on_disk = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(SCHEMA_FILES.values())
    assert set(VALIDATORS) == set(SCHEMA_FILES)


@pytest.mark.parametrize("schema_id", sorted(SCHEMA_FILES))
def test_schema_file_shape(schema_id: str) -> None:
    schema = load_schema(schema_id)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"].startswith("urn:vigo:schema:")
    assert schema["title"] == schema_id
    assert "minor versions" in schema["description"]
    assert schema["properties"]["schema"] == {"const": schema_id}
    assert "schema" in schema["required"]
    assert schema["additionalProperties"] is True
    # Every required field is also described.
    assert set(schema["required"]) <= set(schema["properties"])
    # The file itself is plain JSON (no orjson-only extensions), as other languages read it.
    json.loads((SCHEMA_DIR / SCHEMA_FILES[schema_id]).read_text(encoding="utf-8"))


def test_schema_files_ship_with_the_package() -> None:
    shipped = resources.files("topics").joinpath("schemas")
    for name in SCHEMA_FILES.values():
        assert shipped.joinpath(name).is_file()
    pyproject = tomllib.loads(
        (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert "schemas/*.json" in pyproject["tool"]["setuptools"]["package-data"]["topics"]


def test_input_schemas_are_the_three_inputs() -> None:
    assert {"vigo.enrollment/1", "vigo.checkin/1", "vigo.run/1"} == INPUT_SCHEMAS


@pytest.mark.parametrize("schema_id", sorted(SCHEMA_FILES))
def test_wrong_schema_const_is_rejected(schema_id: str) -> None:
    assert not is_valid(schema_id, {"schema": "vigo.other/1"})


# --- status changes ----------------------------------------------------------------------


def test_spec_status_change_example_validates() -> None:
    assert is_valid("vigo.status-change/1", orjson.loads(SPEC_STATUS_CHANGE))


def test_encode_status_change_matches_spec_example() -> None:
    encoded = encode_status_change(
        envoy_id="web-01",
        from_status="converged",
        to_status="relapsed",
        at="2026-11-27T12:10:04Z",
        version=17,
        cause="run",
        run_id="0f8e6c1a-...",
        consecutive_changed_runs=2,
        labels={"env": "prod", "role": "web"},
    )
    assert orjson.loads(encoded) == orjson.loads(SPEC_STATUS_CHANGE)
    validate("vigo.status-change/1", orjson.loads(encoded))


@pytest.mark.parametrize(
    ("from_status", "to_status", "cause", "run_id"),
    [
        (None, "no_data", "enrollment", None),
        (None, "drifted", "run", "r-1"),
        ("converged", "offline", "sweep", None),
        ("offline", "converged", "checkin", None),
        ("degraded", "revoked", "revocation", None),
        ("revoked", "no_data", "enrollment", None),
        # SPEC 10.3: the lifecycle's statuses.
        ("offline", "inactive", "sweep", None),
        ("inactive", "converged", "checkin", None),
        ("inactive", "revoked", "revocation", None),
        ("inactive", "purged", "sweep", None),
    ],
)
def test_encode_status_change_validates(
    from_status: str | None, to_status: str, cause: str, run_id: str | None
) -> None:
    encoded = encode_status_change(
        "web-01", from_status, to_status, "2026-11-27T12:10:04Z", 1, cause, run_id, 0, {}
    )
    document = orjson.loads(encoded)
    validate("vigo.status-change/1", document)
    assert document["from"] == from_status
    assert document["labels"] == {}


def test_status_change_schema_rejects_nonsense() -> None:
    good = orjson.loads(SPEC_STATUS_CHANGE)
    assert not is_valid("vigo.status-change/1", good | {"to": "happy"})
    # Nothing comes after `purged`: a purged envoy starts again from null.
    assert not is_valid("vigo.status-change/1", good | {"from": "purged"})
    assert not is_valid("vigo.status-change/1", good | {"version": 0})
    assert not is_valid("vigo.status-change/1", good | {"cause": "whim"})
    assert not is_valid("vigo.status-change/1", {k: v for k, v in good.items() if k != "from"})


def test_encode_status_change_accepts_any_mapping_for_labels() -> None:
    from types import MappingProxyType

    encoded = encode_status_change(
        "w", None, "no_data", "2026-11-27T12:10:04Z", 1, "enrollment", None, 0,
        MappingProxyType({"env": "prod"}),
    )  # fmt: skip
    assert orjson.loads(encoded)["labels"] == {"env": "prod"}


# --- fleet convergence -------------------------------------------------------------------


def test_spec_fleet_example_validates() -> None:
    assert is_valid("vigo.fleet-convergence/1", orjson.loads(SPEC_FLEET))


def test_encode_fleet_convergence_matches_spec_example() -> None:
    spec = orjson.loads(SPEC_FLEET)
    encoded = encode_fleet_convergence(
        at=spec["at"],
        active=1200,
        compliant=1113,
        percent=92.75,
        by_status=spec["by_status"],
        inactive=4,
        revoked=9,
    )
    # SPEC 10.3: the lifecycle counts beside `active` (outside it).
    assert orjson.loads(encoded) == spec | {"inactive": 4, "revoked": 9}
    validate("vigo.fleet-convergence/1", orjson.loads(encoded))
    assert not is_valid("vigo.fleet-convergence/1", spec | {"inactive": -1})


def test_encode_fleet_convergence_fills_missing_statuses_with_zero() -> None:
    document = orjson.loads(
        encode_fleet_convergence("2026-11-27T12:10:05Z", 3, 2, 66.67, {"converged": 2, "failed": 1})
    )
    validate("vigo.fleet-convergence/1", document)
    assert list(document["by_status"]) == list(FLEET_STATUSES)
    assert document["by_status"] == dict.fromkeys(FLEET_STATUSES, 0) | {"converged": 2, "failed": 1}


def test_encode_fleet_convergence_empty_fleet_has_null_percent() -> None:
    document = orjson.loads(encode_fleet_convergence("2026-11-27T12:10:05Z", 0, 0, None, {}))
    validate("vigo.fleet-convergence/1", document)
    assert document["percent"] is None


def test_fleet_schema_rejects_nonsense() -> None:
    good = orjson.loads(SPEC_FLEET)
    assert not is_valid("vigo.fleet-convergence/1", good | {"percent": 100.5})
    assert not is_valid("vigo.fleet-convergence/1", good | {"active": -1})
    assert not is_valid("vigo.fleet-convergence/1", good | {"by_status": {"converged": 1}})


# --- alerts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "subject", "details"),
    [
        ("convergence.threshold", "fleet", {"percent": 88.5, "threshold": 90, "active": 10}),
        ("envoy.stale", "web-01", {"last_seen": "2026-11-27T11:00:00Z", "labels": {"a": "b"}}),
        ("envoy.stale", "evil\r\nBcc: x@example.com", {}),
    ],
)
def test_encode_alert_validates(event: str, subject: str, details: dict[str, Any]) -> None:
    encoded = encode_alert("a1b2", event, "2026-11-27T12:10:05Z", subject, details)
    document = orjson.loads(encoded)
    validate("vigo.alert/1", document)
    assert document == {
        "schema": "vigo.alert/1",
        "alert_id": "a1b2",
        "event": event,
        "at": "2026-11-27T12:10:05Z",
        "subject": subject,
        "details": details,
    }


def test_alert_schema_rejects_unknown_event() -> None:
    document = orjson.loads(encode_alert("a", "disk.full", "2026-11-27T12:10:05Z", "x", {}))
    assert not is_valid("vigo.alert/1", document)


# --- dead letters ------------------------------------------------------------------------


def dead(key: bytes | None, value: bytes | None, error: str = "boom") -> DeadLetter:
    return DeadLetter(meta=META, key=key, value=value, reason="malformed_json", error=error)


def test_encode_deadletter_text_value() -> None:
    document = orjson.loads(encode_deadletter(dead(b"web-01", b'{"not": "closed"')))
    validate("vigo.deadletter/1", document)
    assert document == {
        "schema": "vigo.deadletter/1",
        "topic": "vigo.envoy.runs",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1_795_781_104_000,
        "key": "web-01",
        "key_encoding": "utf-8",
        "key_truncated": False,
        "reason": "malformed_json",
        "error": "boom",
        "value": '{"not": "closed"',
        "value_encoding": "utf-8",
        "value_size": 16,
        "value_truncated": False,
    }


def test_encode_deadletter_binary_value_and_key_are_base64() -> None:
    document = orjson.loads(encode_deadletter(dead(b"\xff\x00", b"\x80abc")))
    validate("vigo.deadletter/1", document)
    assert (document["key"], document["key_encoding"]) == ("/wA=", "base64")
    assert (document["value"], document["value_encoding"]) == ("gGFiYw==", "base64")


def test_encode_deadletter_absent_key_and_value_are_null() -> None:
    document = orjson.loads(encode_deadletter(dead(None, None)))
    validate("vigo.deadletter/1", document)
    assert document["key"] is None and document["key_encoding"] is None
    assert document["value"] is None and document["value_encoding"] is None
    assert document["value_size"] is None


def test_encode_deadletter_truncates_long_error() -> None:
    document = orjson.loads(encode_deadletter(dead(b"k", b"v", error="e" * 2000)))
    validate("vigo.deadletter/1", document)
    assert len(document["error"]) == 500
    assert truncate_error("short") == "short"


def test_encode_deadletter_cuts_huge_values_to_stay_under_the_broker_limit() -> None:
    raw = b"x" * 2_000_000
    encoded = encode_deadletter(dead(b"k" * 5000, raw))
    assert len(encoded) < 1_000_000
    document = orjson.loads(encoded)
    validate("vigo.deadletter/1", document)
    assert document["value_truncated"] is True
    assert document["value_size"] == 2_000_000
    assert document["key_truncated"] is True
    assert len(document["key"]) == DEADLETTER_MAX_KEY_BYTES


@pytest.mark.parametrize("fill", [b"x", b"\x01", b"\xff", b'"'])
def test_every_dead_letter_fits_the_bound_the_worker_producer_allows(fill: bytes) -> None:
    """The worker's producer accepts DEADLETTER_MAX_RECORD_BYTES whatever max_event_bytes
    is (a small limit once made the dead letter of a too_large record crash the worker).
    Worst cases: every value cut, the longest topic name, key and error all escaped."""
    meta = RecordMeta("t" * 249, 2**31 - 1, 2**63 - 1, 2**63 - 1)
    worst = DeadLetter(meta, b"\x01" * 5000, fill * 2_000_000, "schema_violation", "\x01" * 900)
    encoded = encode_deadletter(worst)
    assert len(encoded) <= DEADLETTER_MAX_RECORD_BYTES - 8 * 1024  # room for batch headers


def test_encode_deadletter_control_characters_stay_bounded() -> None:
    raw = b"\x01" * 2_000_000  # valid UTF-8, but six bytes each once JSON-escaped
    encoded = encode_deadletter(dead(b"k", raw))
    assert len(encoded) < 1_000_000
    document = orjson.loads(encoded)
    assert document["value_encoding"] == "base64"
    assert raw_bytes_from_json(document["value"], "base64") == raw[: 512 * 1024]
    # Small ones stay readable text, as the SPEC asks.
    small = orjson.loads(encode_deadletter(dead(b"k", b"a\tb\n")))
    assert (small["value"], small["value_encoding"]) == ("a\tb\n", "utf-8")


def test_decoder_dead_letters_encode_and_validate() -> None:
    result = decode_input(b"web-01", b"\xff\xfe garbage", META)
    assert isinstance(result, DeadLetter)
    document = orjson.loads(encode_deadletter(result))
    validate("vigo.deadletter/1", document)
    assert document["reason"] == "malformed_json"
    assert base64.b64decode(document["value"]) == b"\xff\xfe garbage"


REASONS = st.sampled_from(
    [
        "malformed_json",
        "schema_violation",
        "unknown_schema",
        "not_enrolled",
        "revoked",
        "too_large",
        "key_mismatch",
        "bad_time",
    ]
)


@settings(max_examples=300)
@given(
    key=st.none() | st.binary(max_size=200) | st.text(max_size=50).map(str.encode),
    value=st.none() | st.binary(max_size=3000) | st.text(max_size=500).map(str.encode),
    reason=REASONS,
    error=st.text(max_size=700),
    partition=st.integers(min_value=0, max_value=10_000),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_deadletter_round_trips_any_bytes(
    key: bytes | None,
    value: bytes | None,
    reason: Any,
    error: str,
    partition: int,
    offset: int,
) -> None:
    letter = DeadLetter(
        meta=RecordMeta("vigo.envoy.checkins", partition, offset, 0),
        key=key,
        value=value,
        reason=reason,
        error=error,
    )
    document = orjson.loads(encode_deadletter(letter))
    validate("vigo.deadletter/1", document)
    assert raw_bytes_from_json(document["value"], document["value_encoding"]) == value
    assert raw_bytes_from_json(document["key"], document["key_encoding"]) == key
    assert (document["partition"], document["offset"]) == (partition, offset)
    assert document["reason"] == reason
    if value is not None:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            assert document["value_encoding"] == "base64"
        else:
            assert document["value_encoding"] == "utf-8"


def raw_bytes_from_json(text: str | None, encoding: str | None) -> bytes | None:
    """What a reader of the dead-letter topic does with a value or key field."""
    if text is None:
        return None
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    return text.encode("utf-8")


def test_encode_fleet_convergence_groups_are_optional_and_validate() -> None:
    """SPEC 10.2: `groups` only when given; label values are data (JSON only)."""
    plain = orjson.loads(encode_fleet_convergence("2026-11-27T12:10:05Z", 0, 0, None, {}))
    assert "groups" not in plain
    by_status = dict.fromkeys(FLEET_STATUSES, 0) | {"converged": 1, "failed": 1}
    numbers = {"active": 2, "compliant": 1, "percent": 50.0, "by_status": by_status}
    hostile = 'a"\r\nb<script>é'
    document = orjson.loads(
        encode_fleet_convergence(
            "2026-11-27T12:10:05Z",
            2,
            1,
            50.0,
            by_status,
            groups={"env": {hostile: numbers, "(none)": numbers}, "role": {}},
        )
    )
    validate("vigo.fleet-convergence/1", document)
    assert document["groups"]["env"][hostile] == numbers
    bad = document | {"groups": {"env": {"prod": {"active": 1}}}}
    assert not is_valid("vigo.fleet-convergence/1", bad)
    too_many = document | {"groups": {k: {} for k in "abcde"}}
    assert not is_valid("vigo.fleet-convergence/1", too_many)
