"""Settings, from environment variables (``OXYFLEET_…``, nested with ``__``), ``.env`` and secret files.

Everything is validated at startup, like Telegraf's ``Init()``: a bad value stops the ingester before it
connects anywhere, with the variable to fix. Secrets are :class:`~pydantic.SecretStr` and can come from
a file (``OXYFLEET_INFLUX__TOKEN_FILE=/run/secrets/influx_token``), which is how Docker/Kubernetes
secrets arrive; that is the only secret-file mechanism, because pydantic-settings' ``secrets_dir`` cannot
name nested fields clearly and warns when the directory is absent.

``.env.example`` is generated from these models (``oxyfleet env-example``) and a test fails when it is
stale, so this module is the single place configuration is documented.

Long module: every setting with its description, its validation and the way its errors name the
variable live together, because ``.env.example``, ``check-config`` and every config error are generated
from this one place; splitting the sections apart would scatter that single source.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "LONG_RETENTION_POLICY",
    "BufferSettings",
    "HealthSettings",
    "InfluxSettings",
    "MqttSettings",
    "PayloadSettings",
    "Settings",
    "SpoolSettings",
    "env_example",
    "load_settings",
    "redacted_lines",
]

Port = Annotated[int, Field(ge=1, le=65535)]

# The long-term retention policy's default name, in one place: the generated Grafana dashboards and alert
# rules are static JSON and read the health results under this name (``store.schema.LONG_POLICY``).
LONG_RETENTION_POLICY: Final = "oxyfleet_long"


def _read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return value.get_secret_value() if value is not None else None


class SettingError(ValueError):
    """A rule between settings, blamed on the one to change.

    :func:`load_settings` turns ``field`` into the variable's real name; a model validator's plain
    ValueError would name only its section (``OXYFLEET_MQTT``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _existing_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        msg = f"file {path} is {what}; give the path of an existing, readable file"
        raise ValueError(msg)
    if not os.access(path, os.R_OK):
        msg = f"file {path} is not readable by this user (uid {os.getuid()}); fix its owner or mode"
        raise ValueError(msg)
    return path


# A path that must name an existing file at startup (secrets, certificates, the inventory).
ExistingFile = Annotated[Path | None, AfterValidator(_existing_file)]

_HTTP_URL: Final = TypeAdapter(HttpUrl)


def _http_url(value: str) -> str:
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError as exc:
        msg = f"{value[:80]!r} is not an http(s) URL ({exc.errors()[0]['msg']})"
        raise ValueError(msg) from None
    return value


def _json_list(value: object) -> object:
    """Lists come from the environment as JSON text; say so when they are not, instead of a traceback.

    pydantic-settings would try ``json.loads`` itself and raise a ``SettingsError`` naming only the
    section; with ``NoDecode`` the text arrives here and the error carries the variable's name.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        msg = f'must be a JSON list, e.g. ["https://hooks.example.org/oxyfleet"] (got {text[:80]!r})'
        raise ValueError(msg)  # noqa: TRY004 - pydantic turns ValueError into a validation error
    return parsed


UrlList = Annotated[list[Annotated[str, AfterValidator(_http_url)]], NoDecode, BeforeValidator(_json_list)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """The broker the ingester subscribes to."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: Port = Field(1883, description="Broker port (8883 is usual for TLS).")
    client_id: str = Field(
        "oxyfleet-ingest",
        min_length=1,
        max_length=128,
        description="Stable client id: the broker keeps the persistent session (and queued messages) under it.",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        # 3.1.1 by measurement (docs/benchmarks.md): paho builds a Properties object for every MQTT 5
        # PUBLISH, which halves its receive rate. Persistent sessions (clean session off) and shared
        # subscriptions work with 3.1.1 on Mosquitto, EMQX, HiveMQ and VerneMQ.
        "3.1.1",
        description=(
            "MQTT protocol version. 3.1.1 receives about twice as fast in paho; with it the broker's own "
            "limit (Mosquitto: max_inflight_messages) bounds unacknowledged messages instead of RECEIVE_MAXIMUM, "
            "and the session lasts until the broker expires it (Mosquitto: persistent_client_expiration)."
        ),
    )
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password.")
    password_file: ExistingFile = Field(
        None, description="File holding the broker password (instead of PASSWORD)."
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    ca_file: ExistingFile = Field(None, description="CA certificate bundle for TLS (system CAs when empty).")
    cert_file: ExistingFile = Field(None, description="Client certificate for TLS client authentication.")
    key_file: ExistingFile = Field(None, description="Client key for TLS client authentication.")
    tls_insecure: bool = Field(default=False, description="Skip the broker host name check (testing only).")
    topic_prefix: str = Field(
        "oxygen",
        pattern=r"^[^#+$][^#+]*[^/#+]$|^[^#+$/]$",
        description="Topic root: devices publish to {prefix}/{kind}/{unit_id}/{telemetry|status}.",
    )
    shared_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Shared-subscription group: several ingesters with the same group split the load.",
    )
    qos: int = Field(
        1, ge=0, le=1, description="Subscription QoS. 1 is the only setting that guarantees no loss."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive, seconds.")
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="How long the broker keeps our session and messages while the ingester is away (MQTT 5 only).",
    )
    receive_maximum: int = Field(
        10_000,
        ge=1,
        le=65535,
        description="Unacknowledged QoS 1 messages the broker may send at once (MQTT 5); must exceed the batch.",
    )
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay; doubles up to the maximum.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise SettingError(
                missing,
                "a TLS client certificate needs its key: set OXYFLEET_MQTT__CERT_FILE and "
                "OXYFLEET_MQTT__KEY_FILE together",
            )
        return self

    def password_value(self) -> str | None:
        """The password from PASSWORD or PASSWORD_FILE."""
        return _read_secret(self.password, self.password_file)

    def subscription(self) -> str:
        """The topic filter to subscribe to: everything under the prefix, so bad topics are seen and rejected."""
        topic = f"{self.topic_prefix}/#"
        return f"$share/{self.shared_group}/{topic}" if self.shared_group else topic


class InfluxSettings(_Section):
    """Where points are written (and read back by tools)."""

    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://", description="InfluxDB base URL.")
    api: Literal["v1", "v2"] = Field(
        "v1",
        description="v1: POST /write (1.x, 2.x compatibility, 3 Core). v2: /api/v2/write (2.x, 3 Core, 1.8+).",
    )
    database: str = Field("oxyfleet", min_length=1, description="v1 database (also the InfluxQL database).")
    retention_policy: str | None = Field(None, description="v1 retention policy (server default when empty).")
    raw_retention: str = Field(
        "90d",
        pattern=r"^(INF|[1-9][0-9]*[hdw])$",
        description="v1: how long raw telemetry is kept (the database's default retention policy), e.g. 90d; "
        "INF keeps it forever. Set up by oxyfleet with CREATE_DATABASE (not when LONG_RETENTION_POLICY is empty).",
    )
    long_retention_policy: str | None = Field(
        LONG_RETENTION_POLICY,
        description="v1: retention policy (kept forever) for the health engine's results and per-minute "
        "aggregates; created by oxyfleet with CREATE_DATABASE. The dashboards, alert rules, reports and API "
        "read them there. Empty: everything stays in the default policy, which is then not bounded (the "
        "generated dashboards still read this name: see docs/operations.md).",
    )
    username: str | None = Field(None, description="v1 user (Basic auth).")
    password: SecretStr | None = Field(None, description="v1 password.")
    password_file: ExistingFile = Field(None, description="File holding the v1 password.")
    token: SecretStr | None = Field(None, description="API token (v2; also accepted by v1 on 2.x/3 Core).")
    token_file: ExistingFile = Field(None, description="File holding the API token.")
    org: str | None = Field(None, description="v2 organisation.")
    bucket: str | None = Field(None, description="v2 bucket (defaults to DATABASE).")
    create_database: bool = Field(
        default=True,
        description="v1: CREATE DATABASE at startup if missing (harmless when it exists).",
    )
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout per request, seconds.")
    gzip: bool = Field(default=False, description="Compress write bodies.")
    verify_tls: bool = Field(default=True, description="Verify the server certificate for https URLs.")
    ca_file: ExistingFile = Field(None, description="CA bundle for https URLs.")

    @model_validator(mode="after")
    def _consistent(self) -> InfluxSettings:
        if self.api == "v2":
            if self.token is None and self.token_file is None:
                raise SettingError(
                    "token",
                    "OXYFLEET_INFLUX__API=v2 needs an API token: set OXYFLEET_INFLUX__TOKEN or "
                    "OXYFLEET_INFLUX__TOKEN_FILE (a file holding it)",
                )
            if not self.org:
                raise SettingError(
                    "org", "OXYFLEET_INFLUX__API=v2 needs the organisation name (e.g. oxyfleet)"
                )
        return self

    def token_value(self) -> str | None:
        """The token from TOKEN or TOKEN_FILE."""
        return _read_secret(self.token, self.token_file)

    def password_value(self) -> str | None:
        """The v1 password from PASSWORD or PASSWORD_FILE."""
        return _read_secret(self.password, self.password_file)

    def bucket_name(self) -> str:
        """The v2 bucket."""
        return self.bucket or self.database


class BufferSettings(_Section):
    """Batching between MQTT and InfluxDB."""

    batch_size: int = Field(5000, ge=1, le=100_000, description="Write when this many messages are pending.")
    batch_age_s: float = Field(
        # 0.5 s keeps publish -> queryable under 1 s (p99) at fleet rate; at 2,000 msg/s a batch still
        # holds ~1,000 lines, and a backlog fills BATCH_SIZE long before the age matters.
        0.5,
        gt=0,
        le=60,
        description="...or when the oldest pending message is this old.",
    )
    max_pending: int = Field(
        50_000,
        ge=1,
        description="Messages held in memory before the MQTT thread waits (backpressure; QoS 1 is held by the broker).",
    )
    max_bytes: int = Field(
        # A count alone let 500 one-MiB messages take 439 MiB (issue 16). 32 MiB is 150,000 typical
        # readings, far more than a batch, and 512 payloads of the largest accepted size.
        32 * 1024**2,
        ge=64 * 1024,
        description=(
            "Payload bytes held in memory, bound twice: the inbox waits (backpressure) when it holds this "
            "much, and a batch is written once its payloads reach it. Oversize payloads are never held."
        ),
    )
    overlap_writes: bool = Field(
        # Issue 16: the loop was serial (decode, then wait for InfluxDB, then ack); one write in flight
        # lets the next batch be decoded meanwhile. Acks stay in order and after the write either way.
        default=True,
        description=(
            "Decode the next batch while the previous one is written (one write in flight; each batch "
            "is then cut at half of MAX_BYTES); off: one batch at a time."
        ),
    )
    retry_initial_s: float = Field(
        0.5, gt=0, description="First wait after a failed write; doubles each time."
    )
    retry_max_s: float = Field(30.0, gt=0, description="Longest wait between write attempts.")


class SpoolSettings(_Section):
    """Store-and-forward to disk while InfluxDB is unreachable or throttling (see ingest/spool.py)."""

    enabled: bool = Field(
        default=True,
        description="Spool batches InfluxDB cannot take and ack them; off: hold them unacked in the broker.",
    )
    dir: Path = Field(
        Path("spool"),
        description="Spool directory, one per ingester process (a volume in containers).",
    )
    max_bytes: int = Field(
        # Sized from the fleet rate and an outage to ride out without leaning on the broker (issue 19):
        # 2,000 readings/s (20,000 units every 10 s) x ~300 bytes of line protocol x 12 hours (a night
        # without anyone on call) = 25.9 GB. Beyond it acks stop and the broker holds the rest, where a
        # broker crash can lose what it has not saved yet (docs/operations.md, "What survives what").
        24 * 1024**3,
        ge=4096,
        description="Spool bound (default: 12 h of a 2,000 msg/s fleet); when full, acks stop and the broker holds the rest.",
    )
    fsync: bool = Field(
        default=True, description="fsync each spooled batch before acking it (off only for throwaway tests)."
    )
    replay_budget_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Longest replay between two live batches, so live data keeps flowing while the spool drains.",
    )


