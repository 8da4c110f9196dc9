"""The FastAPI application factory and its routes (thin: SQL in queries.py, logic elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response, status
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alerting.lifecycle import AlertNotFoundError, AlertStateError, acknowledge
from alerting.lifecycle import detail as alert_detail
from api import audit, queries
from api.alerts_routes import router as alerts_router
from api.audit import AuditChanges
from api.audit import router as audit_router
from api.auth_routes import router as auth_router
from api.dashboard_routes import router as dashboard_router
from api.deps import Conn
from api.devices_routes import router as devices_router
from api.errors import install_error_handlers
from api.fhir import router as fhir_router
from api.live import router as live_router
from api.oidc import router as oidc_router
from api.patient_link import router as patient_link_router
from api.patients_routes import router as patients_router
from api.ratelimit import RateLimits
from api.readings_routes import router as readings_router
from api.reports import router as reports_router
from api.scope import InScopeAlert
from api.security import Admin, Clinician
from api.sms import router as sms_router
from api.timeline import router as timeline_router
from api.users_routes import router as users_router
from core.clock import Clock
from core.db import make_pool
from core.settings import Settings

MIN_SECRET_CHARS = 32
WEAK_SECRETS = frozenset({"change-me", "changeme", "secret"})


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    secret = settings.jwt_secret.get_secret_value()
    if len(secret) < MIN_SECRET_CHARS or secret in WEAK_SECRETS:
        # It signs every bearer token and every patient's reading link: a guessable one lets
        # anybody sign themselves in as an administrator.
        raise RuntimeError(
            f"OXIMON_JWT_SECRET must be set to a long random string (at least {MIN_SECRET_CHARS}"
            " characters, e.g. from `openssl rand -base64 48`)"
        )
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
    # Changes through routes that do not audit themselves (alerts, devices, rota) are audited;
    # login and SMS-webhook rate limits per client address, and the address for the audit log
    # (added last: outermost).
    app.add_middleware(AuditChanges, secret=settings.jwt_secret.get_secret_value())
    app.add_middleware(RateLimits, settings=settings)
    install_error_handlers(app)

    static = resources.files("dashboards") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # Alert lifecycle, on-call rota and SMS webhooks (issue 5). Included before the routes below
    # so that its GET /api/v1/alerts/{alert_id} (with checklist, escalation, messages) answers.
    app.include_router(alerts_router)
    app.include_router(sms_router)
    # Authentication, patients, users and care teams, audit (issue 6).
    app.include_router(auth_router)
    app.include_router(oidc_router)
    app.include_router(patients_router)
    app.include_router(users_router)
    app.include_router(audit_router)

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
        rows = conn.execute(
            queries.NOTIFICATIONS, {"channel": channel, "limit": limit, "user_id": user.id}
        ).fetchall()
        audit.record(
            conn,
            user,
            "notifications.read",
            channel=channel,
            patients=sorted({r["patient_id"] for r in rows if r["patient_id"] is not None}),
        )
        return rows

    @app.get("/api/v1/dead-letters", tags=["operations"])
    def list_dead_letters(
        user: Admin, conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return conn.execute(queries.DEAD_LETTERS, {"limit": limit}).fetchall()

    app.include_router(devices_router)
    # Issue 6, clinical API: timeline, latest readings, live stream, reports, FHIR R4.
    app.include_router(timeline_router)
    app.include_router(readings_router)
    app.include_router(live_router)
    app.include_router(fhir_router)
    app.include_router(reports_router)
    app.include_router(dashboard_router)  # issue 7: preferences, sparklines
    app.include_router(patient_link_router)  # issue 7: personal reading links

    return app
