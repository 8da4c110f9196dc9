"""OpenID Connect login (authorization code flow with PKCE), for ID-porten or a municipality's
own identity provider.

`GET /api/v1/auth/oidc/login` sends the browser to the provider (its endpoints from the
issuer's discovery document) with a fresh `state`, `nonce` and PKCE challenge, which it keeps in
a short-lived signed cookie. `GET /api/v1/auth/oidc/callback` checks the state, exchanges the
code (with the client secret and the PKCE verifier), and validates the ID token with PyJWT: the
signature against the provider's JWKS, `iss`, `aud`, `exp`, `iat` and our `nonce`. The identity
is mapped to an active oximon user by `users.oidc_subject`, or else by e-mail (which then binds
the subject to that user); nobody is created. The same tokens as a password login are issued
and handed to the dashboard in the URL fragment of a redirect to `/dashboard` (a fragment never
reaches a server log): `#access_token=…&refresh_token=…&expires_in=…&role=…&username=…`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import RedirectResponse

from api import audit
from api.auth_routes import issue_tokens
from api.deps import Conn
from api.security import CurrentUser
from core.settings import Settings

router = APIRouter(tags=["auth"])

COOKIE = "oximon_oidc"
COOKIE_PATH = "/api/v1/auth/oidc"
FLOW_TTL_S = 600  # the user has ten minutes at the provider
DISCOVERY_TTL_S = 3600
HTTP_TIMEOUT_S = 10.0
# Asymmetric algorithms only: an ID token is checked with the provider's public keys.
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
CLOCK_LEEWAY_S = 60


class Provider:
    """The configured provider's discovery document and keys, fetched when first needed and
    kept for an hour (PyJWKClient re-fetches the key set when a token names an unknown key)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = str(settings.oidc_issuer).rstrip("/")
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._jwks: jwt.PyJWKClient | None = None

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._fetched_at > DISCOVERY_TTL_S:
                url = f"{self.issuer}/.well-known/openid-configuration"
                try:
                    res = httpx.get(url, timeout=HTTP_TIMEOUT_S)
                    res.raise_for_status()
                    metadata = res.json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise HTTPException(
                        status.HTTP_502_BAD_GATEWAY,
                        "the identity provider's discovery document could not be read",
                    ) from exc
                if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                    raise HTTPException(
                        status.HTTP_502_BAD_GATEWAY,
                        "the identity provider names another issuer than OXIMON_OIDC_ISSUER",
                    )
                self._metadata, self._fetched_at = metadata, time.monotonic()
                self._jwks = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=True)
            return self._metadata

    def jwks(self) -> jwt.PyJWKClient:
        self.metadata()
        assert self._jwks is not None
        return self._jwks


def _provider(request: Request) -> tuple[Settings, Provider]:
    settings: Settings = request.app.state.settings
    if not settings.oidc_enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "OpenID Connect login is not configured")
    provider: Provider | None = getattr(request.app.state, "oidc_provider", None)
    if provider is None:
        provider = request.app.state.oidc_provider = Provider(settings)
    return settings, provider


