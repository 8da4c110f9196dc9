"""Device health: each problem a fleet view (and the alert engine) acts on, from the data the
platform records. Pure rules first, then the SQL that feeds them from the real database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devices import health
from devices.fleet import fleet
from devices.health import DeviceSnapshot, Limits, expectation, problems

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPOT = {"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60}
STREAM = {"kind": "continuous", "max_gap_min": 30}

HEALTHY = DeviceSnapshot(
    device_id="oxi-1",
    status="active",
    patient_id=1,
    patient_status="active",
    schedule=STREAM,
    assigned_at=NOW - timedelta(days=3),
    credentials_revoked_at=None,
    online=True,
    last_seen_at=NOW - timedelta(minutes=1),
    battery_pct=80,
    readings_n=5000,
    bad_n=100,
    clock_skew_s=-0.4,
)


def kinds(snapshot: DeviceSnapshot, limits: Limits = Limits()) -> list[str]:
    return [p.kind for p in problems(snapshot, NOW, limits)]


# --- the rules, pure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, []),
        # Offline: a stream silent for more than 30 min; the last will makes the words plainer.
        ({"last_seen_at": NOW - timedelta(minutes=29)}, []),
        ({"last_seen_at": NOW - timedelta(minutes=31)}, [health.OFFLINE]),
        ({"last_seen_at": NOW - timedelta(hours=2), "online": False}, [health.OFFLINE]),
        # A spot-check device sleeps between checks: 12 h overnight gap + 60 min grace.
        ({"schedule": SPOT, "last_seen_at": NOW - timedelta(hours=12, minutes=59)}, []),
        ({"schedule": SPOT, "last_seen_at": NOW - timedelta(hours=13, minutes=1)}, ["offline"]),
        # Given to a patient but never heard from.
        ({"last_seen_at": None, "assigned_at": NOW - timedelta(minutes=10)}, []),
        ({"last_seen_at": None, "assigned_at": NOW - timedelta(hours=1)}, ["never_connected"]),
        # Battery at or below 20 %.
        ({"battery_pct": 21}, []),
        ({"battery_pct": 20}, [health.LOW_BATTERY]),
        # Mostly bad readings: at least half of at least 30 stream readings (3 spot checks).
        ({"readings_n": 40, "bad_n": 19}, []),
        ({"readings_n": 40, "bad_n": 20}, [health.MOSTLY_BAD_READINGS]),
        ({"readings_n": 20, "bad_n": 20}, []),  # too few to judge a stream
        ({"schedule": SPOT, "readings_n": 3, "bad_n": 2}, [health.MOSTLY_BAD_READINGS]),
        # Clock skew beyond 2 min either way, or readings refused as in the future.
        ({"clock_skew_s": 119.0}, []),
        ({"clock_skew_s": -300.0}, [health.CLOCK_SKEW]),
        ({"clock_skew_s": None, "future_refused_n": 4}, [health.CLOCK_SKEW]),
        # A spot schedule expects 3 a day.
        ({"schedule": SPOT, "readings_n": 3, "bad_n": 0}, []),
        ({"schedule": SPOT, "readings_n": 2, "bad_n": 0}, [health.FEW_READINGS]),
        ({"schedule": SPOT, "readings_n": 0, "bad_n": 0, "assigned_at": NOW}, []),  # new today
        # Its credentials were revoked (lost?) but it is still given to a patient.
        ({"credentials_revoked_at": NOW}, [health.CREDENTIALS_REVOKED]),
        ({"patient_status": "discharged"}, [health.PATIENT_DISCHARGED]),
        # Nobody depends on a device on the shelf or a retired one.
        ({"patient_id": None, "battery_pct": 3, "last_seen_at": None}, []),
        ({"status": "retired", "battery_pct": 3}, []),
    ],
)
def test_each_device_problem_appears_exactly_past_its_threshold(
    change: dict[str, Any], expected: list[str]
) -> None:
    assert kinds(replace(HEALTHY, **change)) == expected


def test_problems_come_most_urgent_first_and_say_what_to_do() -> None:
    sick = replace(
        HEALTHY,
        battery_pct=5,
        last_seen_at=NOW - timedelta(hours=3),
        online=False,
        credentials_revoked_at=NOW - timedelta(hours=3),
    )
    found = problems(sick, NOW)
    assert [p.kind for p in found] == ["credentials_revoked", "offline", "low_battery"]
    assert found[1].detail == (
        "Oximeter oxi-1 has sent nothing for 3 h 0 min and reported itself offline:"
        " call the patient to check the device and its connection"
    )
    assert "battery at 5%" in found[2].detail
    assert health.urgency(found) < health.urgency(problems(HEALTHY, NOW))


def test_thresholds_are_parameters() -> None:
    quiet = replace(HEALTHY, last_seen_at=NOW - timedelta(minutes=45), battery_pct=30)
    assert kinds(quiet) == ["offline"]
    assert kinds(quiet, Limits(offline_after=timedelta(hours=1), low_battery_pct=30)) == [
        "low_battery"
    ]


def test_the_schedule_decides_how_long_a_device_may_stay_silent() -> None:
    assert expectation(STREAM).silent_allowance == timedelta(minutes=30)
    assert expectation(SPOT) == health.Expectation(False, timedelta(hours=13), 3)
    assert expectation({"kind": "spot", "times": ["09:00"], "grace_min": 30}) == (
        health.Expectation(False, timedelta(hours=24, minutes=30), 1)
    )
    assert expectation(None).per_day == 0  # no schedule: nothing expected, 25 h allowed


def test_device_problems_map_to_the_alert_engines_amber_kinds() -> None:
    assert health.ALERT_KINDS == {
        "offline": "device_offline",
        "low_battery": "low_battery",
        "mostly_bad_readings": "bad_quality",
    }


# --- the fleet, from the real database ------------------------------------------------------


def add_device(
    db: psycopg.Connection,
    device_id: str,
    patient_id: int | None,
    *,
    last_seen: timedelta | None = timedelta(minutes=1),
    online: bool | None = True,
    battery: int | None = 80,
    assigned: timedelta = timedelta(days=2),
) -> None:
    db.execute(
        "INSERT INTO devices (id, patient_id, serial, model, firmware, online, last_seen_at,"
        " battery_pct) VALUES (%s, %s, %s, 'OxiA', '2.1.0', %s, %s, %s)",
        (
            device_id,
            patient_id,
            f"SN-{device_id}",
            online,
            NOW - last_seen if last_seen is not None else None,
            battery,
        ),
    )
    if patient_id is not None:
        db.execute(
            "INSERT INTO device_assignments (device_id, patient_id, assigned_at)"
            " VALUES (%s, %s, %s)",
            (device_id, patient_id, NOW - assigned),
        )


def add_readings(
    db: psycopg.Connection,
    device_id: str,
    patient_id: int,
    n: int,
    *,
    bad: int = 0,
    lag_s: float = 0.5,
    every: timedelta = timedelta(minutes=1),
) -> None:
    """`n` readings ending now, `bad` of them flagged, each received `lag_s` after its time."""
    rows = []
    for i in range(n):
        at = NOW - every * (i + 1)
        quality = "motion" if i < bad else "ok"
        rows.append((at, device_id, patient_id, quality, at + timedelta(seconds=lag_s)))
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, quality, received_at)"
            " VALUES (%s, %s, %s, 96, 70, %s, %s)",
            rows,
        )


def test_the_fleet_view_finds_each_problem_in_the_recorded_data_most_urgent_first(
    db: psycopg.Connection, patient: int
) -> None:
    db.execute(
        "UPDATE patients SET schedule = %s WHERE id = %s",
        (psycopg.types.json.Jsonb(STREAM), patient),
    )
    add_device(db, "oxi-fine", patient)
    add_readings(db, "oxi-fine", patient, 60)
    add_device(db, "oxi-battery", patient, battery=12)
    add_readings(db, "oxi-battery", patient, 60)
    add_device(db, "oxi-silent", patient, last_seen=timedelta(hours=5), online=False)
    add_device(db, "oxi-fumbled", patient)
    add_readings(db, "oxi-fumbled", patient, 60, bad=45)
    # Its clock is 10 min behind: every reading arrives "600 s after it was taken".
    add_device(db, "oxi-behind", patient)
    add_readings(db, "oxi-behind", patient, 60, lag_s=400)
    # Its clock runs ahead: the worker refused its readings as in the future.
    add_device(db, "oxi-ahead", patient)
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, device_id)"
        " VALUES (%s, 'oximon/devices/oxi-ahead/readings', '{}', %s, 'oxi-ahead')",
        (
            NOW - timedelta(minutes=5),
            "timestamp 2026-11-24T12:20:00+00:00 is more than 300 s in the future",
        ),
    )
    add_device(db, "oxi-new", patient, last_seen=None, online=None)
    add_device(db, "oxi-shelf", None, last_seen=None, online=None, battery=None)

    view = fleet(db, NOW)
    by_id = {d["device_id"]: d for d in view}
    assert {k: [p["kind"] for p in d["problems"]] for k, d in by_id.items()} == {
        "oxi-fine": [],
        "oxi-battery": ["low_battery"],
        "oxi-silent": ["offline"],
        "oxi-fumbled": ["mostly_bad_readings"],
        "oxi-behind": ["clock_skew"],
        "oxi-ahead": ["clock_skew"],
        "oxi-new": ["never_connected"],
        "oxi-shelf": [],
    }
    # Most urgent problem first; among equals, the longest silent (never seen first).
    assert [d["device_id"] for d in view] == [
        "oxi-silent",
        "oxi-new",
        "oxi-fumbled",
        "oxi-battery",
        "oxi-ahead",
        "oxi-behind",
        "oxi-shelf",
        "oxi-fine",
    ]
    fine = by_id["oxi-fine"]
    assert (fine["readings_in_window"], fine["bad_share"], fine["clock_skew_s"]) == (60, 0.0, -0.5)
    assert (fine["firmware"], fine["online"], fine["battery_pct"]) == ("2.1.0", True, 80)
    assert by_id["oxi-behind"]["clock_skew_s"] == -400.0
    assert by_id["oxi-fumbled"]["bad_share"] == 0.75
    assert by_id["oxi-shelf"]["patient_id"] is None

    only = fleet(db, NOW, problem="clock_skew", sort="device_id")
    assert [d["device_id"] for d in only] == ["oxi-ahead", "oxi-behind"]


def test_the_worker_recorded_clock_skew_wins_over_the_estimate_from_readings(
    db: psycopg.Connection, patient: int
) -> None:
    add_device(db, "oxi-1", patient)
    add_readings(db, "oxi-1", patient, 10, lag_s=1)
    db.execute(
        "UPDATE devices SET clock_skew_s = 3600, clock_skew_at = %s WHERE id = 'oxi-1'",
        (NOW - timedelta(minutes=1),),
    )
    [device] = fleet(db, NOW)
    assert device["clock_skew_s"] == 3600.0
    assert [p["kind"] for p in device["problems"]] == ["clock_skew"]
