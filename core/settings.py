"""Typed settings, read once from `OXIMON_*` environment variables."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

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
    mqtt_share_group: str = "oximon"
    mqtt_client_id: str = "oximon-ingest"

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

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: SecretStr = SecretStr("")
    token_ttl_s: int = 8 * 3600

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None

    timezone: str = "Europe/Oslo"
    log_level: str = "INFO"

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
