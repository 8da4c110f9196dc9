"""The live stream: server-sent events of new readings and alert changes for the dashboard,
each client seeing only its care teams' patients.

One LISTEN connection per API process (the `Hub`) hears PostgreSQL's notifications at commit —
`oximon_readings` from the ingest worker (each patient's newest reading of a batch),
`oximon_alert_changes` from the trigger on `alerts` (migration 0009), `oximon_patients` when a
patient changes (possibly their care team) — and fans each one out to the connected clients
whose teams see that patient. A client costs a queue, not a database connection.

Browsers' EventSource cannot send an Authorization header: a client may instead pass
`?access_token=` with a stream token from `POST /api/v1/stream/token`, valid for one minute
and for this endpoint only, so a long-lived bearer token never sits in a URL or an access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
import psycopg
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import audit
from api.security import ALGORITHM, Clinician, CurrentUser, current_user
from core.logs import event

log = logging.getLogger("oximon.api.live")

READINGS_CHANNEL = "oximon_readings"
ALERTS_CHANNEL = "oximon_alert_changes"
PATIENTS_CHANNEL = "oximon_patients"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STREAM_AUDIENCE = "oximon-stream"
STREAM_TOKEN_TTL_S = 60
HEARTBEAT_S = 15
# A client this many events behind is told to reload (`resync`) and disconnected: it reconnects
# and starts from the database, rather than the process holding an unbounded backlog.
QUEUE_MAX = 5000
# How long a patient's care team and a client's team memberships are trusted before re-reading.
SCOPE_TTL_S = 30.0
RECONNECT_MAX_S = 5.0


@dataclass(eq=False)
class Subscriber:
    user: CurrentUser
    teams: frozenset[int]
    patients: frozenset[int] | None  # only these patients (a chart), or None: all in scope
    types: frozenset[str]
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX)
    )
    overflowed: bool = False

    def wants(self, kind: str, patient_id: int, team: int | None) -> bool:
        return (
            kind in self.types
            and team is not None
            and team in self.teams
            and (self.patients is None or patient_id in self.patients)
        )

    def put(self, kind: str, data: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((kind, data))
        except asyncio.QueueFull:
            self.overflowed = True


class StreamUnavailableError(RuntimeError):
    pass


class Hub:
    """The process's one LISTEN connection and its clients."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.subscribers: set[Subscriber] = set()
        self._team_of: dict[int, tuple[float, int | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._db_lock = asyncio.Lock()

    # --- clients ------------------------------------------------------------------------------

    async def subscribe(
        self, user: CurrentUser, patients: frozenset[int] | None, types: frozenset[str]
    ) -> Subscriber:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="oximon-live-listen")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=10)
        except TimeoutError as exc:
            raise StreamUnavailableError("the live stream cannot reach the database") from exc
        teams = await self.teams_of(user.id)
        if teams is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "user is not active")
        sub = Subscriber(user, teams, patients, types)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def teams_of(self, user_id: int) -> frozenset[int] | None:
        """The user's care teams, or None when the user is gone or deactivated."""
        rows = await self._query(
            "SELECT u.active, m.care_team_id FROM users u"
            " LEFT JOIN user_care_teams m ON m.user_id = u.id WHERE u.id = %s",
            (user_id,),
        )
        if not rows or not rows[0][0]:
            return None
        return frozenset(r[1] for r in rows if r[1] is not None)

    # --- the listener -------------------------------------------------------------------------

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """A scope look-up on the hub's own connection, reconnected once if it broke (a
        database restart); StreamUnavailableError if the database cannot be reached."""
        async with self._db_lock:
            for attempt in (1, 2):
                try:
                    if self._db is None or self._db.closed:
                        self._db = await psycopg.AsyncConnection.connect(
                            self.database_url, autocommit=True, application_name="oximon-api-live"
                        )
                    cur = await self._db.execute(sql, params)
                    return await cur.fetchall()
                except psycopg.OperationalError as exc:
                    self._db = None
                    if attempt == 2:
                        raise StreamUnavailableError("the database cannot be reached") from exc
        raise AssertionError("unreachable")

    async def _run(self) -> None:
        delay = 0.2
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name="oximon-api-listen"
                ) as conn:
                    for channel in (READINGS_CHANNEL, ALERTS_CHANNEL, PATIENTS_CHANNEL):
                        await conn.execute(f"LISTEN {channel}")
                    if not first:
                        # Whatever was committed while we were away was not heard: clients
                        # reload from the database.
                        self._team_of.clear()
                        self._broadcast_resync("the live stream reconnected to the database")
                    first = False
                    delay = 0.2
                    self._ready.set()
                    event(log, "live_listening")
                    async for note in conn.notifies():
                        await self._dispatch(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self._ready.clear()
                event(log, "live_listen_failed", logging.WARNING, error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    def _broadcast_resync(self, reason: str) -> None:
        for sub in self.subscribers:
            sub.put("resync", {"reason": reason})

    async def _teams_for(self, patient_ids: set[int]) -> dict[int, int | None]:
        now = time.monotonic()
        out: dict[int, int | None] = {}
        missing = []
        for pid in patient_ids:
            cached = self._team_of.get(pid)
            if cached is not None and now - cached[0] < SCOPE_TTL_S:
                out[pid] = cached[1]
            else:
                missing.append(pid)
        if missing:
            rows = await self._query(
                "SELECT id, care_team_id FROM patients WHERE id = ANY(%s)", (missing,)
            )
            found = {int(r[0]): int(r[1]) for r in rows}
            for pid in missing:
                out[pid] = found.get(pid)
                self._team_of[pid] = (now, found.get(pid))
        return out

    async def _dispatch(self, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            event(log, "live_bad_payload", logging.WARNING, channel=channel)
            return
        if channel == PATIENTS_CHANNEL:
            self._team_of.pop(int(data.get("patient_id", 0)), None)
            return
        if not self.subscribers:
            return
        try:
            if channel == READINGS_CHANNEL:
                items = [
                    {
                        "patient_id": int(i[0]),
                        "time": (_EPOCH + timedelta(microseconds=int(i[1]))).isoformat(),
                        "spo2": i[2],
                        "pulse": i[3],
                        "quality": i[4],
                        "late": bool(i[5]),
                    }
                    for i in data.get("latest", [])
                ]
                teams = await self._teams_for({i["patient_id"] for i in items})
                for item in items:
                    team = teams.get(item["patient_id"])
                    for sub in self.subscribers:
                        if sub.wants("reading", item["patient_id"], team):
                            sub.put("reading", item)
            elif channel == ALERTS_CHANNEL:
                pid = int(data["patient_id"])
                team = (await self._teams_for({pid}))[pid]
                for sub in self.subscribers:
                    if sub.wants("alert", pid, team):
                        sub.put("alert", data)
        except (psycopg.Error, OSError, StreamUnavailableError) as exc:
            # The lookup connection failed: these events cannot be scoped, so nobody gets them.
            event(log, "live_scope_failed", logging.WARNING, error=type(exc).__name__)
            self._db = None
            self._broadcast_resync("an event could not be delivered")
        except (KeyError, IndexError, TypeError, ValueError):
            event(log, "live_bad_payload", logging.WARNING, channel=channel)


def hub_of(app: FastAPI) -> Hub:
    hub: Hub | None = getattr(app.state, "live_hub", None)
    if hub is None:
        hub = Hub(app.state.settings.database_url)
        app.state.live_hub = hub
    return hub


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        hub: Hub | None = getattr(app.state, "live_hub", None)
        if hub is not None:
            await hub.close()


router = APIRouter(tags=["live"], lifespan=lifespan)


def _stream_user(request: Request, access_token: str | None) -> CurrentUser:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return current_user(request, token)
    if access_token:
        secret = request.app.state.settings.jwt_secret.get_secret_value()
        try:
            claims = jwt.decode(
                access_token, secret, algorithms=[ALGORITHM], audience=STREAM_AUDIENCE
            )
            return CurrentUser(int(claims["sub"]), str(claims["name"]), str(claims["role"]))
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "access_token: invalid or expired stream token (get a new one from"
                " POST /api/v1/stream/token)",
            ) from exc
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "not authenticated: send a bearer token, or ?access_token= from POST /api/v1/stream/token",
        headers={"WWW-Authenticate": "Bearer"},
    )


@router.post(
    "/api/v1/stream/token",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "access_token": "eyJhbGciOi…",
                        "token_type": "stream",
                        "expires_in": 60,
                        "url": "/api/v1/stream?access_token=eyJhbGciOi…",
                    }
                }
            }
        }
    },
)
def stream_token(request: Request, user: Clinician) -> dict[str, Any]:
    """A stream token for `GET /api/v1/stream?access_token=…` (for EventSource, which cannot
    send headers): valid for one minute, to open the stream only. Ask again when the stream
    ends (EventSource reconnects by itself; with an expired token it gets 401)."""
    secret = request.app.state.settings.jwt_secret.get_secret_value()
    now = datetime.now(UTC)  # token lifetimes are wall-clock security facts
    token = jwt.encode(
        {
            "sub": str(user.id),
            "name": user.username,
            "role": user.role,
            "aud": STREAM_AUDIENCE,
            "iat": now,
            "exp": now + timedelta(seconds=STREAM_TOKEN_TTL_S),
        },
        secret,
        algorithm=ALGORITHM,
    )
    return {
        "access_token": token,
        "token_type": "stream",
        "expires_in": STREAM_TOKEN_TTL_S,
        "url": f"/api/v1/stream?access_token={token}",
    }


