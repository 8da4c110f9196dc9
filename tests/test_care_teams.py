"""Care teams: two municipalities share one installation, and neither sees the other's
patients, alerts, devices or messages. Outside a user's teams a thing is a 404, as if it did
not exist, so ids leak nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import _hash, login
from tests.test_api import T0, add_reading, open_alert

Team = dict[str, dict[str, object]]


@pytest.fixture
def other_team(db: psycopg.Connection) -> dict[str, Any]:
    """A second municipality: its nurse, its admin, a patient with an alert, a device."""
    team_id = db.execute(
        "INSERT INTO care_teams (name) VALUES ('Hjemmetjenesten Nabokommune') RETURNING id"
    ).fetchone()["id"]
    users = {}
    for username, role in (("nabo-nurse", "nurse"), ("nabo-admin", "admin")):
        uid = db.execute(
            "INSERT INTO users (username, full_name, role, password_hash)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (username, f"Test {username}", role, _hash(f"{username}-password")),
        ).fetchone()["id"]
        db.execute("INSERT INTO user_care_teams VALUES (%s, %s)", (uid, team_id))
        users[role] = {"id": uid, "username": username, "password": f"{username}-password"}
    patient_id = db.execute(
        "INSERT INTO patients (display_name, phone, care_team_id)"
        " VALUES ('Synthetic Neighbour', '+4791000077', %s) RETURNING id",
        (team_id,),
    ).fetchone()["id"]
    add_reading(db, patient_id, T0, 97, device_id="oxi-nabo")
    db.execute("INSERT INTO devices (id, patient_id) VALUES ('oxi-nabo', %s)", (patient_id,))
    alert_id = open_alert(db, patient_id)
    return {"team": team_id, "patient": patient_id, "alert": alert_id, **users}


@pytest.fixture
def ours(db: psycopg.Connection, patient: int) -> dict[str, int]:
    add_reading(db, patient, T0, 96, device_id="oxi-ours")
    db.execute("INSERT INTO devices (id, patient_id) VALUES ('oxi-ours', %s)", (patient,))
    return {"patient": patient, "alert": open_alert(db, patient)}


def test_a_nurse_lists_only_her_own_teams_patients_alerts_and_devices(
    client: TestClient, care_team: Team, other_team: dict[str, Any], ours: dict[str, int]
) -> None:
    nurse = login(client, care_team["nurse"])
    patients = client.get("/api/v1/patients", headers=nurse).json()
    assert [p["id"] for p in patients] == [ours["patient"]]
    alerts = client.get("/api/v1/alerts", headers=nurse).json()
    assert [a["id"] for a in alerts] == [ours["alert"]]
    devices = client.get("/api/v1/devices", headers=nurse).json()
    assert [d["device_id"] for d in devices] == ["oxi-ours"]

    neighbour = login(client, other_team["nurse"])
    assert [p["id"] for p in client.get("/api/v1/patients", headers=neighbour).json()] == [
        other_team["patient"]
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/patients/{patient}"),
        ("get", "/api/v1/patients/{patient}/readings"),
        ("get", "/api/v1/patients/{patient}/snoozes"),
        ("get", "/api/v1/alerts/{alert}"),
        ("post", "/api/v1/alerts/{alert}/acknowledge"),
        ("get", "/api/v1/devices/oxi-nabo"),
    ],
)
def test_another_teams_records_are_404_exactly_like_ids_that_do_not_exist(
    client: TestClient,
    care_team: Team,
    other_team: dict[str, Any],
    method: str,
    path: str,
) -> None:
    nurse = login(client, care_team["nurse"])
    theirs = path.format(**other_team)
    missing = path.format(patient=999_999, alert=999_999).replace("oxi-nabo", "oxi-missing")
    res = getattr(client, method)(theirs, headers=nurse)
    assert res.status_code == 404, res.text
    absent = getattr(client, method)(missing, headers=nurse)
    assert absent.status_code == 404
    assert (
        res.json()["detail"].split(" with id ")[0] == absent.json()["detail"].split(" with id ")[0]
    )


def test_an_alert_of_another_team_cannot_be_acted_on_and_stays_untouched(
    client: TestClient, db: psycopg.Connection, care_team: Team, other_team: dict[str, Any]
) -> None:
    nurse = login(client, care_team["nurse"])
    alert = other_team["alert"]
    for path, body in (
        (f"/api/v1/alerts/{alert}/acknowledge", None),
        (f"/api/v1/alerts/{alert}/resolve", {"outcome": "called_stable"}),
        (f"/api/v1/alerts/{alert}/snooze", {"minutes": 30, "reason": "test"}),
        (f"/api/v1/alerts/{alert}/checklist", {"item": "called_patient"}),
    ):
        assert client.post(path, json=body, headers=nurse).status_code == 404, path
    row = db.execute("SELECT status FROM alerts WHERE id = %s", (alert,)).fetchone()
    assert row["status"] == "open"


def test_an_admin_cannot_give_a_device_to_another_teams_patient(
    client: TestClient,
    db: psycopg.Connection,
    care_team: Team,
    other_team: dict[str, Any],
    ours: dict[str, int],
) -> None:
    admin = login(client, care_team["admin"])
    res = client.post(
        "/api/v1/devices/oxi-ours/move", json={"patient_id": other_team["patient"]}, headers=admin
    )
    assert res.status_code == 422
    assert res.json()["detail"].startswith("patient_id:")
    row = db.execute("SELECT patient_id FROM devices WHERE id = 'oxi-ours'").fetchone()
    assert row["patient_id"] == ours["patient"]
    res = client.post("/api/v1/devices", json={"patient_id": other_team["patient"]}, headers=admin)
    assert res.status_code == 422
    assert res.json()["detail"].startswith("patient_id:")


def test_me_names_the_users_care_teams(client: TestClient, other_team: dict[str, Any]) -> None:
    me = client.get("/api/v1/me", headers=login(client, other_team["nurse"])).json()
    assert [t["name"] for t in me["care_teams"]] == ["Hjemmetjenesten Nabokommune"]


def test_a_device_back_on_the_shelf_stays_with_its_last_patients_team(
    client: TestClient, db: psycopg.Connection, care_team: Team, other_team: dict[str, Any]
) -> None:
    """After a discharge the oximeter goes back on the shelf; its history (who wore it) is the
    other team's, so our administrator neither lists nor opens it, while theirs does."""
    db.execute(
        "INSERT INTO device_assignments (device_id, patient_id, assigned_at, unassigned_at,"
        " end_reason) VALUES ('oxi-nabo', %s, now() - interval '2 days', now(), 'unassigned')",
        (other_team["patient"],),
    )
    db.execute("UPDATE devices SET patient_id = NULL WHERE id = 'oxi-nabo'")
    ours = login(client, care_team["admin"])
    assert client.get("/api/v1/devices/oxi-nabo", headers=ours).status_code == 404
    listed = client.get("/api/v1/devices", params={"status": "all"}, headers=ours).json()
    assert "oxi-nabo" not in [d["device_id"] for d in listed]
    theirs = login(client, other_team["admin"])
    assert client.get("/api/v1/devices/oxi-nabo", headers=theirs).status_code == 200
    listed = client.get("/api/v1/devices", params={"status": "all"}, headers=theirs).json()
    assert "oxi-nabo" in [d["device_id"] for d in listed]
