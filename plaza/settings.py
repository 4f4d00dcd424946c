"""One settings class for every service (env prefix ``PLAZA_``), passed down, never global.

Timings (keepalive, will delay, session expiry, backoff) are settings so that tests set them
small instead of patching constants. Bad values fail at start-up, not at first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from plaza.floor import MAX_POLICY_LENGTH, WalkinPolicies, parse_walkin_policy
from plaza.topics import valid_id

#: client ids of services (bridge, api, observer) start with this; machine ids may not
SERVICE_ID_PREFIX = "plaza-"
#: the bridge's intake connection: its account and client id are the bridge's plus this
INTAKE_SUFFIX = "-intake"
_PLACEHOLDERS = {"changethis", "changeme", "password", "secret"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLAZA_", extra="ignore", frozen=True)

    data_dir: Path = Path("var")
    topic_root: str = "plaza"

    # broker
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    ws_port: int = Field(default=9001, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    #: connect to the broker over TLS 1.3, verifying it against tls_ca (or the system's CAs)
    mqtt_tls: bool = False
    #: the CA the venue's clients verify the broker with (`plaza up --tls`: DIR/tls/ca.crt)
    tls_ca: Path | None = None

    # http api
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    #: the api serves HTTPS itself (TLS 1.3 only) with this certificate and key
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: browsers reach the venue over https/wss (the api's own TLS or a proxy in front):
    #: HSTS is sent and the default WebSocket URL is wss://
    public_tls: bool = False

    # identity (api): JWT signing key (HS256), token and broker-credential lifetimes
    jwt_secret: SecretStr | None = None
    jwt_ttl: int = Field(default=900, ge=5, le=86400)
    #: a login session ends this long after the login, however often its token is refreshed
    session_max_age: int = Field(default=86400, ge=1, le=30 * 86400)
    mqtt_credential_ttl: int = Field(default=3600, ge=5, le=86400)
    #: failed logins allowed per known device (device cookie), or per name from unknown
    #: clients (and ten times that per address): a token bucket; see api/security.py
    login_per_minute: float = Field(default=10, gt=0)
    login_burst: int = Field(default=5, ge=1)
    #: how long a device cookie (this client logged in to that account before) lasts
    device_cookie_ttl: int = Field(default=180 * 86400, ge=60)
    #: live browser sessions (broker accounts) per user; a new one retires the least
    #: recently used, so a user never holds more
    max_browser_sessions: int = Field(default=8, ge=1, le=100)
    #: POST /auth/mqtt per user: a token bucket (every tab asks before each reconnect)
    mqtt_credentials_per_minute: float = Field(default=20, gt=0)
    mqtt_credentials_burst: int = Field(default=10, ge=1)
    #: PUT /floor for the whole venue: a token bucket (each saved floor is announced to every
    #: open screen; the zone editor saves once per drag, or 400 ms after the last key)
    floor_writes_per_minute: float = Field(default=120, gt=0)
    floor_writes_burst: int = Field(default=20, ge=1)
    #: expired browser accounts deleted per dynamic-security command list, and the pause
    #: between lists (Mosquitto 2.0.11 rewrites its whole file per command, in its one thread)
    mqtt_expiry_batch: int = Field(default=20, ge=1, le=1000)
    mqtt_expiry_pause: float = Field(default=0.2, ge=0)
    #: HTTP request bodies above this are refused (413) before anything parses them; the
    #: largest legitimate one, a notice at every field's maximum with JSON-escaped Korean, is
    #: about 25 KiB
    max_body_bytes: int = Field(default=32 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: how long a REST Idempotency-Key remembers its request: as long as the bridge keeps its
    #: command log (7 days), so a reused key is refused for as long as a retry is answered
    idempotency_ttl: float = Field(default=7 * 86400, gt=0)
    #: how long the api waits for the bridge's reply to a request (seconds)
    bridge_timeout: float = Field(default=5.0, gt=0)
    #: the MQTT-over-WebSocket URL handed to browsers; empty: ws://{mqtt_host}:{ws_port}/
    public_ws_url: str = ""
    #: the bridge's Prometheus endpoint (http://{http_host}:{port}/metrics); 0 turns it off
    bridge_metrics_port: int = Field(default=9102, ge=0, le=65535)

    # logs (see plaza/logs.py): text or one JSON object per line; repeated warnings of one
    # kind and sender: the first log_sample_first per log_sample_interval seconds, then a count
    log_format: Literal["text", "json"] = "text"
    log_sample_first: int = Field(default=5, ge=1)
    log_sample_interval: float = Field(default=60, gt=0)
    #: strings, bytes and exceptions in a log line are cut to this many characters
    log_excerpt_chars: int = Field(default=500, ge=40)

    # database: empty means SQLite in WAL mode under data_dir
    database_url: str = ""

    # presence and sessions (seconds); see docs/operations.md for the trade-offs
    device_keepalive: int = Field(default=10, ge=1, le=65535)
    will_delay: int = Field(default=0, ge=0, le=3600)
    bridge_session_expiry: int = Field(default=3600, ge=0)
    #: the services' (bridge, api) MQTT keepalive, and how long one of their MQTT operations
    #: (connect, subscribe, a QoS 1 publish, a disconnect) may take before it fails
    service_keepalive: int = Field(default=30, ge=1, le=65535)
    service_timeout: float = Field(default=10.0, gt=0)
    #: QoS 1 messages a service (bridge, api) lets await their PUBACK at once; at most the
    #: broker's Receive Maximum (Mosquitto: max_inflight_messages, 100 in broker-config/)
    mqtt_max_inflight: int = Field(default=100, ge=1, le=65_535)
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=15.0, gt=0)
    max_payload_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    #: MQTT 5 correlation data a request may carry (echoed on its reply); our clients send
    #: 16 bytes (the api) or their request id (the web client, at most 64)
    max_correlation_bytes: int = Field(default=256, ge=16, le=4096)
    #: the broker's max_packet_size (broker-config/mosquitto.conf): the bridge sends nothing
    #: larger (nor larger than the broker's CONNACK allows)
    mqtt_max_packet_size: int = Field(default=65_536, ge=1024, le=268_435_460)

    # reservations (seconds unless said otherwise); see docs/protocol.md
    reminder_lead: float = Field(default=600, ge=0)
    no_show_grace: float = Field(default=600, ge=0)
    check_in_early: float = Field(default=900, ge=0)
    max_slot_minutes: int = Field(default=240, ge=1)
    min_slot_minutes: float = Field(default=10, gt=0)
    max_active_per_player: int = Field(default=3, ge=1)
    max_days_ahead: int = Field(default=14, ge=1)
    #: "HH:MM-HH:MM" in venue_timezone; equal times mean open around the clock
    opening_hours: str = Field(default="00:00-00:00", pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    venue_timezone: str = "Asia/Seoul"
    #: booking (issue 17): a party books at most this many machines in one request
    max_party_seats: int = Field(default=8, ge=1, le=32)
    #: a waitlist offer holds its machine this long (seconds)
    waitlist_hold: float = Field(default=180, gt=0)
    #: live entries per line (machine kind), and lines one player may stand in at once
    waitlist_max_length: int = Field(default=50, ge=1, le=1000)
    waitlist_max_per_player: int = Field(default=2, ge=1, le=10)
    #: calling staff (issue 18): calls one player may make in any hour (one open at a time)
    help_per_hour: int = Field(default=6, ge=1, le=60)
    #: this many no-shows within no_show_window (seconds) suspend a player's self-service
    #: booking for no_show_suspension (seconds)
    no_show_strikes: int = Field(default=3, ge=1)
    no_show_window: float = Field(default=30 * 86400, gt=0)
    no_show_suspension: float = Field(default=7 * 86400, gt=0)
    #: per-player command budget: a token bucket of `rate_burst` refilled at rate_per_minute
    rate_per_minute: float = Field(default=60, gt=0)
    rate_burst: int = Field(default=20, ge=1)
    #: flood budget, charged for every message a player sends on the bridge's intake
    #: (requests and read receipts, malformed or not): a token bucket of flood_burst refilled
    #: at flood_rate per second. Past it the message is dropped unread and unanswered
    #: (silence); flood_disable_after drops in a row disable the player in the broker for
    #: cool_off seconds (0: never disable). The api (a trusted service) is not charged.
    flood_burst: int = Field(default=50, ge=1)
    flood_rate: float = Field(default=5.0, gt=0)
    flood_disable_after: int = Field(default=50, ge=0)
    cool_off: float = Field(default=300, gt=0)
    timer_tick: float = Field(default=1.0, gt=0)
    #: the venue floor (issue 18, plaza/floor.py): an approved slot's machine is locked this
    #: long (seconds) before it starts; a checked-in slot's player and machine are warned this
    #: long before it ends; the warning offers an extension of at most extension_offer
    #: (seconds, up to the machine's next booking)
    pre_slot_lock: float = Field(default=600, ge=0, le=86400)
    session_end_warning: float = Field(default=600, ge=0, le=86400)
    extension_offer: float = Field(default=3600, gt=0, le=86400)
    #: a default and per-kind overrides: "strict", "soft", "strict,console=soft"
    walkin_policy: str = Field(default="strict", max_length=MAX_POLICY_LENGTH)
    #: several bridges: a distinct client id each, and an MQTT 5 shared-subscription group
    #: for requests (PostgreSQL only: SQL, not one actor, then decides between bridges)
    bridge_id: str = Field(default="plaza-bridge", min_length=1, max_length=64)
    #: the bridge's second connection (requests only, see docs/architecture.md) logs in as
    #: this account, bound to ``{bridge_id}-intake``, with the bridge's password; empty:
    #: ``{mqtt_username}-intake``
    mqtt_intake_username: str = ""
    #: the api's MQTT client id; its broker account is bound to it (one api process per id)
    api_id: str = Field(default="plaza-api", min_length=1, max_length=64)
    shared_group: str = ""
    #: keyed routing (PostgreSQL, several bridges; docs/architecture.md "Several bridges"):
    #: machines in this many slots, each owned by one bridge through an advisory lock; 0: off
    #: (one bridge, or the shared group above). Every bridge then reads every request and
    #: keeps those of slots it does not own for handover_window seconds (at most
    #: handover_max), to replay them when it takes a slot over.
    partitions: int = Field(default=0, ge=0, le=4096)
    #: how often a bridge counts the others and takes or releases slots (and the clock)
    partition_tick: float = Field(default=1.0, gt=0)
    handover_window: float = Field(default=30.0, gt=0)
    handover_max: int = Field(default=100_000, ge=1)
    #: the bridge's retained status (services/bridge/status): a heartbeat this often, and
    #: readers (the api's /readyz) call it stale after this long without one
    bridge_heartbeat: float = Field(default=10, gt=0)
    bridge_stale_after: float = Field(default=30, gt=0)
    commit_batch_max: int = Field(default=256, ge=1)
    #: command-log rows (what answers a retry) are kept this long (seconds; default 7 days:
    #: a web client's tab retries an unconfirmed booking for as long as it stays open)
    command_log_retention: float = Field(default=7 * 86400, gt=0)
    #: machines' status history (the occupancy figures and heatmap read it): 400 days, so a
    #: month can be set beside the same month a year before; each machine's newest change is
    #: kept however old
    status_history_retention: float = Field(default=400 * 86400, ge=86400)
    #: notifications (a player's backlog); numbering goes on after pruning
    notification_retention: float = Field(default=90 * 86400, ge=86400)
    #: staff alerts, acknowledged or not
    alert_retention: float = Field(default=90 * 86400, ge=86400)
    #: sent outbox rows, for inspection after an incident (`plaza check` reads a window of
    #: notifications one hour shorter than this)
    outbox_sent_retention: float = Field(default=86400, ge=2 * 3600)
    #: dead-lettered outbox rows, to find and resend by hand
    dead_letter_retention: float = Field(default=7 * 86400, ge=3600)
    #: how often the bridge deletes what is past its retention (bridge/retention.py)
    prune_interval: float = Field(default=600, gt=0)
    #: `plaza status` asks for attention when the last backup is older than this (a daily
    #: backup, with two hours to spare)
    backup_max_age: float = Field(default=26 * 3600, gt=0)

    # notifications and alerts (seconds); see bridge/notifier.py and docs/protocol.md
    #: low-priority notifications are published in a digest this often
    digest_interval: float = Field(default=60, gt=0)
    #: a reserved machine offline (or faulty) this long pages its player and staff
    outage_grace: float = Field(default=20, ge=0)
    #: ... when its reservation is current or starts within this window
    outage_horizon: float = Field(default=1800, ge=0)
    #: a machine that comes online this many times within flap_window is flapping
    flap_count: int = Field(default=4, ge=2)
    flap_window: float = Field(default=300, gt=0)
    #: the bridge's own degradation alerts: at most one per kind this often
    alert_cooldown: float = Field(default=300, ge=0)
    #: queued commands across actors above this raise a backlog alert
    backlog_alert: int = Field(default=500, ge=1)
    actor_idle_seconds: float = Field(default=30, gt=0)

    # `plaza up`'s supervision and logs (seconds); see docs/operations.md "Supervision"
    #: a crashed or wedged child is restarted after a jittered, doubling delay in this range
    restart_backoff_min: float = Field(default=0.5, gt=0)
    restart_backoff_max: float = Field(default=30.0, gt=0)
    #: a child that ran this long before it died starts again from the shortest delay
    restart_stable_after: float = Field(default=60.0, gt=0)
    #: the bridge's /metrics and the api's /healthz are asked this often, with this timeout;
    #: this many failures in a row (after a first answer, or the start grace) mean wedged
    health_interval: float = Field(default=5.0, gt=0)
    health_timeout: float = Field(default=2.0, gt=0)
    health_failures: int = Field(default=3, ge=1)
    health_start_grace: float = Field(default=60.0, gt=0)
    #: how often the broker's account file is copied to its last-good copy when it changed
    dynsec_snapshot_interval: float = Field(default=1.0, gt=0)
    #: every log `plaza up` writes is rotated at this size, keeping this many older files
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(default=5, ge=1, le=100)

    @field_validator("walkin_policy")
    @classmethod
    def _walkin_policy(cls, value: str) -> str:
        parse_walkin_policy(value)
        return value

    @field_validator("topic_root")
    @classmethod
    def _root_is_one_level(cls, value: str) -> str:
        return valid_id(value, "topic root")

    @field_validator("bridge_id", "api_id")
    @classmethod
    def _service_client_id(cls, value: str) -> str:
        # Broker accounts are bound to their client ids; services live under "plaza-", which
        # no machine id may use, so a machine's account can never claim a service's id.
        valid_id(value, "service client id")
        if not value.startswith(SERVICE_ID_PREFIX):
            raise ValueError(f"a service's client id must start with {SERVICE_ID_PREFIX!r}")
        return value

    @field_validator("mqtt_password")
    @classmethod
    def _no_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().lower() in _PLACEHOLDERS:
            raise ValueError("PLAZA_MQTT_PASSWORD is a placeholder; set a real secret")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in _PLACEHOLDERS or len(secret) < 32:
            raise ValueError("PLAZA_JWT_SECRET must be a real secret of at least 32 characters")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> Settings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("PLAZA_TLS_CERT and PLAZA_TLS_KEY go together")
        if self.restart_backoff_min > self.restart_backoff_max:
            raise ValueError("restart_backoff_min must not exceed restart_backoff_max")
        if self.partitions and (self.shared_group or self.db_url.startswith("sqlite")):
            raise ValueError("PLAZA_PARTITIONS needs PostgreSQL and no PLAZA_SHARED_GROUP")
        if self.bridge_stale_after <= self.bridge_heartbeat:
            raise ValueError("bridge_stale_after must be longer than bridge_heartbeat")
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'plaza.db').resolve()}"

    @property
    def intake_username(self) -> str | None:
        """The broker account of the bridge's intake connection."""
        if self.mqtt_intake_username:
            return self.mqtt_intake_username
        return f"{self.mqtt_username}{INTAKE_SUFFIX}" if self.mqtt_username else None

    @property
    def intake_id(self) -> str:
        """The client id of the bridge's intake connection (its account is bound to it)."""
        return f"{self.bridge_id}{INTAKE_SUFFIX}"

    @property
    def walkin_policies(self) -> WalkinPolicies:
        """PLAZA_WALKIN_POLICY, parsed (validated when the settings were made)."""
        return parse_walkin_policy(self.walkin_policy)

    def mqtt_password_value(self) -> str | None:
        return self.mqtt_password.get_secret_value() if self.mqtt_password else None

    def ws_url(self) -> str:
        scheme = "wss" if self.public_tls else "ws"
        return self.public_ws_url or f"{scheme}://{self.mqtt_host}:{self.ws_port}/"
