"""decode_input's fast path (msgspec, topics.wire) against its slow path (orjson, the
JSON Schemas, the byte limits): for valid events of each type and for mutations of them,
`decode_input` gives exactly what `decode_input_slow` gives, the same event or the same
dead letter, and whatever `decode_fast` accepts the slow path accepts as an equal event.

The records are written as JSON text by `dump`, which can also write what orjson.dumps
cannot: duplicate keys, integers beyond 64 bits, \\u escapes and raw bytes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from topics.decode import decode_fast, decode_input, decode_input_slow
from topics.events import Checkin, DeadLetter, Enrollment, RecordMeta, Run

META = RecordMeta(topic="vigo.envoy.runs", partition=1, offset=7, timestamp_ms=1_795_781_104_000)

# --- JSON text beyond orjson.dumps ----------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """A JSON object written member by member: keys may repeat (orjson keeps the last)."""

    items: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: odd numbers, invalid UTF-8, lone surrogate escapes."""

    text: bytes


@dataclass(frozen=True)
class Escaped:
    """A string written with a \\u escape for every character."""

    text: str


def _escape(text: str) -> bytes:
    units = text.encode("utf-16-be")
    return (
        b'"'
        + b"".join(b"\\u%04x" % int.from_bytes(units[i : i + 2]) for i in range(0, len(units), 2))
        + b'"'
    )


def dump(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Escaped):
        return _escape(value.text)
    if isinstance(value, dict):
        value = Pairs(tuple(value.items()))
    if isinstance(value, Pairs):
        return b"{" + b",".join(dump(k) + b":" + dump(v) for k, v in value.items) + b"}"
    if isinstance(value, list | tuple):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # any size, unlike orjson.dumps
    return orjson.dumps(value)


# --- valid documents -------------------------------------------------------------------

TEXT = st.characters(codec="utf-8")  # every code point but the surrogates
ID_CHARS = st.characters(min_codepoint=0x20, exclude_characters="\x7f", codec="utf-8")
#: One character of each UTF-8 length, to cross the byte limits with few characters.
WIDE = st.sampled_from(["a", "é", "€", "😀", "\x01", "\n", '"', "\\"])


def texts(
    alphabet: st.SearchStrategy[str], lo: int, hi: int, *edges: int
) -> st.SearchStrategy[str]:
    """Short text of `alphabet` (3 in 4), or one character repeated to a length at an edge."""
    short = st.text(alphabet, min_size=lo, max_size=min(hi, 12))
    repeated = st.builds(operator.mul, alphabet, st.sampled_from(edges)) if edges else short
    return st.one_of(short, short, short, repeated)


#: Valid ids, up to their limits; EDGES has those just past them.
ENVOY_IDS = st.sampled_from(["web-01", "é" * 253, "😀" * 253]) | texts(ID_CHARS, 1, 253, 253)
RUN_IDS = texts(TEXT, 1, 128, 128)
PLAIN_NAMES = texts(TEXT, 1, 30)
NAMES = PLAIN_NAMES | texts(WIDE, 1, 1024, 1, 256, 257, 341, 342, 512, 513, 1024, 1025)


@st.composite
def timestamps(draw: st.DrawFn, edgy: bool = False) -> str:
    """RFC 3339 text as envoys may write it: any year, 't' or 'z', offsets, fractions.
    `edgy` adds days 29 to 31 of every month and fractions past the 64-character limit."""
    y, mo = draw(st.integers(1, 9999)), draw(st.integers(1, 12))
    d = draw(st.integers(1, 31 if edgy else 28))
    h, mi, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    digits = st.integers(36, 45 if edgy else 37)  # 37 digits and "+05:30": 63 characters
    frac = draw(
        st.sampled_from(["", ".5", ".123", ".123456", ".123456789"])
        | digits.map(lambda n: "." + "1" * n)
    )
    zone = draw(
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59", "-23:59"])
    )
    sep = draw(st.sampled_from("Tt"))
    return f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"


