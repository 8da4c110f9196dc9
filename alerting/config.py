"""Settings of the alerting service and the SMS webhooks (now all in `core.settings`)."""

from __future__ import annotations

from core.settings import Settings

# The alerting settings are fields of the one Settings class; the name stays for its callers.
AlertingSettings = Settings


def public_url(settings: Settings) -> str | None:
    """The API's public base URL without a trailing slash, if configured."""
    return settings.public_url.rstrip("/") if settings.public_url else None
