"""Configuration per SPEC section 5: one YAML file, `VIGO_` environment overrides
(`VIGO_SMTP__HOST`), secrets from files. A bad value fails at start with one line that
names the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vigo.projections.liveness import StaleAfter, parse_duration_ms

KNOWN_ALERT_EVENTS = ("convergence.threshold", "envoy.stale")


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


class CheckinConfig(_Section):
    interval: str | int = "5m"
    stale_after: str | int | float = 3

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str | int) -> str | int:
        parse_duration_ms(value)
        return value

    @field_validator("stale_after")
    @classmethod
    def _stale_after(cls, value: str | int | float) -> str | int | float:
        StaleAfter.parse(value)
        return value

    @property
    def interval_s(self) -> int:
        return max(1, parse_duration_ms(self.interval) // 1000)

    @property
    def stale_policy(self) -> StaleAfter:
        return StaleAfter.parse(self.stale_after)


class EnrollmentConfig(_Section):
    strict: bool = False


class ThresholdEvent(_Section):
    threshold: float = Field(90.0, ge=0, le=100)


class StaleEvent(_Section):
    #: More envoys than this going stale in one sweep are mailed as one digest.
    digest_over: int = Field(10, ge=1)


class SmtpEvents(_Section):
    convergence_threshold: ThresholdEvent | None = Field(None, alias="convergence.threshold")
    envoy_stale: StaleEvent | None = Field(None, alias="envoy.stale")


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


class ProcessorConfig(_Section):
    store: Literal["memory", "rocksdb"] = "memory"
    data_dir: Path = Path("vigo-data")
    standby_replicas: int = Field(0, ge=0)
    #: How long a silent worker keeps its partitions before the group hands them over.
    session_timeout_s: float = Field(30.0, ge=6, le=300)
    #: Input records larger than this are dead-lettered as `too_large`.
    max_event_bytes: int = Field(1_048_576, ge=1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIGO_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)  # type: ignore[arg-type]
    checkin: CheckinConfig = Field(default_factory=CheckinConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)  # type: ignore[arg-type]
    web: WebConfig = Field(default_factory=WebConfig)  # type: ignore[arg-type]
    processor: ProcessorConfig = Field(default_factory=ProcessorConfig)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment over file: the 12-factor order.
        return (env_settings, init_settings)

    @property
    def threshold(self) -> float | None:
        event = self.smtp.events.convergence_threshold
        return event.threshold if event else None


def _read_secret(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path}: {exc.strerror}") from None


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load the YAML file (or `VIGO_CONFIG`), apply `VIGO_` overrides, validate."""
    path = path or os.environ.get("VIGO_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
        data = raw or {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    # Secrets are read now so a missing file fails at start, not at the first mail.
    _ = settings.smtp.password
    if settings.smtp.ca_file is not None:
        _read_secret(settings.smtp.ca_file, "smtp.ca_file")
    _read_secret(settings.kafka.sasl_password_file, "kafka.sasl_password_file")
    return settings


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    key = key.replace("from_", "from")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config {key}: {message}{more}"
