"""The one platform clock: wall time by default, simulated time when an origin is set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.clock import Clock
from core.settings import Settings

ORIGIN = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
ORIGIN_S = ORIGIN.timestamp()


def test_clock_without_origin_is_wall_clock_utc() -> None:
    before = datetime.now(UTC)
    now = Clock().now()
    after = datetime.now(UTC)
    assert before <= now <= after
    assert now.utcoffset() == timedelta(0)


def test_clock_without_origin_maps_a_wall_instant_to_itself() -> None:
    clock = Clock()
    assert clock.at_wall(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert clock.at_wall(ORIGIN_S + 90) == ORIGIN + timedelta(seconds=90)
    assert clock.to_wall_s(ORIGIN) == ORIGIN_S


def test_at_speed_60_one_wall_second_is_one_platform_minute() -> None:
    clock = Clock(origin=ORIGIN, speed=60)
    assert clock.at_wall(ORIGIN_S) == ORIGIN
    assert clock.at_wall(ORIGIN_S + 1) == ORIGIN + timedelta(minutes=1)
    assert clock.at_wall(ORIGIN_S + 60) == ORIGIN + timedelta(hours=1)
    assert clock.at_wall(ORIGIN_S + 1440) == ORIGIN + timedelta(days=1)


def test_at_speed_1_with_an_origin_platform_time_is_wall_time() -> None:
    clock = Clock(origin=ORIGIN, speed=1)
    assert clock.at_wall(ORIGIN_S + 3600) == ORIGIN + timedelta(hours=1)


def test_two_clocks_with_the_same_origin_and_speed_agree() -> None:
    # Every process computes the same instant from the same wall time (DESIGN.md, "Time").
    wall_s = ORIGIN_S + 12.5
    assert Clock(ORIGIN, 60).at_wall(wall_s) == Clock(ORIGIN, 60).at_wall(wall_s)
    assert Clock(ORIGIN, 60).at_wall(wall_s) == ORIGIN + timedelta(seconds=750)


def test_simulated_time_is_utc_whatever_offset_the_origin_was_given_in() -> None:
    oslo_winter = timezone(timedelta(hours=1))
    clock = Clock(origin=datetime(2026, 11, 24, 9, 0, tzinfo=oslo_winter), speed=60)
    assert clock.origin == ORIGIN
    platform = clock.at_wall(ORIGIN_S + 2)
    assert platform == ORIGIN + timedelta(minutes=2)
    assert platform.utcoffset() == timedelta(0)


@pytest.mark.parametrize("minutes", [0, 1, 7, 60, 24 * 60, -30])
def test_to_wall_s_is_the_inverse_of_at_wall(minutes: int) -> None:
    clock = Clock(origin=ORIGIN, speed=60)
    instant = ORIGIN + timedelta(minutes=minutes)
    wall_s = clock.to_wall_s(instant)
    assert wall_s == pytest.approx(ORIGIN_S + minutes, abs=1e-6)
    assert clock.at_wall(wall_s) == instant


def test_wall_duration_of_a_platform_hour_at_speed_60_is_a_minute() -> None:
    assert Clock(ORIGIN, 60).wall_duration_s(timedelta(hours=1)) == 60
    assert Clock().wall_duration_s(timedelta(hours=1)) == 3600


def test_naive_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Clock(origin=datetime(2026, 11, 24, 8, 0), speed=60)


@pytest.mark.parametrize("speed", [0, -1])
def test_speed_that_is_not_positive_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Clock(origin=ORIGIN, speed=speed)


# --- configuration --------------------------------------------------------------------------


def test_settings_put_the_platform_on_simulated_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXIMON_CLOCK_ORIGIN", "2026-11-24T09:00:00+01:00")
    monkeypatch.setenv("OXIMON_CLOCK_SPEED", "60")
    settings = Settings()
    assert settings.clock_origin == ORIGIN
    assert settings.clock_speed == 60
    clock = Clock.from_settings(settings)
    assert clock.at_wall(ORIGIN_S + 1) == ORIGIN + timedelta(minutes=1)


def test_settings_without_clock_variables_give_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OXIMON_CLOCK_ORIGIN", raising=False)
    monkeypatch.delenv("OXIMON_CLOCK_SPEED", raising=False)
    settings = Settings()
    assert (settings.clock_origin, settings.clock_speed) == (None, 1.0)
    clock = Clock.from_settings(settings)
    assert clock.origin is None
    assert clock.at_wall(ORIGIN_S) == ORIGIN


def test_settings_refuse_a_naive_clock_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXIMON_CLOCK_ORIGIN", "2026-11-24T08:00:00")
    with pytest.raises(ValidationError, match="OXIMON_CLOCK_ORIGIN needs a UTC offset"):
        Settings()


@pytest.mark.parametrize("speed", ["0", "-60", "fast"])
def test_settings_refuse_a_clock_speed_that_is_not_a_positive_number(
    monkeypatch: pytest.MonkeyPatch, speed: str
) -> None:
    monkeypatch.setenv("OXIMON_CLOCK_SPEED", speed)
    with pytest.raises(ValidationError, match="clock_speed"):
        Settings()
