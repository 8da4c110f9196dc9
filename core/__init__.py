"""Shared plumbing: settings, the one clock, the database pool, migrations, logging."""

from core.clock import Clock
from core.settings import Settings, get_settings

__all__ = ["Clock", "Settings", "get_settings"]
