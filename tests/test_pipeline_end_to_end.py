"""The walking skeleton, end to end through the real broker, worker, database and API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.conftest import Stack, login
from tests.helpers import Device, wait_until


def ts(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def test_reading_to_alert_to_acknowledgement(
    stack: Stack,
    db: psycopg.Connection,
    client: TestClient,
    ingest,
    care_team,
    patient: int,
    service_factory,
) -> None:
    admin = login(client, care_team["admin"])
    nurse = login(client, care_team["nurse"])

    # An administrator registers an oximeter; its broker password is shown once.
    res = client.post(
        "/api/v1/devices", json={"patient_id": patient, "serial": "SN-1"}, headers=admin
    )
    assert res.status_code == 201, res.text
    creds = res.json()
    device = Device(stack.broker.port, creds["mqtt_username"], creds["mqtt_password"])
    assert device.refused is None
    device_id = creds["device_id"]

    # A normal reading is stored, with the patient it belongs to.
    device.publish(device_id, {"ts": ts(30), "spo2": 97, "pulse": 70, "seq": 1, "battery": 80})
    row = wait_until(lambda: db.execute("SELECT * FROM readings").fetchone(), what="stored reading")
    assert (row["patient_id"], row["spo2"], row["pulse"], row["source"]) == (
        patient,
        97,
        70,
        "mqtt",
    )

    # Two low readings open exactly one alert for the patient, updated by the second.
    device.publish(device_id, {"ts": ts(20), "spo2": 91, "pulse": 96, "seq": 2})
    device.publish(device_id, {"ts": ts(10), "spo2": 89, "pulse": 101, "seq": 3})
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 3,
        what="three readings",
    )
    alerts = client.get("/api/v1/alerts", params={"status": "open"}, headers=nurse).json()
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["patient_id"], alert["kind"], alert["severity"]) == (patient, "spo2_low", "red")
    assert (alert["worst_value"], alert["latest_value"], alert["reading_count"]) == (89, 89, 2)

    # The on-call doctor's SMS is in the outbox, and the alerting worker logs it (no Twilio).
    # The on-call doctor is paged; the patient (a spot check) is asked to measure again.
    sms = db.execute("SELECT * FROM notifications WHERE channel = 'sms' ORDER BY id").fetchall()
    assert sorted(m["recipient"] for m in sms) == ["+4791000001", "+4799000009"]
    page = next(m for m in sms if m["recipient"] == "+4799000009")
    assert f"ACK {alert['id']}" in page["body"]
    service_factory("alerting", ready="twilio_not_configured")
    wait_until(
        lambda: (
            {
                r["state"]
                for r in db.execute("SELECT state FROM notifications WHERE channel = 'sms'")
            }
            == {"logged"}
        ),
        what="SMS logged by the alerting worker",
    )

    # The nurse acknowledges it; who and when are recorded, and it shows in its history.
    before = datetime.now(UTC)
    res = client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=nurse)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledged_by_username"] == "nurse"
    acked_at = datetime.fromisoformat(body["acknowledged_at"])
    assert before - timedelta(seconds=1) <= acked_at <= datetime.now(UTC)
    assert [(e["action"], e["username"]) for e in body["history"]] == [
        ("opened", None),
        ("acknowledged", "nurse"),
    ]
    stored = db.execute(
        "SELECT acknowledged_by FROM alerts WHERE id = %s", (alert["id"],)
    ).fetchone()
    assert stored["acknowledged_by"] == care_team["nurse"]["id"]

    # A malformed payload is kept as a dead letter with its reason; the worker goes on.
    device.publish(device_id, b'{"ts": "yesterday", "spo2": 97', raw=True)
    device.publish(device_id, {"ts": ts(5), "spo2": 130, "pulse": 70})
    dead = wait_until(
        lambda: (
            len(
                rows := db.execute(
                    "SELECT payload, reason FROM dead_letters ORDER BY id"
                ).fetchall()
            )
            == 2
            and rows
        ),
        what="two dead letters",
    )
    assert dead[0]["payload"] == b'{"ts": "yesterday", "spo2": 97'
    assert "not valid JSON" in dead[0]["reason"]
    assert "spo2" in dead[1]["reason"] and "100" in dead[1]["reason"]
    device.publish(device_id, {"ts": ts(1), "spo2": 96, "pulse": 72})
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 4,
        what="the worker to keep storing after bad input",
    )
    device.close()


def test_redelivered_and_duplicated_readings_store_once(
    stack: Stack, db: psycopg.Connection, settings: Settings, ingest, patient: int
) -> None:
    from devices.registry import register_device

    creds = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, creds.username, creds.password)
    reading = {"ts": ts(60), "spo2": 95, "pulse": 66}
    device.publish(creds.device_id, reading)
    device.publish(creds.device_id, reading)
    device.publish(creds.device_id, [reading, {**reading, "ts": ts(50)}])  # an offline upload
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 2,
        what="two distinct readings",
    )
    # Give a stray third row every chance to appear before asserting there is none.
    device.publish(creds.device_id, {"ts": ts(1), "spo2": 95, "pulse": 66})
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 3,
        what="the marker reading",
    )
    assert db.execute("SELECT count(*) AS n FROM readings WHERE spo2 = 95").fetchone()["n"] == 3
    device.close()


def test_device_cannot_publish_for_another_device(
    stack: Stack, db: psycopg.Connection, settings: Settings, ingest, patient: int
) -> None:
    from devices.registry import register_device

    mine = register_device(db, settings.mqtt_admin_url, patient)
    other = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, mine.username, mine.password)
    device.publish(other.device_id, {"ts": ts(5), "spo2": 80, "pulse": 70})  # refused by the ACL
    device.close()
    # Mosquitto may also drop the connection of a client that broke its ACL: reconnect.
    device = Device(stack.broker.port, mine.username, mine.password)
    device.publish(mine.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70})
    rows = wait_until(
        lambda: db.execute("SELECT device_id FROM readings").fetchall(),
        what="the device's own reading",
    )
    assert [r["device_id"] for r in rows] == [mine.device_id]
    device.close()
    intruder = Device(stack.broker.port, mine.username, "wrong-password")
    assert intruder.refused is not None


def test_reading_from_unregistered_device_is_dead_lettered(
    stack: Stack, db: psycopg.Connection, settings: Settings, ingest, patient: int
) -> None:
    from devices.registry import register_device

    creds = register_device(db, settings.mqtt_admin_url, patient)
    # The broker knows the device but the registry no longer does (deleted by an operator).
    db.execute("DELETE FROM devices WHERE id = %s", (creds.device_id,))
    device = Device(stack.broker.port, creds.username, creds.password)
    device.publish(creds.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70})
    dead = wait_until(
        lambda: db.execute("SELECT * FROM dead_letters").fetchone(), what="dead letter"
    )
    assert dead["reason"] == "unknown device (not registered)"
    assert dead["device_id"] == creds.device_id
    assert db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 0
    device.close()


def test_a_single_low_spot_check_asks_the_patient_to_measure_again(
    stack: Stack, db: psycopg.Connection, settings: Settings, ingest, care_team, patient: int
) -> None:
    from devices.registry import register_device

    # The fixture patient measures spot checks (the default schedule) and reads English.
    db.execute("UPDATE patients SET language = 'en' WHERE id = %s", (patient,))
    creds = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, creds.username, creds.password)
    device.publish(creds.device_id, {"ts": ts(5), "spo2": 89, "pulse": 90})
    rows = wait_until(
        lambda: db.execute(
            "SELECT body FROM notifications WHERE channel = 'sms' AND recipient = '+4791000001'"
        ).fetchall(),
        what="an SMS to the patient",
    )
    assert len(rows) == 1 and "measure again" in rows[0]["body"]
    alert = db.execute("SELECT severity, status FROM alerts").fetchone()
    assert (alert["severity"], alert["status"]) == ("red", "open")  # and the nurses know
    device.close()
