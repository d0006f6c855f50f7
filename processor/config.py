"""Configuration per SPEC section 5: one YAML file, `VIGO_` environment overrides
(`VIGO_SMTP__HOST`, rules in `configenv`), secrets from files. A bad value fails at start
with one line that names the key; `effective_config` is what `vigo-processor config`
prints: the values the worker runs with, secrets masked.

The sections are models of their own (`config_sections`), built of the values read in
`config_values`; every name of both is importable from here too."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from processor.config_sections import (
    KNOWN_ALERT_EVENTS,
    CheckinConfig,
    ConfigSection,
    EnrollmentConfig,
    FleetConfig,
    KafkaConfig,
    LifecycleConfig,
    ProcessorConfig,
    RecoveredEvent,
    ResourcesConfig,
    RolloutsConfig,
    RunsConfig,
    SmtpConfig,
    SmtpEvents,
    StaleEvent,
    StuckEvent,
    ThresholdEvent,
    WebConfig,
)
from processor.config_values import (
    ConfigError,
    Percent,
    Seconds,
    SecondsOrNever,
    StalePolicy,
    read_secret,
)
from processor.configenv import EnvError, Override, env_overrides, merge
from projections.groups import parse_label
from topics.escape import mask_credentials

__all__ = [
    "DEFAULT_EVENTS",
    "KNOWN_ALERT_EVENTS",
    "MASK",
    "SECRET_WORDS",
    "CheckinConfig",
    "ConfigError",
    "ConfigSection",
    "EnrollmentConfig",
    "FleetConfig",
    "KafkaConfig",
    "LifecycleConfig",
    "Percent",
    "ProcessorConfig",
    "RecoveredEvent",
    "ResourcesConfig",
    "RolloutsConfig",
    "RunsConfig",
    "Seconds",
    "SecondsOrNever",
    "Settings",
    "SmtpConfig",
    "SmtpEvents",
    "StaleEvent",
    "StalePolicy",
    "StuckEvent",
    "ThresholdEvent",
    "WebConfig",
    "effective_config",
    "load_settings",
    "mask_secrets",
    "read_file",
    "read_secret",
    "unapplied_warnings",
]


class Settings(ConfigSection):
    """The whole configuration: the file's sections with the environment's overrides."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)  # type: ignore[arg-type]
    checkin: CheckinConfig = Field(default_factory=CheckinConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    runs: RunsConfig = Field(default_factory=RunsConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)  # type: ignore[arg-type]
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)  # type: ignore[arg-type]
    web: WebConfig = Field(default_factory=WebConfig)  # type: ignore[arg-type]
    processor: ProcessorConfig = Field(default_factory=ProcessorConfig)  # type: ignore[arg-type]
    rollouts: RolloutsConfig = Field(default_factory=RolloutsConfig)  # type: ignore[arg-type]
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)  # type: ignore[arg-type]

    @property
    def threshold(self) -> float | None:
        event = self.smtp.events.convergence_threshold
        return event.threshold if event else None

    @property
    def group_thresholds(self) -> dict[str, float]:
        """`{"env=prod": 95}`: the per-group thresholds (none without the event)."""
        event = self.smtp.events.convergence_threshold
        return dict(event.groups) if event else {}