_STREAM_DOC = """Server-sent events (`text/event-stream`) of the user's care teams' patients:

* `ready` once subscribed: `{"user_id": 3, "care_teams": [1], "heartbeat_s": 15}`
* `reading` — a patient's newest reading of each stored batch:
  `{"patient_id": 12, "time": "2026-11-24T08:00:00+00:00", "spo2": 95, "pulse": 72,
  "quality": "ok", "late": false}` (a store-and-forward upload has `late: true`: history,
  not necessarily the newest reading the dashboard has)
* `alert` — opened, upgraded, acknowledged, escalated, resolved or reworded:
  `{"id": 7, "patient_id": 12, "kind": "spo2_low", "severity": "red", "status": "open",
  "reason": "…", "opened_at": "…", "updated_at": "…", "acknowledged_by": null,
  "resolved_by": null, "outcome": null, "change": "opened"}`
* `resync` `{"reason": "…"}` — events may have been missed (the client fell behind, or the
  API lost the database for a moment): reload lists from the REST endpoints.

A comment line (`: ping`) every 15 s keeps proxies from closing an idle stream.
Authentication: `Authorization: Bearer …`, or `?access_token=` from `POST /api/v1/stream/token`.
Filters: `patient_id` (repeatable) for one chart, `types` (`reading,alert`). No replay
(`Last-Event-ID` is ignored): after a reconnect, reload from the REST endpoints."""


