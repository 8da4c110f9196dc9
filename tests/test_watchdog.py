"""The alerting watchdog: missed readings and device health become reminders and alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from alerting.watchdog import Watchdog
from core.settings import Settings
from tests.helpers import wait_until

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STREAM = {"kind": "continuous", "max_gap_min": 30}


def streaming_patient(
    db: psycopg.Connection, enrolled_at: datetime = NOW - timedelta(days=1)
) -> int:
    row = db.execute(
        "INSERT INTO patients (display_name, phone, language, schedule, enrolled_at)"
        " VALUES ('Synthetic Watch Patient', '+4791000077', 'en', %s, %s) RETURNING id",
        (Jsonb(STREAM), enrolled_at),
    ).fetchone()
    return int(row["id"])


def add_device(db: psycopg.Connection, patient_id: int, **columns: object) -> str:
    device_id = f"oxi-watch-{patient_id}"
    db.execute(
        "INSERT INTO devices (id, patient_id, online, last_seen_at, battery_pct)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            device_id,
            patient_id,
            columns.get("online"),
            columns.get("last_seen_at"),
            columns.get("battery_pct"),
        ),
    )
    return device_id


def add_reading(db: psycopg.Connection, device_id: str, patient_id: int, at: datetime) -> None:
    db.execute(
        "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
        " VALUES (%s, %s, %s, 97, 70, %s)",
        (at, device_id, patient_id, at),
    )


def check(db: psycopg.Connection, now: datetime) -> int:
    with db.transaction():
        return Watchdog().check(db, now)


def alerts(db: psycopg.Connection) -> list[tuple[str, str]]:
    return [
        (r["kind"], r["severity"])
        for r in db.execute("SELECT kind, severity FROM alerts ORDER BY id").fetchall()
    ]


def patient_sms(db: psycopg.Connection) -> list[str]:
    return [
        r["body"]
        for r in db.execute(
            "SELECT body FROM notifications WHERE channel = 'sms' AND recipient = '+4791000077'"
            " ORDER BY id"
        ).fetchall()
    ]


def test_a_silent_stream_reminds_the_patient_once_then_alerts_the_nurses_once(
    db: psycopg.Connection,
) -> None:
    patient = streaming_patient(db)
    device = add_device(db, patient, online=True, last_seen_at=NOW, battery_pct=80)
    add_reading(db, device, patient, NOW)
    assert check(db, NOW + timedelta(minutes=20)) == 0
    check(db, NOW + timedelta(minutes=31))
    check(db, NOW + timedelta(minutes=32))  # the same gap: nothing new
    assert len(patient_sms(db)) == 1 and "Reminder" in patient_sms(db)[0]
    assert ("missed_reading", "amber") not in alerts(db)
    check(db, NOW + timedelta(minutes=95))
    check(db, NOW + timedelta(minutes=96))
    assert alerts(db).count(("missed_reading", "amber")) == 1
    assert len(patient_sms(db)) == 1


def test_a_patient_who_texted_stop_gets_no_reminder_but_the_nurses_still_hear(
    db: psycopg.Connection,
) -> None:
    patient = streaming_patient(db)
    db.execute("UPDATE patients SET sms_opted_out = true WHERE id = %s", (patient,))
    device = add_device(db, patient, online=True, last_seen_at=NOW, battery_pct=80)
    add_reading(db, device, patient, NOW)
    check(db, NOW + timedelta(minutes=31))
    check(db, NOW + timedelta(minutes=95))
    assert patient_sms(db) == []
    assert ("missed_reading", "amber") in alerts(db)


def test_an_offline_device_and_a_flat_battery_raise_amber_device_alerts_never_red(
    db: psycopg.Connection,
) -> None:
    patient = streaming_patient(db)
    device = add_device(
        db, patient, online=False, last_seen_at=NOW - timedelta(minutes=45), battery_pct=12
    )
    add_reading(db, device, patient, NOW - timedelta(minutes=45))
    check(db, NOW)
    check(db, NOW + timedelta(minutes=2))  # still offline: the open alert is not repeated
    kinds = alerts(db)
    assert ("device_offline", "amber") in kinds and ("low_battery", "amber") in kinds
    assert kinds.count(("device_offline", "amber")) == 1
    assert all(severity == "amber" for _, severity in kinds)
    row = db.execute(
        "SELECT reason, reading_count FROM alerts WHERE kind = 'device_offline'"
    ).fetchone()
    assert device in row["reason"] and row["reading_count"] == 1


def test_the_running_alerting_service_raises_device_alerts_by_itself(
    db: psycopg.Connection, settings: Settings, service_factory
) -> None:
    now = datetime.now(UTC)
    patient = streaming_patient(db, enrolled_at=now - timedelta(days=1))
    add_device(db, patient, online=False, last_seen_at=now - timedelta(hours=2), battery_pct=90)
    service_factory("alerting", ready='"event": "alerting_started"')
    wait_until(lambda: ("device_offline", "amber") in alerts(db), 20, "a device_offline alert")


def test_the_offline_and_battery_limits_are_settings_of_the_watchdog(
    db: psycopg.Connection,
) -> None:
    patient = streaming_patient(db)
    device = add_device(
        db, patient, online=True, last_seen_at=NOW - timedelta(minutes=12), battery_pct=35
    )
    add_reading(db, device, patient, NOW - timedelta(minutes=12))
    with db.transaction():
        Watchdog().check(db, NOW)  # defaults: 30 min, 20%
    assert alerts(db) == []
    with db.transaction():
        Watchdog(offline_after=timedelta(minutes=10), low_battery_pct=40).check(db, NOW)
    assert sorted(alerts(db)) == [("device_offline", "amber"), ("low_battery", "amber")]
