"""The sections of the configuration file (SPEC section 5), one pydantic model each:
`kafka`, `checkin`, `lifecycle`, `enrollment`, `runs`, `fleet`, `smtp` (with its alert
events), `web` and `processor`. `processor.config` assembles them into `Settings` and
loads them; it re-exports every name here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from alerts.rules import DIGEST_LIST_MAX
from processor.config_values import (
    ConfigError,
    Milliseconds,
    Percent,
    Seconds,
    SecondsOrNever,
    StalePolicy,
    read_secret,
)
from projections.groups import DEFAULT_MAX_GROUP_VALUES, MAX_GROUP_KEYS
from projections.liveness import StaleAfter
from projections.rollouts import DEFAULT_MAX_VERSIONS

KNOWN_ALERT_EVENTS = (
    "convergence.threshold",
    "convergence.recovered",
    "envoy.stale",
    "rollout.stuck",
)


#: Every section: an unknown key is an error; a key is read by its alias (`from`) or name.
class ConfigSection(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class KafkaConfig(ConfigSection):
    bootstrap_servers: str = "localhost:9092"
    topic_prefix: str = "vigo."
    partitions: int = Field(8, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1)
    #: `min.insync.replicas` of every topic the worker creates (SPEC 11.5): with the
    #: producer's acks=all, a write is acknowledged once this many replicas hold it.
    #: None: min(2, replication_factor), see `min_isr`.
    min_insync_replicas: int | None = Field(None, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None

    @field_validator("min_insync_replicas")
    @classmethod
    def _at_most_the_replicas(cls, value: int | None, info: ValidationInfo) -> int | None:
        replicas = info.data.get("replication_factor")
        if value is not None and replicas is not None and value > replicas:
            raise ValueError(
                f"{value} is more than kafka.replication_factor ({replicas}): no write "
                f"could ever be acknowledged; use 1 to {replicas}"
            )
        return value

    @property
    def min_isr(self) -> int:
        """The `min.insync.replicas` the worker's topics get."""
        if self.min_insync_replicas is None:
            return min(2, self.replication_factor)
        return self.min_insync_replicas


class CheckinConfig(ConfigSection):
    #: The default check-in interval, in seconds; envoys without their own follow it.
    interval: Seconds = 300
    stale_after: StalePolicy = StaleAfter(intervals=3.0)

    @property
    def interval_s(self) -> int:
        return self.interval

    @property
    def stale_policy(self) -> StaleAfter:
        return self.stale_after


class LifecycleConfig(ConfigSection):
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


class EnrollmentConfig(ConfigSection):
    strict: bool = False


class RunsConfig(ConfigSection):
    #: Changes under a new `config_version` are a rollout, not drift (SPEC 10.1).
    intentional_changes: bool = True


class ThresholdEvent(ConfigSection):
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


class StaleEvent(ConfigSection):
    #: More stale alerts than this in one digest window are mailed as one digest; at most
    #: `DIGEST_LIST_MAX`, so that alerts mailed alone are always among those a window lists.
    digest_over: int = Field(10, ge=1, le=DIGEST_LIST_MAX)
    #: The tumbling window the sender groups stale alerts in, by outbox record time.
    digest_window: Seconds = Field(60, ge=1)

    @property
    def digest_window_ms(self) -> int:
        return self.digest_window * 1000


class RecoveredEvent(ConfigSection):
    """`convergence.recovered` (SPEC 10.4): no settings of its own; it ends the alerts of
    `convergence.threshold` (the fleet's and each group's), so it needs that event."""


class StuckEvent(ConfigSection):
    """`rollout.stuck` (SPEC 11.2): mailed once per newest version (and group) when more
    than `max_stuck` envoys are stuck on an older one."""

    max_stuck: int = Field(0, ge=0)


class RolloutsConfig(ConfigSection):
    """Rollouts by `config_version` (SPEC 11.2)."""

    #: Versions named per fleet and group; the rest count under `(other)`.
    max_versions: int = Field(DEFAULT_MAX_VERSIONS, ge=1, le=200)
    #: Envoys still on an older version this long after the newest was first seen are stuck.
    stuck_after: Seconds = Field(3600, ge=1)


class SmtpEvents(ConfigSection):
    convergence_threshold: ThresholdEvent | None = Field(None, alias="convergence.threshold")
    convergence_recovered: RecoveredEvent | None = Field(None, alias="convergence.recovered")
    envoy_stale: StaleEvent | None = Field(None, alias="envoy.stale")
    rollout_stuck: StuckEvent | None = Field(None, alias="rollout.stuck")

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


