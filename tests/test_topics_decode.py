"""decode_input: every valid event shape of SPEC section 3, every dead-letter reason, and
the property that no byte string can make it raise (SPEC section 9)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topics.decode import decode_input
from topics.events import (
    Checkin,
    DeadLetter,
    Enrollment,
    ModuleError,
    RecordMeta,
    Resource,
    Run,
)
from topics.jsonschemas import parse_timestamp_ms
from topics.limits import json_text_bytes, utf8_bytes

META = RecordMeta(topic="vigo.envoy.runs", partition=3, offset=42, timestamp_ms=1_795_781_104_000)

# The SPEC section 3 examples, verbatim.
SPEC_ENROLLMENT = b"""{"schema": "vigo.enrollment/1", "envoy_id": "web-01", "action": "enrolled",
 "at": "2026-11-27T12:00:00Z", "labels": {"env": "prod", "role": "web"},
 "checkin_interval_s": 300}"""
SPEC_CHECKIN = (
    b"""{"schema": "vigo.checkin/1", "envoy_id": "web-01", "at": "2026-11-27T12:05:00Z"}"""
)
SPEC_RUN = b"""{"schema": "vigo.run/1", "envoy_id": "web-01", "run_id": "0f8e6c1a-...",
 "started_at": "2026-11-27T12:05:00Z", "finished_at": "2026-11-27T12:05:04Z",
 "config_version": "a1b2c3",
 "resources": [
   {"id": "file[/etc/motd]", "module": "files", "result": "ok"},
   {"id": "package[nginx]", "module": "packages", "result": "changed"},
   {"id": "service[nginx]", "module": "services", "result": "failed", "message": "exit 1"}
 ],
 "module_errors": [{"module": "users", "message": "ldap unreachable"}]}"""

FINISHED_MS = calendar.timegm((2026, 11, 27, 12, 5, 4, 0, 0, 0)) * 1000


def run_doc(**changes: Any) -> dict[str, Any]:
    """The SPEC run as a dict, with fields replaced (value None deletes the field)."""
    doc: dict[str, Any] = orjson.loads(SPEC_RUN)
    for name, value in changes.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return doc


def enrollment_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(SPEC_ENROLLMENT)
    for name, value in changes.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return doc


def decode_doc(doc: Any, key: bytes | None = b"web-01") -> Any:
    return decode_input(key, orjson.dumps(doc), META)


# --- valid events ------------------------------------------------------------------------


def test_spec_enrollment_example() -> None:
    assert decode_input(b"web-01", SPEC_ENROLLMENT, META) == Enrollment(
        envoy_id="web-01",
        action="enrolled",
        at="2026-11-27T12:00:00Z",
        labels={"env": "prod", "role": "web"},
        checkin_interval_s=300,
    )


def test_spec_checkin_example() -> None:
    assert decode_input(b"web-01", SPEC_CHECKIN, META) == Checkin(
        envoy_id="web-01", at="2026-11-27T12:05:00Z"
    )


def test_spec_run_example() -> None:
    assert decode_input(b"web-01", SPEC_RUN, META) == Run(
        envoy_id="web-01",
        run_id="0f8e6c1a-...",
        started_at="2026-11-27T12:05:00Z",
        finished_at="2026-11-27T12:05:04Z",
        finished_at_ms=FINISHED_MS,
        resources=(
            Resource("file[/etc/motd]", "files", "ok"),
            Resource("package[nginx]", "packages", "changed"),
            Resource("service[nginx]", "services", "failed", "exit 1"),
        ),
        module_errors=(ModuleError("users", "ldap unreachable"),),
        config_version="a1b2c3",
    )


def test_enrollment_optional_fields_absent() -> None:
    event = decode_doc(enrollment_doc(labels=None, checkin_interval_s=None, action="revoked"))
    assert event == Enrollment("web-01", "revoked", "2026-11-27T12:00:00Z", {}, None)
    assert isinstance(event.labels, dict)


def test_enrollment_optional_fields_null_mean_absent() -> None:
    doc = enrollment_doc()
    doc["labels"] = None
    doc["checkin_interval_s"] = None
    assert decode_doc(doc) == Enrollment("web-01", "enrolled", "2026-11-27T12:00:00Z")


def test_enrollment_integral_float_interval_becomes_int() -> None:
    event = decode_doc(enrollment_doc(checkin_interval_s=300.0))
    assert isinstance(event, Enrollment)
    assert event.checkin_interval_s == 300
    assert type(event.checkin_interval_s) is int


@pytest.mark.parametrize("interval", [10, 86400])
def test_enrollment_interval_bounds_inclusive(interval: int) -> None:
    event = decode_doc(enrollment_doc(checkin_interval_s=interval))
    assert isinstance(event, Enrollment)
    assert event.checkin_interval_s == interval


def test_enrollment_64_labels_accepted() -> None:
    labels = {f"k{i}": str(i) for i in range(64)}
    event = decode_doc(enrollment_doc(labels=labels))
    assert isinstance(event, Enrollment)
    assert event.labels == labels


def test_run_with_no_resources_and_no_optional_fields() -> None:
    doc = run_doc(resources=[], module_errors=None, config_version=None)
    assert decode_doc(doc) == Run(
        envoy_id="web-01",
        run_id="0f8e6c1a-...",
        started_at="2026-11-27T12:05:00Z",
        finished_at="2026-11-27T12:05:04Z",
        finished_at_ms=FINISHED_MS,
    )


def test_run_optional_fields_null_mean_absent() -> None:
    doc = run_doc(resources=[{"id": "a", "module": "m", "result": "ok", "message": None}])
    doc["module_errors"] = None
    doc["config_version"] = None
    event = decode_doc(doc)
    assert isinstance(event, Run)
    assert event.resources == (Resource("a", "m", "ok", None),)
    assert event.module_errors == ()
    assert event.config_version is None


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    doc = run_doc(new_top_level={"x": [1, 2]}, priority=3)
    doc["resources"][0]["duration_ms"] = 12
    doc["module_errors"][0]["code"] = "E42"
    event = decode_doc(doc)
    assert isinstance(event, Run)
    assert event.resources[0] == Resource("file[/etc/motd]", "files", "ok")


def test_schema_not_topic_decides_the_type() -> None:
    on_checkins = RecordMeta("vigo.envoy.checkins", 0, 0, 0)
    assert isinstance(decode_input(b"web-01", SPEC_RUN, on_checkins), Run)
    assert isinstance(decode_input(b"web-01", SPEC_ENROLLMENT, on_checkins), Enrollment)


def test_value_exactly_max_bytes_is_accepted() -> None:
    assert isinstance(
        decode_input(b"web-01", SPEC_CHECKIN, META, max_bytes=len(SPEC_CHECKIN)), Checkin
    )


@pytest.mark.parametrize(
    ("finished_at", "expected_ms"),
    [
        ("2026-11-27T12:05:04Z", FINISHED_MS),
        ("2026-11-27t12:05:04z", FINISHED_MS),
        ("2026-11-27T12:05:04+00:00", FINISHED_MS),
        ("2026-11-27T17:35:04+05:30", FINISHED_MS),
        ("2026-11-27T04:05:04-08:00", FINISHED_MS),
        ("2026-11-27T12:05:04.5Z", FINISHED_MS + 500),
        ("2026-11-27T12:05:04.123456789Z", FINISHED_MS + 123),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_finished_at_ms_is_exact_epoch_milliseconds(finished_at: str, expected_ms: int) -> None:
    event = decode_doc(run_doc(finished_at=finished_at))
    assert isinstance(event, Run)
    assert event.finished_at_ms == expected_ms
    assert event.finished_at == finished_at  # the envoy's text is kept for display


def test_envoy_id_of_253_characters_and_non_ascii() -> None:
    envoy_id = "é" * 253
    event = decode_doc(run_doc(envoy_id=envoy_id), key=envoy_id.encode())
    assert isinstance(event, Run)
    assert event.envoy_id == envoy_id


# --- dead letters ------------------------------------------------------------------------


def _bytes(doc: Any) -> bytes:
    return orjson.dumps(doc)


DEAD_CASES: list[tuple[str, bytes | None, bytes | None, str, str]] = [
    # (case id, key, value, reason, substring of error)
    ("tombstone", b"web-01", None, "malformed_json", "no value"),
    ("empty", b"web-01", b"", "malformed_json", "not JSON"),
    ("garbage", b"web-01", b"hello", "malformed_json", "not JSON"),
    ("truncated", b"web-01", SPEC_RUN[:-5], "malformed_json", "not JSON"),
    ("not-utf8", b"web-01", b'{"schema": "\xff"}', "malformed_json", "UTF-8"),
    ("bom", b"web-01", b"\xef\xbb\xbf" + SPEC_CHECKIN, "malformed_json", "not JSON"),
    ("nan", b"web-01", b'{"schema": NaN}', "malformed_json", "not JSON"),
    ("lone-surrogate", b"web-01", b'{"envoy_id": "\\ud800"}', "malformed_json", "not JSON"),
    ("array", b"web-01", b"[1, 2]", "malformed_json", "list is not an object"),
    ("string", b"web-01", b'"vigo.run/1"', "malformed_json", "not an object"),
    ("null", b"web-01", b"null", "malformed_json", "null is not an object"),
    ("number", b"web-01", b"42", "malformed_json", "not an object"),
    ("no-schema", b"web-01", _bytes({"envoy_id": "web-01"}), "unknown_schema", "missing"),
    ("null-schema", b"web-01", _bytes(run_doc(schema=None)), "unknown_schema", "missing"),
    ("int-schema", b"web-01", _bytes(run_doc(schema=1)), "unknown_schema", "not a string"),
    ("list-schema", b"web-01", _bytes(run_doc(schema=["vigo.run/1"])), "unknown_schema", "not"),
    ("next-major", b"web-01", _bytes(run_doc(schema="vigo.run/2")), "unknown_schema", "run/2"),
    (
        "output-schema",
        b"web-01",
        _bytes(run_doc(schema="vigo.status-change/1")),
        "unknown_schema",
        "",
    ),
    ("case", b"web-01", _bytes(run_doc(schema="VIGO.RUN/1")), "unknown_schema", "VIGO"),
    ("no-envoy", b"web-01", _bytes(run_doc(envoy_id=None)), "schema_violation", "envoy_id"),
    ("empty-envoy", b"", _bytes(run_doc(envoy_id="")), "schema_violation", "envoy_id"),
    ("long-envoy", b"x" * 254, _bytes(run_doc(envoy_id="x" * 254)), "schema_violation", "envoy_id"),
    ("newline-envoy", b"a\nb", _bytes(run_doc(envoy_id="a\nb")), "schema_violation", "envoy_id"),
    ("cr-envoy", b"a\r", _bytes(run_doc(envoy_id="a\r")), "schema_violation", "envoy_id"),
    ("nul-envoy", b"a\x00", _bytes(run_doc(envoy_id="a\x00")), "schema_violation", "envoy_id"),
    ("del-envoy", b"a\x7f", _bytes(run_doc(envoy_id="a\x7f")), "schema_violation", "envoy_id"),
    ("int-envoy", b"1", _bytes(run_doc(envoy_id=1)), "schema_violation", "envoy_id"),
    ("no-run-id", b"web-01", _bytes(run_doc(run_id=None)), "schema_violation", "run_id"),
    ("empty-run-id", b"web-01", _bytes(run_doc(run_id="")), "schema_violation", "run_id"),
    ("long-run-id", b"web-01", _bytes(run_doc(run_id="r" * 129)), "schema_violation", "run_id"),
    (
        "long-config-version",
        b"web-01",
        _bytes(run_doc(config_version="v" * 129)),
        "schema_violation",
        "config_version",
    ),
    ("no-resources", b"web-01", _bytes(run_doc(resources=None)), "schema_violation", "resources"),
    ("resources-obj", b"web-01", _bytes(run_doc(resources={})), "schema_violation", "resources"),
    (
        "too-many-resources",
        b"web-01",
        _bytes(run_doc(resources=[{"id": "a", "module": "m", "result": "ok"}] * 10_001)),
        "schema_violation",
        "resources",
    ),
    (
        "resource-no-module",
        b"web-01",
        _bytes(run_doc(resources=[{"id": "a", "result": "ok"}])),
        "schema_violation",
        "resources[0]: missing required field(s) module",
    ),
    (
        "resource-int",
        b"web-01",
        _bytes(run_doc(resources=[7])),
        "schema_violation",
        "resources[0]",
    ),
    (
        "module-error-no-message",
        b"web-01",
        _bytes(run_doc(module_errors=[{"module": "users"}])),
        "schema_violation",
        "module_errors[0]",
    ),
    (
        "no-finished",
        b"web-01",
        _bytes(run_doc(finished_at=None)),
        "schema_violation",
        "finished_at",
    ),
    (
        "no-tz",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27T12:05:04")),
        "schema_violation",
        "finished_at",
    ),
    (
        "feb-30",
        b"web-01",
        _bytes(run_doc(finished_at="2026-02-30T12:00:00Z")),
        "schema_violation",
        "date-time",
    ),
    (
        "hour-24",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27T24:00:00Z")),
        "schema_violation",
        "date-time",
    ),
    (
        "offset-no-colon",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27T12:05:04+0100")),
        "schema_violation",
        "date-time",
    ),
    (
        "offset-24h",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27T12:05:04+24:00")),
        "schema_violation",
        "date-time",
    ),
    (
        "space-sep",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27 12:05:04Z")),
        "schema_violation",
        "date-time",
    ),
    (
        "date-only",
        b"web-01",
        _bytes(run_doc(finished_at="2026-11-27")),
        "schema_violation",
        "date-time",
    ),
    (
        "leap-second",
        b"web-01",
        _bytes(run_doc(finished_at="2016-12-31T23:59:60Z")),
        "schema_violation",
        "date-time",
    ),
    (
        "unicode-digits",
        b"web-01",
        _bytes(run_doc(finished_at="\uff12\uff10\uff12\uff16-11-27T12:05:04Z")),
        "schema_violation",
        "date-time",
    ),
    (
        "epoch-number",
        b"web-01",
        _bytes(run_doc(finished_at=1795781104)),
        "schema_violation",
        "finished_at",
    ),
    (
        "bad-started",
        b"web-01",
        _bytes(run_doc(started_at="yesterday")),
        "schema_violation",
        "started_at",
    ),
    (
        "bad-checkin-at",
        b"web-01",
        _bytes({"schema": "vigo.checkin/1", "envoy_id": "web-01", "at": "now"}),
        "schema_violation",
        "at: must be date-time",
    ),
    (
        "bad-action",
        b"web-01",
        _bytes(enrollment_doc(action="deleted")),
        "schema_violation",
        "action: must be one of enrolled, revoked",
    ),
    (
        "interval-low",
        b"web-01",
        _bytes(enrollment_doc(checkin_interval_s=9)),
        "schema_violation",
        "checkin_interval_s",
    ),
    (
        "interval-high",
        b"web-01",
        _bytes(enrollment_doc(checkin_interval_s=86_401)),
        "schema_violation",
        "checkin_interval_s",
    ),
    (
        "interval-str",
        b"web-01",
        _bytes(enrollment_doc(checkin_interval_s="300")),
        "schema_violation",
        "checkin_interval_s",
    ),
    (
        "interval-bool",
        b"web-01",
        _bytes(enrollment_doc(checkin_interval_s=True)),
        "schema_violation",
        "checkin_interval_s",
    ),
    (
        "interval-frac",
        b"web-01",
        _bytes(enrollment_doc(checkin_interval_s=300.5)),
        "schema_violation",
        "checkin_interval_s",
    ),
    (
        "label-int",
        b"web-01",
        _bytes(enrollment_doc(labels={"env": 1})),
        "schema_violation",
        "labels.env",
    ),
    (
        "labels-list",
        b"web-01",
        _bytes(enrollment_doc(labels=["env"])),
        "schema_violation",
        "labels",
    ),
    (
        "empty-label-key",
        b"web-01",
        _bytes(enrollment_doc(labels={"": "x"})),
        "schema_violation",
        "labels",
    ),
    (
        "65-labels",
        b"web-01",
        _bytes(enrollment_doc(labels={f"k{i}": "v" for i in range(65)})),
        "schema_violation",
        "labels",
    ),
    ("no-key", None, SPEC_RUN, "key_mismatch", "no key"),
    ("other-key", b"web-02", SPEC_RUN, "key_mismatch", "'web-02' differs from envoy_id 'web-01'"),
    ("padded-key", b"web-01 ", SPEC_RUN, "key_mismatch", "differs"),
    ("non-utf8-key", b"web-\xff", SPEC_RUN, "key_mismatch", "not UTF-8"),
    ("empty-key", b"", SPEC_CHECKIN, "key_mismatch", "differs"),
]


@pytest.mark.parametrize(
    ("key", "value", "reason", "error_part"),
    [case[1:] for case in DEAD_CASES],
    ids=[case[0] for case in DEAD_CASES],
)
def test_dead_letter_reasons(
    key: bytes | None, value: bytes | None, reason: str, error_part: str
) -> None:
    result = decode_input(key, value, META)
    assert isinstance(result, DeadLetter), result
    assert result.reason == reason
    assert error_part in result.error
    assert 0 < len(result.error) <= 500
    # The raw record is kept untouched for replay.
    assert (result.meta, result.key, result.value) == (META, key, value)


def test_error_text_names_the_field_and_the_options() -> None:
    doc = run_doc()
    doc["resources"][2]["result"] = "exploded"
    result = decode_doc(doc)
    assert isinstance(result, DeadLetter)
    assert result.error == "resources[2].result: must be one of ok, changed, failed"


def test_too_large_is_checked_before_parsing() -> None:
    result = decode_input(b"web-01", b"\xff" * 101, META, max_bytes=100)
    assert isinstance(result, DeadLetter)
    assert result.reason == "too_large"
    assert result.error == "value is 101 bytes, limit 100"


def test_too_large_default_limit_is_one_mebibyte() -> None:
    big = _bytes(run_doc(padding="x" * 1_048_576))
    result = decode_input(b"web-01", big, META)
    assert isinstance(result, DeadLetter)
    assert result.reason == "too_large"


def test_schema_violation_wins_over_key_mismatch() -> None:
    result = decode_input(b"other", _bytes(run_doc(run_id="")), META)
    assert isinstance(result, DeadLetter)
    assert result.reason == "schema_violation"


def test_error_is_truncated_to_500_characters() -> None:
    result = decode_input(b"web-01", _bytes(run_doc(schema="x" * 5000)), META)
    assert isinstance(result, DeadLetter)
    assert len(result.error) <= 500
    label_key = "k" * 5000
    result = decode_doc(enrollment_doc(labels={label_key: 1}))
    assert isinstance(result, DeadLetter)
    assert result.reason == "schema_violation"
    assert len(result.error) == 500
    assert result.error.endswith("...")


def test_parse_timestamp_ms_rejects_what_is_not_rfc3339() -> None:
    assert parse_timestamp_ms("2026-11-27T12:05:04Z") == FINISHED_MS
    for bad in [
        "",
        "2026-11-27T12:05:04",
        "20261127T120504Z",
        "2026-11-27T12:05Z",
        "0000-01-01T00:00:00Z",
    ]:
        assert parse_timestamp_ms(bad) is None, bad


# --- properties --------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_SCALARS = (
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)
KEYS = st.none() | st.binary(max_size=300) | st.just(b"web-01")


def _assert_decoded(result: object) -> None:
    assert isinstance(result, (Enrollment, Checkin, Run, DeadLetter))
    if isinstance(result, DeadLetter):
        assert not result.error.startswith("undecodable event"), result.error  # safety net hit
        assert len(result.error) <= 500


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, value=st.none() | st.binary(max_size=2000))
def test_any_bytes_decode_without_raising(key: bytes | None, value: bytes | None) -> None:
    _assert_decoded(decode_input(key, value, META, max_bytes=1000))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, doc=st.dictionaries(st.text(), JSON_VALUES, max_size=8))
def test_any_json_object_decodes_without_raising(key: bytes | None, doc: dict[str, Any]) -> None:
    _assert_decoded(decode_input(key, orjson.dumps(doc), META))


TIMESTAMPISH = st.sampled_from(
    ["2026-11-27T12:05:04Z", "2026-02-30T00:00:00Z", "x", "2026-11-27T12:05:04+99:99"]
) | st.text(max_size=30)

NEAR_VALID = st.fixed_dictionaries(
    {"schema": st.sampled_from(["vigo.enrollment/1", "vigo.checkin/1", "vigo.run/1"])},
    optional={
        "envoy_id": st.just("web-01") | st.text(max_size=5) | JSON_VALUES,
        "action": st.sampled_from(["enrolled", "revoked", "x"]) | JSON_VALUES,
        "at": TIMESTAMPISH | JSON_VALUES,
        "started_at": TIMESTAMPISH,
        "finished_at": TIMESTAMPISH | JSON_VALUES,
        "run_id": st.text(max_size=3) | JSON_VALUES,
        "labels": st.dictionaries(st.text(max_size=3), st.text(max_size=3) | INT64, max_size=3)
        | JSON_VALUES,
        "checkin_interval_s": INT64 | st.floats() | JSON_VALUES,
        "config_version": JSON_VALUES,
        "resources": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": st.text(max_size=3) | JSON_VALUES,
                    "module": st.text(max_size=3) | JSON_VALUES,
                    "result": st.sampled_from(["ok", "changed", "failed", "x"]) | JSON_VALUES,
                    "message": JSON_VALUES,
                },
            )
            | JSON_VALUES,
            max_size=4,
        )
        | JSON_VALUES,
        "module_errors": st.lists(
            st.fixed_dictionaries({}, optional={"module": JSON_VALUES, "message": JSON_VALUES}),
            max_size=3,
        )
        | JSON_VALUES,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, doc=NEAR_VALID)
def test_near_valid_events_decode_without_raising(key: bytes | None, doc: dict[str, Any]) -> None:
    _assert_decoded(decode_input(key, orjson.dumps(doc), META))


ENVOY_IDS = st.text(
    alphabet=st.characters(min_codepoint=0x20, exclude_characters="\x7f", codec="utf-8"),
    min_size=1,
    max_size=253,
)
TIMEZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(-timedelta(hours=8)),
        timezone(timedelta(0)),
    ]
)
DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=TIMEZONES
)
RESOURCES = st.builds(
    Resource,
    id=st.text(min_size=1, max_size=40),
    module=st.text(min_size=1, max_size=20),
    result=st.sampled_from(["ok", "changed", "failed"]),
    message=st.none() | st.text(max_size=40),
)
MODULE_ERRORS = st.builds(
    ModuleError, module=st.text(min_size=1, max_size=20), message=st.text(max_size=40)
)


def _rfc3339(moment: datetime, zulu: bool) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


def _epoch_ms(moment: datetime) -> int:
    """Independent of the decoder's arithmetic: calendar.timegm on the UTC tuple."""
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    envoy_id=ENVOY_IDS,
    run_id=st.text(min_size=1, max_size=128),
    started=DATETIMES,
    finished=DATETIMES,
    zulu=st.booleans(),
    resources=st.lists(RESOURCES, max_size=30),
    module_errors=st.none() | st.lists(MODULE_ERRORS, max_size=5),
    config_version=st.none() | st.text(max_size=40),
)
def test_valid_run_round_trips(
    envoy_id: str,
    run_id: str,
    started: datetime,
    finished: datetime,
    zulu: bool,
    resources: list[Resource],
    module_errors: list[ModuleError] | None,
    config_version: str | None,
) -> None:
    doc: dict[str, Any] = {
        "schema": "vigo.run/1",
        "envoy_id": envoy_id,
        "run_id": run_id,
        "started_at": _rfc3339(started, zulu),
        "finished_at": _rfc3339(finished, zulu),
        "resources": [
            {"id": r.id, "module": r.module, "result": r.result}
            | ({} if r.message is None else {"message": r.message})
            for r in resources
        ],
    }
    if module_errors is not None:
        doc["module_errors"] = [{"module": m.module, "message": m.message} for m in module_errors]
    if config_version is not None:
        doc["config_version"] = config_version
    result = decode_input(envoy_id.encode(), orjson.dumps(doc), META)
    assert result == Run(
        envoy_id=envoy_id,
        run_id=run_id,
        started_at=doc["started_at"],
        finished_at=doc["finished_at"],
        finished_at_ms=_epoch_ms(finished),
        resources=tuple(resources),
        module_errors=tuple(module_errors or ()),
        config_version=config_version,
    )