ODD_TIMESTAMP_LIST = [
    "2026-02-30T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "2024-02-29T00:00:00Z",
    "2026-12-31T23:59:60Z",  # a leap second
    "2016-12-31T23:59:60.5+00:00",
    "2026-11-27T24:00:00Z",
    "2026-11-27T12:05:04+24:00",
    "2026-11-27T12:05:04+0530",
    "2026-11-27T12:05:04+05",
    "2026-11-27 12:05:04Z",
    "2026-11-27T12:05:04",
    "2026-11-27T12:05:04.Z",
    "2026-11-27T12:05:04,5Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "\uff12\uff10\uff12\uff16-11-27T12:05:04Z",  # full-width digits
    "2026-11-27T12:05:04Z\n",
    " 2026-11-27T12:05:04Z",
    "2026-11-27T12:05:04.\u0663Z",  # an Arabic-Indic digit
    "2026-11-27T12:05:04." + "1" * 43 + "Z",  # 64 characters, the limit
    "2026-11-27T12:05:04." + "1" * 44 + "Z",
    "2026-11-27T12:05:04." + "1" * 38 + "+05:30",
    "2026-11-27T12:05:04." + "1" * 39 + "+05:30",
]
ODD_TIMESTAMPS = st.sampled_from(ODD_TIMESTAMP_LIST)
VALID_TIMESTAMPS = timestamps()
TIMESTAMPS = timestamps(edgy=True) | ODD_TIMESTAMPS | st.text(TEXT, max_size=25)


