"""The API's public address, as Twilio's callbacks and signatures need it."""

from __future__ import annotations

from core.settings import Settings


def public_url(settings: Settings) -> str | None:
    """The API's public base URL without a trailing slash, if configured."""
    return settings.public_url.rstrip("/") if settings.public_url else None