# --- SPEC 10.9 size limits ---------------------------------------------------------------


def _violation(doc: dict[str, Any]) -> str:
    result = decode_doc(doc)
    assert isinstance(result, DeadLetter), result
    assert result.reason == "schema_violation"
    return result.error


#: 64 labels of 3 + 125 bytes: exactly 8 KiB of keys and values.
FULL_LABELS = {f"k{i:02d}": "v" * 125 for i in range(64)}


def test_labels_at_every_limit_are_accepted() -> None:
    """64 labels, a 63-byte key (31 two-byte characters + 1), a 255-byte value, 8 KiB."""
    limits = {"é" * 31 + "k": "€" * 85, "x": "v" * 255}
    assert decode_doc(enrollment_doc(labels=limits)).labels == limits
    assert decode_doc(enrollment_doc(labels=FULL_LABELS)).labels == FULL_LABELS


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ({f"k{i}": "v" for i in range(65)}, "labels: must contain less than or equal to 64"),
        ({"k" * 64: "v"}, "labels: every key must be 1 to 63 characters long"),
        ({"é" * 32: "v"}, "is 64 bytes of UTF-8, limit 63"),
        ({"env": "v" * 256}, "labels.env: must be shorter than or equal to 255 characters"),
        ({"env": "é" * 128}, "labels.env: value is 256 bytes of UTF-8, limit 255"),
        (FULL_LABELS | {"k00": "v" * 126}, "keys and values take 8193 bytes"),
        # A control character costs its JSON escape, as in the stored record.
        ({f"k{i:02d}": "\x01" * 40 for i in range(35)}, "limit 8192 (8 KiB)"),
    ],
    ids=[
        "65-labels",
        "key-64-chars",
        "key-64-bytes",
        "value-256-chars",
        "value-256-bytes",
        "total-8193",
        "escapes-count",
    ],
)
def test_labels_beyond_a_limit_are_a_schema_violation(labels: dict[str, str], error: str) -> None:
    assert error in _violation(enrollment_doc(labels=labels))


