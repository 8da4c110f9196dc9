"""The whole ladder in accelerated time, every service real: a red reading over MQTT, the nurse's
SMS, no answer, the doctor's SMS, acknowledgement by SMS reply, resolution with an outcome; a
worker killed in the middle; a failed delivery moving on; several alerts in one message.

The platform clock runs at SPEED× (OXIMON_CLOCK_ORIGIN/SPEED for every process), so the
ten minutes before the doctor is paged pass in a few wall seconds.
"""

from __future__ import annotations

# These tests run the alerting worker on an accelerated clock with patients who send nothing:
# its watchdog (missed readings, device health; tests/test_watchdog.py) is switched off here so
# that the pages counted are the escalation ladder's alone.
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from alerting.lifecycle import apply_decisions
from core.clock import Clock
from core.settings import Settings
from devices.registry import register_device
from tests import alerting_support
from tests.alerting_support import (
    DOCTOR,
    NURSE,
    NURSE2,
    add_patient,
    red,
    rota,
    twilio_settings,
)
from tests.conftest import Stack, login
from tests.helpers import Device, wait_until
from tests.twilio_fake import FakeTwilio

# Fixtures shared with the other alerting tests.
twilio = alerting_support.twilio

SPEED = 300.0  # ten platform minutes in two wall seconds


@pytest.fixture
def settings(settings: Settings, twilio: FakeTwilio) -> Settings:
    origin = datetime.now(UTC).replace(microsecond=0)
    return twilio_settings(settings, twilio.url, clock_origin=origin, clock_speed=SPEED)


@pytest.fixture
def clock(settings: Settings) -> Clock:
    return Clock.from_settings(settings)


@pytest.fixture
def team(db: psycopg.Connection, care_team: dict[str, Any], clock: Clock) -> dict[str, int]:
    existing = {"nurse": care_team["nurse"]["id"], "doctor": care_team["doctor"]["id"]}
    return rota(db, clock.now(), existing=existing)


def to(number: str) -> Any:
    return lambda messages: [m for m in messages if m.to == number]


def page_rows(db: psycopg.Connection, recipient: str) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT n.*, s.kind AS step_kind, s.step, s.round FROM notifications n"
        " LEFT JOIN escalation_steps s ON s.id = n.escalation_step_id"
        " WHERE n.channel = 'sms' AND n.recipient = %s ORDER BY n.id",
        (recipient,),
    ).fetchall()


def test_the_whole_ladder_from_a_red_reading_to_its_resolution(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    client: TestClient,
    care_team: dict[str, Any],
    team: dict[str, int],
    patient: int,
    twilio: FakeTwilio,
    api_server: str,
    service_factory,  # noqa: ANN001
    ingest,  # noqa: ANN001
    clock: Clock,
) -> None:
    service_factory(
        "alerting", ready="alerting_started", alerting_watchdog=False, public_url=api_server
    )
    assert settings.mqtt_admin_url
    creds = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, creds.username, creds.password)

    # A red reading over MQTT: the nurse on duty is paged at once.
    device.publish(creds.device_id, {"ts": clock.now().isoformat(), "spo2": 88, "pulse": 104})
    [nurse_page] = twilio.wait_for(to(NURSE), what="the nurse's page")
    [alert_id] = nurse_page.codes()
    assert f"patient #{patient}" in nurse_page.body
    assert twilio.sent_to(DOCTOR) == []

    # Nobody answers: ten platform minutes after it opened, the on-call doctor.
    [doctor_page] = twilio.wait_for(to(DOCTOR), timeout_s=30, what="the doctor's page")
    assert doctor_page.codes() == [alert_id] and "ESCALATED" in doctor_page.body
    opened = db.execute("SELECT opened_at FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    [paged] = page_rows(db, DOCTOR)
    assert paged["created_at"] - opened["opened_at"] >= timedelta(minutes=10)
    assert (paged["step_kind"], paged["step"]) == ("ladder", 1)

    # The doctor takes it by replying to the SMS.
    with httpx.Client() as http:
        answer = twilio.inbound(http, f"{api_server}/api/v1/sms/inbound", DOCTOR, f"ACK {alert_id}")
    assert answer.status_code == 200 and f"Acknowledged: #{alert_id}" in answer.text
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert (row["status"], row["acknowledged_by"]) == ("acknowledged", team["doctor"])
    pending = db.execute(
        "SELECT count(*) AS n FROM escalation_steps WHERE alert_id = %s AND state = 'pending'",
        (alert_id,),
    ).fetchone()
    assert pending["n"] == 0  # the ladder stops

    # The nurse closes it with an outcome.
    nurse = login(client, care_team["nurse"])
    res = client.post(
        f"/api/v1/alerts/{alert_id}/resolve",
        json={"outcome": "referred_hospital", "note": "GP agreed, ambulance 11:05"},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert [(e["action"], e["username"]) for e in body["history"]] == [
        ("opened", None),
        ("escalated", None),
        ("acknowledged", "doctor"),
        ("resolved", "nurse"),
    ]
    assert body["history"][2]["detail"] == {"via": "sms"}
    # Each page went once, and Twilio's callbacks marked both delivered.
    wait_until(
        lambda: all(m["state"] == "delivered" for m in body_messages(client, alert_id, nurse)),
        what="both pages delivered",
    )
    assert len(twilio.sent_to(NURSE)) == 1 and len(twilio.sent_to(DOCTOR)) == 1
    device.close()


def body_messages(client: TestClient, alert_id: int, headers: dict[str, str]) -> list[dict]:
    messages = client.get(f"/api/v1/alerts/{alert_id}", headers=headers).json()["messages"]
    return [m for m in messages if m["channel"] == "sms"]


def test_a_worker_killed_mid_ladder_resumes_without_sending_anything_twice(
    db: psycopg.Connection,
    team: dict[str, int],
    patient: int,
    twilio: FakeTwilio,
    service_factory,  # noqa: ANN001
    clock: Clock,
) -> None:
    worker = service_factory("alerting", ready="alerting_started", alerting_watchdog=False)
    opened_at = clock.now()
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, opened_at)], opened_at)
    twilio.wait_for(to(NURSE), what="the nurse's page")
    wait_until(lambda: page_rows(db, NURSE)[0]["state"] == "queued", what="the page recorded")

    assert worker.process is not None
    worker.process.kill()  # a crash: no goodbye, no cleanup
    worker.process.wait()
    wait_until(
        lambda: clock.now() > opened_at + timedelta(minutes=11),
        timeout_s=30,
        what="the doctor's step to fall due while no worker runs",
    )
    assert twilio.sent_to(DOCTOR) == []

    service_factory("alerting", ready="alerting_started", alerting_watchdog=False)
    twilio.wait_for(to(DOCTOR), what="the doctor's page after the restart")
    # And the ladder goes on from there: at 20 minutes both again and the backup nurse.
    twilio.wait_for(to(NURSE2), timeout_s=30, what="the next round")
    assert len(twilio.sent_to(NURSE)) == 2  # the first page once, the round once
    assert len(twilio.sent_to(DOCTOR)) == 2
    steps = db.execute(
        "SELECT step, round, state, count(*) AS n FROM escalation_steps WHERE alert_id = %s"
        " AND kind = 'ladder' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (applied.alert_id,),
    ).fetchall()
    assert [(s["step"], s["round"], s["state"], s["n"]) for s in steps][:3] == [
        (0, 0, "done", 1),
        (1, 0, "done", 1),
        (2, 0, "done", 1),
    ]


