"""Configuration per SPEC section 5: one YAML file, `VIGO_` environment overrides
(`VIGO_SMTP__HOST`, rules in `configenv`), secrets from files. A bad value fails at start
with one line that names the key; `effective_config` is what `vigo-processor config`
prints: the values the worker runs with, secrets masked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from alerts.rules import DIGEST_LIST_MAX
from processor.configenv import EnvError, Override, env_overrides, merge
from projections.groups import DEFAULT_MAX_GROUP_VALUES, MAX_GROUP_KEYS, parse_label
from projections.liveness import StaleAfter, parse_duration_ms

KNOWN_ALERT_EVENTS = ("convergence.threshold", "convergence.recovered", "envoy.stale")


class ConfigError(Exception):
    """One line for the operator: which key, what is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KafkaConfig(_Section):
    bootstrap_servers: str = "localhost:9092"
    topic_prefix: str = "vigo."
    partitions: int = Field(8, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None


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


class CheckinConfig(_Section):
    #: The default check-in interval, in seconds; envoys without their own follow it.
    interval: Seconds = 300
    stale_after: StalePolicy = StaleAfter(intervals=3.0)

    @property
    def interval_s(self) -> int:
        return self.interval

    @property
    def stale_policy(self) -> StaleAfter:
        return self.stale_after


class LifecycleConfig(_Section):
    """SPEC 10.3, in whole seconds; None: never."""

    #: Silent (no check-in or run) this long, an envoy becomes `inactive`.
    deactivate_after: SecondsOrNever = 7 * 86_400
    #: Inactive (or revoked) this long, an envoy is purged (a revoked one shrinks).
    purge_after: SecondsOrNever = 30 * 86_400

    @property
    def deactivate_after_ms(self) -> int | None:
        return None if self.deactivate_after is None else self.deactivate_after * 1000

    @property
    def purge_after_ms(self) -> int | None:
        return None if self.purge_after is None else self.purge_after * 1000


class EnrollmentConfig(_Section):
    strict: bool = False


class RunsConfig(_Section):
    #: Changes under a new `config_version` are a rollout, not drift (SPEC 10.1).
    intentional_changes: bool = True


Percent = Annotated[float, Field(ge=0, le=100)]


class ThresholdEvent(_Section):
    threshold: Percent = 90.0
    #: Per-group thresholds, `{"env=prod": 95}` (SPEC 10.2); each KEY must be one of
    #: `fleet.group_by` (checked by `load_settings`, which sees both sections).
    groups: dict[str, Percent] = Field(default_factory=dict)

    @field_validator("groups")
    @classmethod
    def _label_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for label in value:
            key, eq, val = label.partition("=")
            if not (key and eq and val):
                raise ValueError(f"group {label!r} is not KEY=VALUE, e.g. env=prod")
        return value


class StaleEvent(_Section):
    #: More stale alerts than this in one digest window are mailed as one digest; at most
    #: `DIGEST_LIST_MAX`, so that alerts mailed alone are always among those a window lists.
    digest_over: int = Field(10, ge=1, le=DIGEST_LIST_MAX)
    #: The tumbling window the sender groups stale alerts in, by outbox record time.
    digest_window: Seconds = Field(60, ge=1)

    @property
    def digest_window_ms(self) -> int:
        return self.digest_window * 1000


class RecoveredEvent(_Section):
    """`convergence.recovered` (SPEC 10.4): no settings of its own; it ends the alerts of
    `convergence.threshold` (the fleet's and each group's), so it needs that event."""


class SmtpEvents(_Section):
    convergence_threshold: ThresholdEvent | None = Field(None, alias="convergence.threshold")
    convergence_recovered: RecoveredEvent | None = Field(None, alias="convergence.recovered")
    envoy_stale: StaleEvent | None = Field(None, alias="envoy.stale")

    @model_validator(mode="after")
    def _recovered_needs_threshold(self) -> SmtpEvents:
        if self.convergence_recovered is not None and self.convergence_threshold is None:
            raise ValueError(
                "convergence.recovered needs convergence.threshold listed too: it mails "
                "the end of that alert"
            )
        return self

    @model_serializer(mode="wrap")
    def _listed_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the events that send mail: a null here would read back as "enabled"."""
        return {k: v for k, v in handler(self).items() if v is not None}


class SmtpConfig(_Section):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password_file: Path | None = None
    from_: str = Field("vigo@localhost", alias="from")
    to: list[str] = Field(default_factory=lambda: ["ops@localhost"])
    timeout_s: float = Field(30.0, gt=0)
    #: PEM file of the CA(s) to trust for STARTTLS / implicit TLS, e.g. a private CA;
    #: absent: the system's trust store. Server certificates are always verified.
    ca_file: Path | None = None
    #: Absent: both events with their defaults, as in the documented config. Present: only
    #: the events listed send mail.
    events: SmtpEvents = Field(
        default_factory=lambda: SmtpEvents.model_validate(
            {"convergence.threshold": {}, "envoy.stale": {}}
        )
    )

    @field_validator("events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if name not in KNOWN_ALERT_EVENTS:
                    raise ValueError(
                        f"unknown event {name!r}; known: {', '.join(KNOWN_ALERT_EVENTS)}"
                    )
            # `envoy.stale: {}` and `envoy.stale:` (null) both mean "enabled, defaults".
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpConfig:
        if self.starttls and self.tls:
            raise ValueError(
                "starttls and tls exclude each other: tls is implicit TLS (port 465), "
                "starttls upgrades a plain connection (port 587)"
            )
        return self

    @property
    def password(self) -> str | None:
        return _read_secret(self.password_file, "smtp.password_file")


class WebConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(6066, ge=1, le=65535)
    #: Where operators reach the dashboard; used for links in mail.
    public_url: str | None = None
    #: A file holding the API's bearer token (SPEC 10.7); absent: the API is open.
    auth_token_file: Path | None = None

    @property
    def auth_token(self) -> str | None:
        token = _read_secret(self.auth_token_file, "web.auth_token_file")
        if token is not None and not token:
            raise ConfigError("config web.auth_token_file: the file is empty")
        return token


class FleetConfig(_Section):
    #: Label keys to keep the fleet's numbers for, per value (SPEC 10.2).
    group_by: list[str] = Field(default_factory=list, max_length=MAX_GROUP_KEYS)
    #: Values named per key at each fleet publish; the rest count under `(other)`.
    max_group_values: int = Field(DEFAULT_MAX_GROUP_VALUES, ge=1, le=10_000)

    @field_validator("group_by")
    @classmethod
    def _label_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key or "=" in key or len(key.encode("utf-8")) > 63:
                raise ValueError(f"{key!r} is not a label key (1 to 63 bytes of UTF-8, no '=')")
        if len(set(value)) != len(value):
            raise ValueError("a label key is listed twice")
        return value


class ProcessorConfig(_Section):
    store: Literal["memory", "rocksdb"] = "memory"
    data_dir: Path = Path("vigo-data")
    standby_replicas: int = Field(0, ge=0)
    #: How long a silent worker keeps its partitions before the group hands them over.
    session_timeout_s: float = Field(30.0, ge=6, le=300)
    #: Input records larger than this are dead-lettered as `too_large`.
    max_event_bytes: int = Field(1_048_576, ge=1024)


class Settings(_Section):
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

    @property
    def threshold(self) -> float | None:
        event = self.smtp.events.convergence_threshold
        return event.threshold if event else None

    @property
    def group_thresholds(self) -> dict[str, float]:
        """`{"env=prod": 95}`: the per-group thresholds (none without the event)."""
        event = self.smtp.events.convergence_threshold
        return dict(event.groups) if event else {}


def _read_secret(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {key}: {path} is not UTF-8 text") from None


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
    _ = settings.smtp.password
    _ = settings.web.auth_token
    if settings.smtp.ca_file is not None:
        _read_secret(settings.smtp.ca_file, "smtp.ca_file")
    _read_secret(settings.kafka.sasl_password_file, "kafka.sasl_password_file")
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
#: the file's path, printed; its contents never are).
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
    return MASK if secret and value is not None else value


def unapplied_warnings(settings: Settings) -> list[str]:
    """Keys that are validated but not acted on yet, for the worker to say so at start
    (none at present: per-group thresholds are applied since groups exist)."""
    return []