#: `smtp.events` absent means both events with their defaults. An override of one event's
#: key starts from that, so it does not switch the other event off.
DEFAULT_EVENTS: dict[str, Any] = {"convergence.threshold": {}, "envoy.stale": {}}


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load the YAML file (or `VIGO_CONFIG`), merge the `VIGO_` overrides into it key by
    key (environment over file), validate, and read the secrets so a missing file fails at
    start rather than at the first mail. `environ` defaults to the process environment."""
    environ = os.environ if environ is None else environ
    data = read_file(path or environ.get("VIGO_CONFIG"))
    try:
        overrides = env_overrides(environ, Settings)
        settings = Settings.model_validate(merge(_with_default_events(data, overrides), overrides))
    except EnvError as exc:
        raise ConfigError(f"config {exc.key or '(top level)'}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, overrides)) from None
    _check_group_keys(settings, overrides)
    _check_resource_groups(settings)
    _check_sasl(settings)
    _ = settings.smtp.password
    _ = settings.web.auth_token
    if settings.smtp.ca_file is not None:
        read_secret(settings.smtp.ca_file, "smtp.ca_file")
    read_secret(settings.kafka.sasl_password_file, "kafka.sasl_password_file")
    return settings


def _check_group_keys(settings: Settings, overrides: list[Override]) -> None:
    """Each per-group threshold names a key of `fleet.group_by`."""
    group_by = settings.fleet.group_by
    for label in settings.group_thresholds:
        parsed = parse_label(label)
        if parsed is not None and parsed[0] not in group_by:
            path = ("smtp", "events", "convergence.threshold", "groups")
            setters = [o.name for o in overrides if path[: len(o.path)] == o.path]
            source = f" (from {setters[-1]})" if setters else ""
            known = ", ".join(group_by) if group_by else "none"
            raise ConfigError(
                f"config {'.'.join(path)}: group {label!r} names the key {parsed[0]!r}, "
                f"which is not in fleet.group_by (keys: {known}){source}"
            )


def _check_resource_groups(settings: Settings) -> None:
    """Each group counted for SPEC 11.3 names a key of `fleet.group_by`, like a threshold's."""
    group_by = settings.fleet.group_by
    for label in settings.resources.groups or ():
        parsed = parse_label(label)
        if parsed is not None and parsed[0] not in group_by:
            known = ", ".join(group_by) if group_by else "none"
            raise ConfigError(
                f"config resources.groups: group {label!r} names the key {parsed[0]!r}, "
                f"which is not in fleet.group_by (keys: {known})"
            )


def _check_sasl(settings: Settings) -> None:
    """SASL needs a user and a password: without them the client would log in with an
    empty password, and fail only at the broker (or not at all)."""
    kafka = settings.kafka
    if not kafka.security_protocol.startswith("SASL"):
        return
    protocol = f"kafka.security_protocol {kafka.security_protocol}"
    if not kafka.sasl_username:
        raise ConfigError(f"config kafka.sasl_username: {protocol} needs a SASL user name")
    if kafka.sasl_password_file is None:
        raise ConfigError(
            f"config kafka.sasl_password_file: {protocol} needs a file holding the password"
        )
    if not read_secret(kafka.sasl_password_file, "kafka.sasl_password_file"):
        raise ConfigError(f"config kafka.sasl_password_file: {kafka.sasl_password_file} is empty")


def read_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The YAML file's sections; nothing without a file."""
    if not path:
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    return raw or {}


def _with_default_events(data: dict[str, Any], overrides: list[Override]) -> dict[str, Any]:
    """The file's data with `smtp.events` spelled out when the file leaves it to the
    default and the environment sets a key inside it."""
    inside = any(o.path[:2] == ("smtp", "events") and len(o.path) > 2 for o in overrides)
    smtp = data.get("smtp") or {}
    if not inside or not isinstance(smtp, dict) or smtp.get("events") is not None:
        return data
    return {**data, "smtp": {**smtp, "events": DEFAULT_EVENTS}}


def _one_line(exc: ValidationError, overrides: list[Override]) -> str:
    """The first error as `config KEY: message`, naming the variable that set the key."""
    first = exc.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    key = ".".join(loc).replace("from_", "from") or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    setters = [o.name for o in overrides if loc[: len(o.path)] == o.path]
    source = f" (from {setters[-1]})" if setters else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config {key}: {message}{source}{more}"


#: Words that make a key secret: its value is never printed (a `*_file` key's value is
#: the file's path, printed; its contents never are). Credentials inside a URL or a
#: server list (`user:pass@host`) are masked in any value (`mask_credentials`).
SECRET_WORDS = ("password", "secret", "token")
MASK = "***"


def effective_config(settings: Settings) -> dict[str, Any]:
    """What the worker runs with, as JSON: durations in seconds, `stale_after` as
    `{"intervals": n}` or `{"seconds": n}`, only the events that send mail, secrets
    masked. It reads back as a configuration file (secrets aside)."""
    return mask_secrets(settings.model_dump(mode="json", by_alias=True))


def mask_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the value of every secret key replaced by `MASK`, at any depth."""
    return {key: _masked_value(key, value) for key, value in doc.items()}


def _masked_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return mask_secrets(value)
    secret = any(word in key for word in SECRET_WORDS) and not key.endswith("_file")
    if secret and value is not None:
        return MASK
    if isinstance(value, str) and (key == "bootstrap_servers" or "://" in value):
        return mask_credentials(value)
    return value


def unapplied_warnings(settings: Settings) -> list[str]:
    """Keys that are validated but not acted on yet, for the worker to say so at start
    (none at present: per-group thresholds are applied since groups exist)."""
    return []
