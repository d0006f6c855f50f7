"""How single configuration values are read, apart from the sections that hold them:
durations in whole seconds (or never), stale policies, percentages and secret files, and
`ConfigError`, the one-line failure every part of the configuration raises. Split from
`processor.config` so the section models and the loader share them without a cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, PlainValidator

from projections.liveness import StaleAfter, parse_duration_ms


class ConfigError(Exception):
    """One line for the operator: which key, what is wrong."""


def read_secret(path: Path | None, key: str) -> str | None:
    """The text of a secret file, stripped; None without a file. `key` names it in errors."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {key}: {path} is not UTF-8 text") from None


def _whole_seconds(value: Any) -> int:
    """`"5m"`, `"90s"` or a number of seconds, as whole seconds: envoys report their own
    intervals in whole seconds, and the worker judges by exactly this number."""
    if not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 90s, 5m or 1h, or a number of seconds")
    ms = parse_duration_ms(value)
    if ms % 1000:
        raise ValueError(f"must be a whole number of seconds: {value!r}")
    return ms // 1000


def _stale_after(value: Any) -> StaleAfter:
    """A multiple of the interval (`3`, also as the text `"3"` from the environment) or a
    duration (`"20m"`); also the form `config` prints (`{"intervals": 3}`,
    `{"seconds": 1200}`), so its output reads back as a configuration."""
    if isinstance(value, StaleAfter):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (unit, amount), *_ = value.items()
        if unit == "intervals":
            return StaleAfter.parse(_number(amount))
        if unit == "seconds":
            return StaleAfter(intervals=None, duration_ms=parse_duration_ms(_number(amount)))
    if not isinstance(value, str | int | float):
        raise ValueError("must be a multiple of the interval (3) or a duration (20m)")
    return StaleAfter.parse(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number: {value!r}")
    return float(value)


def _stale_after_json(policy: StaleAfter) -> dict[str, int | float]:
    if policy.duration_ms is not None:
        return {"seconds": _plain(policy.duration_ms / 1000)}
    assert policy.intervals is not None
    return {"intervals": _plain(policy.intervals)}


def _plain(number: float) -> int | float:
    """3.0 printed as 3."""
    return int(number) if float(number).is_integer() else number


Seconds = Annotated[int, BeforeValidator(_whole_seconds)]


def _milliseconds(value: Any) -> int:
    """`"1s"`, `"250ms"` or a number of seconds, as milliseconds."""
    if not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 250ms, 1s or 5s, or a number of seconds")
    return parse_duration_ms(value)


#: Printed as `"250ms"` by `vigo-processor config`, so its output reads back as it was.
Milliseconds = Annotated[
    int, BeforeValidator(_milliseconds), PlainSerializer(lambda ms: f"{ms}ms", return_type=str)
]

#: What turns a lifecycle duration off, from the file (`null`) or the environment, where
#: every value is text (`VIGO_LIFECYCLE__PURGE_AFTER=null`).
_NEVER = frozenset(("null", "none", "never", "~"))


def _seconds_or_never(value: Any) -> int | None:
    """A duration in whole seconds, or None (`null`, also as text from the environment):
    never."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NEVER):
        return None
    return _whole_seconds(value)


SecondsOrNever = Annotated[int | None, BeforeValidator(_seconds_or_never)]
StalePolicy = Annotated[
    StaleAfter, PlainValidator(_stale_after), PlainSerializer(_stale_after_json)
]


Percent = Annotated[float, Field(ge=0, le=100)]