def _optional(doc: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """`value` None leaves the field out; Raw(b"null") writes null (the same, per schema)."""
    return doc if value is None else doc | {name: value}


NULL = st.just(Raw(b"null"))


@st.composite
def resources(draw: st.DrawFn, names: st.SearchStrategy[str]) -> dict[str, Any]:
    doc = {
        "id": draw(names),
        "module": draw(names),
        "result": draw(st.sampled_from(["ok", "changed", "failed"])),
    }
    return _optional(doc, "message", draw(st.none() | NULL | st.text(TEXT, max_size=20)))


@st.composite
def runs(
    draw: st.DrawFn, stamps: st.SearchStrategy[str], names: st.SearchStrategy[str]
) -> dict[str, Any]:
    doc = {
        "schema": "vigo.run/1",
        "envoy_id": draw(ENVOY_IDS),
        "run_id": draw(RUN_IDS),
        "started_at": draw(stamps),
        "finished_at": draw(stamps),
        "resources": draw(st.lists(resources(names), max_size=6)),
    }
    doc = _optional(doc, "config_version", draw(st.none() | NULL | st.text(TEXT, max_size=12)))
    error = st.fixed_dictionaries({"module": names, "message": st.text(TEXT, max_size=20)})
    errors = st.none() | NULL | st.lists(error, max_size=3)
    return _optional(doc, "module_errors", draw(errors))


def checkins(stamps: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    fields = {"schema": st.just("vigo.checkin/1"), "envoy_id": ENVOY_IDS, "at": stamps}
    return st.fixed_dictionaries(fields)


#: Keys 1 to 63 characters and bytes, values up to 255; 64 labels; 8 KiB in all.
LABEL_KEYS = texts(TEXT, 1, 63, 1, 15, 16, 31, 32, 63, 64)
LABEL_VALUES = texts(TEXT, 0, 255, 0, 63, 64, 85, 86, 127, 128, 255, 256)
PLAIN_LABELS = st.dictionaries(st.text(TEXT, min_size=1, max_size=8), st.text(TEXT, max_size=8))
LABELS = st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=5) | st.builds(
    lambda n, size, c: {f"k{i:02d}": c * size for i in range(n)},
    st.sampled_from([1, 34, 35, 63, 64, 65]),
    st.sampled_from([40, 125, 126, 250]),
    WIDE,
)
VALID_INTERVALS = st.integers(10, 86_400) | st.sampled_from([10, 300, 86_400])
#: At and past the bounds 10 and 86,400, of other JSON types, of odd JSON number forms.
INTERVAL_LIST: list[Any] = [9, 10, 11, 86_399, 86_400, 86_401, -10, 0, 300.0, 300.5]
INTERVAL_LIST += [True, "300", Raw(b"3e2"), Raw(b"300.0"), Raw(b"-0"), Raw(b"1e400")]
INTERVAL_LIST += [2**64, -(2**70), 10**30]
INTERVALS = st.sampled_from(INTERVAL_LIST) | st.integers(10, 86_400)


@st.composite
def enrollments(
    draw: st.DrawFn,
    stamps: st.SearchStrategy[str],
    intervals: st.SearchStrategy[Any],
    labels: st.SearchStrategy[dict[str, str]],
) -> dict[str, Any]:
    doc = {
        "schema": "vigo.enrollment/1",
        "envoy_id": draw(ENVOY_IDS),
        "action": draw(st.sampled_from(["enrolled", "revoked"])),
        "at": draw(stamps),
    }
    doc = _optional(doc, "labels", draw(st.none() | NULL | labels))
    return _optional(doc, "checkin_interval_s", draw(st.none() | NULL | intervals))


#: Valid and well within the limits: what the fast path is for.
PLAIN_DOCS = (
    runs(VALID_TIMESTAMPS, PLAIN_NAMES)
    | checkins(VALID_TIMESTAMPS)
    | enrollments(VALID_TIMESTAMPS, VALID_INTERVALS, PLAIN_LABELS)
)
#: Valid, but for names and labels at and just past their size limits.
VALID_DOCS = (
    runs(VALID_TIMESTAMPS, NAMES)
    | checkins(VALID_TIMESTAMPS)
    | enrollments(VALID_TIMESTAMPS, VALID_INTERVALS, LABELS)
)
#: Also impossible or odd timestamps and intervals of every type and size.
DOCS = (
    VALID_DOCS
    | runs(TIMESTAMPS, NAMES)
    | checkins(TIMESTAMPS)
    | enrollments(TIMESTAMPS, INTERVALS, LABELS)
)

PLAIN_RESOURCE = {"id": "file[/etc/motd]", "module": "files", "result": "ok"}
PLAIN_ERROR = {"module": "users", "message": "ldap unreachable"}

# --- mutations -------------------------------------------------------------------------

BIG_INTS = (
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2) | st.just(10**40) | st.just(-(2**70))
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | BIG_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
#: String contents orjson and msgspec might read differently: invalid UTF-8, surrogates,
#: raw control characters, escapes.
RAW_STRING_LIST = [
    Raw(b'"web-01' + body + b'"')
    for body in [
        b"\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"a\x80",
        b"\xe2\x82",
        b"a\x00b",
        b"a\nb",
        b"\t",
        b"\\ud800",
        b"\\udc00x",
        b"\\ud800\\u0041",
        b"\\ud83d\\ude00",
        b"\x7f",
        b"\\u0000",
        b"\\/",
        b"\\x41",
        b"\\u00e9",
        b"\\n",
        b"\\u001f",
        b"\\u007f",
    ]
]
NUMBER_TEXTS = [b"1e400", b"-1e400", b"01", b"+1", b"1.", b".5", b"NaN", b"Infinity", b"-0"]
NUMBER_TEXTS += [b"1E2", b"0.0", b"1e-400", b"18446744073709551616", b"-9223372036854775809"]
ODD_NUMBER_LIST = [Raw(text) for text in NUMBER_TEXTS]
RAW_STRINGS = st.sampled_from(RAW_STRING_LIST)
JUNK = JSON_VALUES | RAW_STRINGS | st.sampled_from(ODD_NUMBER_LIST) | BIG_INTS | NULL
SCHEMA_LIST = ["vigo.run/1", "vigo.checkin/1", "vigo.enrollment/1", "vigo.run/2", ""]
SCHEMA_LIST += ["vigo.checkin/1 ", "VIGO.RUN/1", "vigo.status-change/1", "vigo.alert/1"]
#: What every field is tried with: null, other types, odd strings and numbers, nesting
#: deeper than orjson reads (1,025) and just within it.
ANY_FIELD = [Raw(b"null"), True, 0, 2**64, -(2**70), 1.5, "", [], {}, [None], {"a": [1]}]
ANY_FIELD += [*RAW_STRING_LIST, *ODD_NUMBER_LIST]
ANY_FIELD += [Raw(b"[" * n + b"]" * n) for n in (1000, 1025)]
NAME_LIST = ["x" * 256, "x" * 257, "x" * 1024, "x" * 1025, "é" * 512, "é" * 513, "😀" * 256]
NAME_LIST += ["😀" * 257, "\n", "\x00"]
#: 64 labels of 3 + 125 bytes: exactly 8 KiB of keys and values.
FULL_LABELS = {f"k{i:02d}": "v" * 125 for i in range(64)}
LABEL_LIST: list[Any] = [{"": "x"}, {"k" * 63: "v"}, {"k" * 64: "v"}, {"é" * 31 + "k": "v"}]
LABEL_LIST += [{"é" * 32: "v"}, {"k": "v" * 255}, {"k": "v" * 256}, {"k": "€" * 85}]
LABEL_LIST += [{"k": "€" * 86}, {f"k{i}": "v" for i in range(64)}, FULL_LABELS]
LABEL_LIST += [{f"k{i}": "v" for i in range(65)}, FULL_LABELS | {"k00": "v" * 126}]
LABEL_LIST += [{f"k{i:02d}": "\x01" * 40 for i in range(35)}, {"k": 1}, {"k": None}, ["k"]]
#: Per field: values at and just past its limits, and of its type but not allowed.
EDGES: dict[str, list[Any]] = {
    "schema": SCHEMA_LIST,
    "envoy_id": [
        *("x" * 253, "x" * 254, "é" * 253, "é" * 254, "web-01 ", "\ufeffweb", "\x85web"),
        *("web-01\n", "web-01\r", "web\x7f", "\x1fweb", "web-\x00", Escaped("web-01")),
    ],
    "run_id": ["x" * 128, "x" * 129, "😀" * 128, "😀" * 129, "\x00", Escaped("r")],
    "config_version": ["v" * 128, "v" * 129, "😀" * 128, "😀" * 129, None, "", 7, Escaped("v")],
    "started_at": ODD_TIMESTAMP_LIST,
    "finished_at": ODD_TIMESTAMP_LIST,
    "at": ODD_TIMESTAMP_LIST,
    "action": ["enrolled", "revoked", "ENROLLED", "enrolled ", "revoke", "ok"],
    "checkin_interval_s": INTERVAL_LIST,
    "labels": LABEL_LIST,
    "id": NAME_LIST,
    "module": NAME_LIST,
    "result": ["ok", "changed", "failed", "OK", "failed ", "skipped", Escaped("ok")],
    "resources": [[], "x", [{}], [PLAIN_RESOURCE] * 10_000, [PLAIN_RESOURCE] * 10_001],
    "module_errors": [[], "x", [{}], [{"module": "m"}], [PLAIN_ERROR] * 10_001],
}
#: Names of fields, known and unknown, to add.
FIELD_NAMES = st.sampled_from([*EDGES, "message", "config_version", "extra"]) | st.text(
    TEXT, max_size=8
)


def _edges(name: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(EDGES.get(name, ANY_FIELD))


@st.composite
def mutated(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """`value` with one change somewhere in it: a field dropped, added, duplicated, of the
    wrong type or null, a string escaped, oversized or made of odd bytes, a list emptied."""
    if isinstance(value, dict):
        value = Pairs(tuple(value.items()))
    if isinstance(value, Pairs) and value.items:
        items = list(value.items)
        i = draw(st.integers(0, len(items) - 1))
        name, field = items[i]
        nested = isinstance(field, dict | list) and depth < 2 and (field or isinstance(field, dict))
        ops = ["drop", "junk", "edge", "edge", "edge", "add", "dup", "escape-key", "escape"]
        ops += ["odd-string", "schema"]
        op = draw(st.sampled_from([*ops, "nested", "nested"] if nested else ops))
        if op == "drop":
            del items[i]
        elif op == "junk":
            items[i] = (name, draw(JUNK))
        elif op == "edge":
            items[i] = (name, draw(_edges(name)))
        elif op == "add":
            added = draw(FIELD_NAMES)
            value_ = draw(_edges(added) | JUNK)
            items.insert(draw(st.integers(0, len(items))), (added, value_))
        elif op == "dup":
            twin = draw(st.just(field) | JUNK | _edges(name))
            items.insert(draw(st.integers(0, len(items))), (name, twin))
        elif op == "escape-key":
            items[i] = (Escaped(name) if isinstance(name, str) else name, field)
        elif op == "escape":
            items[i] = (name, Escaped(field) if isinstance(field, str) else field)
        elif op == "odd-string":
            items[i] = (name, draw(RAW_STRINGS))
        elif op == "schema":
            items.append(("schema", draw(_edges("schema") | JUNK)))
        else:
            items[i] = (name, draw(mutated(field, depth + 1)))
        return Pairs(tuple(items))
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        op = draw(st.sampled_from(["mutate", "mutate", "drop", "junk", "oversize"]))
        if op == "drop":
            return value[:i] + value[i + 1 :]
        if op == "junk":
            return [*value[:i], draw(JUNK), *value[i + 1 :]]
        if op == "oversize":  # maxItems is 10,000
            return (value * 10_001)[: draw(st.sampled_from([10_000, 10_001]))]
        return [*value[:i], draw(mutated(value[i], depth + 1)), *value[i + 1 :]]
    return draw(JUNK)


@st.composite
def mutated_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """Byte-level damage: what a broken producer or a bad disk would write."""
    at = draw(st.integers(0, len(raw)))
    op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "bom", "space"]))
    if op == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    if op == "delete":
        return raw[:at] + raw[at + 1 :]
    if op == "replace":
        return raw[:at] + draw(st.binary(min_size=1, max_size=1)) + raw[at + 1 :]
    if op == "truncate":
        return raw[:at]
    if op == "bom":
        return b"\xef\xbb\xbf" + raw
    pad = draw(st.sampled_from([b" ", b"\t\r\n", b"\x0c", b"\xc2\xa0", b"\x00"]))
    return pad + raw if draw(st.booleans()) else raw + pad


