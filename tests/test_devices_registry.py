"""The registry: who wore which oximeter when, moves between patients, retirement, and the
change notices the ingest worker listens to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.settings import Settings
from devices.broker import BrokerAdmin
from devices.registry import (
    DEVICE_CHANGES_CHANNEL,
    Assignment,
    DeviceStateError,
    DuplicateDeviceError,
    UnknownDeviceError,
    UnknownPatientError,
    get_device,
    load_assignments,
    move_device,
    patient_at,
    register_device,
    retire_device,
    rotate_credentials,
)
from tests.conftest import Stack
from tests.helpers import wait_until
from tests.test_broker_auth import Oximeter

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def ts(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def add_patient(db: psycopg.Connection, name: str = "Second Synthetic Patient") -> int:
    return int(
        db.execute(
            "INSERT INTO patients (display_name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()["id"]
    )


def readings_by_patient(db: psycopg.Connection) -> list[tuple[int, int]]:
    rows = db.execute("SELECT patient_id, spo2 FROM readings ORDER BY time").fetchall()
    return [(r["patient_id"], r["spo2"]) for r in rows]


def test_moving_a_device_keeps_each_reading_with_the_patient_who_wore_it(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    ingest,
    service_factory,
    patient: int,
    care_team,
) -> None:
    second = add_patient(db)
    creds = register_device(
        db,
        settings.mqtt_admin_url,
        patient,
        serial="SN-MOVE",
        now=datetime.now(UTC) - timedelta(minutes=2),
    )
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    device.publish(creds.device_id, {"ts": ts(60), "spo2": 91, "pulse": 80})
    wait_until(lambda: readings_by_patient(db) == [(patient, 91)], what="first patient's reading")

    admin_id = care_team["admin"]["id"]
    moved_at = datetime.now(UTC) - timedelta(seconds=30)
    assert move_device(db, creds.device_id, second, by=admin_id, now=moved_at) == "moved"
    # The running worker hears of the move (NOTIFY on the registry's change channel) at once.
    device.publish(creds.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70})
    wait_until(lambda: len(readings_by_patient(db)) == 2, what="second patient's reading")
    assert readings_by_patient(db) == [(patient, 91), (second, 97)]

    history = get_device(db, creds.device_id)["assignments"]
    assert [(h["patient_id"], h["end_reason"]) for h in history] == [
        (patient, "moved"),
        (second, None),
    ]
    assert history[0]["unassigned_at"] == history[1]["assigned_at"]
    assert history[0]["unassigned_by_username"] == "admin"
    assert history[1]["assigned_by_username"] == "admin"
    device.close()


def test_a_late_upload_after_a_move_goes_to_the_patient_who_wore_the_device_then(
    stack: Stack, db: psycopg.Connection, settings: Settings, ingest, service_factory, patient
) -> None:
    second = add_patient(db)
    given_at = datetime.now(UTC) - timedelta(hours=1)
    creds = register_device(db, settings.mqtt_admin_url, patient, now=given_at)
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    device.publish(creds.device_id, {"ts": ts(600), "spo2": 95, "pulse": 75})
    wait_until(lambda: len(readings_by_patient(db)) == 1, what="the worker to know the device")
    # The running worker hears of the move (NOTIFY) and forgets its cached view of the device.
    move_device(db, creds.device_id, second, now=datetime.now(UTC) - timedelta(seconds=60))
    before_move = (datetime.now(UTC) - timedelta(seconds=120)).isoformat()
    # Measured on the first patient, uploaded (from the device's memory) after the move.
    device.publish(creds.device_id, [{"ts": before_move, "spo2": 92, "pulse": 81}])
    device.publish(creds.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70})
    wait_until(lambda: len(readings_by_patient(db)) == 3, what="both readings")
    device.close()
    assert readings_by_patient(db) == [(patient, 95), (patient, 92), (second, 97)]


def test_a_device_goes_from_the_shelf_to_a_patient_and_back(
    db: psycopg.Connection, settings: Settings, patient: int
) -> None:
    creds = register_device(db, settings.mqtt_admin_url, None, serial="SN-SHELF")
    assert get_device(db, creds.device_id)["assignments"] == []
    assert move_device(db, creds.device_id, patient, now=T0) == "assigned"
    assert move_device(db, creds.device_id, None, now=T0 + timedelta(days=3)) == "unassigned"
    record = get_device(db, creds.device_id)
    assert record["patient_id"] is None
    [stint] = record["assignments"]
    assert (stint["patient_id"], stint["assigned_at"], stint["unassigned_at"]) == (
        patient,
        T0,
        T0 + timedelta(days=3),
    )
    assert stint["end_reason"] == "unassigned"


def test_moves_that_make_no_sense_are_refused_and_change_nothing(
    db: psycopg.Connection, settings: Settings, patient: int
) -> None:
    creds = register_device(db, settings.mqtt_admin_url, patient)
    with pytest.raises(DeviceStateError, match="already with patient"):
        move_device(db, creds.device_id, patient)
    with pytest.raises(UnknownPatientError, match="no patient"):
        move_device(db, creds.device_id, patient + 999)
    discharged = add_patient(db)
    db.execute("UPDATE patients SET status = 'discharged' WHERE id = %s", (discharged,))
    with pytest.raises(UnknownPatientError, match="discharged"):
        move_device(db, creds.device_id, discharged)
    with pytest.raises(UnknownDeviceError):
        move_device(db, "oxi-unknown", patient)
    [stint] = get_device(db, creds.device_id)["assignments"]
    assert (stint["patient_id"], stint["unassigned_at"]) == (patient, None)


def test_a_retired_device_is_disconnected_loses_its_credentials_and_keeps_its_history(
    stack: Stack, db: psycopg.Connection, settings: Settings, patient: int, care_team
) -> None:
    creds = register_device(db, settings.mqtt_admin_url, patient, serial="SN-OLD")
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    retire_device(db, settings.mqtt_admin_url, creds.device_id, by=care_team["admin"]["id"])
    assert device.dropped.wait(2)
    assert Oximeter(stack.broker.port, creds.username, creds.password).refused is not None
    with BrokerAdmin(settings.mqtt_admin_url) as admin:
        assert admin.device_account(creds.device_id) is None
    record = get_device(db, creds.device_id)
    assert (record["status"], record["patient_id"]) == ("retired", None)
    assert record["retired_at"] is not None
    [stint] = record["assignments"]
    assert (stint["patient_id"], stint["end_reason"]) == (patient, "retired")
    for change in (
        lambda: move_device(db, creds.device_id, patient),
        lambda: rotate_credentials(db, settings.mqtt_admin_url, creds.device_id),
        lambda: retire_device(db, settings.mqtt_admin_url, creds.device_id),
    ):
        with pytest.raises(DeviceStateError, match="retired"):
            change()
    # Its serial may be used again by a re-commissioned device.
    register_device(db, settings.mqtt_admin_url, patient, serial="SN-OLD")


def test_a_serial_or_device_id_already_in_use_is_refused_before_the_broker_is_touched(
    db: psycopg.Connection, settings: Settings, patient: int
) -> None:
    first = register_device(db, settings.mqtt_admin_url, patient, serial="SN-1", model="OxiA")
    with pytest.raises(DuplicateDeviceError) as err:
        register_device(db, settings.mqtt_admin_url, patient, serial="SN-1", model="OxiA")
    assert err.value.detail() == f"serial: SN-1 is already registered as device {first.device_id}"
    register_device(db, settings.mqtt_admin_url, patient, serial="SN-1", model="OxiB")
    with pytest.raises(DuplicateDeviceError) as err:
        register_device(db, settings.mqtt_admin_url, patient, device_id=first.device_id)
    assert err.value.field == "device_id"
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 2


def test_every_change_is_announced_to_listeners_at_commit(
    stack: Stack, db: psycopg.Connection, settings: Settings, patient: int
) -> None:
    second = add_patient(db)
    with psycopg.connect(stack.database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {DEVICE_CHANGES_CHANNEL}")
        creds = register_device(db, settings.mqtt_admin_url, patient)
        move_device(db, creds.device_id, second)
        rotate_credentials(db, settings.mqtt_admin_url, creds.device_id)
        retire_device(db, settings.mqtt_admin_url, creds.device_id)
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=4)]
    assert notices == [
        {"device_id": creds.device_id, "change": "registered", "patient_id": patient},
        {"device_id": creds.device_id, "change": "moved", "patient_id": second},
        {"device_id": creds.device_id, "change": "rotated", "patient_id": second},
        {"device_id": creds.device_id, "change": "retired", "patient_id": None},
    ]


def test_the_assignment_history_answers_who_wore_the_device_at_any_instant(
    db: psycopg.Connection, settings: Settings, patient: int
) -> None:
    second = add_patient(db)
    creds = register_device(db, settings.mqtt_admin_url, None)
    move_device(db, creds.device_id, patient, now=T0)
    move_device(db, creds.device_id, None, now=T0 + timedelta(hours=5))
    move_device(db, creds.device_id, second, now=T0 + timedelta(hours=6))
    stints = load_assignments(db, [creds.device_id])[creds.device_id]
    assert stints == [
        Assignment(patient, T0, T0 + timedelta(hours=5)),
        Assignment(second, T0 + timedelta(hours=6), None),
    ]
    assert patient_at(stints, T0 - timedelta(seconds=1)) is None  # still on the shelf
    assert patient_at(stints, T0) == patient
    assert patient_at(stints, T0 + timedelta(hours=5) - timedelta(seconds=1)) == patient
    assert patient_at(stints, T0 + timedelta(hours=5)) is None  # back on the shelf
    assert patient_at(stints, T0 + timedelta(hours=6)) == second
    assert patient_at(stints, T0 + timedelta(days=30)) == second
