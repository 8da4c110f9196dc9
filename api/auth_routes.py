"""Login, token refresh and logout, lock-out, and the login options the dashboard shows.

* `POST /api/v1/auth/token` (OAuth2 password form): a short-lived bearer token and a refresh
  token. Repeated wrong passwords lock the account for a while (423 with Retry-After); while
  locked, even the right password is refused.
* `POST /api/v1/auth/refresh`: a new pair for a refresh token, which is then spent. A spent
  token presented again means someone else holds a copy: the whole family (every token
  descended from that login) is revoked and both holders must log in again.
* `POST /api/v1/auth/logout`: revokes the refresh token's family.

Token lifetimes and lock-out are wall-clock security facts, not platform (simulated) time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from api import audit, queries
from api.deps import Conn
from api.schemas import AuthConfigOut, LogoutIn, RefreshIn, TokenOut, example
from api.scope import teams_of
from api.security import (
    Clinician,
    CurrentUser,
    hash_refresh_token,
    issue_token,
    new_refresh_token,
    verify_password_or_waste_time,
)
from core.settings import Settings

router = APIRouter(tags=["auth"])

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def issue_tokens(
    conn: Any, settings: Settings, user: CurrentUser, family: uuid.UUID | None = None
) -> TokenOut:
    """A bearer token and a new refresh token of `family` (a new family at login)."""
    now = datetime.now(UTC)
    refresh, refresh_hash = new_refresh_token()
    conn.execute(
        queries.REFRESH_INSERT,
        {
            "user_id": user.id,
            "family": family or uuid.uuid4(),
            "hash": refresh_hash,
            "now": now,
            "expires": now + timedelta(seconds=settings.refresh_token_ttl_s),
        },
    )
    secret = settings.jwt_secret.get_secret_value()
    return TokenOut(
        access_token=issue_token(secret, user, settings.token_ttl_s),
        expires_in=settings.token_ttl_s,
        refresh_token=refresh,
        role=user.role,
        username=user.username,
    )


def _locked(until: datetime, now: datetime) -> HTTPException:
    wait_s = max(1, int((until - now).total_seconds()) + 1)
    return HTTPException(
        status.HTTP_423_LOCKED,
        f"account locked after repeated failed logins; try again after "
        f"{until.strftime('%H:%M')} UTC (in {(wait_s + 59) // 60} min) or ask an administrator",
        headers={"Retry-After": str(wait_s)},
    )


@router.post(
    "/api/v1/auth/token",
    response_model=TokenOut,
    responses={
        401: {"description": "wrong username or password"},
        423: {"description": "account locked after repeated failed logins (Retry-After)"},
        429: {"description": "too many login attempts from this address (Retry-After)"},
    },
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: Conn, request: Request
) -> TokenOut:
    """OAuth2 password login. Every outcome is in the audit log (`auth.login`,
    `auth.login_failed`, `auth.locked`, `auth.login_refused_locked`)."""
    settings = _settings(request)
    now = datetime.now(UTC)
    row = conn.execute(queries.USER_FOR_LOGIN, (form.username,)).fetchone()
    if row is None or not row["active"]:
        verify_password_or_waste_time(None, form.password)
        audit.record(conn, row["id"] if row else None, "auth.login_failed", reason="unknown_user")
        conn.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers=_UNAUTHORIZED
        )
    user = CurrentUser(row["id"], row["username"], row["role"])
    if row["locked_until"] is not None and row["locked_until"] > now:
        audit.record(conn, user, "auth.login_refused_locked", object_kind="user", object_id=user.id)
        conn.commit()
        raise _locked(row["locked_until"], now)
    if not verify_password_or_waste_time(row["password_hash"], form.password):
        conn.execute(queries.LOGIN_FAILURE_INSERT, (user.id, now))
        failures: Any = conn.execute(
            queries.LOGIN_FAILURES_RECENT,
            {
                "user_id": user.id,
                "since": now - timedelta(seconds=settings.login_failure_window_s),
                "lock_ended": row["locked_until"],
            },
        ).fetchone()
        failures = failures["n"]
        audit.record(
            conn, user, "auth.login_failed", object_kind="user", object_id=user.id, n=failures
        )
        if failures >= settings.login_max_failures:
            until = now + timedelta(seconds=settings.login_lockout_s)
            conn.execute("UPDATE users SET locked_until = %s WHERE id = %s", (until, user.id))
            audit.record(
                conn, user, "auth.locked", object_kind="user", object_id=user.id, until=str(until)
            )
            conn.commit()
            raise _locked(until, now)
        conn.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers=_UNAUTHORIZED
        )
    conn.execute("DELETE FROM login_failures WHERE user_id = %s", (user.id,))
    conn.execute("UPDATE users SET locked_until = NULL WHERE id = %s", (user.id,))
    audit.record(conn, user, "auth.login", object_kind="user", object_id=user.id, via="password")
    return issue_tokens(conn, settings, user)


@router.post(
    "/api/v1/auth/refresh",
    response_model=TokenOut,
    responses={401: {"description": "unknown, expired, revoked or reused refresh token"}},
)
def refresh(body: RefreshIn, conn: Conn, request: Request) -> TokenOut:
    """Exchange a refresh token for a new pair; the token sent is spent."""
    now = datetime.now(UTC)
    row = conn.execute(queries.REFRESH_LOOKUP, (hash_refresh_token(body.refresh_token),)).fetchone()
    refused = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "refresh_token: unknown, expired or revoked; log in again",
        headers=_UNAUTHORIZED,
    )
    if row is None:
        raise refused
    if row["used_at"] is not None and row["revoked_at"] is None:
        # Spent before: a copy is in someone else's hands. End the whole login.
        conn.execute(queries.REFRESH_REVOKE_FAMILY, {"family": row["family"], "now": now})
        audit.record(
            conn, row["user_id"], "auth.refresh_reuse", object_kind="user", object_id=row["user_id"]
        )
        conn.commit()
        raise refused
    if row["revoked_at"] is not None or row["expires_at"] <= now or not row["active"]:
        raise refused
    conn.execute("UPDATE refresh_tokens SET used_at = %s WHERE id = %s", (now, row["id"]))
    user = CurrentUser(row["user_id"], row["username"], row["role"])
    return issue_tokens(conn, _settings(request), user, family=row["family"])


@router.post("/api/v1/auth/logout", status_code=204, response_class=Response)
def logout(body: LogoutIn, conn: Conn) -> Response:
    """End a login: its refresh token (and every token rotated from it) stops working. Bearer
    tokens already issued expire by themselves within their short lifetime."""
    row = conn.execute(queries.REFRESH_LOOKUP, (hash_refresh_token(body.refresh_token),)).fetchone()
    if row is not None:
        now = datetime.now(UTC)
        conn.execute(queries.REFRESH_REVOKE_FAMILY, {"family": row["family"], "now": now})
        audit.record(
            conn, row["user_id"], "auth.logout", object_kind="user", object_id=row["user_id"]
        )
    return Response(status_code=204)


@router.get("/api/v1/auth/config", response_model=AuthConfigOut)
def auth_config(request: Request) -> AuthConfigOut:
    """What the login page offers: password login always; OpenID Connect when configured."""
    settings = _settings(request)
    return AuthConfigOut(
        password=True,
        oidc=settings.oidc_enabled,
        oidc_login_url="/api/v1/auth/oidc/login" if settings.oidc_enabled else None,
        access_token_ttl_s=settings.token_ttl_s,
    )


@router.get(
    "/api/v1/me",
    responses=example(
        {
            "id": 3,
            "username": "nurse1",
            "role": "nurse",
            "care_teams": [{"id": 1, "name": "Hjemmesykepleien"}],
        }
    ),
)
def me(user: Clinician, conn: Conn) -> dict[str, Any]:
    """Who the bearer token belongs to, and their care teams."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "care_teams": teams_of(conn, user.id),
    }
