"""The audit log: every read of a patient's record and every change, with who, when and where.

Routes call `record(conn, user, action, patient_id=..., **detail)` in the transaction (or
autocommit statement) that serves the request. The table is not a log file: it holds ids, and
`detail` must carry no personal data (names, phone numbers, note text) — field names, counts
and codes only.

Actions are `<object>.<verb>`: `patient.read`, `patient.create`, `patient.update`,
`patient.discharge`, `readings.read`, `notes.read`, `note.create`, `user.create`,
`user.update`, `care_team.create`, `auth.login`, `auth.login_failed`, `auth.locked`,
`auth.refresh_reuse`, `auth.logout`, `audit.read` … (the other API modules add their own, e.g.
`timeline.read`, `fhir.read`).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, HTTPException, Query, Response
from psycopg.types.json import Jsonb
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import queries
from api.deps import Conn
from api.paging import Limit, Offset, page
from api.schemas import AUDIT_EXAMPLE, TOTAL_HEADER, example
from api.security import ALGORITHM, Admin, CurrentUser

# The client address of the request being served, set by the app's middleware, so callers of
# `record` need not pass the request around.
client_ip: ContextVar[str | None] = ContextVar("oximon_client_ip", default=None)

_INSERT = """
INSERT INTO audit_log (at, user_id, action, object_kind, object_id, patient_id, detail, ip)
VALUES (%(at)s, %(user_id)s, %(action)s, %(object_kind)s, %(object_id)s, %(patient_id)s,
        %(detail)s, %(ip)s)
"""


def record(
    conn: Any,
    user: CurrentUser | int | None,
    action: str,
    *,
    patient_id: int | None = None,
    object_kind: str | None = None,
    object_id: object = None,
    ip: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Write one audit record.

    `user` is the acting user (or their id; None for the system or an unknown login name).
    `object_kind`/`object_id` name what was touched when it is not the patient itself; with
    neither given and a `patient_id`, the object is the patient. `detail` (JSON-serialisable,
    no personal data) says what: changed field names, a filter, a count. The time is the wall
    clock: an audit trail records when it happened, not the platform's simulated time.
    """
    if object_kind is None and patient_id is not None:
        object_kind, object_id = "patient", patient_id
    conn.execute(
        _INSERT,
        {
            "at": at or datetime.now(UTC),
            "user_id": user.id if isinstance(user, CurrentUser) else user,
            "action": action,
            "object_kind": object_kind,
            "object_id": None if object_id is None else str(object_id),
            "patient_id": patient_id,
            "detail": Jsonb(detail),
            "ip": ip if ip is not None else client_ip.get(),
        },
    )


# --- the admin's query ------------------------------------------------------------------------

router = APIRouter(tags=["audit"])


@router.get("/api/v1/audit", responses=example([AUDIT_EXAMPLE], headers=TOTAL_HEADER))
def audit_log(
    admin: Admin,
    conn: Conn,
    response: Response,
    user_id: Annotated[int | None, Query(ge=1, le=2**62, description="who acted")] = None,
    patient_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, description="an action (patient.read), or a prefix ending in '.'"),
    ] = None,
    since: Annotated[datetime | None, Query(description="from (inclusive), with offset")] = None,
    until: Annotated[datetime | None, Query(description="to (exclusive), with offset")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The audit log of your care teams' patients and users, newest first (admin). Reading it is
    itself audited (`audit.read`)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name}: needs a UTC offset, e.g. 2026-11-24T08:00:00Z")
    params = {
        "admin_id": admin.id,
        "user_id": user_id,
        "patient_id": patient_id,
        "action": action,
        "since": since,
        "until": until,
        "limit": limit,
        "offset": offset,
    }

    def count() -> int:
        first = conn.execute(queries.AUDIT, {**params, "limit": 1, "offset": 0}).fetchone()
        return int(first["total"]) if first else 0

    rows = page(response, conn.execute(queries.AUDIT, params).fetchall(), count)
    filters: dict[str, Any] = {
        f"filter_{k}": str(v)
        for k, v in params.items()
        if v is not None and k in ("user_id", "patient_id", "action", "since", "until")
    }
    record(conn, admin, "audit.read", object_kind="audit", n=len(rows), **filters)
    return rows


# --- changes made through other modules' routes ------------------------------------------------

# Routes of these modules write their own, more specific records (or are webhooks).
_SELF_AUDITED = {
    "api.audit",
    "api.auth_routes",
    "api.oidc",
    "api.patients_routes",
    "api.users_routes",
    "api.sms",
}
_OBJECT_PARAMS = (("alert_id", "alert"), ("device_id", "device"), ("shift_id", "shift"))


class AuditChanges:
    """ASGI middleware: every successful change (POST, PUT, PATCH, DELETE) through a route that
    does not audit itself — acknowledging, resolving or snoozing an alert, registering or
    moving an oximeter, editing the rota — is recorded as `api.<route name>` with the acting
    user, the object and its patient. Alert history stays in `alert_events` too."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        status_code = 500

        async def remember(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        await self.app(scope, receive, remember)
        route = scope.get("route")
        endpoint = getattr(route, "endpoint", None)
        if status_code >= 400 or endpoint is None or endpoint.__module__ in _SELF_AUDITED:
            return
        await run_in_threadpool(self._record, scope, route, client_ip.get())

    def _record(self, scope: Scope, route: Any, ip: str | None) -> None:
        params = dict(scope.get("path_params") or {})
        user_id = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                try:
                    claims = jwt.decode(value[7:].decode(), self.secret, algorithms=[ALGORITHM])
                    user_id = int(claims["sub"])
                except (jwt.PyJWTError, KeyError, ValueError, UnicodeDecodeError):
                    user_id = None
        kind, ident = next(((k, params[p]) for p, k in _OBJECT_PARAMS if p in params), (None, None))
        pool = scope["app"].state.pool
        with pool.connection() as conn:
            patient_id = params.get("patient_id")
            if patient_id is None and kind in ("alert", "device"):
                row = conn.execute(
                    f"SELECT patient_id FROM {kind}s WHERE id = %s",  # noqa: S608 - a fixed name
                    (ident,),
                ).fetchone()
                patient_id = row["patient_id"] if row else None
            record(
                conn,
                user_id,
                f"api.{route.name}",
                patient_id=patient_id,
                object_kind=kind,
                object_id=ident,
                ip=ip,
                method=scope["method"],
                route=route.path,
            )
