"""The FastAPI application factory and its routes (thin: SQL in queries.py, logic elsewhere)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Response, status
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.security import OAuth2PasswordRequestForm
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alerting.lifecycle import AlertNotFoundError, AlertStateError, acknowledge
from alerting.lifecycle import detail as alert_detail
from api import queries
from api.alerts_routes import router as alerts_router
from api.dashboard_routes import router as dashboard_router
from api.deps import Conn
from api.devices_routes import router as devices_router
from api.patient_link import router as patient_link_router
from api.schemas import Token
from api.scope import InScopeAlert, ScopedPatientId, not_found, teams_of
from api.security import Admin, Clinician, CurrentUser, issue_token, verify_password
from api.sms import router as sms_router
from core.clock import Clock
from core.db import make_pool
from core.settings import Settings

_BUCKET_RE = re.compile(r"^(\d{1,4})\s*(s|m|min|h|d)$")
_BUCKET_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days"}


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    if not settings.jwt_secret.get_secret_value():
        raise RuntimeError("OXIMON_JWT_SECRET must be set (a long random string)")
    clock = clock or Clock.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = make_pool(settings, name="oximon-api")
        try:
            yield
        finally:
            app.state.pool.close()

    app = FastAPI(
        title="oximon",
        description="Remote home-care telemonitoring for pulse oximeters.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock

    static = resources.files("dashboards") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # Alert lifecycle, on-call rota and SMS webhooks (issue 5). Included before the routes below
    # so that its GET /api/v1/alerts/{alert_id} (with checklist, escalation, messages) answers.
    app.include_router(alerts_router)
    app.include_router(sms_router)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    @app.get("/healthz", tags=["operations"])
    def healthz(conn: Conn) -> dict[str, str]:
        conn.execute("SELECT 1")
        return {"status": "ok", "database": "ok"}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/v1/auth/token", response_model=Token, tags=["auth"])
    def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: Conn) -> Token:
        row = conn.execute(
            "SELECT id, username, role, password_hash FROM users WHERE username = %s AND active",
            (form.username,),
        ).fetchone()
        if row is None or not verify_password(row["password_hash"], form.password):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "wrong username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user = CurrentUser(row["id"], row["username"], row["role"])
        token = issue_token(settings.jwt_secret.get_secret_value(), user, settings.token_ttl_s)
        return Token(access_token=token, role=user.role, username=user.username)

    @app.get("/api/v1/me", tags=["auth"])
    def me(user: Clinician, conn: Conn) -> dict[str, Any]:
        return {
            "id": user.id,
            "username": user.username,
            "role": user.role,
            "care_teams": teams_of(conn, user.id),
        }

    @app.get("/api/v1/patients", tags=["patients"])
    def list_patients(
        user: Clinician,
        conn: Conn,
        patient_status: Annotated[
            Literal["active", "discharged"], Query(alias="status")
        ] = "active",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Patients with their latest reading and most urgent unresolved alert, red first."""
        return conn.execute(
            queries.PATIENT_LIST,
            {"status": patient_status, "limit": limit, "offset": offset, "user_id": user.id},
        ).fetchall()

    @app.get("/api/v1/patients/{patient_id}", tags=["patients"])
    def get_patient(patient_id: ScopedPatientId, user: Clinician, conn: Conn) -> dict[str, Any]:
        row = conn.execute(queries.PATIENT, (patient_id,)).fetchone()
        if row is None:  # discharged and deleted between the guard and here
            raise not_found("patient", patient_id)
        return row

    @app.get("/api/v1/patients/{patient_id}/readings", tags=["readings"])
    def patient_readings(
        patient_id: ScopedPatientId,
        user: Clinician,
        conn: Conn,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: Annotated[str | None, Query(description="e.g. 5m, 1h, 1d")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> dict[str, Any]:
        """Raw readings in [since, until), or min/mean/max per time bucket."""
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise HTTPException(422, f"{name}: needs a UTC offset, e.g. 2026-11-24T08:00:00Z")
        now = clock.now()
        until = until or now + timedelta(minutes=5)
        since = since or until - timedelta(hours=24)
        if since >= until:
            raise HTTPException(422, "since: must be before until")
        params: dict[str, Any] = {
            "patient_id": patient_id,
            "since": since,
            "until": until,
            "limit": limit,
        }
        if bucket is None:
            return {
                "patient_id": patient_id,
                "bucket": None,
                "readings": conn.execute(queries.READINGS_RAW, params).fetchall(),
            }
        match = _BUCKET_RE.match(bucket.strip())
        if not match or int(match.group(1)) == 0:
            raise HTTPException(422, "bucket: must look like 30s, 5m, 1h or 1d")
        params["bucket"] = timedelta(**{_BUCKET_UNITS[match.group(2)]: int(match.group(1))})
        return {
            "patient_id": patient_id,
            "bucket": bucket,
            "readings": conn.execute(queries.READINGS_BUCKETED, params).fetchall(),
        }

    @app.get("/api/v1/alerts", tags=["alerts"])
    def list_alerts(
        user: Clinician,
        conn: Conn,
        alert_status: Annotated[
            Literal["open", "acknowledged", "escalated", "resolved", "unresolved"] | None,
            Query(alias="status", description="unresolved = anything not yet resolved"),
        ] = None,
        patient_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        return conn.execute(
            queries.ALERTS,
            {"status": alert_status, "patient_id": patient_id, "limit": limit, "user_id": user.id},
        ).fetchall()

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", tags=["alerts"], dependencies=[InScopeAlert])
    def acknowledge_alert(alert_id: int, user: Clinician, conn: Conn) -> dict[str, Any]:
        """Take the alert: recorded with who and when."""
        try:
            acknowledge(conn, alert_id, user.id, clock.now())
        except AlertNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert with id {alert_id}") from exc
        except AlertStateError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        return alert_detail(conn, alert_id, clock.now())

    @app.get("/api/v1/notifications", tags=["messaging"])
    def list_notifications(
        user: Clinician,
        conn: Conn,
        channel: Literal["sms", "web"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The outbox: every message sent or logged (the demo's SMS log)."""
        return conn.execute(
            queries.NOTIFICATIONS, {"channel": channel, "limit": limit, "user_id": user.id}
        ).fetchall()

    @app.get("/api/v1/dead-letters", tags=["operations"])
    def list_dead_letters(
        user: Admin, conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return conn.execute(queries.DEAD_LETTERS, {"limit": limit}).fetchall()

    app.include_router(devices_router)
    app.include_router(dashboard_router)  # issue 7: preferences, sparklines
    app.include_router(patient_link_router)  # issue 7: personal reading links

    return app
