"""The alert lifecycle through the API: resolve with an outcome, the response checklist, snoozes,
the on-call rota and escalation settings; every transition in the alert's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerting.lifecycle import apply_decisions
from tests.alerting_support import NURSE, amber, red, rota
from tests.conftest import login

Team = dict[str, dict[str, Any]]


def now() -> datetime:
    return datetime.now(UTC)


def open_alert(db: psycopg.Connection, decision) -> int:  # noqa: ANN001
    with db.transaction():
        [applied] = apply_decisions(db, [decision], decision.at)
    return applied.alert_id


@pytest.fixture
def nurse(client: TestClient, care_team: Team) -> dict[str, str]:
    return login(client, care_team["nurse"])


@pytest.fixture
def admin(client: TestClient, care_team: Team) -> dict[str, str]:
    return login(client, care_team["admin"])


# --- resolving ------------------------------------------------------------------------------------


def test_resolving_records_outcome_note_who_and_when_and_ends_the_ladder(
    client: TestClient, db: psycopg.Connection, care_team: Team, nurse: dict[str, str], patient: int
) -> None:
    rota(
        db, now(), existing={"nurse": care_team["nurse"]["id"], "doctor": care_team["doctor"]["id"]}
    )
    alert = open_alert(db, red(patient, now()))
    res = client.post(
        f"/api/v1/alerts/{alert}/resolve",
        json={"outcome": "home_visit", "note": "Visited 10:20, SpO2 95% at rest"},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["status"], body["outcome"], body["resolution_note"]) == (
        "resolved",
        "home_visit",
        "Visited 10:20, SpO2 95% at rest",
    )
    assert body["resolved_by_username"] == "nurse" and body["outcome_label"] == "Home visit"
    # Whoever closes an alert nobody had taken has taken it.
    assert [(e["action"], e["username"]) for e in body["history"]] == [
        ("opened", None),
        ("acknowledged", "nurse"),
        ("resolved", "nurse"),
    ]
    assert body["history"][2]["detail"] == {
        "outcome": "home_visit",
        "note": "Visited 10:20, SpO2 95% at rest",
    }
    assert [s["state"] for s in body["escalation"]] == ["done", "cancelled"]
    again = client.post(
        f"/api/v1/alerts/{alert}/resolve", json={"outcome": "admitted"}, headers=nurse
    )
    assert again.status_code == 409 and "already resolved" in again.json()["detail"]


def test_other_needs_words_and_unknown_outcomes_are_refused_naming_the_field(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    alert = open_alert(db, amber(patient, now()))
    res = client.post(f"/api/v1/alerts/{alert}/resolve", json={"outcome": "other"}, headers=nurse)
    assert res.status_code == 422 and res.json()["detail"].startswith("outcome_text:")
    res = client.post(f"/api/v1/alerts/{alert}/resolve", json={"outcome": "better"}, headers=nurse)
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "outcome"]
    res = client.post(
        f"/api/v1/alerts/{alert}/resolve",
        json={"outcome": "other", "outcome_text": "Patient's daughter measured wrong finger"},
        headers=nurse,
    )
    assert res.status_code == 200
    assert res.json()["outcome_text"] == "Patient's daughter measured wrong finger"
    options = client.get("/api/v1/alert-outcomes", headers=nurse).json()
    assert [o["outcome"] for o in options] == [
        "called_stable",
        "home_visit",
        "referred_hospital",
        "admitted",
        "artefact_false_alarm",
        "other",
    ]


def test_unknown_alerts_are_404_everywhere(client: TestClient, nurse: dict[str, str]) -> None:
    for method, path, body in [
        ("get", "/api/v1/alerts/999999", None),
        ("post", "/api/v1/alerts/999999/resolve", {"outcome": "admitted"}),
        ("post", "/api/v1/alerts/999999/checklist", {"item": "called_patient"}),
        ("post", "/api/v1/alerts/999999/snooze", {"minutes": 30, "reason": "x"}),
    ]:
        res = client.request(method, path, json=body, headers=nurse)
        assert res.status_code == 404, (path, res.text)


# --- checklist --------------------------------------------------------------------------------


def test_the_nurse_ticks_the_checklist_and_each_tick_keeps_who_and_when(
    client: TestClient, db: psycopg.Connection, care_team: Team, nurse: dict[str, str], patient: int
) -> None:
    alert = open_alert(db, red(patient, now()))
    detail = client.get(f"/api/v1/alerts/{alert}", headers=nurse).json()
    assert [c["item"] for c in detail["checklist"]] == [
        "called_patient",
        "repeat_reading",
        "asked_symptoms",
        "spoke_to_doctor",
    ]
    assert not any(c["done"] for c in detail["checklist"])
    before = now()
    res = client.post(
        f"/api/v1/alerts/{alert}/checklist", json={"item": "called_patient"}, headers=nurse
    )
    assert res.status_code == 200, res.text
    ticked = {c["item"]: c for c in res.json()["checklist"]}["called_patient"]
    assert ticked["done"] and ticked["done_by_username"] == "nurse"
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(ticked["done_at"]) <= now()
    doctor = login(client, care_team["doctor"])
    client.post(
        f"/api/v1/alerts/{alert}/checklist", json={"item": "spoke_to_doctor"}, headers=doctor
    )
    undo = client.post(
        f"/api/v1/alerts/{alert}/checklist",
        json={"item": "called_patient", "done": False},
        headers=nurse,
    )
    items = {c["item"]: c for c in undo.json()["checklist"]}
    assert not items["called_patient"]["done"] and items["spoke_to_doctor"]["done"]
    assert [(e["action"], e["username"], e["detail"]) for e in undo.json()["history"][1:]] == [
        ("checklist_ticked", "nurse", {"item": "called_patient"}),
        ("checklist_ticked", "doctor", {"item": "spoke_to_doctor"}),
        ("checklist_unticked", "nurse", {"item": "called_patient"}),
    ]
    bad = client.post(f"/api/v1/alerts/{alert}/checklist", json={"item": "prayed"}, headers=nurse)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("item:")
    client.post(f"/api/v1/alerts/{alert}/resolve", json={"outcome": "called_stable"}, headers=nurse)
    closed = client.post(
        f"/api/v1/alerts/{alert}/checklist", json={"item": "repeat_reading"}, headers=nurse
    )
    assert closed.status_code == 409


def test_an_administrator_sets_a_kinds_checklist_for_alerts_that_open_later(
    client: TestClient,
    db: psycopg.Connection,
    admin: dict[str, str],
    nurse: dict[str, str],
    patient: int,
) -> None:
    before = open_alert(db, red(patient, now(), kind="pulse_high"))
    items = [{"item": "checked_medication", "label": "Checked beta blocker taken"}]
    assert (
        client.put(
            "/api/v1/checklists/pulse_high", json={"items": items}, headers=nurse
        ).status_code
        == 403
    )
    res = client.put("/api/v1/checklists/pulse_high", json={"items": items}, headers=admin)
    assert res.status_code == 200 and res.json()["source"] == "custom"
    client.post(
        f"/api/v1/alerts/{before}/resolve", json={"outcome": "called_stable"}, headers=nurse
    )
    after = open_alert(db, red(patient, now(), kind="pulse_high"))
    old = client.get(f"/api/v1/alerts/{before}", headers=nurse).json()["checklist"]
    new = client.get(f"/api/v1/alerts/{after}", headers=nurse).json()["checklist"]
    assert [c["item"] for c in old][0] == "called_patient"  # kept what it started with
    assert [c["item"] for c in new] == ["checked_medication"]
    bad = client.put(
        "/api/v1/checklists/pulse_high",
        json={"items": [{"item": "Bad Key", "label": "x"}]},
        headers=admin,
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "item"
    db.execute("DELETE FROM checklist_templates")


# --- snoozes ------------------------------------------------------------------------------------


def test_snoozing_a_red_alert_needs_include_red(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    alert = open_alert(db, red(patient, now()))
    res = client.post(
        f"/api/v1/alerts/{alert}/snooze", json={"minutes": 60, "reason": "known"}, headers=nurse
    )
    assert res.status_code == 409 and "include_red" in res.json()["detail"]
    res = client.post(
        f"/api/v1/alerts/{alert}/snooze",
        json={"minutes": 60, "reason": "palliative care, agreed with GP", "include_red": True},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["snoozed_by"]["include_red"] is True
    snoozed = body["history"][-1]
    assert (snoozed["action"], snoozed["username"]) == ("snoozed", "nurse")
    assert snoozed["detail"]["reason"] == "palliative care, agreed with GP"
    missing = client.post(
        f"/api/v1/alerts/{alert}/snooze", json={"minutes": 60, "reason": ""}, headers=nurse
    )
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "reason"]
    too_long = client.post(
        f"/api/v1/alerts/{alert}/snooze",
        json={"minutes": 8 * 24 * 60, "reason": "x", "include_red": True},
        headers=nurse,
    )
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"][-1] == "minutes"


def test_a_patient_snooze_is_listed_and_can_be_ended_early(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    res = client.post(
        f"/api/v1/patients/{patient}/snoozes",
        json={"kind": "missed_reading", "minutes": 120, "reason": "at the day centre"},
        headers=nurse,
    )
    assert res.status_code == 201, res.text
    snooze_id = res.json()["id"]
    listed = client.get(f"/api/v1/patients/{patient}/snoozes", headers=nurse).json()
    assert [(s["id"], s["kind"], s["active"]) for s in listed] == [
        (snooze_id, "missed_reading", True)
    ]
    assert client.delete(f"/api/v1/snoozes/{snooze_id}", headers=nurse).status_code == 204
    assert client.get(f"/api/v1/patients/{patient}/snoozes", headers=nurse).json() == []
    assert client.delete(f"/api/v1/snoozes/{snooze_id}", headers=nurse).status_code == 404
    gone = client.post(
        "/api/v1/patients/999999/snoozes",
        json={"kind": "spo2_low", "minutes": 10, "reason": "x"},
        headers=nurse,
    )
    assert gone.status_code == 404


# --- the rota and the policies --------------------------------------------------------------------


def test_the_rota_is_written_in_oslo_time_by_an_administrator_and_read_by_clinicians(
    client: TestClient,
    care_team: Team,
    admin: dict[str, str],
    nurse: dict[str, str],
) -> None:
    shift = {
        "user_id": care_team["nurse"]["id"],
        "starts_at": "2026-11-24T08:00:00",  # local: 07:00 UTC in winter
        "ends_at": "2026-11-24T16:00:00",
    }
    assert client.post("/api/v1/rota/shifts", json=shift, headers=nurse).status_code == 403
    res = client.post("/api/v1/rota/shifts", json=shift, headers=admin)
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["starts_at"] == "2026-11-24T07:00:00Z"
    assert body["starts_local"] == "2026-11-24T08:00:00+01:00"
    assert (body["role"], body["phone"], body["priority"]) == ("nurse", NURSE, 1)
    summer = client.post(
        "/api/v1/rota/shifts",
        json={**shift, "starts_at": "2026-06-24T08:00", "ends_at": "2026-06-24T16:00"},
        headers=admin,
    ).json()
    assert summer["starts_at"] == "2026-06-24T06:00:00Z"
    listed = client.get(
        "/api/v1/rota/shifts",
        params={"since": "2026-11-24T00:00", "until": "2026-11-25T00:00"},
        headers=nurse,
    ).json()
    assert [s["id"] for s in listed] == [body["id"]]
    moved = client.put(
        f"/api/v1/rota/shifts/{body['id']}",
        json={**shift, "ends_at": "2026-11-24T20:00:00+01:00", "priority": 2},
        headers=admin,
    ).json()
    assert (moved["ends_at"], moved["priority"]) == ("2026-11-24T19:00:00Z", 2)
    assert client.delete(f"/api/v1/rota/shifts/{body['id']}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/rota/shifts/{body['id']}", headers=nurse).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ends_at": "2026-11-24T07:00:00"}, "ends_at"),
        ({"user_id": 999999}, "user_id"),
        ({"phone": "99000001"}, "phone"),
        ({"starts_at": "2026-03-29T02:30:00"}, "2026-03-29T02:30:00"),  # skipped by DST
    ],
)
def test_a_shift_that_cannot_be_stored_is_422_naming_the_field(
    client: TestClient, care_team: Team, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    shift = {
        "user_id": care_team["nurse"]["id"],
        "starts_at": "2026-11-24T08:00:00",
        "ends_at": "2026-11-24T16:00:00",
        **change,
    }
    res = client.post("/api/v1/rota/shifts", json=shift, headers=admin)
    assert res.status_code == 422, res.text
    assert field in str(res.json()["detail"])


def test_an_admin_without_a_phone_cannot_be_put_on_the_rota(
    client: TestClient, care_team: Team, admin: dict[str, str]
) -> None:
    res = client.post(
        "/api/v1/rota/shifts",
        json={
            "user_id": care_team["admin"]["id"],
            "role": "doctor",
            "starts_at": "2026-11-24T08:00:00",
            "ends_at": "2026-11-24T16:00:00",
        },
        headers=admin,
    )
    assert res.status_code == 422 and res.json()["detail"].startswith("phone:")


def test_who_is_on_duty_now(
    client: TestClient, db: psycopg.Connection, care_team: Team, nurse: dict[str, str]
) -> None:
    ids = rota(db, now(), existing={"nurse": care_team["nurse"]["id"]})
    res = client.get("/api/v1/rota/now", headers=nurse).json()
    assert res["nurse"]["user_id"] == ids["nurse"]
    assert res["doctor"]["user_id"] == ids["doctor"]
    assert res["timezone"] == "Europe/Oslo"


def test_escalation_policies_are_shown_and_set_by_an_administrator(
    client: TestClient, admin: dict[str, str], nurse: dict[str, str]
) -> None:
    shown = {
        p["severity"]: p for p in client.get("/api/v1/escalation/policies", headers=nurse).json()
    }
    assert shown["red"]["source"] == "default"
    assert [s["notify"] for s in shown["red"]["steps"]] == [
        ["nurse"],
        ["doctor"],
        ["nurse", "doctor", "next"],
    ]
    assert shown["amber"]["steps"] == [{"wait_min": 60, "notify": ["nurse"], "repeat": False}]
    steps = [{"wait_min": 30, "notify": ["nurse"]}, {"wait_min": 60, "notify": ["doctor"]}]
    try:
        assert (
            client.put(
                "/api/v1/escalation/policies/amber", json={"steps": steps}, headers=nurse
            ).status_code
            == 403
        )
        res = client.put("/api/v1/escalation/policies/amber", json={"steps": steps}, headers=admin)
        assert res.status_code == 200 and res.json()["source"] == "custom"
        bad = client.put(
            "/api/v1/escalation/policies/amber",
            json={"steps": [{"wait_min": 5, "notify": ["mayor"]}]},
            headers=admin,
        )
        assert bad.status_code == 422 and bad.json()["detail"].startswith("steps[0].notify")
    finally:
        assert client.delete("/api/v1/escalation/policies/amber", headers=admin).status_code == 204
    shown = {
        p["severity"]: p for p in client.get("/api/v1/escalation/policies", headers=nurse).json()
    }
    assert shown["amber"]["source"] == "default"
