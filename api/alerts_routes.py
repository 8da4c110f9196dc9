"""Routes of the alert lifecycle, the on-call rota and escalation settings (thin: the work is in
`alerting.lifecycle`, `alerting.rota` and `alerting.escalation`).

Errors: 404 for an unknown alert, shift or snooze; 409 for a transition the alert's state does
not allow (resolving twice, ticking a resolved alert's checklist, snoozing red without saying
so); 422 naming the field for bad input.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from alerting import escalation, lifecycle, rota
from alerting.lifecycle import AlertInputError, AlertNotFoundError, AlertStateError
from api import audit
from api.deps import Conn, Now, Zone
from api.patients_routes import _team_for
from api.scope import InScopeAlert, ScopedPatientId, not_found, patient_visible, teams_of
from api.security import Admin, Clinician, CurrentUser
from core.clock import Clock

router = APIRouter()

E164 = r"^\+[1-9][0-9]{6,14}$"
Outcome = Literal[
    "called_stable", "home_visit", "referred_hospital", "admitted", "artefact_false_alarm", "other"
]


# --- alerts -----------------------------------------------------------------------------------


class ResolveIn(BaseModel):
    outcome: Outcome
    outcome_text: str | None = Field(
        default=None, max_length=500, description="required when outcome is 'other'"
    )
    note: str | None = Field(default=None, max_length=2000)


class TickIn(BaseModel):
    item: str = Field(min_length=1, max_length=64, description="an item key of the checklist")
    done: bool = True


class SnoozeIn(BaseModel):
    minutes: int = Field(ge=1, le=7 * 24 * 60, description="how long, in minutes (at most 7 days)")
    reason: str = Field(min_length=1, max_length=500)
    include_red: bool = Field(
        default=False, description="red breaks through a snooze unless this is set"
    )


class PatientSnoozeIn(SnoozeIn):
    kind: str = Field(min_length=1, max_length=64, description="alert kind, e.g. spo2_low")


def _detail(conn: psycopg.Connection[Any], alert_id: int, clock: Clock) -> dict[str, Any]:
    try:
        return lifecycle.detail(conn, alert_id, clock.now())
    except AlertNotFoundError as exc:
        raise not_found("alert", alert_id) from exc


def _guard(exc: Exception, alert_id: int) -> HTTPException:
    if isinstance(exc, AlertNotFoundError):
        return not_found("alert", alert_id)
    if isinstance(exc, AlertStateError):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(422, str(exc))


@router.get("/api/v1/alert-outcomes", tags=["alerts"])
def alert_outcomes(user: Clinician) -> list[dict[str, str]]:
    """The outcomes an alert can be resolved with."""
    return [{"outcome": k, "label": v} for k, v in lifecycle.OUTCOMES.items()]


@router.get("/api/v1/alerts/{alert_id}", tags=["alerts"], dependencies=[InScopeAlert])
def alert_detail(alert_id: int, user: Clinician, conn: Conn, clock: Now) -> dict[str, Any]:
    """The alert with its history (who did what, when), checklist, escalation and messages."""
    found = _detail(conn, alert_id, clock)
    audit.record(
        conn,
        user,
        "alert.read",
        patient_id=found["patient_id"],
        object_kind="alert",
        object_id=alert_id,
    )
    return found


@router.post("/api/v1/alerts/{alert_id}/resolve", tags=["alerts"], dependencies=[InScopeAlert])
def resolve_alert(
    alert_id: int, body: ResolveIn, user: Clinician, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Close the alert with an outcome; `other` needs `outcome_text`."""
    try:
        lifecycle.resolve(
            conn, alert_id, user.id, body.outcome, clock.now(), body.outcome_text, body.note
        )
    except (AlertNotFoundError, AlertStateError, AlertInputError) as exc:
        raise _guard(exc, alert_id) from exc
    return _detail(conn, alert_id, clock)