NOT_OBJECTS = (
    JSON_VALUES.filter(lambda v: not isinstance(v, dict))
    | st.sampled_from(ODD_NUMBER_LIST)
    | RAW_STRINGS
).map(dump)


def _envoy_id(value: bytes | None) -> bytes | None:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    envoy_id = doc.get("envoy_id") if isinstance(doc, dict) else None
    return envoy_id.encode() if isinstance(envoy_id, str) else None


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, int]:
    """(key, value, max_bytes): a valid document, most often with one mutation, so that
    the fast path would have accepted it but for that one change."""
    doc: Any = draw(st.one_of(PLAIN_DOCS, PLAIN_DOCS, DOCS))
    envoy_id = doc["envoy_id"]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2]))):
        doc = draw(mutated(doc))
    value: bytes | None = dump(doc)
    roll = draw(st.integers(0, 24))
    if roll == 0:
        value = draw(NOT_OBJECTS)
    elif roll == 1:
        value = None
    elif roll <= 4:
        value = draw(mutated_bytes(dump(doc)))
    seen = _envoy_id(value)  # as the slow path will read it, mutations and all
    key = draw(
        st.sampled_from([seen or envoy_id.encode()] * 6 + [envoy_id.encode(), None, b"", b"\xff"])
        | st.binary(max_size=8)
    )
    size = 0 if value is None else len(value)
    max_bytes = draw(st.sampled_from([1_048_576] * 8 + [size, max(size - 1, 0)]))
    return key, value, max_bytes


