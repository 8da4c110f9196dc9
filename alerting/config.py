"""Settings of the alerting service and the SMS webhooks, on top of `core.settings.Settings`.

Kept here, as a subclass, until they move into `core.settings` (which another component owns);
every field reads `OXIMON_*` like the rest, once, at start.
"""

from __future__ import annotations

from pydantic import Field

from core.settings import Settings


class AlertingSettings(Settings):
    # A Twilio-compatible REST endpoint instead of https://api.twilio.com (a local test server,
    # an egress proxy). Unset: Twilio itself.
    twilio_api_url: str | None = None
    # The API's public base URL (https://oximon.example.kommune.no). Twilio posts status
    # callbacks to {public_url}/api/v1/sms/status, and signs inbound webhooks against it.
    # Unset: no status callbacks are asked for, and signatures are checked against the URL the
    # request arrived at.
    public_url: str | None = None
    # Outgoing SMS: attempts before a message counts as failed (and the escalation moves on).
    sms_max_attempts: int = Field(default=5, ge=1, le=20)
    # HTTP timeout of one call to Twilio, seconds.
    twilio_timeout_s: float = Field(default=10.0, gt=0)


def public_url(settings: Settings) -> str | None:
    """`public_url` of settings that carry it (plain `Settings` do not, yet)."""
    value = getattr(settings, "public_url", None)
    return str(value).rstrip("/") if value else None
