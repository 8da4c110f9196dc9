"""OpenID Connect login against a local provider over real HTTP (tests/oidc_fake.py): state,
nonce and PKCE; the ID token's signature, issuer, audience, expiry and nonce; mapping to an
existing active user by subject or e-mail, never creating one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from core.settings import Settings
from tests.conftest import Team
from tests.oidc_fake import FakeOIDC, new_key


@pytest.fixture
def provider() -> Iterator[FakeOIDC]:
    fake = FakeOIDC().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def oidc_client(settings: Settings, provider: FakeOIDC) -> Iterator[TestClient]:
    configured = settings.model_copy(
        update={
            "oidc_issuer": provider.issuer,
            "oidc_client_id": provider.client_id,
            "oidc_client_secret": SecretStr(provider.client_secret),
        }
    )
    with TestClient(create_app(configured)) as c:
        yield c


def oidc_login(client: TestClient) -> httpx.Response:
    """The browser's round trip: our login, the provider, our callback."""
    start = client.get("/api/v1/auth/oidc/login", follow_redirects=False)
    assert start.status_code == 302, start.text
    at_provider = httpx.get(start.headers["location"], follow_redirects=False, timeout=5)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["location"])
    return client.get(f"{back.path}?{back.query}", follow_redirects=False)


def tokens_of(res: httpx.Response) -> dict[str, str]:
    assert res.status_code == 302, res.text
    location = urlsplit(res.headers["location"])
    assert location.path == "/dashboard"
    return dict(parse_qsl(location.fragment))


@pytest.fixture
def linked(db: psycopg.Connection, care_team: Team) -> dict[str, Any]:
    db.execute("UPDATE users SET oidc_subject = 'user-1' WHERE username = 'nurse'")
    return care_team["nurse"]


def test_config_offers_oidc_when_configured(oidc_client: TestClient) -> None:
    body = oidc_client.get("/api/v1/auth/config").json()
    assert body["oidc"] is True and body["oidc_login_url"] == "/api/v1/auth/oidc/login"


