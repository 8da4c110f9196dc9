"""The one clock every service takes "now" from (DESIGN.md, "Time")."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    """Platform time: `now = origin + speed * (wall - origin)`, the same in every process.

    With no origin it is plain wall-clock UTC. With speed 60 an hour of schedules and timers
    passes in a wall minute, and every process configured with the same origin and speed agrees
    on the instant.
    """

    def __init__(self, origin: datetime | None = None, speed: float = 1.0) -> None:
        if origin is not None and origin.tzinfo is None:
            raise ValueError("clock origin must be timezone-aware")
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.origin = origin.astimezone(UTC) if origin else None
        self.speed = speed

    @classmethod
    def from_settings(cls, settings: object) -> Clock:
        return cls(getattr(settings, "clock_origin", None), getattr(settings, "clock_speed", 1.0))

    def now(self) -> datetime:
        return self.at_wall(time.time())

    def at_wall(self, wall_s: float) -> datetime:
        """Platform time at the wall-clock instant `wall_s` (Unix seconds)."""
        wall = datetime.fromtimestamp(wall_s, UTC)
        if self.origin is None:
            return wall
        return self.origin + (wall - self.origin) * self.speed

    def to_wall_s(self, instant: datetime) -> float:
        """The wall-clock Unix time at which platform time reaches `instant`."""
        if self.origin is None:
            return instant.timestamp()
        return (self.origin + (instant - self.origin) / self.speed).timestamp()

    def wall_duration_s(self, platform: timedelta) -> float:
        """How many wall seconds a platform duration takes."""
        return platform.total_seconds() / self.speed

    def sleep(self, platform: timedelta) -> None:
        time.sleep(max(0.0, self.wall_duration_s(platform)))
