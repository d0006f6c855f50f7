"""Typed, immutable events decoded from the input topics and written to the output topics.

Times are kept twice: the envoy's own text (for display) and epoch milliseconds (for
ordering), so the hot path never parses a timestamp twice.

The events are msgspec Structs rather than dataclasses: a run holds dozens of
`Resource`s, which msgspec builds while it parses the JSON (the fast path of
`topics.decode`), where building dataclasses afterwards cost more than parsing; and every
record builds its `RecordMeta` and its event, which a frozen dataclass makes cost ten
times what a frozen Struct does (its `__init__` sets each field through
`object.__setattr__`: 0.66 against 0.07 us for four fields). gc=False throughout: they
hold strings, numbers, tuples of such Structs and label dicts, never a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from msgspec import Meta, Struct
from msgspec import field as msgspec_field

from topics.limits import MAX_NAME_BYTES

EnrollmentAction = Literal["enrolled", "revoked"]
ResourceResult = Literal["ok", "changed", "failed"]

#: A resource id or module name as the fast decoder accepts it. run.v1.json allows 1 to
#: 1,024 characters and SPEC 10.9 at most 1,024 bytes; 256 characters are at most 1,024
#: bytes of UTF-8, so within this bound no byte count is needed. A longer name fails
#: msgspec's check and the record takes the slow path, which counts bytes. Constructing
#: an event by hand checks nothing, as with every event here.
FAST_NAME_CHARS: Final = MAX_NAME_BYTES // 4
Name = Annotated[str, Meta(min_length=1, max_length=FAST_NAME_CHARS)]


class RecordMeta(Struct, frozen=True, gc=False):
    """Where a record came from; the Kafka timestamp drives liveness, not the envoy's clock."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class Enrollment(Struct, frozen=True, gc=False):
    envoy_id: str
    action: EnrollmentAction
    at: str
    labels: Mapping[str, str] = msgspec_field(default_factory=dict)
    checkin_interval_s: int | None = None


class Checkin(Struct, frozen=True, gc=False):
    envoy_id: str
    at: str


class Resource(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One resource of a run. Unknown fields make msgspec fail, so a record carrying any
    takes the slow path: msgspec skips unknown values more leniently than orjson parses
    them (it lets invalid UTF-8 or 1e400 through). gc=False: only strings inside."""

    id: Name
    module: Name
    result: ResourceResult
    message: str | None = None


class ModuleError(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A module that errored as a whole; decoded like `Resource`."""

    module: Name
    message: str


class Run(Struct, frozen=True, gc=False):
    envoy_id: str
    run_id: str
    started_at: str
    finished_at: str
    finished_at_ms: int
    resources: tuple[Resource, ...] = ()
    module_errors: tuple[ModuleError, ...] = ()
    config_version: str | None = None


InputEvent = Enrollment | Checkin | Run

DeadLetterReason = Literal[
    "malformed_json",
    "schema_violation",
    "unknown_schema",
    "not_enrolled",
    "revoked",
    "too_large",
    "key_mismatch",
    "bad_time",
]


class DeadLetter(Struct, frozen=True, gc=False):
    """An input record that could not be applied, with the raw bytes kept for replay."""

    meta: RecordMeta
    key: bytes | None
    value: bytes | None
    reason: DeadLetterReason
    error: str


AlertEvent = Literal[
    "convergence.threshold", "convergence.recovered", "envoy.stale", "rollout.stuck"
]


@dataclass(frozen=True, slots=True)
class Alert:
    """One ``vigo.alert/1`` outbox record. ``alert_id`` is deterministic and becomes the
    mail's Message-ID, so a resend after a crash is recognisable as a duplicate."""

    alert_id: str
    event: AlertEvent
    at: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)