class PayloadSettings(_Section):
    """Limits of the payload contract that an operator may tune."""

    max_bytes: int = Field(64 * 1024, ge=256, le=1024 * 1024, description="Largest accepted payload, bytes.")
    max_readings: int = Field(1000, ge=1, le=100_000, description="Most readings in one batched payload.")
    max_future_s: int = Field(300, ge=0, description="How far ahead of our clock a device timestamp may be.")
    backfill_s: int = Field(
        7 * 24 * 3600, ge=60, description="Oldest device timestamp accepted (late uploads)."
    )


class HealthSettings(_Section):
    """The health engine."""

    cycle_s: float = Field(15.0, gt=0, description="Seconds between evaluations of the fleet.")
    lookback_s: float = Field(
        900.0,
        ge=300,
        description="Trailing window re-evaluated each cycle (late readings inside it are picked up).",
    )
    sustain_s: float = Field(
        120.0, ge=0, description="A condition must last this long before it counts (anti-flap)."
    )
    alerts_mqtt: bool = Field(
        default=True, description="Publish alerts to {ALERT_TOPIC_PREFIX}/{hospital}/{unit_id}."
    )
    alert_topic_prefix: str = Field("oxyfleet/alerts", min_length=1, description="Topic root of the alerts.")
    webhooks: UrlList = Field(
        default_factory=list,
        description='Webhook URLs the alerts are POSTed to, as a JSON list: ["https://..."].',
    )
    api_host: str = Field(
        "127.0.0.1", description="Address of the read-only HTTP API (0.0.0.0 in containers)."
    )
    api_port: int = Field(
        8090, ge=0, le=65535, description="Port of the HTTP API (/api/units, /docs, /metrics); 0: off."
    )
    webhook_retries: int = Field(
        5, ge=1, le=20, description="Attempts per alert and webhook (exponential backoff)."
    )
    api_tokens_file: Path = Field(
        Path(".oxyfleet/api-tokens.json"),
        description="Hashed read-only API tokens (oxyfleet tokens create); needed when the API is not on loopback.",
    )