@router.get(
    "/api/v1/stream",
    description=_STREAM_DOC,
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "example": 'event: reading\ndata: {"patient_id": 12, "time": '
                    '"2026-11-24T08:00:00+00:00", "spo2": 95, "pulse": 72, "quality": "ok", '
                    '"late": false}\n\n'
                }
            }
        },
        401: {"description": "no, invalid or expired token"},
    },
)
async def stream(
    request: Request,
    access_token: Annotated[
        str | None, Query(description="a stream token from POST /api/v1/stream/token")
    ] = None,
    patient_id: Annotated[
        list[int] | None, Query(description="only these patients (repeatable)")
    ] = None,
    types: Annotated[
        str, Query(pattern=r"^(reading|alert)(,(reading|alert))?$", description="reading,alert")
    ] = "reading,alert",
) -> EventSourceResponse:
    user = _stream_user(request, access_token)
    if user.role not in ("admin", "nurse", "doctor"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "needs role: admin or nurse or doctor")
    hub = hub_of(request.app)
    try:
        sub = await hub.subscribe(
            user,
            frozenset(patient_id) if patient_id else None,
            frozenset(types.split(",")),
        )
    except StreamUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    try:
        await run_in_threadpool(_audit_open, request, user, patient_id, types)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    event(log, "live_stream_opened", user_id=user.id, clients=len(hub.subscribers))
    return EventSourceResponse(_events(hub, sub), ping=HEARTBEAT_S, send_timeout=30)


def _audit_open(
    request: Request, user: CurrentUser, patient_ids: list[int] | None, types: str
) -> None:
    with request.app.state.pool.connection() as conn:
        audit.record(conn, user, "stream.open", patient_ids=patient_ids, types=types)


async def _events(hub: Hub, sub: Subscriber) -> AsyncIterator[ServerSentEvent]:
    try:
        yield _sse(
            "ready",
            {"user_id": sub.user.id, "care_teams": sorted(sub.teams), "heartbeat_s": HEARTBEAT_S},
        )
        refresh_at = time.monotonic() + SCOPE_TTL_S
        while True:
            if sub.overflowed:
                yield _sse("resync", {"reason": "this client fell behind; reload and reconnect"})
                return
            wait = max(0.0, refresh_at - time.monotonic())
            try:
                kind, data = await asyncio.wait_for(sub.queue.get(), timeout=wait)
            except TimeoutError:
                # Memberships change (a nurse moved to another district, an account closed).
                try:
                    teams = await hub.teams_of(sub.user.id)
                except StreamUnavailableError:
                    return  # the client reconnects (and reloads) once the database is back
                if teams is None:
                    return
                sub.teams = teams
                refresh_at = time.monotonic() + SCOPE_TTL_S
                continue
            yield _sse(kind, data)
    finally:
        hub.unsubscribe(sub)
        event(log, "live_stream_closed", user_id=sub.user.id, clients=len(hub.subscribers))


def _sse(kind: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=kind)
