"""Missed readings: when to remind the patient and when to tell the nurses. Pure.

A patient's expected schedule is the `patients.schedule` document:

* spot checks at set local times: `{"kind": "spot", "times": ["08:00", "14:00", "20:00"],
  "grace_min": 60}` — a reading from `early_min` (default: the grace) before a slot time
  counts for it; `grace_min` after it without one, the patient gets a reminder; `alert_after_min`
  (default 60) after the reminder, the nurses get an amber `missed_reading` alert.
* a continuous stream: `{"kind": "continuous", "max_gap_min": 30}` — no reading for
  `max_gap_min`: a reminder (put the oximeter back on); `alert_after_min` later: an alert.

The alerting worker calls `due_checks` on a timer for each active patient with the time of
their newest reading, acts on what it returns at most once per (patient, slot, action) — the
`slot_at` of each item is the key — and sleeps until `next_check_at`. Local times follow the
patient's zone across daylight-saving changes (Europe/Oslo by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alerting.rules import Decision

REMIND = "remind_patient"
ALERT = "alert_nurses"

# Defaults (ours): the `patients.schedule` default carries grace_min 60.
GRACE_MIN = 60
ALERT_AFTER_MIN = 60
MAX_GAP_MIN = 30
# Look back at most this far for an unanswered slot: older ones were handled (or are moot).
LOOKBACK = timedelta(hours=24)


class ScheduleError(ValueError):
    """The schedule document cannot be understood; the message names the field."""


@dataclass(frozen=True, slots=True)
class MissedReading:
    """Something to do about a reading that did not come."""

    action: str  # "remind_patient" or "alert_nurses"
    slot_at: datetime  # the expected reading (spot) or the start of the gap (stream), UTC
    due_at: datetime  # when the action became due, UTC
    reason: str

    def decision(self, patient_id: int) -> Decision:
        """The nurses' alert (amber `missed_reading`) for an `alert_nurses` item."""
        minutes = (self.due_at - self.slot_at).total_seconds() / 60
        return Decision(
            patient_id, "missed_reading", "amber", round(minutes), self.due_at, self.reason
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: str
    times: tuple[time, ...]
    grace: timedelta
    early: timedelta
    alert_after: timedelta
    max_gap: timedelta


def parse_schedule(schedule: Mapping[str, Any]) -> _Plan:
    kind = schedule.get("kind")
    alert_after = timedelta(minutes=_minutes(schedule, "alert_after_min", ALERT_AFTER_MIN))
    if kind == "continuous":
        gap = timedelta(minutes=_minutes(schedule, "max_gap_min", MAX_GAP_MIN))
        return _Plan("continuous", (), gap, gap, alert_after, gap)
    if kind != "spot":
        raise ScheduleError(f"schedule.kind must be 'spot' or 'continuous', not {kind!r}")
    raw = schedule.get("times") or []
    times = []
    for item in raw:
        try:
            times.append(time.fromisoformat(str(item)))
        except ValueError as exc:
            raise ScheduleError(f"schedule.times: {item!r} is not a time like 08:00") from exc
    if not times:
        raise ScheduleError("schedule.times must name at least one time of day, like 08:00")
    grace = timedelta(minutes=_minutes(schedule, "grace_min", GRACE_MIN))
    early = timedelta(minutes=_minutes(schedule, "early_min", grace.total_seconds() / 60))
    return _Plan("spot", tuple(sorted(times)), grace, early, alert_after, timedelta(0))


def _minutes(schedule: Mapping[str, Any], key: str, default: float) -> float:
    value = schedule.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ScheduleError(f"schedule.{key} must be a number of minutes, not {value!r}")
    return float(value)


def _slots(plan: _Plan, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """The slot instants (UTC) in [start, end], in order."""
    out = []
    day: date = start.astimezone(tz).date() - timedelta(days=1)
    last: date = end.astimezone(tz).date()
    while day <= last:
        for t in plan.times:
            at = datetime.combine(day, t, tzinfo=tz).astimezone(UTC)
            if start <= at <= end:
                out.append(at)
        day += timedelta(days=1)
    return out


def due_checks(
    schedule: Mapping[str, Any],
    last_reading_at: datetime | None,
    now: datetime,
    tz: str | ZoneInfo = "Europe/Oslo",
    enrolled_at: datetime | None = None,
) -> list[MissedReading]:
    """What is due now about the most recent expected reading that did not come.

    Spot checks: the latest slot whose grace has passed, if no reading came from `early`
    before it; a reminder once the grace has passed, an alert `alert_after` later. Streams: a
    reminder once the gap reaches `max_gap`, an alert `alert_after` later. Slots before
    `enrolled_at` (or, with no reading at all and no enrolment time, everything) are not missed.
    """
    plan = parse_schedule(schedule)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    if plan.kind == "continuous":
        since = last_reading_at or enrolled_at
        if since is None:
            return []
        remind_at = since + plan.max_gap
        return _actions(
            since,
            remind_at,
            now,
            plan,
            f"no reading for {_words(now - since)} from a continuous oximeter (expected at least "
            f"every {_words(plan.max_gap)})",
        )
    lo = max(now - LOOKBACK - plan.grace, enrolled_at or now - LOOKBACK - plan.grace)
    slots = _slots(plan, lo, now - plan.grace, zone)
    if not slots:
        return []
    slot = slots[-1]
    if last_reading_at is None and enrolled_at is None:
        return []
    if last_reading_at is not None and last_reading_at >= slot - plan.early:
        return []
    local = slot.astimezone(zone).strftime("%H:%M")
    return _actions(
        slot,
        slot + plan.grace,
        now,
        plan,
        f"no reading for the {local} spot check ({_words(now - slot)} ago)",
    )


def _actions(
    slot: datetime, remind_at: datetime, now: datetime, plan: _Plan, what: str
) -> list[MissedReading]:
    out = []
    if now >= remind_at:
        out.append(MissedReading(REMIND, slot, remind_at, f"{what}: remind the patient"))
    alert_at = remind_at + plan.alert_after
    if now >= alert_at:
        out.append(
            MissedReading(
                ALERT, slot, alert_at, f"{what}, still none after a reminder: call the patient"
            )
        )
    return out


def next_check_at(
    schedule: Mapping[str, Any],
    last_reading_at: datetime | None,
    now: datetime,
    tz: str | ZoneInfo = "Europe/Oslo",
) -> datetime:
    """When `due_checks` may next return something new for this patient (sleep until then)."""
    plan = parse_schedule(schedule)
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    if plan.kind == "continuous":
        since = last_reading_at or now
        for at in (since + plan.max_gap, since + plan.max_gap + plan.alert_after):
            if at > now:
                return at
        return now + plan.max_gap
    candidates = []
    for slot in _slots(plan, now - plan.grace - plan.alert_after, now + timedelta(days=2), zone):
        for at in (slot + plan.grace, slot + plan.grace + plan.alert_after):
            if at > now:
                candidates.append(at)
    return min(candidates)


def _words(d: timedelta) -> str:
    minutes = int(d.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"