@pytest.mark.parametrize("failure", ["invalid", "undelivered"])
def test_a_failed_delivery_moves_the_escalation_on_to_the_next_person(
    db: psycopg.Connection,
    team: dict[str, int],
    patient: int,
    twilio: FakeTwilio,
    api_server: str,
    service_factory,  # noqa: ANN001
    clock: Clock,
    failure: str,
) -> None:
    """ "invalid": Twilio refuses the number (400 21211); "undelivered": it accepts the message
    and its status callback later says the handset was unreachable (30003)."""
    twilio.behave(NURSE, failure)
    service_factory(
        "alerting", ready="alerting_started", alerting_watchdog=False, public_url=api_server
    )
    opened_at = clock.now()
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, opened_at)], opened_at)
    twilio.wait_for(to(DOCTOR), timeout_s=20, what="the doctor paged in the nurse's place")
    [doctor] = page_rows(db, DOCTOR)
    assert doctor["step_kind"] == "failover"
    assert doctor["created_at"] - opened_at < timedelta(minutes=10)  # not waiting for the ladder
    [nurse] = page_rows(db, NURSE)
    assert nurse["state"] == ("failed" if failure == "invalid" else "undelivered")
    assert nurse["error_code"] == ("21211" if failure == "invalid" else "30003")
    escalated = db.execute(
        "SELECT detail FROM alert_events WHERE alert_id = %s AND action = 'escalated'",
        (applied.alert_id,),
    ).fetchone()
    assert escalated["detail"]["failover"] is True
    assert [p["user_id"] for p in escalated["detail"]["to"]] == [team["doctor"]]


def test_several_alerts_for_one_person_at_once_go_out_as_one_message(
    db: psycopg.Connection,
    team: dict[str, int],
    twilio: FakeTwilio,
    api_server: str,
    service_factory,  # noqa: ANN001
    clock: Clock,
) -> None:
    patients = [add_patient(db, None) for _ in range(3)]
    at = clock.now()
    with db.transaction():
        applied = apply_decisions(db, [red(p, at, 85 + i) for i, p in enumerate(patients)], at)
    service_factory(
        "alerting", ready="alerting_started", alerting_watchdog=False, public_url=api_server
    )
    [message] = twilio.wait_for(to(NURSE), what="one grouped page")
    ids = sorted(a.alert_id for a in applied)
    assert message.body.startswith("oximon: 3 alerts")
    assert message.codes() == ids
    # One Twilio message, recorded against each of the three pages (after the worker commits).
    wait_until(
        lambda: [r["provider_id"] for r in page_rows(db, NURSE)] == [message.sid] * 3,
        what="the three pages to carry the message's sid",
    )
    wait_until(
        lambda: all(r["state"] == "delivered" for r in page_rows(db, NURSE)),
        what="the grouped page delivered, for every alert in it",
    )
    with httpx.Client() as http:
        reply = twilio.inbound(
            http, f"{api_server}/api/v1/sms/inbound", NURSE, "ACK " + " ".join(map(str, ids))
        )
    assert "Acknowledged: " + ", ".join(f"#{i}" for i in ids) in reply.text
    statuses = db.execute("SELECT DISTINCT status FROM alerts").fetchall()
    assert [s["status"] for s in statuses] == ["acknowledged"]
    assert len(twilio.messages) == 1