# --- the properties --------------------------------------------------------------------


def _same(fast: object, slow: object) -> None:
    assert fast == slow
    assert repr(fast) == repr(slow)  # also tells 300 from 300.0 and True from 1


def _check(key: bytes | None, value: bytes | None, max_bytes: int) -> object:
    slow = decode_input_slow(key, value, META, max_bytes=max_bytes)
    if value is not None and len(value) <= max_bytes:
        fast = decode_fast(key, value)  # must not raise: decode_input would hide it
        if fast is not None:
            _same(fast, slow)
    _same(decode_input(key, value, META, max_bytes=max_bytes), slow)
    return slow


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(records())
def test_fast_path_decides_like_the_slow_path(
    record: tuple[bytes | None, bytes | None, int],
) -> None:
    key, value, max_bytes = record
    slow = _check(key, value, max_bytes)
    fast = value is not None and len(value) <= max_bytes and decode_fast(key, value) is not None
    event("fast path" if fast else f"slow path: {getattr(slow, 'reason', 'event')}")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=VALID_DOCS)
def test_valid_documents_decode_alike(doc: dict[str, Any]) -> None:
    """Unmutated documents, so that most are valid events (the mutations rarely are)."""
    slow = _check(doc["envoy_id"].encode(), dump(doc), 1_048_576)
    event("dead letter" if isinstance(slow, DeadLetter) else "event")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=PLAIN_DOCS)
def test_plain_valid_documents_take_the_fast_path(doc: dict[str, Any]) -> None:
    """The fast path is not vacuous: every valid record within the limits takes it (any
    year, offset, fraction, 't'/'z', unicode, null for absent), giving the slow path's event."""
    key, value = doc["envoy_id"].encode(), dump(doc)
    fast = decode_fast(key, value)
    assert isinstance(fast, Run | Checkin | Enrollment), doc
    _same(fast, decode_input_slow(key, value, META))


