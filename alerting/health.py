"""Device health alerts: offline, low battery, repeated bad-quality readings. Pure; never red.

A device problem is a task for a nurse (call the patient, swap the oximeter), not a page: every
decision here is amber. The alerting worker calls `device_offline` and `low_battery` from its
timer with the `devices` row; the engine calls `bad_quality` as readings arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from alerting.rules import Decision
from devices.health import LOW_BATTERY_PCT, OFFLINE_AFTER

# A continuous oximeter that has said "offline" (its last will) or been silent this long is
# worth a call; battery at or below LOW_BATTERY_PCT likewise (ours). One definition, in the
# device contract, shared with the fleet view. Spot-check devices sleep between checks: missed
# readings cover them.
OFFLINE_GRACE = OFFLINE_AFTER

_FLAG_WORDS = {
    "motion": "movement",
    "no_finger": "no finger",
    "low_perfusion": "low perfusion",
    "low_pi": "very low perfusion index",
    "implausible": "impossible values",
}


def device_offline(
    patient_id: int,
    device_id: str,
    online: bool | None,
    last_seen_at: datetime | None,
    now: datetime,
    continuous: bool,
    grace: timedelta = OFFLINE_GRACE,
) -> Decision | None:
    """Amber when a continuous device is offline (last will) or silent for longer than `grace`."""
    if not continuous or last_seen_at is None:
        return None
    silent = now - last_seen_at
    if silent < grace:
        return None
    said = "reported itself offline" if online is False else "has sent nothing"
    minutes = int(silent.total_seconds() // 60)
    return Decision(
        patient_id,
        "device_offline",
        "amber",
        minutes,
        now,
        f"Oximeter {device_id} {said} for {_duration(minutes)}: "
        "call the patient to check the device and its connection",
    )


def low_battery(
    patient_id: int,
    device_id: str,
    battery_pct: int | None,
    at: datetime,
    threshold_pct: int = LOW_BATTERY_PCT,
) -> Decision | None:
    """Amber when the device's last reported battery is at or below `threshold_pct`."""
    if battery_pct is None or battery_pct > threshold_pct:
        return None
    return Decision(
        patient_id,
        "low_battery",
        "amber",
        battery_pct,
        at,
        f"Oximeter {device_id} battery at {battery_pct}%: ask the patient to charge or replace it",
    )


def bad_quality(
    patient_id: int,
    poor_n: int,
    total_n: int,
    at: datetime,
    flags: Mapping[str, int] | None = None,
    *,
    min_share: float,
    min_readings: int,
    span: str,
) -> Decision | None:
    """Amber when at least `min_share` of at least `min_readings` recent readings were flagged.

    `span` names the readings for the nurse ("the last 3 spot checks", "the hour to 14:30").
    """
    if total_n < min_readings or total_n == 0 or poor_n / total_n < min_share:
        return None
    detail = ""
    if flags:
        parts = [f"{_FLAG_WORDS.get(k, k)} ×{n}" for k, n in sorted(flags.items()) if n]
        detail = f" ({', '.join(parts)})"
    return Decision(
        patient_id,
        "bad_quality",
        "amber",
        round(100.0 * poor_n / total_n, 1),
        at,
        f"{poor_n} of {total_n} readings in {span} were unreliable{detail}: check how the "
        "oximeter is worn (warm hands, finger still, nail polish) or replace it",
    )


def _duration(minutes: int) -> str:
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