def test_resource_ids_and_module_names_up_to_1024_bytes() -> None:
    name = "€" * 341 + "a"  # 1024 bytes in 342 characters
    doc = run_doc(
        resources=[{"id": name, "module": name, "result": "changed"}],
        module_errors=[{"module": name, "message": "x"}],
    )
    run = decode_doc(doc)
    assert isinstance(run, Run)
    assert run.resources[0].id == name


@pytest.mark.parametrize(
    ("field", "text", "error"),
    [
        ("id", "€" * 342, "resources[1].id: 1026 bytes of UTF-8, limit 1024"),
        ("id", "x" * 1025, "resources[1].id: must be shorter than or equal to 1024 characters"),
        ("module", "é" * 513, "resources[1].module: 1026 bytes of UTF-8, limit 1024"),
        ("error-module", "é" * 513, "module_errors[0].module: 1026 bytes of UTF-8, limit 1024"),
    ],
)
def test_names_over_1024_bytes_are_a_schema_violation(field: str, text: str, error: str) -> None:
    doc = run_doc()
    if field == "error-module":
        doc["module_errors"][0]["module"] = text
    else:
        doc["resources"][1][field] = text
    assert _violation(doc) == error


@pytest.mark.parametrize("field", ["started_at", "finished_at"])
def test_timestamps_over_64_characters_are_a_schema_violation(field: str) -> None:
    """RFC 3339 allows any number of fraction digits; the history stores `finished_at`."""
    assert isinstance(decode_doc(run_doc(**{field: "2026-11-27T12:05:04." + "1" * 40 + "Z"})), Run)
    long = "2026-11-27T12:05:04." + "1" * 1000 + "Z"
    assert _violation(run_doc(**{field: long})).startswith(f"{field}: ")


