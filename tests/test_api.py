"""The HTTP API, in-process (TestClient) against the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from alerting.lifecycle import apply_decisions
from alerting.rules import Decision
from api.app import create_app
from api.security import CurrentUser, issue_token
from core.settings import Settings
from tests.conftest import login

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
Team = dict[str, dict[str, object]]


def add_patient(db: psycopg.Connection, name: str) -> int:
    return int(
        db.execute(
            "INSERT INTO patients (display_name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()["id"]
    )


def add_reading(
    db: psycopg.Connection,
    patient_id: int,
    at: datetime,
    spo2: int,
    pulse: int = 70,
    device_id: str = "oxi-test",
) -> None:
    db.execute(
        "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (at, device_id, patient_id, spo2, pulse, at),
    )


def open_alert(
    db: psycopg.Connection,
    patient_id: int,
    kind: str = "spo2_low",
    severity: str = "red",
    value: float = 90,
) -> int:
    decision = Decision(patient_id, kind, severity, value, T0, f"test {severity} {kind}")
    [applied] = apply_decisions(db, [decision], T0)
    return applied.alert_id


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


# --- authentication ---------------------------------------------------------------------------


def test_login_returns_a_bearer_token_with_the_users_role(
    client: TestClient, care_team: Team
) -> None:
    user = care_team["nurse"]
    res = client.post(
        "/api/v1/auth/token", data={"username": user["username"], "password": user["password"]}
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["token_type"], body["role"], body["username"]) == ("bearer", "nurse", "nurse")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json() == {
        "id": user["id"],
        "username": "nurse",
        "role": "nurse",
        "care_teams": [{"id": 1, "name": "Hjemmesykepleien"}],
    }


@pytest.mark.parametrize(
    ("username", "password"),
    [("nurse", "wrong"), ("nurse", "NURSE-PASSWORD"), ("nobody", "nurse-password")],
)
def test_login_with_a_wrong_username_or_password_is_401(
    client: TestClient, care_team: Team, username: str, password: str
) -> None:
    res = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert res.status_code == 401
    # The same answer for an unknown user as for a wrong password: nothing to enumerate.
    assert res.json() == {"detail": "wrong username or password"}
    assert res.headers["www-authenticate"] == "Bearer"


def test_login_of_a_deactivated_user_is_401(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    db.execute("UPDATE users SET active = false WHERE username = 'nurse'")
    res = client.post(
        "/api/v1/auth/token", data={"username": "nurse", "password": "nurse-password"}
    )
    assert res.status_code == 401


def test_request_without_a_token_is_401(client: TestClient) -> None:
    res = client.get("/api/v1/patients")
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
def test_request_with_a_garbage_token_is_401(client: TestClient, token: str) -> None:
    res = client.get("/api/v1/patients", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 401


def test_token_signed_with_another_secret_is_401(client: TestClient, care_team: Team) -> None:
    forged = issue_token(
        "another-secret-that-is-also-long-enough-0123456789",
        CurrentUser(int(care_team["admin"]["id"]), "admin", "admin"),
        3600,
    )
    res = client.get("/api/v1/patients", headers={"Authorization": f"Bearer {forged}"})
    assert res.status_code == 401


def test_expired_token_is_401(client: TestClient, settings: Settings, care_team: Team) -> None:
    now = datetime.now(UTC)
    claims = {
        "sub": str(care_team["nurse"]["id"]),
        "name": "nurse",
        "role": "nurse",
        "iat": now - timedelta(hours=9),
        "exp": now - timedelta(hours=1),
    }
    expired = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
    res = client.get("/api/v1/patients", headers={"Authorization": f"Bearer {expired}"})
    assert res.status_code == 401


@pytest.mark.parametrize("secret", ["", "change-me", "short-but-not-empty-0123456789"])
def test_api_refuses_to_start_without_a_long_jwt_secret(settings: Settings, secret: str) -> None:
    with pytest.raises(RuntimeError, match="OXIMON_JWT_SECRET"):
        create_app(settings.model_copy(update={"jwt_secret": SecretStr(secret)}))


# --- operations -------------------------------------------------------------------------------


def test_healthz_reports_the_database_ok(client: TestClient) -> None:
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "database": "ok"}


def test_metrics_are_served_as_prometheus_text(client: TestClient) -> None:
    res = client.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in res.text and "# HELP " in res.text


def test_docs_and_openapi_schema_load(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/auth/token",
        "/api/v1/patients",
        "/api/v1/patients/{patient_id}/readings",
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}/acknowledge",
        "/api/v1/devices",
    ):
        assert path in paths


# --- patients ---------------------------------------------------------------------------------


def test_patient_list_shows_each_patients_latest_reading(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    other = add_patient(db, "Second Synthetic Patient")
    add_reading(db, patient, T0, 97, 70)
    add_reading(db, patient, T0 + timedelta(minutes=30), 93, 88)  # the latest
    add_reading(db, patient, T0 - timedelta(minutes=30), 90, 60)
    add_reading(db, other, T0 + timedelta(hours=2), 99, 61, device_id="oxi-other")
    never = add_patient(db, "Patient Without Readings")
    res = client.get("/api/v1/patients", headers=nurse)
    assert res.status_code == 200, res.text
    rows = {p["id"]: p for p in res.json()}
    assert set(rows) == {patient, other, never}
    mine = rows[patient]
    assert (mine["last_spo2"], mine["last_pulse"], mine["last_quality"]) == (93, 88, "ok")
    assert datetime.fromisoformat(mine["last_time"]) == T0 + timedelta(minutes=30)
    assert rows[other]["last_spo2"] == 99
    assert rows[never]["last_spo2"] is None and rows[never]["last_time"] is None


def test_patient_list_sorts_red_alerts_first_then_amber(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    amber = add_patient(db, "Amber Patient")
    red = add_patient(db, "Red Patient")
    both = add_patient(db, "Amber And Red Patient")
    open_alert(db, amber, "spo2_low", "amber", 94)
    open_alert(db, red, "spo2_low", "red", 90)
    open_alert(db, both, "spo2_low", "amber", 93)
    open_alert(db, both, "pulse_high", "red", 140)
    resolved = open_alert(db, patient, "spo2_low", "red", 85)
    db.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (resolved,))

    rows = client.get("/api/v1/patients", headers=nurse).json()
    assert [r["id"] for r in rows] == [red, both, amber, patient]
    by_id = {r["id"]: r for r in rows}
    # A patient with several alerts shows the most urgent one.
    assert (by_id[both]["alert_severity"], by_id[both]["alert_kind"]) == ("red", "pulse_high")
    assert by_id[amber]["alert_severity"] == "amber"
    assert by_id[patient]["alert_id"] is None  # a resolved alert is not shown


def test_discharged_patients_are_listed_only_when_asked_for(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    gone = add_patient(db, "Discharged Patient")
    db.execute("UPDATE patients SET status = 'discharged' WHERE id = %s", (gone,))
    assert [p["id"] for p in client.get("/api/v1/patients", headers=nurse).json()] == [patient]
    res = client.get("/api/v1/patients", params={"status": "discharged"}, headers=nurse)
    assert [p["id"] for p in res.json()] == [gone]


def test_patient_details_show_their_thresholds(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.get(f"/api/v1/patients/{patient}", headers=nurse)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["id"] == patient
    assert (body["spo2_amber_max_pct"], body["spo2_red_max_pct"]) == (94, 92)
    assert (body["pulse_red_min_bpm"], body["pulse_red_max_bpm"]) == (40, 131)
    assert body["schedule"]["kind"] == "spot"


def test_unknown_patient_is_404(client: TestClient, nurse: dict[str, str], patient: int) -> None:
    res = client.get(f"/api/v1/patients/{patient + 1000}", headers=nurse)
    assert res.status_code == 404
    assert str(patient + 1000) in res.json()["detail"]


# --- readings ---------------------------------------------------------------------------------


@pytest.fixture
def readings(db: psycopg.Connection, patient: int) -> int:
    """A morning of readings: 08:00-08:40 around 93%, 09:10-09:50 around 98%."""
    for minutes, spo2, pulse in [
        (-1, 80, 50),
        (0, 95, 70),
        (20, 91, 80),
        (40, 93, 90),
        (70, 97, 60),
        (110, 99, 64),
        (120, 85, 100),
    ]:
        add_reading(db, patient, T0 + timedelta(minutes=minutes), spo2, pulse)
    other = add_patient(db, "Someone Else")
    add_reading(db, other, T0 + timedelta(minutes=10), 70, 150, device_id="oxi-other")
    return patient


def test_raw_readings_in_a_range_include_since_and_exclude_until(
    client: TestClient, nurse: dict[str, str], readings: int
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": at(0), "until": at(120)},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["patient_id"], body["bucket"]) == (readings, None)
    got = [(datetime.fromisoformat(r["time"]), r["spo2"], r["pulse"]) for r in body["readings"]]
    assert got == [
        (T0, 95, 70),
        (T0 + timedelta(minutes=20), 91, 80),
        (T0 + timedelta(minutes=40), 93, 90),
        (T0 + timedelta(minutes=70), 97, 60),
        (T0 + timedelta(minutes=110), 99, 64),
    ]
    assert {r["device_id"] for r in body["readings"]} == {"oxi-test"}


def test_readings_accept_since_and_until_in_any_offset(
    client: TestClient, nurse: dict[str, str], readings: int
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": "2026-11-24T09:00:00+01:00", "until": "2026-11-24T09:30:00+01:00"},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    assert [r["spo2"] for r in res.json()["readings"]] == [95, 91]


def test_hourly_buckets_give_min_mean_max_per_hour(
    client: TestClient, nurse: dict[str, str], readings: int
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": at(0), "until": at(120), "bucket": "1h"},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["bucket"] == "1h"
    got = [
        (
            datetime.fromisoformat(b["time"]),
            b["n"],
            b["spo2_min"],
            b["spo2_mean"],
            b["spo2_max"],
            b["pulse_min"],
            b["pulse_mean"],
            b["pulse_max"],
        )
        for b in body["readings"]
    ]
    assert got == [
        (T0, 3, 91, 93.0, 95, 70, 80.0, 90),
        (T0 + timedelta(hours=1), 2, 97, 98.0, 99, 60, 62.0, 64),
    ]


@pytest.mark.parametrize("bucket", ["1 hour", "0h", "h", "5w", "-1h", "1h; DROP TABLE readings"])
def test_bad_bucket_is_422_naming_bucket(
    client: TestClient, nurse: dict[str, str], readings: int, bucket: str
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": at(0), "until": at(120), "bucket": bucket},
        headers=nurse,
    )
    assert res.status_code == 422
    assert "bucket" in res.json()["detail"]


@pytest.mark.parametrize("bucket", ["30s", "5m", "5min", "1h", "1d"])
def test_every_documented_bucket_unit_is_accepted(
    client: TestClient, nurse: dict[str, str], readings: int, bucket: str
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": at(0), "until": at(120), "bucket": bucket},
        headers=nurse,
    )
    assert res.status_code == 200, res.text
    assert sum(b["n"] for b in res.json()["readings"]) == 5


@pytest.mark.parametrize(("since", "until"), [(at(60), at(0)), (at(0), at(0))])
def test_since_not_before_until_is_422(
    client: TestClient, nurse: dict[str, str], readings: int, since: str, until: str
) -> None:
    res = client.get(
        f"/api/v1/patients/{readings}/readings",
        params={"since": since, "until": until},
        headers=nurse,
    )
    assert res.status_code == 422
    assert res.json()["detail"].startswith("since")


@pytest.mark.parametrize("name", ["since", "until"])
def test_naive_since_or_until_is_422_asking_for_an_offset(
    client: TestClient, nurse: dict[str, str], readings: int, name: str
) -> None:
    params = {"since": at(0), "until": at(120), name: "2026-11-24T08:00:00"}
    res = client.get(f"/api/v1/patients/{readings}/readings", params=params, headers=nurse)
    assert res.status_code == 422
    detail = res.json()["detail"]
    assert detail.startswith(name) and "offset" in detail


def test_readings_of_an_unknown_patient_are_404(
    client: TestClient, nurse: dict[str, str], patient: int
) -> None:
    res = client.get(f"/api/v1/patients/{patient + 1000}/readings", headers=nurse)
    assert res.status_code == 404


# --- alerts -----------------------------------------------------------------------------------


def test_acknowledging_an_unknown_alert_is_404(client: TestClient, nurse: dict[str, str]) -> None:
    res = client.post("/api/v1/alerts/999999/acknowledge", headers=nurse)
    assert res.status_code == 404
    assert "999999" in res.json()["detail"]


def test_acknowledging_a_resolved_alert_is_409(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    alert_id = open_alert(db, patient)
    db.execute(
        "UPDATE alerts SET status = 'resolved', resolved_at = %s WHERE id = %s", (T0, alert_id)
    )
    res = client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=nurse)
    assert res.status_code == 409
    assert "resolved" in res.json()["detail"]
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert (row["status"], row["acknowledged_by"]) == ("resolved", None)


def test_acknowledging_twice_keeps_the_first_acknowledger(
    client: TestClient,
    db: psycopg.Connection,
    care_team: Team,
    nurse: dict[str, str],
    doctor: dict[str, str],
    patient: int,
) -> None:
    alert_id = open_alert(db, patient)
    first = client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=nurse)
    assert first.status_code == 200, first.text
    second = client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=doctor)
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["status"] == "acknowledged"
    assert body["acknowledged_by"] == care_team["nurse"]["id"]
    assert body["acknowledged_by_username"] == "nurse"
    assert body["acknowledged_at"] == first.json()["acknowledged_at"]
    assert [(e["action"], e["username"]) for e in body["history"]] == [
        ("opened", None),
        ("acknowledged", "nurse"),
    ]


def test_acknowledging_an_escalated_alert_takes_it(
    client: TestClient,
    db: psycopg.Connection,
    care_team: Team,
    doctor: dict[str, str],
    patient: int,
) -> None:
    alert_id = open_alert(db, patient)
    db.execute("UPDATE alerts SET status = 'escalated' WHERE id = %s", (alert_id,))
    res = client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=doctor)
    assert res.status_code == 200, res.text
    assert (res.json()["status"], res.json()["acknowledged_by"]) == (
        "acknowledged",
        care_team["doctor"]["id"],
    )


def test_alert_list_filters_by_status_and_patient_with_red_first(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], patient: int
) -> None:
    other = add_patient(db, "Other Patient")
    amber = open_alert(db, patient, "spo2_low", "amber", 94)
    red = open_alert(db, other, "spo2_low", "red", 88)
    done = open_alert(db, patient, "pulse_high", "red", 140)
    db.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (done,))

    def ids(**params: object) -> list[int]:
        res = client.get("/api/v1/alerts", params=params, headers=nurse)
        assert res.status_code == 200, res.text
        return [a["id"] for a in res.json()]

    assert ids(status="open") == [red, amber]
    assert ids(status="unresolved", patient_id=patient) == [amber]
    assert ids(status="resolved") == [done]
    assert ids(patient_id=patient) == [done, amber]
    assert (
        client.get("/api/v1/alerts", params={"status": "closed"}, headers=nurse).status_code == 422
    )


# --- roles ------------------------------------------------------------------------------------


def test_nurse_cannot_read_dead_letters_but_an_admin_can(
    client: TestClient, db: psycopg.Connection, nurse: dict[str, str], admin: dict[str, str]
) -> None:
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, device_id)"
        " VALUES (%s, 'oximon/devices/oxi-1/readings', %s, 'spo2: too high', 'oxi-1')",
        (T0, b'{"spo2": 130}'),
    )
    assert client.get("/api/v1/dead-letters", headers=nurse).status_code == 403
    res = client.get("/api/v1/dead-letters", headers=admin)
    assert res.status_code == 200, res.text
    [letter] = res.json()
    assert (letter["reason"], letter["device_id"]) == ("spo2: too high", "oxi-1")
    assert letter["payload_text"] == '{"spo2": 130}'


@pytest.mark.parametrize("role", ["nurse", "doctor"])
def test_clinicians_cannot_register_devices(
    client: TestClient, db: psycopg.Connection, care_team: Team, patient: int, role: str
) -> None:
    headers = login(client, care_team[role])  # through the real login, once
    res = client.post("/api/v1/devices", json={"patient_id": patient}, headers=headers)
    assert res.status_code == 403
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 0


def test_registering_a_device_for_an_unknown_patient_is_422_naming_patient_id(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    res = client.post("/api/v1/devices", json={"patient_id": patient + 1000}, headers=admin)
    assert res.status_code == 422
    assert res.json()["detail"].startswith("patient_id")
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 0


def test_registering_a_device_for_a_discharged_patient_is_422(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    db.execute("UPDATE patients SET status = 'discharged' WHERE id = %s", (patient,))
    res = client.post("/api/v1/devices", json={"patient_id": patient}, headers=admin)
    assert res.status_code == 422
    assert "patient_id" in res.json()["detail"]


def test_admin_registers_a_device_and_gets_its_credentials_once(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    res = client.post(
        "/api/v1/devices", json={"patient_id": patient, "serial": "SN-9"}, headers=admin
    )
    assert res.status_code == 201, res.text
    creds = res.json()
    assert creds["mqtt_username"] == creds["device_id"]
    assert creds["readings_topic"] == f"oximon/devices/{creds['device_id']}/readings"
    assert len(creds["mqtt_password"]) >= 16
    row = db.execute(
        "SELECT patient_id, serial FROM devices WHERE id = %s", (creds["device_id"],)
    ).fetchone()
    assert (row["patient_id"], row["serial"]) == (patient, "SN-9")
