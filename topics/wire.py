"""msgspec shapes of the input events, for the one-pass fast path of `decode_input`.

msgspec parses the JSON bytes and checks these types and constraints in the same pass,
in C. They restate the JSON Schemas of topics/schemas/ (the published contract, which
the slow path still validates with) and may only be stricter, never looser: a record
they refuse is decided by the slow path, so refusing too much costs speed, never a
wrong answer. They are stricter where that keeps the fast path exact and cheap:

- unknown fields are refused (the schemas allow them): msgspec skips unknown values
  more leniently than orjson parses them (invalid UTF-8 or ``1e400`` pass), and orjson
  is the judge of malformed JSON;
- resource ids and module names are cut at 256 characters (see `events.Name`);
- ``checkin_interval_s`` must be a JSON integer: the schema's "integer" also admits
  ``300.0``, which the slow path accepts and turns into 300.

What JSON Schema checks that msgspec cannot say exactly (``format: date-time``, the byte
limits of labels) the fast path checks with the slow path's own functions.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from topics.events import EnrollmentAction, ModuleError, Resource
from topics.jsonschemas import CHECKIN_V1, ENROLLMENT_V1, RUN_V1

# The schemas' envoy_id pattern ends in "$", which fastjsonschema compiles as "\Z" (a
# bare "$" would also match before a trailing newline): the same here.
EnvoyId = Annotated[
    str, Meta(min_length=1, max_length=253, pattern="^[^\\u0000-\\u001f\\u007f]+\\Z")
]
#: ``maxLength`` 64; that it is RFC 3339 is checked after decoding (`parse_timestamp_ms`).
Timestamp = Annotated[str, Meta(max_length=64)]
RunId = Annotated[str, Meta(min_length=1, max_length=128)]
#: Kept in the envoy's state (SPEC 10.1), so bounded like a run id.
ConfigVersion = Annotated[str, Meta(max_length=128)]
LabelKey = Annotated[str, Meta(min_length=1, max_length=63)]
LabelValue = Annotated[str, Meta(max_length=255)]
Labels = Annotated[dict[LabelKey, LabelValue], Meta(max_length=64)]
Interval = Annotated[int, Meta(ge=10, le=86400)]
Resources = Annotated[tuple[Resource, ...], Meta(max_length=10000)]
ModuleErrors = Annotated[tuple[ModuleError, ...], Meta(max_length=10000)]


class RunWire(Struct, tag_field="schema", tag=RUN_V1, forbid_unknown_fields=True):
    """``vigo.run/1`` (run.v1.json)."""

    envoy_id: EnvoyId
    run_id: RunId
    started_at: Timestamp
    finished_at: Timestamp
    resources: Resources
    config_version: ConfigVersion | None = None
    module_errors: ModuleErrors | None = None


class CheckinWire(Struct, tag_field="schema", tag=CHECKIN_V1, forbid_unknown_fields=True):
    """``vigo.checkin/1`` (checkin.v1.json)."""

    envoy_id: EnvoyId
    at: Timestamp


class EnrollmentWire(Struct, tag_field="schema", tag=ENROLLMENT_V1, forbid_unknown_fields=True):
    """``vigo.enrollment/1`` (enrollment.v1.json)."""

    envoy_id: EnvoyId
    action: EnrollmentAction
    at: Timestamp
    labels: Labels | None = None
    checkin_interval_s: Interval | None = None


InputWire = RunWire | CheckinWire | EnrollmentWire

#: The ``schema`` field picks the type, as in the slow path. Two different ``schema``
#: values in one object fail here (orjson keeps the last; the slow path decides).
WIRE_DECODER: Final = msgspec.json.Decoder(InputWire)