@given(st.text())
def test_json_text_bytes_is_what_orjson_writes(text: str) -> None:
    assert json_text_bytes(text) == len(orjson.dumps(text)) - 2
    assert utf8_bytes(text) == len(text.encode())


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_depth_bombs_are_malformed_json(depth: int) -> None:
    bomb = b"[" * depth + b"]" * depth
    result = decode_input(b"web-01", bomb, META)
    assert isinstance(result, DeadLetter)
    assert (result.reason, result.error) == ("malformed_json", result.error)
    assert "depth" in result.error
    inside = b'{"schema": "vigo.checkin/1", "envoy_id": "web-01", "x": ' + bomb + b"}"
    result = decode_input(b"web-01", inside, META)
    assert isinstance(result, DeadLetter) and result.reason == "malformed_json"


def test_deep_but_parseable_values_are_judged_by_the_schema() -> None:
    """Depth 1000 parses (orjson's limit is 1024); the validator never recurses into it."""
    deep = b"[" * 1000 + b"]" * 1000
    checkin = SPEC_CHECKIN[:-1] + b', "extra": ' + deep + b"}"
    assert isinstance(decode_input(b"web-01", checkin, META), Checkin)  # unknown: ignored
    labels = SPEC_ENROLLMENT.replace(b'"prod"', deep)
    resources = SPEC_RUN.replace(b'{"id": "file[/etc/motd]"', deep + b', {"id": "x"')
    for value, error in [(labels, "labels.env: "), (resources, "resources[0]")]:
        result = decode_input(b"web-01", value, META)
        assert isinstance(result, DeadLetter), result
        assert result.reason == "schema_violation"
        assert result.error.startswith(error)
