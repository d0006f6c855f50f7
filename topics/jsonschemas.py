"""The JSON Schema files of topics/schemas/, loaded and compiled once at import.

The files are the contract that producers in other languages validate against; the Python
side validates with the very same files (via fastjsonschema) so the two cannot drift.
Timestamps are checked by a strict RFC 3339 format function rather than fastjsonschema's
default, which also accepts offsets without a colon and ignores what Python can parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import fastjsonschema

SCHEMA_DIR: Final = Path(__file__).parent / "schemas"

ENROLLMENT_V1: Final = "vigo.enrollment/1"
CHECKIN_V1: Final = "vigo.checkin/1"
RUN_V1: Final = "vigo.run/1"
STATUS_CHANGE_V1: Final = "vigo.status-change/1"
FLEET_CONVERGENCE_V1: Final = "vigo.fleet-convergence/1"
ALERT_V1: Final = "vigo.alert/1"
DEADLETTER_V1: Final = "vigo.deadletter/1"
ROLLOUT_V1: Final = "vigo.rollout/1"

#: schema id (the events' ``schema`` field) -> file name in SCHEMA_DIR.
SCHEMA_FILES: Final[Mapping[str, str]] = {
    ENROLLMENT_V1: "enrollment.v1.json",
    CHECKIN_V1: "checkin.v1.json",
    RUN_V1: "run.v1.json",
    STATUS_CHANGE_V1: "status-change.v1.json",
    FLEET_CONVERGENCE_V1: "fleet-convergence.v1.json",
    ALERT_V1: "alert.v1.json",
    DEADLETTER_V1: "deadletter.v1.json",
    ROLLOUT_V1: "rollout.v1.json",
}

#: The schemas accepted on the input topics; anything else is ``unknown_schema``.
INPUT_SCHEMAS: Final = frozenset({ENROLLMENT_V1, CHECKIN_V1, RUN_V1})

Validator = Callable[[Any], Any]

# RFC 3339 section 5.6 date-time, ASCII digits only ("\d" would match any Unicode digit).
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def parse_timestamp_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 timestamp with 'Z' or offset; None when invalid.

    Exact integer arithmetic (no float), so ordering of runs never suffers rounding.
    Leap seconds (":60") are rejected, as Python's datetime cannot represent them.
    """
    if not _RFC3339.fullmatch(text):
        return None
    try:
        # 3.11's fromisoformat wants upper-case 'T' and 'Z'; the rest of the text is digits.
        parsed = datetime.fromisoformat(text.upper())
        return (parsed - _EPOCH) // _MS
    except (ValueError, OverflowError):
        return None


def is_timestamp(text: str) -> bool:
    """fastjsonschema format check for ``date-time``."""
    return parse_timestamp_ms(text) is not None


def load_schema(schema_id: str) -> dict[str, Any]:
    """The parsed JSON Schema document for an event type, e.g. ``"vigo.run/1"``."""
    with (SCHEMA_DIR / SCHEMA_FILES[schema_id]).open("rb") as fh:
        document: dict[str, Any] = json.load(fh)
    return document


def _compile(schema_id: str) -> Validator:
    validate: Validator = fastjsonschema.compile(
        load_schema(schema_id), formats={"date-time": is_timestamp}
    )
    return validate


#: Compiled once at import: compiling is milliseconds, validating is microseconds.
VALIDATORS: Final[Mapping[str, Validator]] = {sid: _compile(sid) for sid in SCHEMA_FILES}


def validate(schema_id: str, document: Any) -> None:
    """Raise ``fastjsonschema.JsonSchemaValueException`` if ``document`` breaks the schema."""
    VALIDATORS[schema_id](document)
