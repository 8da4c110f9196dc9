"""Device health: the problems a fleet view shows for one oximeter. Pure; no database, no clock.

`devices.fleet` gathers one `DeviceSnapshot` per device (presence from the retained
status topic and the readings the ingest worker stored); `problems` turns it into the list a
nurse or a technician acts on. Nothing here is clinical and nothing is ever red: a device
problem means "call the patient, charge or swap the oximeter", not "the patient is unwell".

The thresholds are ours, chosen to agree with the alert engine's device-health rules
(alerting/health.py and alerting/profile.py): offline after 30 min for a continuous oximeter,
battery at or below 20 %, at least half of at least 3 spot checks (or 30 stream readings)
flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

# Problem kinds, most urgent first: the fleet view sorts by this order.
CREDENTIALS_REVOKED = "credentials_revoked"
OFFLINE = "offline"
NEVER_CONNECTED = "never_connected"
MOSTLY_BAD_READINGS = "mostly_bad_readings"
LOW_BATTERY = "low_battery"
CLOCK_SKEW = "clock_skew"
FEW_READINGS = "few_readings"
PATIENT_DISCHARGED = "patient_discharged"
PROBLEM_ORDER = (
    CREDENTIALS_REVOKED,
    OFFLINE,
    NEVER_CONNECTED,
    MOSTLY_BAD_READINGS,
    LOW_BATTERY,
    CLOCK_SKEW,
    FEW_READINGS,
    PATIENT_DISCHARGED,
)
# The alert kinds the alert engine uses for the same conditions (amber, never red).
ALERT_KINDS = {
    OFFLINE: "device_offline",
    LOW_BATTERY: "low_battery",
    MOSTLY_BAD_READINGS: "bad_quality",
}

# Defaults (ours). Each is a parameter of `Limits`, and so of the fleet API.
OFFLINE_AFTER = timedelta(minutes=30)  # continuous oximeter silent this long
LOW_BATTERY_PCT = 20  # about a day of continuous use left on common finger oximeters
BAD_SHARE = 0.5  # at least half the readings flagged (motion, no finger, low perfusion) ...
BAD_MIN_SPOT = 3  # ... of at least 3 spot checks ...
BAD_MIN_STREAM = 30  # ... or 30 stream readings, in the window
CLOCK_SKEW_MAX = timedelta(minutes=2)  # device clock this far from ours: fix its time source
WINDOW = timedelta(hours=24)  # readings counted over this window
# A spot schedule with no times: the device may sleep this long between checks.
SPOT_DEFAULT_GAP = timedelta(hours=24)
SPOT_DEFAULT_GRACE = timedelta(minutes=60)


@dataclass(frozen=True, slots=True)
class Limits:
    offline_after: timedelta = OFFLINE_AFTER
    low_battery_pct: int = LOW_BATTERY_PCT
    bad_share: float = BAD_SHARE
    bad_min_spot: int = BAD_MIN_SPOT
    bad_min_stream: int = BAD_MIN_STREAM
    clock_skew_max: timedelta = CLOCK_SKEW_MAX
    window: timedelta = WINDOW


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    detail: str  # a sentence a nurse can act on; names the device, never the patient


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """What the platform knows of one device, as `devices.fleet` gathers it (queries.FLEET)."""

    device_id: str
    status: str  # active / retired
    patient_id: int | None
    patient_status: str | None  # active / discharged
    schedule: Mapping[str, Any] | None  # patients.schedule
    assigned_at: datetime | None
    credentials_revoked_at: datetime | None
    online: bool | None
    last_seen_at: datetime | None
    battery_pct: int | None
    readings_n: int  # measured within the window
    bad_n: int  # of which quality is not "ok"
    clock_skew_s: float | None  # device minus platform; negative: device behind
    future_refused_n: int = 0  # readings refused as "in the future" within the window


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the patient's schedule says of a device: how long it may stay silent, and how many
    readings a day to expect (None for a continuous stream)."""

    continuous: bool
    silent_allowance: timedelta
    per_day: int | None


def _hhmm(value: object) -> time | None:
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except (ValueError, TypeError):
        return None