def test_login_redirects_to_the_provider_with_state_nonce_and_pkce(
    oidc_client: TestClient, provider: FakeOIDC
) -> None:
    res = oidc_client.get("/api/v1/auth/oidc/login", follow_redirects=False)
    assert res.status_code == 302
    url = urlsplit(res.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{provider.issuer}/authorize"
    query = dict(parse_qsl(url.query))
    assert query["response_type"] == "code" and query["client_id"] == provider.client_id
    assert query["scope"] == "openid email profile"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert query["redirect_uri"] == "http://testserver/api/v1/auth/oidc/callback"
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/api/v1/auth/oidc" in cookie


def test_a_linked_user_logs_in_and_gets_working_tokens(
    oidc_client: TestClient, provider: FakeOIDC, linked: dict[str, Any], db: psycopg.Connection
) -> None:
    tokens = tokens_of(oidc_login(oidc_client))
    assert (tokens["role"], tokens["username"]) == ("nurse", "nurse")
    me = oidc_client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["id"] == linked["id"]
    refreshed = oidc_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    # The provider saw our client secret and PKCE verifier (it checks both).
    assert provider.token_requests[0]["code_verifier"]
    row = db.execute("SELECT user_id, detail FROM audit_log WHERE action = 'auth.login'").fetchone()
    assert row == {"user_id": linked["id"], "detail": {"via": "oidc"}}


def test_a_user_is_found_by_email_and_then_bound_to_the_subject(
    oidc_client: TestClient, provider: FakeOIDC, care_team: Team, db: psycopg.Connection
) -> None:
    db.execute("UPDATE users SET email = 'Doctor@Example.org' WHERE username = 'doctor'")
    provider.next_identity = {
        "sub": "idp-42",
        "email": "doctor@example.org",
        "email_verified": True,
    }
    assert tokens_of(oidc_login(oidc_client))["username"] == "doctor"
    bound = db.execute("SELECT oidc_subject FROM users WHERE username = 'doctor'").fetchone()
    assert bound["oidc_subject"] == "idp-42"
    # An unverified address matches nobody.
    db.execute("UPDATE users SET email = 'admin@example.org' WHERE username = 'admin'")
    provider.next_identity = {
        "sub": "idp-43",
        "email": "admin@example.org",
        "email_verified": False,
    }
    assert oidc_login(oidc_client).status_code == 403
    # Nor does an address the provider says nothing about.
    provider.next_identity = {"sub": "idp-44", "email": "admin@example.org"}
    assert oidc_login(oidc_client).status_code == 403
    bound = db.execute("SELECT oidc_subject FROM users WHERE username = 'admin'").fetchone()
    assert bound["oidc_subject"] is None


def test_an_unknown_or_deactivated_identity_is_refused_and_nobody_is_created(
    oidc_client: TestClient, provider: FakeOIDC, linked: dict[str, Any], db: psycopg.Connection
) -> None:
    provider.next_identity = {"sub": "stranger", "email": "stranger@example.org"}
    res = oidc_login(oidc_client)
    assert res.status_code == 403
    assert "administrator must add you" in res.json()["detail"]
    assert db.execute("SELECT count(*) AS n FROM users").fetchone()["n"] == 3
    db.execute("UPDATE users SET active = false WHERE username = 'nurse'")
    provider.next_identity = {"sub": "user-1"}
    assert oidc_login(oidc_client).status_code == 403


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "another-client"},
        {"iss": "http://127.0.0.1:1/evil"},
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
        {"nonce": "not-the-nonce"},
    ],
    ids=["audience", "issuer", "expired", "nonce"],
)
def test_an_id_token_with_a_wrong_claim_is_refused(
    oidc_client: TestClient,
    provider: FakeOIDC,
    linked: dict[str, Any],
    overrides: dict[str, Any],
    db: psycopg.Connection,
) -> None:
    provider.id_token_overrides = overrides
    res = oidc_login(oidc_client)
    assert res.status_code == 401, res.text
    assert "ID token is not valid" in res.json()["detail"]
    assert (
        db.execute(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'auth.oidc_refused'"
        ).fetchone()["n"]
        == 1
    )
    assert db.execute("SELECT count(*) AS n FROM refresh_tokens").fetchone()["n"] == 0


def test_an_id_token_signed_by_another_key_is_refused(
    oidc_client: TestClient, provider: FakeOIDC, linked: dict[str, Any]
) -> None:
    provider.sign_with = new_key()
    res = oidc_login(oidc_client)
    assert res.status_code == 401


def test_a_callback_without_our_cookie_or_with_another_state_is_400(
    oidc_client: TestClient, provider: FakeOIDC, linked: dict[str, Any]
) -> None:
    start = oidc_client.get("/api/v1/auth/oidc/login", follow_redirects=False)
    at_provider = httpx.get(start.headers["location"], follow_redirects=False, timeout=5)
    back = urlsplit(at_provider.headers["location"])
    query = dict(parse_qsl(back.query))
    forged = oidc_client.get(
        "/api/v1/auth/oidc/callback",
        params={"code": query["code"], "state": "forged"},
        follow_redirects=False,
    )
    assert forged.status_code == 400 and forged.json()["detail"].startswith("state:")
    oidc_client.cookies.clear()
    res = oidc_client.get(f"{back.path}?{back.query}", follow_redirects=False)
    assert res.status_code == 400


def test_a_refusal_at_the_provider_is_401(
    oidc_client: TestClient, provider: FakeOIDC, linked: dict[str, Any]
) -> None:
    provider.refuse = "access_denied"
    res = oidc_login(oidc_client)
    assert res.status_code == 401 and "access_denied" in res.json()["detail"]


def test_an_unreachable_provider_is_502_not_500(settings: Settings) -> None:
    from oximon.localstack import free_port

    configured = settings.model_copy(
        update={
            "oidc_issuer": f"http://127.0.0.1:{free_port()}",
            "oidc_client_id": "x",
            "oidc_client_secret": SecretStr("y"),
        }
    )
    with TestClient(create_app(configured)) as client:
        res = client.get("/api/v1/auth/oidc/login", follow_redirects=False)
    assert res.status_code == 502
