"""Missed readings: the patient is reminded first, the nurses told later; local times follow
Europe/Oslo across daylight-saving changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from alerting.schedule import ALERT, REMIND, ScheduleError, due_checks, next_check_at

OSLO = ZoneInfo("Europe/Oslo")
SPOT = {"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60}
STREAM = {"kind": "continuous", "max_gap_min": 30}


def oslo(day: int, hh: int, mm: int = 0, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hh, mm, tzinfo=OSLO)


def actions(schedule: dict[str, object], last: datetime | None, now: datetime) -> list[str]:
    return [a.action for a in due_checks(schedule, last, now, "Europe/Oslo")]


def test_a_check_taken_within_the_grace_period_is_not_missed() -> None:
    assert actions(SPOT, oslo(24, 14, 50), oslo(24, 15, 30)) == []


def test_a_missed_check_reminds_the_patient_after_the_grace_and_alerts_an_hour_later() -> None:
    last = oslo(24, 8, 5)
    assert actions(SPOT, last, oslo(24, 14, 59)) == []
    assert actions(SPOT, last, oslo(24, 15, 0)) == [REMIND]
    assert actions(SPOT, last, oslo(24, 16, 0)) == [REMIND, ALERT]


def test_the_nurses_alert_names_the_slot_and_is_an_amber_missed_reading() -> None:
    [_, alert] = due_checks(SPOT, oslo(24, 8, 5), oslo(24, 16, 0), "Europe/Oslo")
    assert alert.slot_at == oslo(24, 14) and alert.due_at == oslo(24, 16)
    d = alert.decision(patient_id=7)
    assert (d.kind, d.severity, d.patient_id) == ("missed_reading", "amber", 7)
    assert "14:00 spot check" in d.reason and "call the patient" in d.reason


def test_a_reading_up_to_the_grace_before_a_slot_counts_for_it() -> None:
    assert actions(SPOT, oslo(24, 13, 0), oslo(24, 16, 0)) == []
    assert actions(SPOT, oslo(24, 12, 59), oslo(24, 16, 0)) == [REMIND, ALERT]


def test_a_reading_after_the_reminder_settles_the_slot() -> None:
    assert actions(SPOT, oslo(24, 15, 20), oslo(24, 16, 0)) == []


def test_slots_before_enrolment_are_not_missed() -> None:
    enrolled = oslo(24, 15, 0)
    found = due_checks(SPOT, None, oslo(24, 16, 0), "Europe/Oslo", enrolled_at=enrolled)
    assert found == []
    found = due_checks(SPOT, None, oslo(24, 21, 0), "Europe/Oslo", enrolled_at=enrolled)
    assert [a.action for a in found] == [REMIND] and found[0].slot_at == oslo(24, 20)


def test_slots_are_local_times_across_the_spring_daylight_saving_change() -> None:
    # Sunday 29 March 2026: Oslo moves from UTC+1 to UTC+2 at 02:00.
    last = oslo(29, 1, 0, month=3)
    [remind] = due_checks(SPOT, last, oslo(29, 9, 0, month=3), "Europe/Oslo")
    assert remind.slot_at == oslo(29, 8, 0, month=3)
    assert remind.slot_at.utcoffset() == timedelta(0)  # UTC inside
    assert remind.slot_at.hour == 6  # 08:00 summer time is 06:00 UTC


def test_a_stream_gap_reminds_then_alerts() -> None:
    last = oslo(24, 10, 0)
    assert actions(STREAM, last, oslo(24, 10, 29)) == []
    assert actions(STREAM, last, oslo(24, 10, 30)) == [REMIND]
    assert actions(STREAM, last, oslo(24, 11, 30)) == [REMIND, ALERT]


def test_next_check_at_is_the_next_moment_something_can_become_due() -> None:
    assert next_check_at(SPOT, oslo(24, 8, 5), oslo(24, 9, 30)) == oslo(24, 10, 0)
    assert next_check_at(SPOT, oslo(24, 8, 5), oslo(24, 10, 30)) == oslo(24, 15, 0)
    assert next_check_at(STREAM, oslo(24, 10, 0), oslo(24, 10, 5)) == oslo(24, 10, 30)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"kind": "weekly"}, "schedule.kind"),
        ({"kind": "spot", "times": []}, "schedule.times"),
        ({"kind": "spot", "times": ["8 o'clock"]}, "schedule.times"),
        ({"kind": "spot", "times": ["08:00"], "grace_min": -5}, "schedule.grace_min"),
        ({"kind": "continuous", "max_gap_min": "soon"}, "schedule.max_gap_min"),
    ],
)
def test_a_schedule_that_cannot_be_understood_names_the_field(
    schedule: dict[str, object], field: str
) -> None:
    with pytest.raises(ScheduleError, match=field):
        due_checks(schedule, None, oslo(24, 12), "Europe/Oslo")
