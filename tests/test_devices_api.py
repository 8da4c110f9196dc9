"""The devices API: the fleet view for clinicians, registry changes for administrators."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Stack
from tests.test_broker_auth import Oximeter

Team = dict[str, dict[str, object]]


def second_patient(db: psycopg.Connection) -> int:
    return int(
        db.execute(
            "INSERT INTO patients (display_name) VALUES ('Second Synthetic') RETURNING id"
        ).fetchone()["id"]
    )


def register(client: TestClient, admin: dict[str, str], **body: object) -> dict[str, str]:
    res = client.post("/api/v1/devices", json=body, headers=admin)
    assert res.status_code == 201, res.text
    return res.json()


def test_an_administrator_registers_a_device_on_the_shelf_then_gives_it_to_a_patient(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    creds = register(client, admin, serial="SN-1", model="OxiA", firmware="2.1.0")
    device_id = creds["device_id"]
    res = client.post(
        f"/api/v1/devices/{device_id}/move", json={"patient_id": patient}, headers=admin
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["patient_id"] == patient
    [stint] = body["assignments"]
    assert (stint["patient_id"], stint["assigned_by_username"]) == (patient, "admin")
    assert body["problems"] == []  # just given: not yet expected to have sent anything


def test_moving_to_another_patient_keeps_who_and_when_in_the_history(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    other = second_patient(db)
    device_id = register(client, admin, patient_id=patient)["device_id"]
    res = client.post(
        f"/api/v1/devices/{device_id}/move", json={"patient_id": other}, headers=admin
    )
    assert res.status_code == 200, res.text
    history = client.get(f"/api/v1/devices/{device_id}", headers=admin).json()["assignments"]
    assert [(h["patient_id"], h["end_reason"], h["unassigned_by_username"]) for h in history] == [
        (patient, "moved", "admin"),
        (other, None, None),
    ]
    res = client.post(f"/api/v1/devices/{device_id}/move", json={"patient_id": None}, headers=admin)
    assert res.status_code == 200 and res.json()["patient_id"] is None


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"patient_id": 999_999}, 422, "patient_id: no patient with id 999999"),
        ({"patient_id": "seven"}, 422, "patient_id"),
        ({}, 422, "patient_id"),
    ],
)
def test_a_move_to_a_patient_that_does_not_exist_is_422_naming_patient_id(
    client: TestClient, admin: dict[str, str], patient: int, body: dict, status: int, detail: str
) -> None:
    device_id = register(client, admin, patient_id=patient)["device_id"]
    res = client.post(f"/api/v1/devices/{device_id}/move", json=body, headers=admin)
    assert res.status_code == status
    assert detail in str(res.json()["detail"])


def test_unknown_devices_are_404_and_impossible_changes_409(
    client: TestClient, admin: dict[str, str], patient: int
) -> None:
    for action, body in (("move", {"patient_id": patient}), ("rotate", None), ("revoke", None)):
        res = client.post(f"/api/v1/devices/oxi-nope/{action}", json=body, headers=admin)
        assert res.status_code == 404, action
        assert res.json()["detail"] == "no device with id oxi-nope"
    assert client.get("/api/v1/devices/oxi-nope", headers=admin).status_code == 404
    device_id = register(client, admin, patient_id=patient)["device_id"]
    res = client.post(
        f"/api/v1/devices/{device_id}/move", json={"patient_id": patient}, headers=admin
    )
    assert res.status_code == 409
    assert client.post(f"/api/v1/devices/{device_id}/retire", headers=admin).status_code == 200
    res = client.post(f"/api/v1/devices/{device_id}/retire", headers=admin)
    assert (res.status_code, res.json()["detail"]) == (
        409,
        f"device {device_id} is already retired",
    )


def test_a_serial_in_use_is_409_naming_serial(
    client: TestClient, admin: dict[str, str], patient: int
) -> None:
    first = register(client, admin, serial="SN-7", model="OxiA")
    res = client.post("/api/v1/devices", json={"serial": "SN-7", "model": "OxiA"}, headers=admin)
    assert res.status_code == 409
    assert (
        res.json()["detail"] == f"serial: SN-7 is already registered as device {first['device_id']}"
    )


def test_nurses_see_the_fleet_but_cannot_change_it(
    client: TestClient,
    db: psycopg.Connection,
    admin: dict[str, str],
    nurse: dict[str, str],
    patient: int,
) -> None:
    device_id = register(client, admin, patient_id=patient)["device_id"]
    res = client.get("/api/v1/devices", headers=nurse)
    assert res.status_code == 200
    assert [d["device_id"] for d in res.json()] == [device_id]
    assert client.get(f"/api/v1/devices/{device_id}", headers=nurse).status_code == 200
    for action, body in (
        ("move", {"patient_id": None}),
        ("rotate", None),
        ("revoke", None),
        ("retire", None),
    ):
        res = client.post(f"/api/v1/devices/{device_id}/{action}", json=body, headers=nurse)
        assert res.status_code == 403, action
    files = {"file": ("rollout.csv", b"serial\nSN-1\n", "text/csv")}
    assert client.post("/api/v1/devices/import", files=files, headers=nurse).status_code == 403
    assert db.execute("SELECT patient_id FROM devices").fetchone()["patient_id"] == patient


def test_rotate_and_revoke_over_http_take_effect_in_the_broker_at_once(
    stack: Stack, client: TestClient, admin: dict[str, str], patient: int
) -> None:
    creds = register(client, admin, patient_id=patient)
    device_id = creds["device_id"]
    res = client.post(f"/api/v1/devices/{device_id}/rotate", headers=admin)
    assert res.status_code == 200, res.text
    new = res.json()
    assert new["mqtt_username"] == device_id and new["mqtt_password"] != creds["mqtt_password"]
    assert Oximeter(stack.broker.port, device_id, creds["mqtt_password"]).refused is not None
    device = Oximeter(stack.broker.port, device_id, new["mqtt_password"])
    assert device.refused is None

    res = client.post(f"/api/v1/devices/{device_id}/revoke", headers=admin)
    assert res.status_code == 200, res.text
    assert res.json()["credentials_revoked_at"] is not None
    assert device.dropped.wait(2)
    assert Oximeter(stack.broker.port, device_id, new["mqtt_password"]).refused is not None
    [row] = client.get("/api/v1/devices", headers=admin).json()
    assert row["credentials"] == "revoked"
    assert [p["kind"] for p in row["problems"]] == ["credentials_revoked"]


def test_a_csv_upload_registers_the_good_rows_and_reports_the_bad_ones(
    stack: Stack, client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    data = (
        "serial;model;firmware;patient_id\n"
        f"SN-1;OxiA;2.1;{patient}\nSN-2;OxiA;2.1;0\nSN-3;OxiA;2.1;\n"
    )
    files = {"file": ("rollout.csv", data.encode(), "text/csv")}
    dry = client.post(
        "/api/v1/devices/import", params={"dry_run": True}, files=files, headers=admin
    )
    assert dry.status_code == 200, dry.text
    assert (dry.json()["valid_rows"], dry.json()["registered"]) == ([2, 4], [])
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 0

    res = client.post("/api/v1/devices/import", files=files, headers=admin)
    assert res.status_code == 200, res.text
    report = res.json()
    assert report["failed"] == [{"row": 3, "reason": "patient_id: '0' is not a patient number"}]
    assert [(d["row"], d["serial"], d["patient_id"]) for d in report["registered"]] == [
        (2, "SN-1", patient),
        (4, "SN-3", None),
    ]
    first = report["registered"][0]
    assert first["readings_topic"] == f"oximon/devices/{first['device_id']}/readings"
    assert (
        Oximeter(stack.broker.port, first["mqtt_username"], first["mqtt_password"]).refused is None
    )


def test_a_csv_upload_that_cannot_be_read_is_422_naming_the_file(
    client: TestClient, admin: dict[str, str]
) -> None:
    files = {"file": ("rollout.csv", b"colour\nred\n", "text/csv")}
    res = client.post("/api/v1/devices/import", files=files, headers=admin)
    assert res.status_code == 422
    assert res.json()["detail"].startswith("file: unknown column 'colour'")
    assert client.post("/api/v1/devices/import", headers=admin).status_code == 422  # no file


def test_the_fleet_is_sorted_by_problem_and_can_be_filtered_and_tuned(
    client: TestClient, db: psycopg.Connection, admin: dict[str, str], patient: int
) -> None:
    quiet = register(client, admin, patient_id=patient)["device_id"]
    flat = register(client, admin, patient_id=patient)["device_id"]
    fine = register(client, admin, patient_id=patient)["device_id"]
    db.execute(
        "UPDATE devices SET last_seen_at = now() - interval '1 minute', battery_pct = 90,"
        " online = true"
    )
    db.execute(
        "UPDATE devices SET last_seen_at = now() - interval '20 hours', online = false"
        " WHERE id = %s",
        (quiet,),
    )
    db.execute("UPDATE devices SET battery_pct = 9 WHERE id = %s", (flat,))
    rows = client.get("/api/v1/devices", headers=admin).json()
    assert [(d["device_id"], [p["kind"] for p in d["problems"]]) for d in rows] == [
        (quiet, ["offline"]),
        (flat, ["low_battery"]),
        (fine, []),
    ]
    only = client.get("/api/v1/devices", params={"problem": "low_battery"}, headers=admin).json()
    assert [d["device_id"] for d in only] == [flat]
    tuned = client.get(
        "/api/v1/devices", params={"low_battery_pct": 5, "sort": "battery"}, headers=admin
    ).json()
    assert [d["device_id"] for d in tuned][0] == flat and tuned[0]["problems"] == []
    res = client.get("/api/v1/devices", params={"sort": "colour"}, headers=admin)
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["query", "sort"]