@router.post("/api/v1/alerts/{alert_id}/checklist", tags=["alerts"], dependencies=[InScopeAlert])
def tick_checklist(
    alert_id: int, body: TickIn, user: Clinician, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Tick (done=true) or untick one item of the alert's response checklist."""
    try:
        lifecycle.tick(conn, alert_id, body.item, body.done, user.id, clock.now())
    except (AlertNotFoundError, AlertStateError, AlertInputError) as exc:
        raise _guard(exc, alert_id) from exc
    return _detail(conn, alert_id, clock)


@router.post("/api/v1/alerts/{alert_id}/snooze", tags=["alerts"], dependencies=[InScopeAlert])
def snooze_alert(
    alert_id: int, body: SnoozeIn, user: Clinician, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Snooze this patient's alerts of this alert's kind for `minutes`, with a reason."""
    alert = conn.execute(
        "SELECT patient_id, kind FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    if alert is None:
        raise not_found("alert", alert_id)
    try:
        lifecycle.snooze(
            conn,
            alert["patient_id"],
            alert["kind"],
            timedelta(minutes=body.minutes),
            body.reason,
            body.include_red,
            user.id,
            clock.now(),
            alert_id=alert_id,
        )
    except (AlertNotFoundError, AlertStateError, AlertInputError) as exc:
        raise _guard(exc, alert_id) from exc
    return _detail(conn, alert_id, clock)


@router.get("/api/v1/patients/{patient_id}/snoozes", tags=["alerts"])
def list_snoozes(
    patient_id: ScopedPatientId,
    user: Clinician,
    conn: Conn,
    clock: Now,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    return lifecycle.snoozes(conn, patient_id, clock.now(), active_only=not include_ended)


@router.post("/api/v1/patients/{patient_id}/snoozes", tags=["alerts"], status_code=201)
def snooze_patient(
    patient_id: ScopedPatientId, body: PatientSnoozeIn, user: Clinician, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Snooze a patient's alerts of one kind, whether or not one is open now."""
    try:
        return lifecycle.snooze(
            conn,
            patient_id,
            body.kind,
            timedelta(minutes=body.minutes),
            body.reason,
            body.include_red,
            user.id,
            clock.now(),
        )
    except AlertNotFoundError as exc:
        raise not_found("active patient", patient_id) from exc
    except AlertInputError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.delete("/api/v1/snoozes/{snooze_id}", tags=["alerts"], status_code=204)
def end_snooze(snooze_id: int, user: Clinician, conn: Conn, clock: Now) -> Response:
    """End a snooze now; the alerts it covered are looked at again."""
    row = conn.execute(
        "SELECT patient_id FROM alert_snoozes WHERE id = %s", (snooze_id,)
    ).fetchone()
    if row is None or not patient_visible(conn, user, row["patient_id"]):
        raise not_found("active snooze", snooze_id)
    try:
        lifecycle.cancel_snooze(conn, snooze_id, user.id, clock.now())
    except AlertNotFoundError as exc:
        raise not_found("active snooze", snooze_id) from exc
    return Response(status_code=204)


# --- checklist templates and escalation policies -----------------------------------------------
# Installation-wide settings, the same for every care team: any clinician reads them, only an
# administrator writes them (README, "Alerts, escalation and SMS"; per-team policies are an
# open decision).


class ChecklistItemIn(BaseModel):
    item: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    label: str = Field(min_length=1, max_length=120)


class ChecklistIn(BaseModel):
    items: list[ChecklistItemIn] = Field(min_length=1, max_length=20)


@router.get("/api/v1/checklists", tags=["alerts"])
def list_checklists(user: Clinician, conn: Conn) -> list[dict[str, Any]]:
    """Checklist templates per alert kind (`*`: any other kind)."""
    return list(lifecycle.checklist_templates(conn).values())


@router.put("/api/v1/checklists/{kind}", tags=["alerts"])
def put_checklist(
    kind: Annotated[str, Path(pattern=r"^(\*|[a-z0-9_]{1,64})$")],
    body: ChecklistIn,
    user: Admin,
    conn: Conn,
    clock: Now,
) -> dict[str, Any]:
    """Set the checklist new alerts of `kind` start with, for every care team (alerts already
    open keep theirs)."""
    try:
        lifecycle.save_checklist_template(
            conn, kind, [i.model_dump() for i in body.items], clock.now(), user.id
        )
    except AlertInputError as exc:
        raise HTTPException(422, str(exc)) from exc
    return lifecycle.checklist_templates(conn)[kind]


class PolicyIn(BaseModel):
    steps: list[dict[str, Any]] = Field(
        description='e.g. [{"wait_min": 0, "notify": ["nurse"]}, '
        '{"wait_min": 10, "notify": ["nurse", "doctor", "next"], "repeat": true}]'
    )


@router.get("/api/v1/escalation/policies", tags=["rota"])
def list_policies(user: Clinician, conn: Conn) -> list[dict[str, Any]]:
    return escalation.policies(conn)


@router.put("/api/v1/escalation/policies/{severity}", tags=["rota"])
def put_policy(
    severity: Literal["red", "amber"], body: PolicyIn, user: Admin, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Replace a severity's escalation policy for every care team (alerts already escalating
    follow it from their next step)."""
    try:
        escalation.save_policy(conn, severity, body.steps, clock.now(), user.id)
    except escalation.PolicyError as exc:
        raise HTTPException(422, str(exc)) from exc
    return next(p for p in escalation.policies(conn) if p["severity"] == severity)


@router.delete("/api/v1/escalation/policies/{severity}", tags=["rota"], status_code=204)
def reset_policy(severity: Literal["red", "amber"], user: Admin, conn: Conn) -> Response:
    """Back to the default policy."""
    escalation.reset_policy(conn, severity)
    return Response(status_code=204)


# --- the on-call rota -------------------------------------------------------------------------
# Each care team has its own rota: a user reads and writes only the shifts of their teams
# (another team's shift is a 404), and puts only members of the shift's team on it.


class ShiftIn(BaseModel):
    care_team_id: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="the care team whose rota this is; required when you belong to several",
    )
    user_id: int = Field(gt=0, le=2**62)
    starts_at: datetime = Field(description="with an offset, or local time in the service's zone")
    ends_at: datetime
    role: Literal["nurse", "doctor"] | None = Field(default=None, description="default: user's")
    phone: str | None = Field(default=None, pattern=E164, description="default: the user's")
    priority: int = Field(default=1, ge=1, le=9, description="1 is called first")
    note: str | None = Field(default=None, max_length=200)


def _my_teams(conn: psycopg.Connection[Any], user: CurrentUser) -> list[int]:
    return [int(t["id"]) for t in teams_of(conn, user.id)]


def _save_shift(
    conn: psycopg.Connection[Any],
    body: ShiftIn,
    zone: str,
    clock: Clock,
    user: CurrentUser,
    shift_id: int | None = None,
) -> dict[str, Any]:
    teams = _my_teams(conn, user)
    if shift_id is not None and body.care_team_id is None:
        # Replacing a shift keeps its team unless another is named.
        try:
            current = rota.get_shift(conn, shift_id, zone, teams)
        except rota.ShiftNotFoundError as exc:
            raise not_found("shift", shift_id) from exc
        team = int(current["care_team_id"])
    else:
        team = _team_for(conn, user, body.care_team_id)
    try:
        return rota.save_shift(
            conn,
            user_id=body.user_id,
            care_team_id=team,
            teams=teams,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            role=body.role,
            phone=body.phone,
            priority=body.priority,
            note=body.note,
            timezone=zone,
            now=clock.now(),
            by=user.id,
            shift_id=shift_id,
        )
    except rota.ShiftError as exc:
        raise HTTPException(422, str(exc)) from exc
    except rota.ShiftNotFoundError as exc:
        raise not_found("shift", shift_id or 0) from exc


@router.get("/api/v1/rota/shifts", tags=["rota"])
def list_shifts(
    user: Clinician,
    conn: Conn,
    clock: Now,
    zone: Zone,
    since: datetime | None = None,
    until: datetime | None = None,
    user_id: int | None = None,
    care_team_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> list[dict[str, Any]]:
    """Shifts of your care teams (or of one of them, `care_team_id`) overlapping [since, until)
    (default: yesterday to two weeks ahead); times with an offset, or local times in the
    service's zone."""
    now = clock.now()
    try:
        start = rota.local_instant(since, zone) if since else now - timedelta(days=1)
        end = rota.local_instant(until, zone) if until else now + timedelta(days=14)
    except rota.ShiftError as exc:
        raise HTTPException(422, f"since/until: {exc}") from exc
    if start >= end:
        raise HTTPException(422, "since: must be before until")
    teams = _my_teams(conn, user)
    if care_team_id is not None:
        teams = [_team_for(conn, user, care_team_id)]
    return rota.list_shifts(conn, start, end, zone, teams, user_id)


@router.get("/api/v1/rota/now", tags=["rota"])
def on_duty_now(
    user: Clinician,
    conn: Conn,
    clock: Now,
    zone: Zone,
    care_team_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Who an alert of a patient of `care_team_id` would reach now: that team's nurse on duty
    and on-call doctor. Without `care_team_id`: the first of your teams (by id)."""
    teams = _my_teams(conn, user)
    team = min(teams) if care_team_id is None and teams else _team_for(conn, user, care_team_id)
    now = clock.now()
    out: dict[str, Any] = {"at": now, "timezone": zone, "care_team_id": team}
    for role in rota.ROLES:
        found = rota.on_duty(conn, role, now, team)
        out[role] = None if found is None else {"user_id": found.user_id, "phone": found.phone}
    return out


@router.get("/api/v1/rota/shifts/{shift_id}", tags=["rota"])
def get_shift(shift_id: int, user: Clinician, conn: Conn, zone: Zone) -> dict[str, Any]:
    try:
        return rota.get_shift(conn, shift_id, zone, _my_teams(conn, user))
    except rota.ShiftNotFoundError as exc:
        raise not_found("shift", shift_id) from exc


@router.post("/api/v1/rota/shifts", tags=["rota"], status_code=201)
def add_shift(body: ShiftIn, user: Admin, conn: Conn, clock: Now, zone: Zone) -> dict[str, Any]:
    """Put a member of one of your care teams on that team's rota (`care_team_id` is required
    when you belong to several teams)."""
    return _save_shift(conn, body, zone, clock, user)


@router.put("/api/v1/rota/shifts/{shift_id}", tags=["rota"])
def replace_shift(
    shift_id: int, body: ShiftIn, user: Admin, conn: Conn, clock: Now, zone: Zone
) -> dict[str, Any]:
    """Replace one of your teams' shifts (it stays in its team unless `care_team_id` says)."""
    return _save_shift(conn, body, zone, clock, user, shift_id)


@router.delete("/api/v1/rota/shifts/{shift_id}", tags=["rota"], status_code=204)
def delete_shift(shift_id: int, user: Admin, conn: Conn) -> Response:
    try:
        rota.delete_shift(conn, shift_id, _my_teams(conn, user))
    except rota.ShiftNotFoundError as exc:
        raise not_found("shift", shift_id) from exc
    return Response(status_code=204)
