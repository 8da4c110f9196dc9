"""Users and care teams administered through the API: admins only, and only their own teams'
users; nobody reaches another municipality's staff."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Team, login
from tests.test_care_teams import other_team  # noqa: F401 - a fixture

NEW_NURSE = {
    "username": "nurse7",
    "full_name": "Test Nurse Seven",
    "role": "nurse",
    "password": "a-long-password-7",
    "phone": "+4799000007",
}


def test_admin_creates_a_user_who_can_then_log_in(
    client: TestClient, admin: dict[str, str], db: psycopg.Connection, care_team: Team
) -> None:
    res = client.post("/api/v1/users", json=NEW_NURSE, headers=admin)
    assert res.status_code == 201, res.text
    body = res.json()
    assert (body["username"], body["role"], body["care_team_ids"]) == ("nurse7", "nurse", [1])
    assert "password" not in body and "password_hash" not in body
    assert login(client, {"username": "nurse7", "password": "a-long-password-7"})
    row = db.execute("SELECT * FROM audit_log WHERE action = 'user.create'").fetchone()
    assert row["user_id"] == care_team["admin"]["id"] and row["object_id"] == str(body["id"])
    assert "a-long-password-7" not in str(row["detail"])


def test_nurses_and_doctors_cannot_administer_users(
    client: TestClient, nurse: dict[str, str], doctor: dict[str, str], care_team: Team
) -> None:
    for headers in (nurse, doctor):
        assert client.get("/api/v1/users", headers=headers).status_code == 403
        assert client.post("/api/v1/users", json=NEW_NURSE, headers=headers).status_code == 403
        uid = care_team["nurse"]["id"]
        res = client.patch(f"/api/v1/users/{uid}", json={"on_call": True}, headers=headers)
        assert res.status_code == 403
        assert (
            client.post("/api/v1/care-teams", json={"name": "X"}, headers=headers).status_code
            == 403
        )


def test_admin_lists_only_users_of_their_own_teams(
    client: TestClient,
    admin: dict[str, str],
    other_team: dict[str, Any],  # noqa: F811
) -> None:
    res = client.get("/api/v1/users", headers=admin)
    assert res.status_code == 200
    assert sorted(u["username"] for u in res.json()) == ["admin", "doctor", "nurse"]
    assert res.headers["x-total-count"] == "3"
    nurses = client.get("/api/v1/users", params={"role": "nurse"}, headers=admin).json()
    assert [u["username"] for u in nurses] == ["nurse"]
    # The neighbour's staff do not exist for this admin.
    foreign = other_team["nurse"]["id"]
    assert client.get(f"/api/v1/users/{foreign}", headers=admin).status_code == 404
    res = client.patch(f"/api/v1/users/{foreign}", json={"active": False}, headers=admin)
    assert res.status_code == 404


def test_admin_changes_role_on_call_phone_and_deactivates(
    client: TestClient, admin: dict[str, str], care_team: Team, db: psycopg.Connection
) -> None:
    uid = care_team["nurse"]["id"]
    tokens = client.post(
        "/api/v1/auth/token", data={"username": "nurse", "password": "nurse-password"}
    ).json()
    res = client.patch(
        f"/api/v1/users/{uid}",
        json={"role": "doctor", "on_call": True, "phone": "+4799000055"},
        headers=admin,
    )
    assert res.status_code == 200, res.text
    assert (res.json()["role"], res.json()["on_call"], res.json()["phone"]) == (
        "doctor",
        True,
        "+4799000055",
    )
    # A new role ends the old logins: the refresh token no longer works.
    refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    res = client.patch(f"/api/v1/users/{uid}", json={"active": False}, headers=admin)
    assert res.json()["active"] is False
    denied = client.post(
        "/api/v1/auth/token", data={"username": "nurse", "password": "nurse-password"}
    )
    assert denied.status_code == 401
    details = [
        r["detail"] for r in db.execute("SELECT detail FROM audit_log WHERE action = 'user.update'")
    ]
    assert details[0]["role"] == "doctor" and details[1]["active"] is False
    assert "+4799000055" not in str(details)


def test_password_reset_and_unlock(
    client: TestClient, admin: dict[str, str], care_team: Team
) -> None:
    uid = care_team["nurse"]["id"]
    for _ in range(5):
        client.post("/api/v1/auth/token", data={"username": "nurse", "password": "wrong"})
    locked = client.get(f"/api/v1/users/{uid}", headers=admin).json()
    assert locked["locked_until"] is not None
    res = client.patch(f"/api/v1/users/{uid}", json={"unlock": True}, headers=admin)
    assert res.json()["locked_until"] is None
    assert login(client, {"username": "nurse", "password": "nurse-password"})
    res = client.patch(
        f"/api/v1/users/{uid}", json={"password": "brand-new-password-1"}, headers=admin
    )
    assert res.status_code == 200
    assert login(client, {"username": "nurse", "password": "brand-new-password-1"})
    old = client.post(
        "/api/v1/auth/token", data={"username": "nurse", "password": "nurse-password"}
    )
    assert old.status_code == 401


def test_an_admin_cannot_lock_themselves_out(
    client: TestClient, admin: dict[str, str], care_team: Team
) -> None:
    me = care_team["admin"]["id"]
    assert (
        client.patch(f"/api/v1/users/{me}", json={"active": False}, headers=admin).status_code
        == 409
    )
    assert (
        client.patch(f"/api/v1/users/{me}", json={"role": "nurse"}, headers=admin).status_code
        == 409
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"username": "Has Spaces"}, "username"),
        ({"role": "superuser"}, "role"),
        ({"password": "short"}, "password"),
        ({"phone": "99000007"}, "phone"),
        ({"email": "not-an-address"}, "email"),
        ({"care_team_ids": []}, "care_team_ids"),
        ({"full_name": ""}, "full_name"),
    ],
)
def test_bad_users_are_422_naming_the_field(
    client: TestClient, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    res = client.post("/api/v1/users", json={**NEW_NURSE, **change}, headers=admin)
    assert res.status_code == 422, res.text
    assert field in [str(p) for p in res.json()["detail"][0]["loc"]]


def test_a_taken_username_is_409_and_a_user_needs_a_password_or_an_identity(
    client: TestClient, admin: dict[str, str], care_team: Team
) -> None:
    res = client.post("/api/v1/users", json={**NEW_NURSE, "username": "nurse"}, headers=admin)
    assert res.status_code == 409 and res.json()["detail"].startswith("username")
    no_password = {k: v for k, v in NEW_NURSE.items() if k != "password"}
    res = client.post("/api/v1/users", json=no_password, headers=admin)
    assert res.status_code == 422
    res = client.post(
        "/api/v1/users", json={**no_password, "email": "nurse7@example.org"}, headers=admin
    )
    assert res.status_code == 201
    # No password can log this user in (OpenID Connect only).
    refused = client.post("/api/v1/auth/token", data={"username": "nurse7", "password": "!"})
    assert refused.status_code == 401


def test_care_teams_an_admin_creates_joins_and_places_users_in(
    client: TestClient,
    admin: dict[str, str],
    nurse: dict[str, str],
    care_team: Team,
    other_team: dict[str, Any],  # noqa: F811
) -> None:
    res = client.post("/api/v1/care-teams", json={"name": "Hjemmesykepleien Nord"}, headers=admin)
    assert res.status_code == 201, res.text
    north = res.json()["id"]
    assert res.json()["members"] == 1
    teams = client.get("/api/v1/care-teams", headers=admin).json()
    assert sorted(t["name"] for t in teams) == ["Hjemmesykepleien", "Hjemmesykepleien Nord"]
    # Nurses list their own teams only.
    assert [t["name"] for t in client.get("/api/v1/care-teams", headers=nurse).json()] == [
        "Hjemmesykepleien"
    ]
    uid = care_team["nurse"]["id"]
    res = client.patch(f"/api/v1/users/{uid}", json={"care_team_ids": [1, north]}, headers=admin)
    assert res.json()["care_team_ids"] == [1, north]
    # Not the neighbour's team.
    res = client.patch(
        f"/api/v1/users/{uid}", json={"care_team_ids": [other_team["team"]]}, headers=admin
    )
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"][-1] == "care_team_ids"
    dup = client.post("/api/v1/care-teams", json={"name": "Hjemmesykepleien Nord"}, headers=admin)
    assert dup.status_code == 409
    assert client.post("/api/v1/care-teams", json={"name": " "}, headers=admin).status_code == 422


def test_an_admin_of_several_teams_names_the_team_of_a_new_user(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/api/v1/care-teams", json={"name": "Team Two"}, headers=admin)
    res = client.post("/api/v1/users", json=NEW_NURSE, headers=admin)
    assert res.status_code == 422 and res.json()["detail"][0]["loc"][-1] == "care_team_ids"