class ReportSettings(_Section):
    """Monthly reports (oxyfleet report, /api/reports)."""

    target_pct: float = Field(95.0, gt=0, le=100, description="Availability target drawn on the reports.")
    zones: dict[str, str] = Field(
        default_factory=dict,
        description='Time zone per hospital where its province\'s is wrong, as JSON: {"RS X": "Asia/Makassar"}.',
    )
    programme_zone: str = Field("Asia/Jakarta", description="Zone of the programme-wide (donor) reports.")
    plotted_units: int = Field(40, ge=1, le=500, description="Units drawn in a report's plots (the worst).")

    @field_validator("zones", "programme_zone")
    @classmethod
    def _known_zones(cls, value: dict[str, str] | str) -> dict[str, str] | str:
        for name in value.values() if isinstance(value, dict) else [value]:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {name!r} (use an IANA name such as Asia/Makassar)"
                ) from None
        return value


class Settings(BaseSettings):
    """Everything the ingester needs; see ``.env.example`` for every variable."""

    model_config = SettingsConfigDict(
        env_prefix="OXYFLEET_",
        env_nested_delimiter="__",
        env_file=".env",
        # The .env in a working directory is often shared with docker compose, whose own variables
        # (INFLUXDB_..., GRAFANA_...) are not ours: read only OXYFLEET_ keys from it, and still refuse an
        # unknown OXYFLEET_ key there, which is a typo that would otherwise be silently ignored.
        dotenv_filtering="match_prefix",
        extra="forbid",
        frozen=True,
    )

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    payload: PayloadSettings = Field(default_factory=PayloadSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    inventory_file: ExistingFile = Field(
        None,
        description="Fleet inventory CSV (units -> model, hospital, province tags); reloaded on change.",
    )
    inventory_check_s: float = Field(
        2.0, gt=0, description="How often the inventory file is checked for changes."
    )
    instance: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of this ingester in its own counters and rejected records (default: host name).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="auto: console on a terminal, JSON lines otherwise.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the /metrics endpoint (0.0.0.0 in containers)."
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of the Prometheus /metrics endpoint; 0: off."
    )
    stats_interval_s: float = Field(
        10.0, gt=0, description="How often counters are written to oxyfleet_ingest."
    )


