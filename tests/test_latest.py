"""The latest reading of every patient a user sees: one row per patient, their newest by
measured time, never another care team's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests import test_care_teams
from tests.conftest import bearer
from tests.test_api import T0, add_patient, add_reading

Team = dict[str, dict[str, object]]
other_team = test_care_teams.other_team  # a fixture


@pytest.fixture
def neighbour(other_team: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Another municipality (tests.test_care_teams.other_team: a patient with a reading and an
    open alert) and its nurse's bearer header."""
    return {**other_team, "headers": bearer(settings, {"nurse": other_team["nurse"]}, "nurse")}


def test_latest_gives_each_of_my_patients_newest_reading_by_measured_time(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], neighbour: dict[str, Any]
) -> None:
    a = add_patient(db, "Synthetic A")
    b = add_patient(db, "Synthetic B")
    add_patient(db, "Synthetic without readings")
    for minutes, spo2 in ((0, 97), (10, 93), (5, 96)):  # the newest arrives out of order
        add_reading(db, a, T0 + timedelta(minutes=minutes), spo2, device_id="oxi-a")
    # A late upload stored after is older: it does not replace the newest.
    add_reading(db, a, T0 - timedelta(hours=3), 88, device_id="oxi-a")
    add_reading(db, b, T0 - timedelta(days=20), 95, pulse=66, device_id="oxi-b")

    res = client.get("/api/v1/readings/latest", headers=nurse)
    assert res.status_code == 200, res.text
    rows = res.json()
    assert [(r["patient_id"], r["spo2"]) for r in rows] == [(a, 93), (b, 95)]
    assert rows[0]["time"].startswith("2026-11-24T08:10:00")
    assert (rows[1]["pulse"], rows[1]["device_id"], rows[1]["quality"]) == (66, "oxi-b", "ok")
    assert neighbour["patient"] not in [r["patient_id"] for r in rows]

    only_b = client.get("/api/v1/readings/latest", params={"patient_id": b}, headers=nurse)
    assert [r["patient_id"] for r in only_b.json()] == [b]


def test_latest_of_another_team_shows_only_theirs_and_asking_for_mine_gives_nothing(
    client: TestClient, db: psycopg.Connection, patient: int, neighbour: dict[str, Any]
) -> None:
    add_reading(db, patient, T0, 96, device_id="oxi-ours")
    theirs = client.get("/api/v1/readings/latest", headers=neighbour["headers"]).json()
    assert [r["patient_id"] for r in theirs] == [neighbour["patient"]]
    asked = client.get(
        "/api/v1/readings/latest", params={"patient_id": patient}, headers=neighbour["headers"]
    )
    assert asked.status_code == 200 and asked.json() == []


def test_latest_of_discharged_patients_only_when_asked(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    add_reading(db, patient, T0, 96)
    db.execute("UPDATE patients SET status = 'discharged', discharged_at = %s", (T0,))
    assert client.get("/api/v1/readings/latest", headers=nurse).json() == []
    gone = client.get("/api/v1/readings/latest", params={"status": "discharged"}, headers=nurse)
    assert [r["patient_id"] for r in gone.json()] == [patient]


def test_latest_needs_a_signed_in_clinician(client: TestClient) -> None:
    assert client.get("/api/v1/readings/latest").status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert client.get("/api/v1/readings/latest", headers=bad).status_code == 401


def test_every_role_reads_latest_and_is_audited(
    client: TestClient,
    db: psycopg.Connection,
    nurse: dict[str, str],
    doctor: dict[str, str],
    admin: dict[str, str],
    patient: int,
) -> None:
    add_reading(db, patient, T0, 96)
    for headers in (nurse, doctor, admin):
        assert len(client.get("/api/v1/readings/latest", headers=headers).json()) == 1
    n = db.execute("SELECT count(*) AS n FROM audit_log WHERE action = 'readings.latest'")
    assert n.fetchone()["n"] == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "gone"}, "status"), ({"patient_id": "seven"}, "patient_id")],
)
def test_bad_latest_filters_are_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], params: dict[str, str], field: str
) -> None:
    res = client.get("/api/v1/readings/latest", params=params, headers=nurse)
    assert res.status_code == 422
    assert field in res.json()["detail"][0]["loc"]