def _redirect_uri(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/api/v1/auth/oidc/callback"
    return str(request.url_for("oidc_callback"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@router.get("/api/v1/auth/oidc/login", status_code=302, response_class=RedirectResponse)
def oidc_login(request: Request) -> RedirectResponse:
    """Start an OpenID Connect login: a redirect to the identity provider. 404 when OpenID
    Connect is not configured (see GET /api/v1/auth/config)."""
    settings, provider = _provider(request)
    metadata = provider.metadata()
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    query = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": _redirect_uri(request, settings),
        "scope": settings.oidc_scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    flow = jwt.encode(
        {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "exp": datetime.now(UTC) + timedelta(seconds=FLOW_TTL_S),
        },
        settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )
    response = RedirectResponse(f"{metadata['authorization_endpoint']}?{urlencode(query)}", 302)
    response.set_cookie(
        COOKIE,
        flow,
        max_age=FLOW_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def _refused(message: str, code: int = status.HTTP_401_UNAUTHORIZED) -> HTTPException:
    return HTTPException(code, message)


@router.get(
    "/api/v1/auth/oidc/callback",
    name="oidc_callback",
    status_code=302,
    response_class=RedirectResponse,
    responses={
        400: {"description": "no login in progress, or state does not match"},
        401: {"description": "the provider refused, or the ID token is not valid"},
        403: {"description": "no active oximon user has this identity"},
    },
)
def oidc_callback(
    request: Request,
    conn: Conn,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    """Where the provider sends the browser back: checks everything, then redirects to the
    dashboard with the tokens in the URL fragment."""
    settings, provider = _provider(request)
    if error:
        raise _refused(f"the identity provider did not log you in ({error[:64]})")
    try:
        flow = jwt.decode(
            request.cookies.get(COOKIE, ""),
            settings.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
        )
    except jwt.PyJWTError as exc:
        raise _refused("no login in progress here (or it took too long): start again", 400) from exc
    if not state or not secrets.compare_digest(str(flow.get("state")), state):
        raise _refused("state: does not match the login in progress; start again", 400)
    if not code:
        raise _refused("code: missing from the provider's answer", 400)
    metadata = provider.metadata()
    try:
        res = httpx.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": _redirect_uri(request, settings),
                "code_verifier": flow["verifier"],
            },
            auth=(
                str(settings.oidc_client_id),
                settings.oidc_client_secret.get_secret_value()
                if settings.oidc_client_secret
                else "",
            ),
            timeout=HTTP_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise _refused("the identity provider could not be reached", 502) from exc
    if res.status_code != 200:
        raise _refused("the identity provider refused the login code")
    try:
        id_token = str(res.json()["id_token"])
        key = provider.jwks().get_signing_key_from_jwt(id_token)
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=ID_TOKEN_ALGORITHMS,
            audience=settings.oidc_client_id,
            issuer=metadata["issuer"],
            leeway=CLOCK_LEEWAY_S,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except (ValueError, KeyError, jwt.PyJWTError) as exc:
        audit.record(conn, None, "auth.oidc_refused", reason=type(exc).__name__)
        conn.commit()
        raise _refused(f"the ID token is not valid ({type(exc).__name__})") from exc
    if not secrets.compare_digest(str(claims.get("nonce", "")), str(flow["nonce"])):
        audit.record(conn, None, "auth.oidc_refused", reason="nonce")
        conn.commit()
        raise _refused("the ID token is not valid (nonce does not match)")
    user = _user_for(conn, claims)
    if user is None:
        audit.record(conn, None, "auth.oidc_refused", reason="no_user")
        conn.commit()
        raise _refused(
            "no active oximon user has this identity; an administrator must add you", 403
        )
    audit.record(conn, user, "auth.login", object_kind="user", object_id=user.id, via="oidc")
    tokens = issue_tokens(conn, settings, user)
    fragment = urlencode(
        {
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "expires_in": tokens.expires_in,
            "refresh_token": tokens.refresh_token,
            "role": tokens.role,
            "username": tokens.username,
        }
    )
    response = RedirectResponse(f"/dashboard#{fragment}", 302)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


def _user_for(conn: Any, claims: dict[str, Any]) -> CurrentUser | None:
    """The active user this identity belongs to: by subject, else by an e-mail the provider
    says it verified (`email_verified: true`; absent is not enough) (whose
    user is then bound to the subject, so a later change of address does not matter)."""
    subject = str(claims["sub"])
    row = conn.execute(
        "SELECT id, username, role, active FROM users WHERE oidc_subject = %s", (subject,)
    ).fetchone()
    if row is None and claims.get("email") and claims.get("email_verified") is True:
        row = conn.execute(
            "SELECT id, username, role, active FROM users"
            " WHERE lower(email) = lower(%s) AND oidc_subject IS NULL",
            (str(claims["email"]),),
        ).fetchone()
        if row is not None and row["active"]:
            conn.execute("UPDATE users SET oidc_subject = %s WHERE id = %s", (subject, row["id"]))
    if row is None or not row["active"]:
        return None
    return CurrentUser(int(row["id"]), str(row["username"]), str(row["role"]))