def _env_name(path: tuple[str, ...]) -> str:
    return "OXYFLEET_" + "__".join(p.upper() for p in path)


_SECTION_JSON: Final = re.compile(r'error parsing value for field "(\w+)"')


def _describe_problem(err: Any, fields: dict[tuple[str, ...], Any]) -> str:  # noqa: ANN401 - pydantic's ErrorDetails
    """One line: the variable's real name, what is wrong, and what belongs there."""
    loc = list(err["loc"])
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, SettingError):
        loc.append(cause.field)
    path = tuple(str(p) for p in loc if isinstance(p, str))
    items = [p for p in loc if isinstance(p, int)]
    where = _env_name(path) if path else "OXYFLEET_*"
    message = str(cause) if isinstance(cause, ValueError) else err["msg"]
    if err["type"] == "extra_forbidden":
        message = "not a setting oxyfleet knows (a typo? `oxyfleet env-example` lists them all)"
    elif items:
        message = f"item {items[0] + 1}: {message}"
    info = fields.get(path)
    secret = info is not None and info.annotation is not None and "SecretStr" in str(info.annotation)
    shown = err.get("input")
    if isinstance(shown, str) and not secret and shown not in message and not isinstance(cause, SettingError):
        message += f" (got {shown[:80]!r})"
    if info is not None and info.description:
        message += f". Expected: {info.description}"
    return f"  {where}: {message}"


