"""Users and care teams, administered by admins of the same teams.

An admin sees and manages only users who share a care team with them (anyone else is a 404),
places users only in their own teams, and cannot lock themselves out (no self-deactivation or
self-demotion). Care teams: every user lists their own; an admin creates new ones and joins
them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Response, status

from api import audit, queries
from api.deps import Conn
from api.paging import Limit, Offset, page
from api.patients_routes import invalid
from api.schemas import (
    CARE_TEAM_EXAMPLE,
    TOTAL_HEADER,
    USER_EXAMPLE,
    CareTeamIn,
    UserIn,
    UserPatch,
    example,
)
from api.scope import teams_of
from api.security import Admin, Clinician, CurrentUser, hash_password

router = APIRouter()

UserId = Annotated[int, Path(ge=1, le=2**62)]

# A user who logs in only through OpenID Connect: no password can match this.
NO_PASSWORD = "!"  # noqa: S105 - a marker, not a secret


def _user(conn: Any, admin: CurrentUser, user_id: int) -> dict[str, Any]:
    row = conn.execute(
        queries.USERS,
        {
            "admin_id": admin.id,
            "user_id": user_id,
            "role": None,
            "active": None,
            "limit": 1,
            "offset": 0,
        },
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user with id {user_id}")
    row.pop("total", None)
    return dict(row)


def _my_teams(conn: Any, admin: CurrentUser, wanted: list[int] | None) -> list[int]:
    mine = [int(t["id"]) for t in teams_of(conn, admin.id)]
    if wanted is None:
        if len(mine) == 1:
            return mine
        raise invalid("care_team_ids", f"required: you belong to several care teams ({mine})")
    foreign = [t for t in wanted if t not in mine]
    if foreign:
        raise invalid("care_team_ids", f"not your care team(s): {foreign} (yours: {mine})")
    return wanted


def _conflict(exc: psycopg.errors.UniqueViolation) -> HTTPException:
    constraint = exc.diag.constraint_name or ""
    field = next((f for f in ("username", "email", "oidc_subject") if f in constraint), "username")
    return HTTPException(status.HTTP_409_CONFLICT, f"{field}: another user already has it")


@router.get(
    "/api/v1/users", tags=["users"], responses=example([USER_EXAMPLE], headers=TOTAL_HEADER)
)
def list_users(
    admin: Admin,
    conn: Conn,
    response: Response,
    role: Literal["admin", "nurse", "doctor"] | None = None,
    active: bool | None = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Users of your care teams (admin). `care_team_ids` lists only teams of yours."""
    params = {
        "admin_id": admin.id,
        "user_id": None,
        "role": role,
        "active": active,
        "limit": limit,
        "offset": offset,
    }

    def count() -> int:
        first = conn.execute(queries.USERS, {**params, "limit": 1, "offset": 0}).fetchone()
        return int(first["total"]) if first else 0

    return page(response, conn.execute(queries.USERS, params).fetchall(), count)


@router.get("/api/v1/users/{user_id}", tags=["users"], responses=example(USER_EXAMPLE))
def get_user(user_id: UserId, admin: Admin, conn: Conn) -> dict[str, Any]:
    """One user of your care teams (admin)."""
    return _user(conn, admin, user_id)


@router.post(
    "/api/v1/users",
    tags=["users"],
    status_code=201,
    responses={
        201: {"content": {"application/json": {"example": USER_EXAMPLE}}},
        409: {"description": "username, email or oidc_subject taken"},
    },
)
def create_user(body: UserIn, admin: Admin, conn: Conn, response: Response) -> dict[str, Any]:
    """Create a user in your care teams (admin). Without `password` the user can log in only
    through OpenID Connect (`oidc_subject` or `email` must then match the identity)."""
    teams = _my_teams(conn, admin, body.care_team_ids)
    if body.password is None and not (body.email or body.oidc_subject):
        raise invalid("password", "required unless email or oidc_subject is given (OIDC login)")
    try:
        with conn.transaction():
            row: Any = conn.execute(
                "INSERT INTO users (username, full_name, role, password_hash, phone, on_call,"
                " email, oidc_subject) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    body.username,
                    body.full_name,
                    body.role,
                    hash_password(body.password) if body.password else NO_PASSWORD,
                    body.phone,
                    bool(body.on_call),
                    body.email,
                    body.oidc_subject,
                ),
            ).fetchone()
            for team in teams:
                conn.execute(
                    "INSERT INTO user_care_teams (user_id, care_team_id) VALUES (%s, %s)",
                    (row["id"], team),
                )
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from exc
    audit.record(
        conn,
        admin,
        "user.create",
        object_kind="user",
        object_id=row["id"],
        role=body.role,
        care_team_ids=teams,
    )
    response.headers["Location"] = f"/api/v1/users/{row['id']}"
    return _user(conn, admin, int(row["id"]))