PLAIN = {
    "run": runs(VALID_TIMESTAMPS, PLAIN_NAMES),
    "checkin": checkins(VALID_TIMESTAMPS),
    "enrollment": enrollments(VALID_TIMESTAMPS, VALID_INTERVALS, PLAIN_LABELS),
}
#: Every field of each type ("resources.id": of one resource), and one it does not know.
FIELDS = {
    "run": [
        "envoy_id",
        "run_id",
        "started_at",
        "finished_at",
        "config_version",
        "resources",
        "module_errors",
        "resources.id",
        "resources.module",
        "resources.result",
        "resources.message",
        "resources.extra",
        "module_errors.module",
        "module_errors.message",
        "module_errors.extra",
        "schema",
        "extra",
    ],
    "checkin": ["envoy_id", "at", "schema", "extra"],
    "enrollment": ["envoy_id", "action", "at", "labels", "checkin_interval_s", "schema", "extra"],
}


@pytest.mark.parametrize(
    ("kind", "path"), [(kind, path) for kind, paths in FIELDS.items() for path in paths]
)
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_one_field_at_its_edges(kind: str, path: str, data: st.DataObject) -> None:
    """Plain valid records with one field set, in turn, to each value at or past its limits,
    of the wrong type or of odd bytes, then to random ones: where the paths could part."""
    doc: dict[str, Any] = data.draw(PLAIN[kind])
    key = doc["envoy_id"].encode()
    outer, _, name = path.rpartition(".")
    items = doc.get(outer) if outer else None
    if outer and (not isinstance(items, list) or not items):
        items = [PLAIN_RESOURCE if outer == "resources" else PLAIN_ERROR]
    at = data.draw(st.integers(0, len(items) - 1)) if items else 0
    randoms = [data.draw(JUNK, label="random") for _ in range(3)]
    for value in [*EDGES.get(name, []), *ANY_FIELD, *randoms]:
        if items:
            changed = doc | {outer: [*items[:at], items[at] | {name: value}, *items[at + 1 :]]}
        else:
            changed = doc | {name: value}
        raw = dump(changed)
        _check(_envoy_id(raw) or key, raw, 1_048_576)  # the envoy_id the slow path reads


# --- examples ---------------------------------------------------------------------------

PLAIN_RUN = {
    "schema": "vigo.run/1",
    "envoy_id": "web-01",
    "run_id": "0f8e6c1a",
    "started_at": "2026-11-27T12:05:00Z",
    "finished_at": "2026-11-27T12:05:04.250+01:00",
    "config_version": "a1b2c3",
    "resources": [
        {"id": "file[/etc/motd]", "module": "files", "result": "ok"},
        {"id": "service[nginx]", "module": "services", "result": "failed", "message": "exit 1"},
    ],
    "module_errors": [{"module": "users", "message": "ldap unreachable"}],
}
PLAIN_ENROLLMENT = {
    "schema": "vigo.enrollment/1",
    "envoy_id": "web-01",
    "action": "enrolled",
    "at": "2026-11-27T12:00:00Z",
    "labels": {"env": "prod", "é" * 31 + "k": "€" * 85},
    "checkin_interval_s": 300,
}
PLAIN_CHECKIN = {"schema": "vigo.checkin/1", "envoy_id": "web-01", "at": "2026-11-27t12:05:00z"}


@pytest.mark.parametrize(
    ("doc", "kind"), [(PLAIN_RUN, Run), (PLAIN_ENROLLMENT, Enrollment), (PLAIN_CHECKIN, Checkin)]
)
def test_spec_like_records_take_the_fast_path(doc: dict[str, Any], kind: type) -> None:
    value = orjson.dumps(doc)
    fast = decode_fast(b"web-01", value)
    assert isinstance(fast, kind)
    _same(fast, decode_input_slow(b"web-01", value, META))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"extra": 1}, "unknown fields go to orjson, the judge of malformed JSON"),
        ({"envoy_id": "web-01\n"}, "the schema's '$' is '\\Z': no trailing newline"),
        ({"finished_at": "2026-02-30T00:00:00Z"}, "an impossible date"),
        ({"resources": [{"id": "x" * 257, "module": "m", "result": "ok"}]}, "bytes unmeasured"),
    ],
)
def test_what_the_fast_path_leaves_to_the_slow_path(change: dict[str, Any], why: str) -> None:
    value = orjson.dumps(PLAIN_RUN | change)
    assert decode_fast(b"web-01", value) is None, why
    _check(b"web-01", value, 1_048_576)