def load_settings(**overrides: Any) -> Settings:  # noqa: ANN401 - passed through to pydantic
    """Build settings from the environment (and ``.env``); raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        fields = dict(_walk(Settings, sections=True))
        problems = [_describe_problem(err, fields) for err in exc.errors(include_url=False)]
        raise ConfigError("invalid configuration:\n" + "\n".join(problems)) from None
    except SettingsError as exc:  # a whole section given as JSON that does not parse
        match = _SECTION_JSON.search(str(exc))
        name = _env_name((match.group(1),)) if match else "an OXYFLEET_* variable"
        raise ConfigError(
            f"invalid configuration:\n  {name}: is not valid JSON; set the section as a JSON object "
            f"(e.g. {name}='{{\"port\": 1883}}'), or better one variable per setting "
            f"(e.g. {name}__PORT=1883)"
        ) from None


def _walk(
    model: type[BaseModel], path: tuple[str, ...] = (), *, sections: bool = False
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if sections:
                yield (*path, name), info
            yield from _walk(sub, (*path, name), sections=sections)
        else:
            yield (*path, name), info


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def env_example() -> str:
    """The text of ``.env.example``: every variable, its default and what it is for."""
    lines = [
        "# oxyfleet configuration. Generated by `oxyfleet env-example`; a test fails when it is stale.",
        "# Copy to .env (never commit it) and uncomment what you change. Secrets may instead come from files:",
        "# set the matching *_FILE variable to a path, e.g. OXYFLEET_INFLUX__TOKEN_FILE=/run/secrets/influx_token.",
        "",
    ]
    section = None
    for path, info in _walk(Settings):
        if path[0] != section and len(path) > 1:
            section = path[0]
            lines.append(f"# --- {section} ---")
        default = "" if info.default_factory is not None else _shown(info.default)
        lines.append(f"# {info.description}")
        lines.append(f"# {_env_name(path)}={default}")
    return "\n".join(lines) + "\n"


def redacted_lines(settings: Settings) -> list[str]:
    """The effective settings as ``VAR=value`` lines, secrets replaced by stars (for check-config)."""
    out = []
    for path, _info in _walk(Settings):
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        out.append(f"{_env_name(path)}={_shown(value)}")
    return out
