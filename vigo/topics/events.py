"""Typed, immutable events decoded from the input topics and written to the output topics.

Times are kept twice: the envoy's own text (for display) and epoch milliseconds (for
ordering), so the hot path never parses a timestamp twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EnrollmentAction = Literal["enrolled", "revoked"]
ResourceResult = Literal["ok", "changed", "failed"]


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """Where a record came from; the Kafka timestamp drives liveness, not the envoy's clock."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Enrollment:
    envoy_id: str
    action: EnrollmentAction
    at: str
    labels: Mapping[str, str] = field(default_factory=dict)
    checkin_interval_s: int | None = None


@dataclass(frozen=True, slots=True)
class Checkin:
    envoy_id: str
    at: str


@dataclass(frozen=True, slots=True)
class Resource:
    id: str
    module: str
    result: ResourceResult
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ModuleError:
    module: str
    message: str


@dataclass(frozen=True, slots=True)
class Run:
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
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that could not be applied, with the raw bytes kept for replay."""

    meta: RecordMeta
    key: bytes | None
    value: bytes | None
    reason: DeadLetterReason
    error: str


AlertEvent = Literal["convergence.threshold", "envoy.stale"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One ``vigo.alert/1`` outbox record. ``alert_id`` is deterministic and becomes the
    mail's Message-ID, so a resend after a crash is recognisable as a duplicate."""

    alert_id: str
    event: AlertEvent
    at: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)
