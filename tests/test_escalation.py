"""Escalation policies and the on-call rota against the real database, on a clock the test moves:
who is paged, when, and that a step runs once however many workers claim it."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerting import escalation
from alerting.lifecycle import acknowledge, apply_decisions, snooze
from alerting.rules import Decision
from core.db import make_pool
from core.settings import Settings
from tests import alerting_support
from tests.alerting_support import (
    DOCTOR,
    DOCTOR2,
    NURSE,
    NURSE2,
    T0,
    ManualClock,
    add_patient,
    add_shift,
    add_user,
    amber,
    red,
    rota,
    sms_to,
)

# Fixtures shared with the other alerting tests.
pool = alerting_support.pool


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def open_alert(db: psycopg.Connection, decision: Decision, at=None) -> int:  # noqa: ANN001
    with db.transaction():
        [applied] = apply_decisions(db, [decision], at or decision.at)
    return applied.alert_id


def events(db: psycopg.Connection, alert_id: int) -> list[str]:
    rows = db.execute(
        "SELECT action FROM alert_events WHERE alert_id = %s ORDER BY at, id", (alert_id,)
    ).fetchall()
    return [r["action"] for r in rows]


def run_at(pool: ConnectionPool, clock: ManualClock, **delta: float) -> int:
    clock.advance(**delta)
    return escalation.process_due(pool, clock)


# --- red ----------------------------------------------------------------------------------------


def test_red_pages_the_nurse_on_duty_in_the_transaction_that_opens_it(
    db: psycopg.Connection, patient: int
) -> None:
    rota(db, T0)
    alert = open_alert(db, red(patient, T0))
    assert sms_to(db, alert) == [NURSE]
    body = db.execute("SELECT body FROM notifications WHERE channel = 'sms'").fetchone()["body"]
    assert f"Reply ACK {alert}" in body and f"patient #{patient}" in body
    assert "Synthetic" not in body  # ids, never names
    [pending] = db.execute(
        "SELECT kind, step, due_at FROM escalation_steps WHERE state = 'pending'"
    ).fetchall()
    assert (pending["kind"], pending["step"], pending["due_at"]) == (
        "ladder",
        1,
        T0 + timedelta(minutes=10),
    )
    assert events(db, alert) == ["opened"]  # a page is not a transition; the step keeps it
    step = db.execute("SELECT detail FROM escalation_steps WHERE state = 'done'").fetchone()
    assert [p["as"] for p in step["detail"]["to"]] == ["nurse"]


def test_unanswered_red_climbs_to_the_doctor_then_both_and_the_next_person_each_round(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    rota(db, T0)
    alert = open_alert(db, red(patient, T0))
    assert run_at(pool, clock, minutes=9, seconds=59) == 0
    assert sms_to(db, alert) == [NURSE]

    assert run_at(pool, clock, seconds=1) == 1  # 10 minutes: the on-call doctor
    assert sms_to(db, alert) == [NURSE, DOCTOR]
    status = db.execute("SELECT status FROM alerts WHERE id = %s", (alert,)).fetchone()
    assert status["status"] == "escalated"
    assert events(db, alert) == ["opened", "escalated"]

    run_at(pool, clock, minutes=10)  # 20 minutes: both again, and the backup nurse
    assert sms_to(db, alert)[2:] == [NURSE, DOCTOR, NURSE2]
    run_at(pool, clock, minutes=10)  # 30: both, and the doctor whose shift starts next
    assert sms_to(db, alert)[5:] == [NURSE, DOCTOR, DOCTOR2]
    run_at(pool, clock, minutes=10)  # 40: everyone on the rota has been asked; both again
    assert sms_to(db, alert)[8:] == [NURSE, DOCTOR]
    bodies = db.execute(
        "SELECT body FROM notifications WHERE channel = 'sms' ORDER BY id"
    ).fetchall()
    assert bodies[0]["body"].startswith("oximon RED")
    assert all(b["body"].startswith("oximon ESCALATED RED") for b in bodies[1:])


def test_acknowledging_stops_the_ladder_and_unsent_pages(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    ids = rota(db, T0)
    alert = open_alert(db, red(patient, T0))
    clock.advance(minutes=3)
    assert acknowledge(db, alert, ids["nurse"], clock.now(), via="dashboard")
    assert run_at(pool, clock, minutes=60) == 0
    assert sms_to(db, alert) == [NURSE]
    states = db.execute("SELECT state FROM notifications WHERE channel = 'sms'").fetchall()
    assert [s["state"] for s in states] == ["cancelled"]  # the worker had not sent it yet
    steps = db.execute("SELECT state FROM escalation_steps WHERE kind = 'ladder' ORDER BY id")
    assert [s["state"] for s in steps.fetchall()] == ["done", "cancelled"]
    ack = db.execute(
        "SELECT user_id, detail FROM alert_events WHERE action = 'acknowledged'"
    ).fetchone()
    assert (ack["user_id"], ack["detail"]) == (ids["nurse"], {"via": "dashboard"})


def test_with_nobody_on_the_rota_red_goes_to_the_doctor_on_call_at_once(
    db: psycopg.Connection, patient: int
) -> None:
    add_user(db, "flagged-doctor", "doctor", DOCTOR, on_call=True)
    add_user(db, "nurse-off-duty", "nurse", NURSE)
    alert = open_alert(db, red(patient, T0))
    assert sms_to(db, alert) == [DOCTOR]
    steps = db.execute(
        "SELECT step, detail FROM escalation_steps WHERE state = 'done' ORDER BY id"
    ).fetchall()
    assert [(s["step"], len(s["detail"]["to"])) for s in steps] == [(0, 0), (1, 1)]
    status = db.execute("SELECT status FROM alerts WHERE id = %s", (alert,)).fetchone()
    assert status["status"] == "open"  # nobody waited: this is its first page, not a climb


def test_people_who_texted_stop_are_skipped(db: psycopg.Connection, patient: int) -> None:
    ids = rota(db, T0)
    db.execute("UPDATE users SET sms_opted_out = true WHERE id = %s", (ids["nurse"],))
    alert = open_alert(db, red(patient, T0))
    assert sms_to(db, alert) == [NURSE2]  # the next nurse on duty


# --- amber, upgrades, late uploads --------------------------------------------------------------


def test_amber_waits_an_hour_for_someone_before_texting_the_nurse(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    rota(db, T0)
    alert = open_alert(db, amber(patient, T0))
    web = db.execute("SELECT recipient FROM notifications WHERE channel = 'web'").fetchall()
    assert [w["recipient"] for w in web] == ["dashboard"]
    assert sms_to(db) == []
    assert run_at(pool, clock, minutes=59) == 0
    run_at(pool, clock, minutes=1)
    assert sms_to(db, alert) == [NURSE]
    assert run_at(pool, clock, hours=5) == 0  # amber does not repeat
    assert sms_to(db, alert) == [NURSE]


def test_amber_turning_red_restarts_the_ladder_as_red(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    ids = rota(db, T0)
    alert = open_alert(db, amber(patient, T0))
    acknowledge(db, alert, ids["nurse"], T0 + timedelta(minutes=1))
    clock.advance(minutes=5)
    with db.transaction():
        [upgraded] = apply_decisions(db, [red(patient, clock.now())], clock.now())
    assert upgraded.upgraded and upgraded.alert_id == alert
    row = db.execute("SELECT status, severity FROM alerts WHERE id = %s", (alert,)).fetchone()
    assert (row["status"], row["severity"]) == ("open", "red")
    assert sms_to(db, alert) == [NURSE]  # at once, as red
    run_at(pool, clock, minutes=10)
    assert sms_to(db, alert) == [NURSE, DOCTOR]


def test_a_late_upload_is_recorded_but_pages_nobody(db: psycopg.Connection, patient: int) -> None:
    rota(db, T0)
    late = Decision(patient, "spo2_low", "amber", 90, T0, "late upload: SpO2 90%", history=True)
    alert = open_alert(db, late)
    assert sms_to(db) == []
    assert db.execute("SELECT count(*) AS n FROM escalation_steps").fetchone()["n"] == 0
    assert events(db, alert) == ["opened"]


# --- snoozes -----------------------------------------------------------------------------------


def test_a_snooze_quiets_amber_but_red_breaks_through(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    ids = rota(db, T0)
    snooze(
        db, patient, "spo2_low", timedelta(hours=4), "known COPD, stable", False, ids["nurse"], T0
    )
    alert = open_alert(db, amber(patient, T0 + timedelta(minutes=1)))
    assert run_at(pool, clock, hours=2) == 0
    assert sms_to(db) == []
    opened = db.execute("SELECT detail FROM alert_events WHERE action = 'opened'").fetchone()
    assert "snoozed_until" in opened["detail"]
    clock.advance(minutes=1)
    with db.transaction():
        apply_decisions(db, [red(patient, clock.now())], clock.now())
    assert sms_to(db, alert) == [NURSE]


def test_a_snooze_that_includes_red_silences_it_until_it_expires_by_itself(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    ids = rota(db, T0)
    alert = open_alert(db, red(patient, T0))
    assert sms_to(db, alert) == [NURSE]
    clock.advance(minutes=2)
    snooze(
        db,
        patient,
        "spo2_low",
        timedelta(minutes=30),
        "palliative",
        True,
        ids["doctor"],
        clock.now(),
    )
    assert run_at(pool, clock, minutes=20) == 0  # the doctor step was cancelled
    assert sms_to(db, alert) == [NURSE]
    run_at(pool, clock, minutes=10)  # the snooze ends: nobody has taken it, start again
    assert sms_to(db, alert) == [NURSE, NURSE]
    assert events(db, alert)[-2:] == ["snoozed", "snooze_ended"]


def test_an_acknowledged_alert_stays_quiet_when_its_snooze_ends(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    ids = rota(db, T0)
    alert = open_alert(db, amber(patient, T0))
    snooze(db, patient, "spo2_low", timedelta(minutes=30), "visit booked", False, ids["nurse"], T0)
    acknowledge(db, alert, ids["nurse"], T0 + timedelta(minutes=5))
    run_at(pool, clock, hours=3)
    assert sms_to(db) == []


# --- policies ---------------------------------------------------------------------------------


def test_a_policy_in_the_table_replaces_the_default(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    rota(db, T0)
    escalation.save_policy(
        db,
        "red",
        [{"wait_min": 0, "notify": ["nurse", "doctor"]}, {"wait_min": 5, "notify": ["next"]}],
        T0,
        None,
    )
    alert = open_alert(db, red(patient, T0))
    assert sms_to(db, alert) == [NURSE, DOCTOR]
    run_at(pool, clock, minutes=5)
    assert sms_to(db, alert) == [NURSE, DOCTOR, NURSE2]
    escalation.reset_policy(db, "red")
    assert escalation.load_policy(db, "red") == escalation.DEFAULT_POLICIES["red"]


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([], "steps"),
        ([{"wait_min": -1, "notify": ["nurse"]}], "steps[0].wait_min"),
        ([{"wait_min": 0, "notify": ["janitor"]}], "steps[0].notify"),
        ([{"wait_min": 0, "notify": []}], "steps[0].notify"),
        (
            [{"wait_min": 0, "notify": ["nurse"], "repeat": True}, {"notify": ["doctor"]}],
            "steps[0].repeat",
        ),
        ([{"wait_min": 0, "notify": ["nurse"], "repeat": True}], "steps[0].wait_min"),
        ([{"wait_min": 1, "notify": ["nurse"], "colour": "red"}], "steps[0].colour"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_naming_the_field(steps: object, field: str) -> None:
    with pytest.raises(escalation.PolicyError, match="^" + re.escape(field) + ":"):
        escalation.parse_policy(steps)


# --- failures and several workers -----------------------------------------------------------------


def test_a_failed_page_moves_on_to_the_next_person_once(
    db: psycopg.Connection, patient: int, pool: ConnectionPool, clock: ManualClock
) -> None:
    rota(db, T0)
    alert = open_alert(db, red(patient, T0))
    [nurse_sms] = db.execute("SELECT id FROM notifications WHERE channel = 'sms'").fetchall()
    db.execute("UPDATE notifications SET state = 'failed' WHERE id = %s", (nurse_sms["id"],))
    assert escalation.delivery_failed(db, [nurse_sms["id"]], T0) == 1
    assert escalation.delivery_failed(db, [nurse_sms["id"]], T0) == 0  # told twice, moved once
    assert run_at(pool, clock, seconds=1) == 1
    assert sms_to(db, alert) == [NURSE, DOCTOR]  # the next person, before the 10 minutes
    ladder = db.execute(
        "SELECT due_at FROM escalation_steps WHERE kind = 'ladder' AND state = 'pending'"
    ).fetchone()
    assert ladder["due_at"] == T0 + timedelta(minutes=10)  # the ladder itself goes on as planned


def test_several_workers_run_each_due_step_exactly_once(
    db: psycopg.Connection, settings: Settings, clock: ManualClock
) -> None:
    nurse = add_user(db, "nurse-a", "nurse", NURSE)
    doctor = add_user(db, "doctor-a", "doctor", DOCTOR)
    add_shift(db, nurse, "nurse", NURSE, T0 - timedelta(hours=1), T0 + timedelta(hours=9))
    add_shift(db, doctor, "doctor", DOCTOR, T0 - timedelta(hours=1), T0 + timedelta(hours=9))
    patients = [add_patient(db, None) for _ in range(40)]
    with db.transaction():
        apply_decisions(db, [red(p, T0) for p in patients], T0)
    clock.advance(minutes=10)
    pools = [make_pool(settings, name=f"test-worker-{i}") for i in range(4)]
    try:
        threads = [threading.Thread(target=escalation.process_due, args=(p, clock)) for p in pools]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in pools:
            p.close()
    per_alert = db.execute(
        "SELECT alert_id, count(*) FILTER (WHERE recipient = %s) AS doctor,"
        " count(*) FILTER (WHERE recipient = %s) AS nurse FROM notifications"
        " WHERE channel = 'sms' GROUP BY alert_id",
        (DOCTOR, NURSE),
    ).fetchall()
    assert len(per_alert) == 40
    assert all((r["doctor"], r["nurse"]) == (1, 1) for r in per_alert)
