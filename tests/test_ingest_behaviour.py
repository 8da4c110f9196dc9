"""Ingest: dead letters with reasons, late uploads, duplicates counted, workers sharing load."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core.clock import Clock
from core.settings import Settings
from devices.registry import DeviceCredentials, register_device
from oximon.localstack import free_port
from tests.conftest import SERVICE_PASSWORD, SERVICE_USER, Stack
from tests.helpers import Device, wait_until


def ts(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


@pytest.fixture
def creds(db: psycopg.Connection, settings: Settings, patient: int) -> DeviceCredentials:
    return register_device(db, settings.mqtt_admin_url, patient)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()  # noqa: S310
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def dead_letters(db: psycopg.Connection, n: int) -> list[dict]:
    return wait_until(
        lambda: (
            len(rows := db.execute("SELECT * FROM dead_letters ORDER BY id").fetchall()) >= n
            and rows
        ),
        what=f"{n} dead letters",
    )


def test_each_unusable_payload_is_kept_with_a_reason_a_person_can_read(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    ingest,
    patient: int,
    creds: DeviceCredentials,
) -> None:
    retired = register_device(db, settings.mqtt_admin_url, patient)
    db.execute("UPDATE devices SET status = 'retired' WHERE id = %s", (retired.device_id,))
    device = Device(stack.broker.port, creds.username, creds.password)
    cases = [
        (b"not json at all", "payload is not valid JSON"),
        (json.dumps({"ts": ts(1), "pulse": 70}).encode(), "spo2: Field required"),
        (
            json.dumps({"ts": ts(1), "spo2": -1, "pulse": 70}).encode(),
            "spo2: Input should be greater than or equal to 0",
        ),
        (
            json.dumps({"ts": ts(1), "spo2": 97, "pulse": 301}).encode(),
            "pulse: Input should be less than or equal to 300",
        ),
        (
            json.dumps({"ts": ts(1), "spo2": 97, "pulse": 19}).encode(),
            "pulse: Input should be greater than or equal to 20",
        ),
        (
            json.dumps({"ts": "2026-11-24T08:00:00", "spo2": 97, "pulse": 70}).encode(),
            "ts: needs a UTC offset",
        ),
        (json.dumps({"ts": ts(-3600), "spo2": 97, "pulse": 70}).encode(), "in the future"),
        (
            json.dumps({"ts": ts(1), "spo2": 97, "pulse": 70, "quality": "great"}).encode(),
            "quality: Input should be",
        ),
    ]
    for payload, _ in cases:
        device.publish(creds.device_id, payload, raw=True)
    retired_device = Device(stack.broker.port, retired.username, retired.password)
    retired_device.publish(retired.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70})
    rows = dead_letters(db, len(cases) + 1)
    assert len(rows) == len(cases) + 1
    reasons = {row["reason"]: row for row in rows}
    for payload, expected in cases:
        matches = [r for r in reasons if expected in r]
        assert len(matches) == 1, (expected, list(reasons))
        row = reasons[matches[0]]
        assert row["device_id"] in (creds.device_id, None)
        if expected == "payload is not valid JSON":
            assert bytes(row["payload"]) == payload  # kept exactly as received
    retired_row = reasons["device retired"]
    assert retired_row["device_id"] == retired.device_id
    assert db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 0
    device.close()
    retired_device.close()


def test_topic_outside_the_contract_is_dead_lettered(
    stack: Stack, db: psycopg.Connection, ingest
) -> None:
    # Only the service account may publish on other devices' topics; a device id the
    # contract does not allow (too short) reaches the worker and is refused with its reason.
    service = Device(stack.broker.port, SERVICE_USER, SERVICE_PASSWORD)
    service.publish("x", {"ts": ts(1), "spo2": 97, "pulse": 70})
    row = dead_letters(db, 1)[0]
    assert row["topic"] == "oximon/devices/x/readings"
    assert "topic does not match" in row["reason"]
    service.close()


def test_offline_upload_keeps_device_timestamps_and_is_marked_late_without_paging(
    stack: Stack, db: psycopg.Connection, ingest, creds: DeviceCredentials
) -> None:
    device = Device(stack.broker.port, creds.username, creds.password)
    hours_ago = [3 * 3600, 2 * 3600 + 1800, 2 * 3600]
    upload = [{"ts": ts(s), "spo2": 90, "pulse": 88, "seq": i} for i, s in enumerate(hours_ago)]
    device.publish(creds.device_id, upload)  # one array: what the device kept while offline
    device.publish(creds.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70, "seq": 3})
    rows = wait_until(
        lambda: (
            len(r := db.execute("SELECT time, late, spo2 FROM readings ORDER BY time").fetchall())
            == 4
            and r
        ),
        what="four readings",
    )
    assert [r["time"] for r in rows[:3]] == [datetime.fromisoformat(u["ts"]) for u in upload]
    assert [r["late"] for r in rows] == [True, True, True, False]
    # Red values hours old are history: stored and charted, nobody is paged about them; the
    # nurses may see an amber note that says it is a late upload.
    alerts = db.execute("SELECT severity, reason FROM alerts").fetchall()
    assert all(a["severity"] == "amber" and a["reason"].startswith("Late upload") for a in alerts)
    sms = db.execute("SELECT count(*) AS n FROM notifications WHERE channel = 'sms'").fetchone()
    assert sms["n"] == 0
    device.close()


def test_duplicates_are_stored_once_and_counted_in_metrics(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    service_factory,
    creds: DeviceCredentials,
) -> None:
    port = free_port()
    worker = service_factory("ingest", ready='"event": "mqtt_subscribed"', metrics_port=port)
    device = Device(stack.broker.port, creds.username, creds.password)
    reading = {"ts": ts(30), "spo2": 96, "pulse": 64}
    for _ in range(3):
        device.publish(creds.device_id, reading)
    device.publish(creds.device_id, [reading, {**reading, "ts": ts(20)}])
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 2,
        what="two readings",
    )

    wait_until(
        lambda: metric(port, "oximon_ingest_readings_duplicate_total") == 3.0,
        what="three duplicates counted",
    )
    assert metric(port, "oximon_ingest_readings_stored_total") == 2.0
    assert worker.process is not None and worker.process.poll() is None
    device.close()


def test_two_workers_on_a_shared_subscription_split_the_load_and_store_each_reading_once(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    service_factory,
    creds: DeviceCredentials,
) -> None:
    ports = free_port(), free_port()
    one, two = (
        service_factory(
            "ingest",
            ready='"event": "mqtt_subscribed"',
            mqtt_client_id=f"w-{port}",
            mqtt_share_group="shared-test",
            metrics_port=port,
            mqtt_protocol=5,  # the MQTT 5 path: session expiry, properties
        )
        for port in ports
    )
    device = Device(stack.broker.port, creds.username, creds.password)
    for i in range(200):
        device.publish(creds.device_id, {"ts": ts(300 - i), "spo2": 96, "pulse": 64})
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 200,
        what="200 readings",
    )
    assert (
        db.execute("SELECT count(DISTINCT (device_id, time)) AS n FROM readings").fetchone()["n"]
        == 200
    )
    # Both took part: each stored a share.
    shares = [metric(port, "oximon_ingest_readings_stored_total") for port in ports]
    assert sum(shares) == 200 and min(shares) > 0, shares
    assert "store_failed" not in one.log() + two.log()
    device.close()


def test_on_an_accelerated_clock_last_seen_keeps_up_with_platform_time(
    stack: Stack,
    db: psycopg.Connection,
    service_factory,
    creds: DeviceCredentials,
) -> None:
    """At 600x, ten wall seconds are 100 platform minutes: "last seen" must still follow the
    readings to the platform minute, or the 30-minute silence rule calls a live oximeter
    offline."""
    origin = datetime.now(UTC)
    clock = Clock(origin, 600.0)
    service_factory(
        "ingest", ready='"event": "mqtt_subscribed"', clock_origin=origin, clock_speed=600.0
    )
    device = Device(stack.broker.port, creds.username, creds.password)
    try:
        for _ in range(4):
            at = clock.now()
            device.publish(creds.device_id, {"ts": at.isoformat(), "spo2": 97, "pulse": 70})
            latest = at
            time.sleep(0.5)  # five platform minutes
        seen = wait_until(
            lambda: (
                (
                    r := db.execute(
                        "SELECT last_seen_at FROM devices WHERE id = %s", (creds.device_id,)
                    ).fetchone()
                )
                and r["last_seen_at"]
                and r["last_seen_at"] >= latest - timedelta(minutes=1)
                and r["last_seen_at"]
            ),
            15,
            "last seen to follow the newest reading",
        )
        assert seen <= latest + timedelta(minutes=1)
    finally:
        device.close()