def expectation(schedule: Mapping[str, Any] | None, limits: Limits = Limits()) -> Expectation:
    """A continuous oximeter may be silent for `offline_after`; a spot-check one sleeps between
    checks, so it may be silent for the longest gap between two scheduled times plus the grace
    period (with 08:00, 14:00, 20:00 and 60 min grace: 12 h + 1 h)."""
    schedule = schedule or {}
    if schedule.get("kind") == "continuous":
        return Expectation(True, limits.offline_after, None)
    grace = SPOT_DEFAULT_GRACE
    if isinstance(schedule.get("grace_min"), int | float):
        grace = timedelta(minutes=float(schedule["grace_min"]))
    times = sorted({t for t in map(_hhmm, schedule.get("times") or []) if t is not None})
    if not times:
        return Expectation(False, max(limits.offline_after, SPOT_DEFAULT_GAP + grace), 0)
    minutes = [t.hour * 60 + t.minute for t in times]
    gaps = [b - a for a, b in zip(minutes, minutes[1:], strict=False)]
    gaps.append(24 * 60 - minutes[-1] + minutes[0])  # overnight, back to the first check
    allowance = timedelta(minutes=max(gaps)) + grace
    return Expectation(False, max(limits.offline_after, allowance), len(times))


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} days"


def problems(device: DeviceSnapshot, now: datetime, limits: Limits = Limits()) -> list[Problem]:
    """Every problem of one device, most urgent first. A retired device or one on the shelf
    (no patient) has none: nobody depends on it."""
    if device.status != "active" or device.patient_id is None:
        return []
    d = device.device_id
    found: list[Problem] = []
    if device.credentials_revoked_at is not None:
        found.append(
            Problem(
                CREDENTIALS_REVOKED,
                f"Oximeter {d} has no broker credentials (revoked) and cannot send readings:"
                " issue new ones or retire it",
            )
        )
    expect = expectation(device.schedule, limits)
    if device.last_seen_at is not None:
        silent = now - device.last_seen_at
        if silent > expect.silent_allowance:
            said = " and reported itself offline" if device.online is False else ""
            found.append(
                Problem(
                    OFFLINE,
                    f"Oximeter {d} has sent nothing for {_ago(silent)}{said}:"
                    " call the patient to check the device and its connection",
                )
            )
    elif device.assigned_at is not None and now - device.assigned_at > expect.silent_allowance:
        found.append(
            Problem(
                NEVER_CONNECTED,
                f"Oximeter {d} has sent nothing since it was given to the patient"
                f" {_ago(now - device.assigned_at)} ago: check it was set up and switched on",
            )
        )
    minimum = limits.bad_min_stream if expect.continuous else limits.bad_min_spot
    if device.readings_n >= minimum and device.bad_n >= limits.bad_share * device.readings_n:
        found.append(
            Problem(
                MOSTLY_BAD_READINGS,
                f"{device.bad_n} of {device.readings_n} readings from oximeter {d} were"
                " unreliable (movement, no finger or low perfusion): check how it is worn,"
                " or replace it",
            )
        )
    if device.battery_pct is not None and device.battery_pct <= limits.low_battery_pct:
        found.append(
            Problem(
                LOW_BATTERY,
                f"Oximeter {d} battery at {device.battery_pct}%: ask the patient to charge or"
                " replace it",
            )
        )
    skew = device.clock_skew_s
    if device.future_refused_n:
        found.append(
            Problem(
                CLOCK_SKEW,
                f"Oximeter {d} sent {device.future_refused_n} readings dated in the future"
                " (its clock runs ahead) and they were refused: set its clock",
            )
        )
    elif skew is not None and abs(skew) > limits.clock_skew_max.total_seconds():
        way = "ahead" if skew > 0 else "behind"
        found.append(
            Problem(
                CLOCK_SKEW,
                f"Oximeter {d} clock is about {abs(round(skew))} s {way} of ours: readings carry"
                " wrong times until its clock is set",
            )
        )
    if (
        expect.per_day
        and device.assigned_at is not None
        and now - device.assigned_at >= limits.window
    ):
        expected = int(expect.per_day * limits.window / timedelta(days=1))
        if device.readings_n < expected:
            found.append(
                Problem(
                    FEW_READINGS,
                    f"Oximeter {d} sent {device.readings_n} of the {expected} readings the"
                    f" schedule expects in {_ago(limits.window)}",
                )
            )
    if device.patient_status == "discharged":
        found.append(
            Problem(
                PATIENT_DISCHARGED,
                f"Oximeter {d} is still assigned to a discharged patient: collect it and move"
                " it back to stock",
            )
        )
    return found


def urgency(found: list[Problem]) -> tuple[int, int]:
    """Sort key, most urgent first: the most urgent problem's rank, then how many there are.
    A device with no problem sorts last."""
    if not found:
        return (len(PROBLEM_ORDER), 0)
    return (min(PROBLEM_ORDER.index(p.kind) for p in found), -len(found))
