"""Patients through the API: enrol, edit, discharge, notes, and the filtered, sorted,
paginated list; who may do each; bad input named by field; another team's patient a 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from devices.registry import register_device
from tests.conftest import Team
from tests.helpers import Device, wait_until
from tests.test_api import T0, add_patient, add_reading, open_alert
from tests.test_care_teams import other_team  # noqa: F401 - a fixture

ENROL = {
    "display_name": "Synthetic Enrolled Patient",
    "phone": "+4791234567",
    "language": "en",
    "spo2_target_min_pct": 88,
    "spo2_target_max_pct": 92,
    "spo2_amber_max_pct": 87,
    "spo2_red_max_pct": 85,
    "schedule": {"kind": "spot", "times": ["08:00", "20:00"], "grace_min": 45},
}


def audit_actions(db: psycopg.Connection, patient_id: int) -> list[str]:
    rows = db.execute(
        "SELECT action FROM audit_log WHERE patient_id = %s ORDER BY id", (patient_id,)
    ).fetchall()
    return [r["action"] for r in rows]


def field_of(res: Any) -> str:
    return str(res.json()["detail"][0]["loc"][-1])


# --- enrol ------------------------------------------------------------------------------------


def test_nurse_enrols_a_patient_with_bands_and_schedule(
    client: TestClient, nurse: dict[str, str], db: psycopg.Connection, care_team: Team
) -> None:
    res = client.post("/api/v1/patients", json=ENROL, headers=nurse)
    assert res.status_code == 201, res.text
    body = res.json()
    assert res.headers["location"] == f"/api/v1/patients/{body['id']}"
    assert body["status"] == "active"
    assert (body["spo2_target_min_pct"], body["spo2_amber_max_pct"]) == (88, 87)
    assert body["schedule"] == {"kind": "spot", "times": ["08:00", "20:00"], "grace_min": 45}
    assert body["care_team_id"] == 1 and body["care_team_name"] == "Hjemmesykepleien"
    # Defaults where nothing was said.
    assert (body["pulse_red_min_bpm"], body["pulse_red_max_bpm"]) == (40, 131)
    row = db.execute("SELECT * FROM audit_log WHERE action = 'patient.create'").fetchone()
    assert row["user_id"] == care_team["nurse"]["id"] and row["patient_id"] == body["id"]
    # No personal data in the audit detail: field names only.
    assert "+4791234567" not in str(row["detail"]) and "Synthetic" not in str(row["detail"])


def test_enrolling_with_only_a_name_takes_the_default_bands(
    client: TestClient, admin: dict[str, str]
) -> None:
    res = client.post("/api/v1/patients", json={"display_name": "Synthetic Minimal"}, headers=admin)
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["spo2_target_min_pct"], body["spo2_amber_max_pct"], body["spo2_red_max_pct"]) == (
        95,
        94,
        92,
    )
    assert body["language"] == "nb" and body["phone"] is None


def test_doctor_cannot_enrol_edit_or_discharge(
    client: TestClient, doctor: dict[str, str], patient: int
) -> None:
    assert client.post("/api/v1/patients", json=ENROL, headers=doctor).status_code == 403
    res = client.patch(f"/api/v1/patients/{patient}", json={"language": "en"}, headers=doctor)
    assert res.status_code == 403
    assert client.post(f"/api/v1/patients/{patient}/discharge", headers=doctor).status_code == 403
    # ... but reads the patient.
    assert client.get(f"/api/v1/patients/{patient}", headers=doctor).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "91234567"}, "phone"),
        ({"phone": "+47 912 34 567"}, "phone"),
        ({"language": "de"}, "language"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"spo2_red_max_pct": 101}, "spo2_red_max_pct"),
        ({"pulse_red_max_bpm": "fast"}, "pulse_red_max_bpm"),
        ({"schedule": {"kind": "weekly"}}, "kind"),
        ({"schedule": {"kind": "spot", "times": []}}, "schedule"),
        ({"schedule": {"kind": "spot", "times": ["25:00"]}}, "schedule"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_enrolment_is_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], change: dict[str, Any], field: str
) -> None:
    res = client.post("/api/v1/patients", json={**ENROL, **change}, headers=nurse)
    assert res.status_code == 422, res.text
    assert field in [str(part) for part in res.json()["detail"][0]["loc"]]


@pytest.mark.parametrize(
    ("bands", "field"),
    [
        ({"spo2_red_max_pct": 88, "spo2_amber_max_pct": 87}, "spo2_red_max_pct"),
        ({"spo2_amber_max_pct": 90, "spo2_target_min_pct": 88}, "spo2_amber_max_pct"),
        ({"spo2_target_min_pct": 96, "spo2_target_max_pct": 94}, "spo2_target_min_pct"),
        ({"pulse_red_min_bpm": 60}, "pulse_red_min_bpm"),
        ({"pulse_red_max_bpm": 85}, "pulse_red_max_bpm"),
    ],
)
def test_bands_out_of_order_are_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], bands: dict[str, int], field: str
) -> None:
    res = client.post("/api/v1/patients", json={**ENROL, **bands}, headers=nurse)
    assert res.status_code == 422, res.text
    assert field_of(res) == field


def test_a_phone_number_of_another_active_patient_is_409(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.post("/api/v1/patients", json={**ENROL, "phone": "+4791000001"}, headers=nurse)
    assert res.status_code == 409
    assert res.json()["detail"].startswith("phone:")


def test_a_user_of_several_teams_must_name_one_of_theirs(
    client: TestClient,
    nurse: dict[str, str],
    db: psycopg.Connection,
    care_team: Team,
    other_team: dict[str, Any],  # noqa: F811
) -> None:
    second = db.execute("INSERT INTO care_teams (name) VALUES ('Team B') RETURNING id").fetchone()
    db.execute(
        "INSERT INTO user_care_teams VALUES (%s, %s)", (care_team["nurse"]["id"], second["id"])
    )
    res = client.post("/api/v1/patients", json=ENROL, headers=nurse)
    assert res.status_code == 422 and field_of(res) == "care_team_id"
    res = client.post(
        "/api/v1/patients", json={**ENROL, "care_team_id": other_team["team"]}, headers=nurse
    )
    assert res.status_code == 422 and field_of(res) == "care_team_id"
    res = client.post(
        "/api/v1/patients", json={**ENROL, "care_team_id": second["id"]}, headers=nurse
    )
    assert res.status_code == 201 and res.json()["care_team_id"] == second["id"]


# --- edit -------------------------------------------------------------------------------------


def test_nurse_edits_some_fields_and_the_rest_stay(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection
) -> None:
    res = client.patch(
        f"/api/v1/patients/{patient}",
        json={"spo2_target_min_pct": 92, "spo2_amber_max_pct": 91, "spo2_red_max_pct": 89},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["spo2_target_min_pct"], body["spo2_amber_max_pct"]) == (92, 91)
    assert body["phone"] == "+4791000001" and body["display_name"] == "Synthetic Test Patient"
    assert body["updated_at"] is not None
    assert audit_actions(db, patient) == ["patient.update"]
    detail = db.execute("SELECT detail FROM audit_log").fetchone()["detail"]
    assert detail == {"fields": ["spo2_amber_max_pct", "spo2_red_max_pct", "spo2_target_min_pct"]}


def test_an_edit_is_checked_against_the_bands_already_stored(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    # Stored: target 95, amber 94, red 92. Amber 96 alone would sit above the target.
    res = client.patch(
        f"/api/v1/patients/{patient}", json={"spo2_amber_max_pct": 96}, headers=nurse
    )
    assert res.status_code == 422 and field_of(res) == "spo2_amber_max_pct"


def test_phone_can_be_removed_and_schedule_changed(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.patch(
        f"/api/v1/patients/{patient}",
        json={"phone": None, "schedule": {"kind": "continuous", "max_gap_min": 20}},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    assert res.json()["phone"] is None
    assert res.json()["schedule"] == {"kind": "continuous", "max_gap_min": 20}


@pytest.mark.parametrize(
    "body", [{}, {"display_name": None}, {"schedule": None}, {"language": None}]
)
def test_an_empty_or_null_edit_is_422(
    client: TestClient, nurse: dict[str, str], patient: int, body: dict[str, Any]
) -> None:
    res = client.patch(f"/api/v1/patients/{patient}", json=body, headers=nurse)
    assert res.status_code == 422


def test_editing_an_unknown_patient_is_404(client: TestClient, nurse: dict[str, str]) -> None:
    res = client.patch("/api/v1/patients/999", json={"language": "en"}, headers=nurse)
    assert res.status_code == 404


# --- discharge --------------------------------------------------------------------------------


def test_discharge_ends_monitoring_resolves_alerts_returns_devices_and_keeps_history(
    client: TestClient,
    nurse: dict[str, str],
    patient: int,
    db: psycopg.Connection,
    settings: Any,
) -> None:
    add_reading(db, patient, T0, 91)
    alert = open_alert(db, patient, "spo2_low", "red", 91)
    db.execute("INSERT INTO devices (id, patient_id) VALUES ('oxi-disc01', %s)", (patient,))
    db.execute(
        "INSERT INTO device_assignments (device_id, patient_id, assigned_at)"
        " VALUES ('oxi-disc01', %s, %s)",
        (patient, T0),
    )
    res = client.post(
        f"/api/v1/patients/{patient}/discharge",
        json={"reason": "Recovered"},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "discharged" and body["discharged_at"] is not None
    assert body["alerts_resolved"] == [alert] and body["devices_returned"] == ["oxi-disc01"]
    assert body["devices"] == []
    resolved = db.execute("SELECT status, outcome, outcome_text FROM alerts").fetchone()
    assert resolved == {
        "status": "resolved",
        "outcome": "other",
        "outcome_text": "Patient discharged from monitoring",
    }
    device = db.execute("SELECT patient_id FROM devices WHERE id = 'oxi-disc01'").fetchone()
    assert device["patient_id"] is None
    # History kept: readings stay, the record still reads, the list shows them as discharged.
    assert db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 1
    assert client.get(f"/api/v1/patients/{patient}", headers=nurse).status_code == 200
    listed = client.get("/api/v1/patients", params={"status": "discharged"}, headers=nurse)
    assert [p["id"] for p in listed.json()] == [patient]
    # Twice is a conflict; editing a discharged patient too.
    again = client.post(f"/api/v1/patients/{patient}/discharge", headers=nurse)
    assert again.status_code == 409
    edit = client.patch(f"/api/v1/patients/{patient}", json={"language": "en"}, headers=nurse)
    assert edit.status_code == 409
    assert "patient.discharge" in audit_actions(db, patient)


def test_discharge_with_a_chosen_alert_outcome(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection
) -> None:
    open_alert(db, patient, "spo2_low", "amber", 93)
    res = client.post(
        f"/api/v1/patients/{patient}/discharge",
        json={"alert_outcome": "admitted"},
        headers=nurse,
    )
    assert res.status_code == 200
    assert db.execute("SELECT outcome FROM alerts").fetchone()["outcome"] == "admitted"
    bad = client.post(
        f"/api/v1/patients/{add_patient(db, 'X')}/discharge",
        json={"alert_outcome": "cured"},
        headers=nurse,
    )
    assert bad.status_code == 422 and field_of(bad) == "alert_outcome"


def test_discharge_puts_a_registered_oximeter_back_on_the_shelf(
    client: TestClient,
    nurse: dict[str, str],
    patient: int,
    db: psycopg.Connection,
    settings: Any,
) -> None:
    register_device(db, settings.mqtt_admin_url, patient)
    res = client.post(f"/api/v1/patients/{patient}/discharge", headers=nurse)
    assert res.status_code == 200
    history = db.execute("SELECT end_reason, unassigned_by FROM device_assignments").fetchone()
    assert history["end_reason"] == "unassigned"


# --- notes ------------------------------------------------------------------------------------


def test_nurses_and_doctors_write_notes_admins_read_them(
    client: TestClient,
    nurse: dict[str, str],
    doctor: dict[str, str],
    admin: dict[str, str],
    patient: int,
    care_team: Team,
    db: psycopg.Connection,
) -> None:
    url = f"/api/v1/patients/{patient}/notes"
    first = client.post(url, json={"body": "Called: feels better."}, headers=nurse)
    assert first.status_code == 201, first.text
    assert first.json()["author_username"] == "nurse" and first.json()["at"]
    second = client.post(url, json={"body": "  Reviewed bands.  "}, headers=doctor)
    assert second.status_code == 201 and second.json()["body"] == "Reviewed bands."
    assert client.post(url, json={"body": "admin note"}, headers=admin).status_code == 403
    res = client.get(url, headers=admin)
    assert res.status_code == 200
    assert [n["author_username"] for n in res.json()] == ["doctor", "nurse"]  # newest first
    assert res.headers["x-total-count"] == "2"
    assert audit_actions(db, patient) == ["note.create", "note.create", "notes.read"]


@pytest.mark.parametrize("body", [{}, {"body": ""}, {"body": "   "}, {"body": "x" * 10_001}])
def test_bad_notes_are_422_naming_body(
    client: TestClient, nurse: dict[str, str], patient: int, body: dict[str, Any]
) -> None:
    res = client.post(f"/api/v1/patients/{patient}/notes", json=body, headers=nurse)
    assert res.status_code == 422 and field_of(res) == "body"


# --- list ------------------------------------------------------------------------------------


@pytest.fixture
def ward(db: psycopg.Connection, patient: int) -> dict[str, int]:
    """Five patients: red, amber, missed reading, quiet, and a 'Quiet' one never measured."""
    ids = {
        "red": add_patient(db, "Synthetic Red"),
        "amber": add_patient(db, "Synthetic Amber"),
        "missed": add_patient(db, "Synthetic Missed"),
        "quiet": patient,
        "never": add_patient(db, "Synthetic Quiet Never"),
    }
    open_alert(db, ids["red"], "spo2_low", "red", 90)
    open_alert(db, ids["amber"], "spo2_low", "amber", 93)
    open_alert(db, ids["missed"], "missed_reading", "amber", 60)
    add_reading(db, ids["quiet"], T0, 97)
    return ids


def listed(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    res = client.get("/api/v1/patients", params=params, headers=headers)
    assert res.status_code == 200, res.text
    return [p["id"] for p in res.json()]


def test_list_sorts_by_risk_then_filters_by_severity_and_missed(
    client: TestClient, nurse: dict[str, str], ward: dict[str, int]
) -> None:
    order = listed(client, nurse)
    assert order[:3] == [ward["red"], ward["amber"], ward["missed"]]
    assert listed(client, nurse, severity="red") == [ward["red"]]
    assert sorted(listed(client, nurse, severity="amber")) == sorted(
        [ward["amber"], ward["missed"]]
    )
    assert sorted(listed(client, nurse, severity="none")) == sorted([ward["quiet"], ward["never"]])
    assert listed(client, nurse, missed="true") == [ward["missed"]]


def test_list_searches_names_and_sorts_by_name_and_last_reading(
    client: TestClient, nurse: dict[str, str], ward: dict[str, int]
) -> None:
    assert sorted(listed(client, nurse, q="quiet")) == sorted([ward["never"]])
    assert listed(client, nurse, q="100%") == []  # wildcards are literal
    names = client.get("/api/v1/patients", params={"sort": "name"}, headers=nurse).json()
    assert [p["display_name"] for p in names] == sorted(p["display_name"] for p in names)
    assert listed(client, nurse, sort="last_reading")[-1] == ward["quiet"]
    assert listed(client, nurse, sort="-last_reading")[0] == ward["quiet"]


def test_list_is_paginated_with_the_total_in_a_header(
    client: TestClient, nurse: dict[str, str], ward: dict[str, int]
) -> None:
    res = client.get("/api/v1/patients", params={"limit": 2, "offset": 2}, headers=nurse)
    assert len(res.json()) == 2 and res.headers["x-total-count"] == "5"
    past = client.get("/api/v1/patients", params={"limit": 2, "offset": 50}, headers=nurse)
    assert past.json() == [] and past.headers["x-total-count"] == "5"
    filtered = client.get("/api/v1/patients", params={"severity": "red"}, headers=nurse)
    assert filtered.headers["x-total-count"] == "1"


def test_list_rows_carry_the_latest_reading_the_alert_and_missed_flag(
    client: TestClient, nurse: dict[str, str], ward: dict[str, int]
) -> None:
    rows = {p["id"]: p for p in client.get("/api/v1/patients", headers=nurse).json()}
    assert rows[ward["quiet"]]["last_spo2"] == 97
    assert rows[ward["red"]]["alert_severity"] == "red"
    assert rows[ward["missed"]]["missed_reading"] is True
    assert rows[ward["quiet"]]["missed_reading"] is False


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"severity": "purple"}, "severity"),
        ({"sort": "age"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"missed": "maybe"}, "missed"),
        ({"care_team_id": "x"}, "care_team_id"),
    ],
)
def test_bad_list_parameters_are_422_naming_them(
    client: TestClient, nurse: dict[str, str], params: dict[str, Any], field: str
) -> None:
    res = client.get("/api/v1/patients", params=params, headers=nurse)
    assert res.status_code == 422 and field_of(res) == field


# --- care-team scope and audit of reads -------------------------------------------------------


def test_another_teams_patient_is_404_for_every_patient_route(
    client: TestClient,
    nurse: dict[str, str],
    admin: dict[str, str],
    other_team: dict[str, Any],  # noqa: F811
) -> None:
    pid = other_team["patient"]
    for headers in (nurse, admin):
        assert client.get(f"/api/v1/patients/{pid}", headers=headers).status_code == 404
        assert (
            client.patch(
                f"/api/v1/patients/{pid}", json={"language": "en"}, headers=headers
            ).status_code
            == 404
        )
        assert client.post(f"/api/v1/patients/{pid}/discharge", headers=headers).status_code == 404
        assert client.get(f"/api/v1/patients/{pid}/notes", headers=headers).status_code == 404
        assert client.get(f"/api/v1/patients/{pid}/readings", headers=headers).status_code == 404
        assert pid not in listed(client, headers)
        assert pid not in listed(client, headers, care_team_id=other_team["team"])
    assert (
        client.post(f"/api/v1/patients/{pid}/notes", json={"body": "x"}, headers=nurse).status_code
        == 404
    )


def test_reading_a_record_is_audited_with_who_and_what(
    client: TestClient,
    doctor: dict[str, str],
    patient: int,
    db: psycopg.Connection,
    care_team: Team,
) -> None:
    client.get(f"/api/v1/patients/{patient}", headers=doctor)
    client.get(f"/api/v1/patients/{patient}/readings", params={"bucket": "1h"}, headers=doctor)
    rows = db.execute("SELECT user_id, action, detail, ip FROM audit_log ORDER BY id").fetchall()
    assert [r["action"] for r in rows] == ["patient.read", "readings.read"]
    assert {r["user_id"] for r in rows} == {care_team["doctor"]["id"]}
    assert rows[1]["detail"]["bucket"] == "1h"
    assert rows[0]["ip"] == "testclient"


def test_text_postgresql_cannot_store_is_422_not_500(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.post(
        f"/api/v1/patients/{patient}/notes", json={"body": "before\u0000after"}, headers=nurse
    )
    assert res.status_code == 422
    res = client.post("/api/v1/patients", json={**ENROL, "display_name": "A\u0000B"}, headers=nurse)
    assert res.status_code == 422


def test_new_bands_reach_the_running_ingest_worker_at_once(
    stack: Any,
    db: psycopg.Connection,
    client: TestClient,
    ingest: Any,
    admin: dict[str, str],
    nurse: dict[str, str],
    patient: int,
) -> None:
    """The worker caches each patient's profile; a PATCH is heard through NOTIFY, so the very
    next reading is judged by the new bands (not up to 30 s later)."""
    res = client.post("/api/v1/devices", json={"patient_id": patient}, headers=admin)
    assert res.status_code == 201, res.text
    creds = res.json()
    device = Device(stack.broker.port, creds["mqtt_username"], creds["mqtt_password"])
    now = datetime.now(UTC)
    device.publish(
        creds["device_id"],
        {"ts": (now - timedelta(minutes=3)).isoformat(), "spo2": 96, "pulse": 70},
    )
    wait_until(lambda: db.execute("SELECT 1 FROM readings").fetchone(), what="first reading")
    assert db.execute("SELECT count(*) AS n FROM alerts").fetchone()["n"] == 0  # 96% is normal
    # This patient's own bands: 96% is now red.
    res = client.patch(
        f"/api/v1/patients/{patient}",
        json={"spo2_target_min_pct": 98, "spo2_amber_max_pct": 97, "spo2_red_max_pct": 96},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    device.publish(
        creds["device_id"],
        {"ts": (now - timedelta(seconds=5)).isoformat(), "spo2": 96, "pulse": 70},
    )
    alert = wait_until(
        lambda: db.execute("SELECT kind, severity FROM alerts").fetchone(),
        timeout_s=10,
        what="an alert by the new bands",
    )
    assert alert == {"kind": "spo2_low", "severity": "red"}
