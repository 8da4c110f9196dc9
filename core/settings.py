"""Typed settings, read once from `OXIMON_*` environment variables."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from limits import parse as parse_limit
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a service may be configured with. Passed in; never read from os.environ."""

    model_config = SettingsConfigDict(env_prefix="OXIMON_", extra="ignore")

    database_url: str = "postgresql://oximon@127.0.0.1:5432/oximon"
    database_pool_max: int = 8

    # mqtt://user:password@host:port — the service account ingest and the API use.
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # Account allowed to manage broker clients and roles (dynamic-security plugin).
    mqtt_admin_url: str | None = None
    # Empty: one worker with a plain persistent subscription, exactly-once across broker
    # restarts. A name: several workers share the load through `$share/{name}/…` (MQTT 5
    # shared subscription). Mosquitto 2.0 does not restore shared subscriptions after its own
    # restart, so readings published between the restart and the workers' resubscription are
    # lost there; see README "Ingest" for the measured behaviour.
    mqtt_share_group: str = ""
    mqtt_client_id: str = "oximon-ingest"
    # MQTT protocol of the ingest workers. 3 (3.1.1, the default): persistent session, and
    # Mosquitto and EMQX grant `$share/` shared subscriptions to 3.1.1 clients too; paho
    # decodes it at twice the rate (bench: 9.0k vs 4.4k readings/s, same machine and load).
    # 5: MQTT 5 session expiry and properties.
    mqtt_protocol: int = Field(default=3, ge=3, le=5)

    # The platform clock: now = origin + speed * (wall - origin). Unset origin = real time.
    clock_origin: datetime | None = None
    clock_speed: float = Field(default=1.0, gt=0)

    # Ingest batching: flush after this many readings or this long, whichever comes first.
    ingest_batch_max: int = Field(default=2000, ge=1)
    ingest_batch_wait_ms: int = Field(default=5, ge=0)
    # A reading received this long after it was measured is history, not news.
    ingest_late_after_s: int = 600
    # Readings stamped further than this in the future are refused (device clock wrong).
    ingest_max_future_s: int = 300

    # Prometheus endpoint of the worker services (ingest, alerting); the API serves /metrics.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: SecretStr = SecretStr("")
    # Bearer (access) tokens are short-lived; the dashboard renews them with its refresh token,
    # which is stored hashed, rotated on every use and revoked at logout.
    token_ttl_s: int = Field(default=15 * 60, ge=30)
    refresh_token_ttl_s: int = Field(default=12 * 3600, ge=60)
    # Lock-out: this many failed password logins within the window lock the account this long.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_s: int = Field(default=15 * 60, ge=1)
    login_lockout_s: int = Field(default=15 * 60, ge=1)
    # Per client address (`limits` notation: "10/minute", "100 per hour").
    rate_limit_login: str = "10/minute"
    rate_limit_sms_inbound: str = "120/minute"
    # OpenID Connect login (ID-porten, a municipality's identity provider). All three set: the
    # dashboard offers it; users are matched by `users.oidc_subject` or e-mail, never created.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid email profile"

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    # A Twilio-compatible REST endpoint instead of https://api.twilio.com (a local test server,
    # an egress proxy). Unset: Twilio itself.
    twilio_api_url: str | None = None
    # HTTP timeout of one call to Twilio, seconds.
    twilio_timeout_s: float = Field(default=10.0, gt=0)
    # Outgoing SMS: attempts before a message counts as failed (and the escalation moves on).
    sms_max_attempts: int = Field(default=5, ge=1, le=20)
    # The API's public base URL (https://oximon.example.kommune.no). Twilio posts status
    # callbacks to {public_url}/api/v1/sms/status and signs inbound webhooks against it. Unset:
    # no status callbacks are asked for, and signatures are checked against the request's URL.
    public_url: str | None = None

    # The alerting workers' watchdog (missed readings, device health), once a platform minute.
    alerting_watchdog: bool = True
    # A continuous oximeter silent (or offline) this long raises an amber device_offline alert.
    device_offline_after_min: int = Field(default=30, ge=1)
    # A battery at or below this raises an amber low_battery alert.
    device_low_battery_pct: int = Field(default=20, ge=0, le=100)

    # Storage over years (core/storage.py). Raw readings older than this many days are
    # dropped, a whole daily chunk at a time; the hourly summary and alerts stay. Unset: raw
    # readings are kept for ever.
    retention_days: int | None = Field(default=None, ge=7)
    # Timescale licence only: chunks of readings older than this are compressed.
    compress_after_days: int = Field(default=7, ge=1)

    timezone: str = "Europe/Oslo"
    log_level: str = "INFO"

    @field_validator("mqtt_protocol")
    @classmethod
    def _known_protocol(cls, value: int) -> int:
        if value not in (3, 5):
            raise ValueError("OXIMON_MQTT_PROTOCOL must be 5 (MQTT 5) or 3 (MQTT 3.1.1)")
        return value

    @field_validator("rate_limit_login", "rate_limit_sms_inbound")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            parse_limit(value)
        except ValueError as exc:
            raise ValueError(f"a rate limit like '10/minute', not {value!r}") from exc
        return value

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret)

    @field_validator("clock_origin")
    @classmethod
    def _origin_is_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("OXIMON_CLOCK_ORIGIN needs a UTC offset, e.g. 2026-11-24T08:00:00Z")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
