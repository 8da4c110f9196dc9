"""Login with refresh tokens, rotation and reuse detection, logout, lock-out and rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from tests.conftest import Team


def password_login(client: TestClient, username: str, password: str):  # noqa: ANN201
    return client.post("/api/v1/auth/token", data={"username": username, "password": password})


def test_login_gives_a_short_lived_bearer_token_and_a_refresh_token(
    client: TestClient, care_team: Team, settings: Settings, db: psycopg.Connection
) -> None:
    res = password_login(client, "nurse", "nurse-password")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["token_type"] == "bearer"
    assert (body["role"], body["username"]) == ("nurse", "nurse")
    assert body["expires_in"] == settings.token_ttl_s == 15 * 60
    claims = jwt.decode(
        body["access_token"], settings.jwt_secret.get_secret_value(), algorithms=["HS256"]
    )
    assert claims["exp"] - claims["iat"] == 15 * 60
    # The server keeps only a hash of the refresh token.
    stored = db.execute("SELECT token_hash FROM refresh_tokens").fetchall()
    assert len(stored) == 1
    assert body["refresh_token"].encode() not in bytes(stored[0]["token_hash"])
    login = db.execute(
        "SELECT user_id, action FROM audit_log WHERE action = 'auth.login'"
    ).fetchone()
    assert login == {"user_id": care_team["nurse"]["id"], "action": "auth.login"}


def test_refresh_rotates_the_token_and_the_new_bearer_token_works(
    client: TestClient, care_team: Team
) -> None:
    first = password_login(client, "nurse", "nurse-password").json()
    res = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert res.status_code == 200, res.text
    second = res.json()
    assert second["refresh_token"] != first["refresh_token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert me.json()["username"] == "nurse"
    # The new refresh token works once more.
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    first = password_login(client, "nurse", "nurse-password").json()
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    # Someone replays the spent token: refused, and the legitimate new one dies with it.
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert "log in again" in replay.json()["detail"]
    later = client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}
    )
    assert later.status_code == 401
    assert (
        db.execute(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'auth.refresh_reuse'"
        ).fetchone()["n"]
        == 1
    )
    # Another login (another family) is untouched.
    other = password_login(client, "nurse", "nurse-password").json()
    ok = client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert ok.status_code == 200


def test_logout_revokes_the_refresh_token(client: TestClient, care_team: Team) -> None:
    tokens = password_login(client, "doctor", "doctor-password").json()
    res = client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert res.status_code == 204
    after = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert after.status_code == 401


def test_an_unknown_or_expired_refresh_token_is_401(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    res = client.post("/api/v1/auth/refresh", json={"refresh_token": "not-a-token"})
    assert res.status_code == 401
    tokens = password_login(client, "nurse", "nurse-password").json()
    db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    res = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert res.status_code == 401


def test_a_deactivated_user_cannot_refresh(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    tokens = password_login(client, "nurse", "nurse-password").json()
    db.execute("UPDATE users SET active = false WHERE username = 'nurse'")
    res = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert res.status_code == 401


@pytest.mark.parametrize("body", [{}, {"refresh_token": ""}, {"refresh_token": 5}])
def test_refresh_without_a_token_is_422_naming_it(client: TestClient, body: dict) -> None:
    res = client.post("/api/v1/auth/refresh", json=body)
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"][-1] == "refresh_token"


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    for _ in range(4):
        assert password_login(client, "nurse", "wrong").status_code == 401
    fifth = password_login(client, "nurse", "wrong")
    assert fifth.status_code == 423
    assert "locked" in fifth.json()["detail"]
    assert 0 < int(fifth.headers["retry-after"]) <= 15 * 60 + 1
    right = password_login(client, "nurse", "nurse-password")
    assert right.status_code == 423
    actions = [
        r["action"]
        for r in db.execute(
            "SELECT action FROM audit_log WHERE user_id = %s ORDER BY id",
            (care_team["nurse"]["id"],),
        )
    ]
    assert actions.count("auth.login_failed") == 5
    assert "auth.locked" in actions and actions[-1] == "auth.login_refused_locked"
    # Other users are not affected.
    assert password_login(client, "doctor", "doctor-password").status_code == 200


def test_the_lock_ends_by_itself_and_the_right_password_then_works(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    for _ in range(5):
        password_login(client, "nurse", "wrong")
    # Fifteen minutes pass (the lock is wall-clock time: move it rather than wait).
    db.execute(
        "UPDATE users SET locked_until = now() - interval '1 second' WHERE username = 'nurse'"
    )
    res = password_login(client, "nurse", "nurse-password")
    assert res.status_code == 200
    # Failures before the lock ended do not count towards the next lock.
    assert password_login(client, "nurse", "wrong").status_code == 401


def test_failures_outside_the_window_do_not_lock(
    client: TestClient, care_team: Team, db: psycopg.Connection
) -> None:
    for _ in range(4):
        password_login(client, "nurse", "wrong")
    db.execute("UPDATE login_failures SET at = at - interval '16 minutes'")
    assert password_login(client, "nurse", "wrong").status_code == 401
    assert password_login(client, "nurse", "nurse-password").status_code == 200


@pytest.fixture
def strict_client(settings: Settings) -> Iterator[TestClient]:
    tight = settings.model_copy(
        update={"rate_limit_login": "3/minute", "rate_limit_sms_inbound": "2/minute"}
    )
    with TestClient(create_app(tight)) as c:
        yield c


def test_login_is_rate_limited_per_address_with_retry_after(
    strict_client: TestClient, care_team: Team
) -> None:
    for _ in range(3):
        assert password_login(strict_client, "nobody", "x").status_code == 401
    res = password_login(strict_client, "nurse", "nurse-password")
    assert res.status_code == 429
    assert 0 < int(res.headers["retry-after"]) <= 60
    assert "too many requests" in res.json()["detail"]
    # Another address is not limited.
    other = TestClient(strict_client.app, client=("10.1.2.3", 5000))
    assert password_login(other, "nurse", "nurse-password").status_code == 200


def test_sms_webhook_is_rate_limited_per_address(strict_client: TestClient) -> None:
    codes = [
        strict_client.post("/api/v1/sms/inbound", data={"From": "+4791000001", "Body": "95 70"})
        for _ in range(3)
    ]
    # Unsigned, so refused (403) while under the limit; then 429 before any work is done.
    assert [r.status_code for r in codes] == [403, 403, 429]
    assert int(codes[-1].headers["retry-after"]) > 0


def test_auth_config_tells_whether_oidc_is_offered(client: TestClient) -> None:
    res = client.get("/api/v1/auth/config")
    assert res.status_code == 200
    assert res.json() == {
        "password": True,
        "oidc": False,
        "oidc_login_url": None,
        "access_token_ttl_s": 900,
    }
    assert client.get("/api/v1/auth/oidc/login", follow_redirects=False).status_code == 404


def test_an_expired_access_token_is_refused_but_refresh_still_works(
    client: TestClient, care_team: Team, settings: Settings
) -> None:
    tokens = password_login(client, "nurse", "nurse-password").json()
    expired = jwt.encode(
        {
            "sub": str(care_team["nurse"]["id"]),
            "name": "nurse",
            "role": "nurse",
            "iat": datetime.now(UTC) - timedelta(minutes=30),
            "exp": datetime.now(UTC) - timedelta(minutes=15),
        },
        settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )
    stale = client.get("/api/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert stale.status_code == 401
    res = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert res.status_code == 200