_WORDS: dict[str, Literal["auto"] | bool] = {
    "auto": "auto", "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip


def _starttls_mode(value: Any) -> Literal["auto"] | bool:
    """`auto`, `true` or `false`: the booleans of older files keep their meaning, and the
    environment's text (`VIGO_SMTP__STARTTLS=auto`) reads as the file's values."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ValueError("must be auto, true or false")


#: `auto`: upgrade when the server offers STARTTLS; True: require it; False: never.
StartTls = Annotated[Literal["auto"] | bool, BeforeValidator(_starttls_mode)]


class SmtpConfig(ConfigSection):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    starttls: StartTls = "auto"
    tls: bool = False
    #: AUTH over a connection that is not encrypted (SPEC 11.4): refused unless True.
    allow_plaintext_auth: bool = False
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
        if self.starttls is True and self.tls:
            raise ValueError(
                "starttls and tls exclude each other: tls is implicit TLS (port 465), "
                "starttls upgrades a plain connection (port 587)"
            )
        in_clear = self.starttls is False and not self.tls
        if self.username and in_clear and not self.allow_plaintext_auth:
            raise ValueError(
                "smtp.username with starttls: false and tls: false would send the "
                "password in clear text; use starttls: auto or true, or tls: true (or "
                "set smtp.allow_plaintext_auth: true)"
            )
        return self

    @property
    def password(self) -> str | None:
        return read_secret(self.password_file, "smtp.password_file")


class WebConfig(ConfigSection):
    host: str = "0.0.0.0"
    port: int = Field(6066, ge=1, le=65535)
    #: Where operators reach the dashboard; used for links in mail.
    public_url: str | None = None
    #: A file holding the API's bearer token (SPEC 10.7); absent: the API is open.
    auth_token_file: Path | None = None

    @property
    def auth_token(self) -> str | None:
        token = read_secret(self.auth_token_file, "web.auth_token_file")
        if token is not None and not token:
            raise ConfigError("config web.auth_token_file: the file is empty")
        return token


class FleetConfig(ConfigSection):
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


class RocksDBConfig(ConfigSection):
    #: SPEC 11.5: one block cache and one write-buffer budget (a quarter of it, charged
    #: to the cache) shared by every RocksDB database the worker opens.
    memory_mib: int = Field(default=256, ge=16, le=1_048_576)


class ProcessorConfig(ConfigSection):
    store: Literal["memory", "rocksdb"] = "memory"
    rocksdb: RocksDBConfig = Field(default_factory=RocksDBConfig)
    data_dir: Path = Path("vigo-data")
    standby_replicas: int = Field(0, ge=0)
    #: How long a silent worker keeps its partitions before the group hands them over.
    session_timeout_s: float = Field(30.0, ge=6, le=300)
    #: Input records larger than this are dead-lettered as `too_large`.
    max_event_bytes: int = Field(1_048_576, ge=1024)
    #: Checkpoints (SPEC 11.5): changed envoy states go to the changelog and the store at
    #: most this long after the batch that changed them (sooner once caught up).
    commit_interval: Milliseconds = Field(1000, ge=0, le=60_000)


class ResourcesConfig(ConfigSection):
    """SPEC 11.3: which resources keep drifting, counted in bounded memory."""

    #: The window counted, in hourly buckets: whole hours, 1 hour to 7 days.
    window: Seconds = Field(86_400, ge=3600, le=7 * 86_400)
    #: Space-Saving counters per summary (one per partition, kind, hour and scope).
    capacity: int = Field(1000, ge=10, le=10_000)
    #: Groups `KEY=VALUE` (KEY of `fleet.group_by`) counted on their own, at most 8;
    #: None: the groups with a threshold of their own.
    groups: list[str] | None = Field(None, max_length=8)

    @field_validator("window")
    @classmethod
    def _whole_hours(cls, value: int) -> int:
        if value % 3600:
            raise ValueError("must be whole hours (it is counted in hourly buckets), e.g. 24h")
        return value

    @field_validator("groups")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        for label in value or ():
            key, eq, val = label.partition("=")
            if not (key and eq and val):
                raise ValueError(f"group {label!r} is not KEY=VALUE, e.g. role=db")
        return value