@router.patch(
    "/api/v1/users/{user_id}",
    tags=["users"],
    responses={
        **example(USER_EXAMPLE),
        409: {"description": "email or oidc_subject taken; or you would lock yourself out"},
    },
)
def edit_user(user_id: UserId, body: UserPatch, admin: Admin, conn: Conn) -> dict[str, Any]:
    """Change a user of your care teams (admin): role, active, phone, on_call, name, email,
    oidc_subject, care_team_ids (your teams; memberships in other teams stay), `password` (a
    reset: their refresh tokens are revoked), `unlock`. Deactivating, a new role or a new
    password ends the user's logins (bearer tokens run out within their short lifetime)."""
    _user(conn, admin, user_id)
    sent = set(body.model_fields_set)
    if not sent:
        raise invalid("body", "send at least one field to change")
    if user_id == admin.id and (
        ("active" in sent and body.active is False) or ("role" in sent and body.role != "admin")
    ):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "you cannot deactivate yourself or remove your admin role"
        )
    for field in ("full_name", "role", "on_call", "active", "care_team_ids", "password", "unlock"):
        if field in sent and getattr(body, field) is None:
            raise invalid(field, "must not be null")
    columns = {
        f: getattr(body, f)
        for f in sent & {"full_name", "role", "phone", "on_call", "active", "email", "oidc_subject"}
    }
    if body.password is not None:
        columns["password_hash"] = hash_password(body.password)
    now = datetime.now(UTC)
    end_logins = bool(body.password is not None or body.active is False or ("role" in sent))
    try:
        with conn.transaction():
            if columns:
                conn.execute(
                    f"UPDATE users SET {', '.join(f'{c} = %({c})s' for c in columns)}"
                    " WHERE id = %(id)s",
                    {**columns, "id": user_id},
                )
            if body.unlock or body.password is not None:
                conn.execute("UPDATE users SET locked_until = NULL WHERE id = %s", (user_id,))
                conn.execute("DELETE FROM login_failures WHERE user_id = %s", (user_id,))
            if body.care_team_ids is not None:
                teams = _my_teams(conn, admin, body.care_team_ids)
                mine = [int(t["id"]) for t in teams_of(conn, admin.id)]
                conn.execute(
                    "DELETE FROM user_care_teams WHERE user_id = %s AND care_team_id = ANY(%s)"
                    " AND NOT care_team_id = ANY(%s)",
                    (user_id, mine, teams),
                )
                for team in teams:
                    conn.execute(
                        "INSERT INTO user_care_teams (user_id, care_team_id) VALUES (%s, %s)"
                        " ON CONFLICT DO NOTHING",
                        (user_id, team),
                    )
            if end_logins:
                conn.execute(queries.REFRESH_REVOKE_USER, {"user_id": user_id, "now": now})
    except psycopg.errors.UniqueViolation as exc:
        raise _conflict(exc) from exc
    detail: dict[str, Any] = {"fields": sorted(sent - {"password"})}
    if "password" in sent:
        detail["password_reset"] = True
    for field in ("role", "active", "on_call"):
        if field in sent:
            detail[field] = getattr(body, field)
    audit.record(conn, admin, "user.update", object_kind="user", object_id=user_id, **detail)
    return _user(conn, admin, user_id)


# --- care teams -------------------------------------------------------------------------------


@router.get("/api/v1/care-teams", tags=["care teams"], responses=example([CARE_TEAM_EXAMPLE]))
def list_care_teams(user: Clinician, conn: Conn) -> list[dict[str, Any]]:
    """Your care teams, with their member and active-patient counts (all roles)."""
    rows: list[dict[str, Any]] = conn.execute(queries.CARE_TEAMS, {"user_id": user.id}).fetchall()
    return rows


@router.post(
    "/api/v1/care-teams",
    tags=["care teams"],
    status_code=201,
    responses={
        201: {"content": {"application/json": {"example": CARE_TEAM_EXAMPLE}}},
        409: {"description": "a care team with this name exists"},
    },
)
def create_care_team(body: CareTeamIn, admin: Admin, conn: Conn) -> dict[str, Any]:
    """Create a care team (admin); you join it, and can then place users and patients in it."""
    try:
        with conn.transaction():
            row: Any = conn.execute(
                "INSERT INTO care_teams (name) VALUES (%s) RETURNING id", (body.name,)
            ).fetchone()
            conn.execute(
                "INSERT INTO user_care_teams (user_id, care_team_id) VALUES (%s, %s)",
                (admin.id, row["id"]),
            )
    except psycopg.errors.UniqueViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "name: a care team with this name exists"
        ) from exc
    audit.record(conn, admin, "care_team.create", object_kind="care_team", object_id=row["id"])
    team: dict[str, Any] = next(
        t for t in conn.execute(queries.CARE_TEAMS, {"user_id": admin.id}) if t["id"] == row["id"]
    )
    return team
