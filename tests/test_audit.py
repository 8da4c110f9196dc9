"""The audit log: who read or changed which patient's record, when, from where."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.audit import record
from api.security import CurrentUser
from tests.conftest import Team, login
from tests.test_api import open_alert
from tests.test_care_teams import other_team  # noqa: F401 - a fixture


def test_record_keeps_who_what_which_patient_and_detail(
    db: psycopg.Connection, care_team: Team, patient: int
) -> None:
    nurse = CurrentUser(int(care_team["nurse"]["id"]), "nurse", "nurse")
    record(db, nurse, "patient.read", patient_id=patient, ip="127.0.0.1", fields=["bands"])
    row = db.execute("SELECT * FROM audit_log").fetchone()
    assert row["user_id"] == nurse.id
    assert row["action"] == "patient.read"
    assert (row["object_kind"], row["object_id"], row["patient_id"]) == (
        "patient",
        str(patient),
        patient,
    )
    assert row["detail"] == {"fields": ["bands"]}
    assert row["ip"] == "127.0.0.1"


def test_admin_queries_the_audit_log_with_filters(
    client: TestClient,
    admin: dict[str, str],
    nurse: dict[str, str],
    doctor: dict[str, str],
    patient: int,
    care_team: Team,
) -> None:
    client.get(f"/api/v1/patients/{patient}", headers=nurse)
    client.get(f"/api/v1/patients/{patient}", headers=doctor)
    client.patch(f"/api/v1/patients/{patient}", json={"language": "en"}, headers=nurse)
    res = client.get("/api/v1/audit", headers=admin)
    assert res.status_code == 200
    assert [r["action"] for r in res.json()] == ["patient.update", "patient.read", "patient.read"]
    assert res.headers["x-total-count"] == "3"
    only_nurse = client.get(
        "/api/v1/audit", params={"user_id": care_team["nurse"]["id"]}, headers=admin
    ).json()
    assert {r["username"] for r in only_nurse} == {"nurse"}
    reads = client.get("/api/v1/audit", params={"action": "patient.read"}, headers=admin).json()
    assert len(reads) == 2
    prefixed = client.get("/api/v1/audit", params={"action": "patient."}, headers=admin).json()
    # Reading the audit log is itself audited, and is not a patient action.
    assert len(prefixed) == 3
    by_patient = client.get("/api/v1/audit", params={"patient_id": patient}, headers=admin)
    assert all(r["patient_id"] == patient for r in by_patient.json())
    future = client.get(
        "/api/v1/audit", params={"since": "2099-01-01T00:00:00Z"}, headers=admin
    ).json()
    assert future == []
    page = client.get("/api/v1/audit", params={"limit": 1, "offset": 1}, headers=admin)
    assert len(page.json()) == 1


def test_only_admins_read_the_audit_log(
    client: TestClient, nurse: dict[str, str], doctor: dict[str, str]
) -> None:
    assert client.get("/api/v1/audit", headers=nurse).status_code == 403
    assert client.get("/api/v1/audit", headers=doctor).status_code == 403
    assert client.get("/api/v1/audit").status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-11-24T08:00:00"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"user_id": "me"}, "user_id"),
        ({"limit": 5000}, "limit"),
    ],
)
def test_bad_audit_filters_are_422_naming_them(
    client: TestClient, admin: dict[str, str], params: dict, field: str
) -> None:
    res = client.get("/api/v1/audit", params=params, headers=admin)
    assert res.status_code == 422
    assert field in str(res.json()["detail"])


def test_an_admin_sees_no_audit_records_of_another_team(
    client: TestClient,
    admin: dict[str, str],
    other_team: dict,  # noqa: F811
) -> None:
    neighbour = login(client, other_team["nurse"])
    client.get(f"/api/v1/patients/{other_team['patient']}", headers=neighbour)
    rows = client.get("/api/v1/audit", headers=admin).json()
    assert all(r["patient_id"] != other_team["patient"] for r in rows)
    assert all(r["user_id"] != other_team["nurse"]["id"] for r in rows)
    filtered = client.get(
        "/api/v1/audit", params={"patient_id": other_team["patient"]}, headers=admin
    )
    assert filtered.json() == []


def test_alert_and_device_actions_are_audited_with_their_patient(
    client: TestClient,
    nurse: dict[str, str],
    admin: dict[str, str],
    patient: int,
    care_team: Team,
    db: psycopg.Connection,
) -> None:
    alert = open_alert(db, patient, "spo2_low", "red", 90)
    assert client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=nurse).status_code == 200
    res = client.post(
        f"/api/v1/alerts/{alert}/resolve", json={"outcome": "called_stable"}, headers=nurse
    )
    assert res.status_code == 200, res.text
    device = client.post("/api/v1/devices", json={"patient_id": patient}, headers=admin)
    assert device.status_code == 201
    # A refused action is not a change.
    again = client.post(
        f"/api/v1/alerts/{alert}/resolve", json={"outcome": "called_stable"}, headers=nurse
    )
    assert again.status_code == 409
    rows = db.execute(
        "SELECT user_id, action, object_kind, object_id, patient_id FROM audit_log"
        " WHERE action LIKE 'api.%%' ORDER BY id"
    ).fetchall()
    nurse_id, admin_id = care_team["nurse"]["id"], care_team["admin"]["id"]
    assert [(r["user_id"], r["object_kind"], r["patient_id"]) for r in rows] == [
        (nurse_id, "alert", patient),
        (nurse_id, "alert", patient),
        # The patient of a new device is in the request body: the record names the route.
        (admin_id, None, None),
    ]
    assert rows[0]["object_id"] == str(alert)
    assert [r["action"] for r in rows] == [
        "api.acknowledge_alert",
        "api.resolve_alert",
        "api.add_device",
    ]


def test_reading_an_alert_the_sms_log_and_a_patients_trend_is_audited(
    client: TestClient,
    nurse: dict[str, str],
    patient: int,
    care_team: Team,
    db: psycopg.Connection,
) -> None:
    alert = open_alert(db, patient, "spo2_low", "red", 90)
    assert client.get(f"/api/v1/alerts/{alert}", headers=nurse).status_code == 200
    assert client.get("/api/v1/notifications?channel=sms", headers=nurse).status_code == 200
    assert client.get("/api/v1/sms/inbound", headers=nurse).status_code == 200
    trend = client.get(f"/api/v1/dashboard/patients/{patient}/trend", headers=nurse)
    assert trend.status_code == 200
    rows = db.execute(
        "SELECT user_id, action, object_kind, patient_id FROM audit_log"
        " WHERE action IN ('alert.read', 'notifications.read', 'sms_inbound.read', 'trend.read')"
        " ORDER BY id"
    ).fetchall()
    nurse_id = care_team["nurse"]["id"]
    assert [(r["user_id"], r["action"], r["patient_id"]) for r in rows] == [
        (nurse_id, "alert.read", patient),
        (nurse_id, "notifications.read", None),
        (nurse_id, "sms_inbound.read", None),
        (nurse_id, "trend.read", patient),
    ]
