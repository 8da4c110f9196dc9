"""Patients: the list, enrolment, edits, discharge, readings and care notes.

Who may do what (each is also in the route's description in /docs):

| endpoint | admin | nurse | doctor |
| --- | --- | --- | --- |
| GET /patients, /patients/{id}, /readings, /notes | yes | yes | yes |
| POST /patients, PATCH /patients/{id}, POST /patients/{id}/discharge | yes | yes | no (403) |
| POST /patients/{id}/notes | no (403: admins read notes) | yes | yes |

Every route keeps to the user's care teams: another team's patient is a 404. Every read of a
patient's record (detail, readings, notes) and every change is in the audit log.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from psycopg.types.json import Jsonb

from alerting import lifecycle
from alerting.profile import PULSE_AMBER_MAX_BPM, PULSE_AMBER_MIN_BPM, Profile
from api import audit, queries
from api.deps import Conn, Now
from api.paging import Limit, Offset, page
from api.schemas import (
    NOTE_EXAMPLE,
    PATIENT_DETAIL_EXAMPLE,
    PATIENT_ROW_EXAMPLE,
    TOTAL_HEADER,
    DischargeIn,
    NoteIn,
    NoteOut,
    PatientFields,
    PatientIn,
    PatientPatch,
    example,
)
from api.scope import ScopedPatientId, not_found, teams_of
from api.security import Clinician, CurrentUser, require
from devices.registry import move_device

router = APIRouter(tags=["patients"])

NurseOrAdmin = Annotated[CurrentUser, Depends(require("admin", "nurse"))]
NoteWriter = Annotated[CurrentUser, Depends(require("nurse", "doctor"))]

_BUCKET_RE = re.compile(r"^(\d{1,4})\s*(s|m|min|h|d)$")
_BUCKET_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days"}
_BAND_FIELDS = (
    "spo2_target_min_pct",
    "spo2_target_max_pct",
    "spo2_amber_max_pct",
    "spo2_red_max_pct",
    "pulse_red_min_bpm",
    "pulse_red_max_bpm",
)
_COLUMNS = ("display_name", "phone", "language", "care_team_id", *_BAND_FIELDS, "schedule")


def invalid(field: str, message: str) -> HTTPException:
    """A 422 shaped like pydantic's, naming the body field."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def _check_bands(merged: dict[str, Any], sent: set[str]) -> None:
    """The bands a patient would have after this change must be in order (the engine's own
    Profile is the judge); the 422 names a field of the pair at fault, one that was sent."""
    rules: list[tuple[tuple[str, ...], bool, str]] = [
        (
            ("spo2_red_max_pct", "spo2_amber_max_pct"),
            merged["spo2_red_max_pct"] <= merged["spo2_amber_max_pct"],
            "SpO2 red band must be at or below the amber band",
        ),
        (
            ("spo2_amber_max_pct", "spo2_target_min_pct"),
            merged["spo2_amber_max_pct"] < merged["spo2_target_min_pct"],
            "SpO2 amber band must be below the target range",
        ),
        (
            ("spo2_target_min_pct", "spo2_target_max_pct"),
            merged["spo2_target_min_pct"] <= merged["spo2_target_max_pct"],
            "SpO2 target minimum must not exceed the target maximum",
        ),
        (
            ("pulse_red_min_bpm",),
            merged["pulse_red_min_bpm"] <= PULSE_AMBER_MIN_BPM,
            f"pulse low red band must be at most {PULSE_AMBER_MIN_BPM}/min (NEWS2 amber)",
        ),
        (
            ("pulse_red_max_bpm",),
            merged["pulse_red_max_bpm"] >= PULSE_AMBER_MAX_BPM,
            f"pulse high red band must be at least {PULSE_AMBER_MAX_BPM}/min (NEWS2 amber)",
        ),
    ]
    for fields, ok, message in rules:
        if not ok:
            named = next((f for f in fields if f in sent), fields[0])
            raise invalid(named, f"{message}: {'/'.join(str(merged[f]) for f in fields)}")
    try:
        Profile.from_row(merged)
    except ValueError as exc:  # anything the engine would refuse that the rules above missed
        raise invalid(
            sorted(sent & set(_BAND_FIELDS))[0] if sent else "schedule", str(exc)
        ) from exc


def _team_for(conn: Any, user: CurrentUser, wanted: int | None) -> int:
    teams = [t["id"] for t in teams_of(conn, user.id)]
    if wanted is not None:
        if wanted not in teams:
            raise invalid("care_team_id", f"not one of your care teams ({teams})")
        return wanted
    if len(teams) == 1:
        return int(teams[0])
    if not teams:
        raise invalid("care_team_id", "you belong to no care team; ask an administrator")
    raise invalid("care_team_id", f"required: you belong to several care teams ({teams})")


def _values(body: PatientFields, fields: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(body, name)
        if name == "schedule":
            if value is None:
                raise invalid("schedule", "must be a schedule, not null")
            value = Jsonb(value.document())
        elif value is None and name != "phone":
            raise invalid(name, "must not be null")
        out[name] = value
    return out


def _write(conn: Any, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        with conn.transaction():
            row: dict[str, Any] = conn.execute(sql, params).fetchone()
            return row
    except psycopg.errors.UniqueViolation as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "phone: another active patient has this number"
        ) from exc
    except psycopg.errors.CheckViolation as exc:  # the schema's own band check, as a backstop
        raise invalid("spo2_target_min_pct", "SpO2 bands out of order") from exc


def _detail(conn: Any, patient_id: int) -> dict[str, Any]:
    row = conn.execute(queries.PATIENT, (patient_id,)).fetchone()
    if row is None:
        raise not_found("patient", patient_id)
    row["devices"] = conn.execute(queries.PATIENT_DEVICES, (patient_id,)).fetchall()
    return dict(row)


# --- list and detail --------------------------------------------------------------------------


@router.get("/api/v1/patients", responses=example([PATIENT_ROW_EXAMPLE], headers=TOTAL_HEADER))
def list_patients(
    user: Clinician,
    conn: Conn,
    response: Response,
    patient_status: Annotated[Literal["active", "discharged"], Query(alias="status")] = "active",
    severity: Annotated[
        Literal["red", "amber", "none"] | None,
        Query(description="the most urgent unresolved alert: red, amber, or none at all"),
    ] = None,
    missed: Annotated[
        bool, Query(description="only patients with an unresolved missed_reading alert")
    ] = False,
    q: Annotated[str | None, Query(max_length=120, description="part of the name")] = None,
    care_team_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    sort: Annotated[
        Literal["risk", "name", "last_reading", "-last_reading"],
        Query(
            description="risk (default): open red, amber, missed reading, then the rest by name;"
            " last_reading: longest without a reading first; -last_reading: newest first"
        ),
    ] = "risk",
    limit: Limit = 200,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Patients of your care teams with their latest reading, most urgent unresolved alert and
    oximeter; the number of patients matching the filters is in `X-Total-Count`. All roles."""
    pattern = None
    if q and q.strip():
        escaped = q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
    params = {
        "status": patient_status,
        "severity": severity,
        "missed": missed,
        "q": pattern,
        "care_team_id": care_team_id,
        "limit": limit,
        "offset": offset,
        "user_id": user.id,
    }
    sql = queries.PATIENT_LIST.format(order=queries.PATIENT_LIST_ORDER[sort])

    def count() -> int:
        first = conn.execute(sql, {**params, "limit": 1, "offset": 0}).fetchone()
        return int(first["total"]) if first else 0

    return page(response, conn.execute(sql, params).fetchall(), count if offset else None)


@router.get("/api/v1/patients/{patient_id}", responses=example(PATIENT_DETAIL_EXAMPLE))
def get_patient(patient_id: ScopedPatientId, user: Clinician, conn: Conn) -> dict[str, Any]:
    """A patient's record: contact, bands, schedule, status, worn oximeters. All roles;
    audited as `patient.read`."""
    row = _detail(conn, patient_id)
    audit.record(conn, user, "patient.read", patient_id=patient_id)
    return row


# --- enrol, edit, discharge -------------------------------------------------------------------


@router.post(
    "/api/v1/patients",
    status_code=201,
    responses={
        201: {"content": {"application/json": {"example": PATIENT_DETAIL_EXAMPLE}}},
        409: {"description": "phone: another active patient has this number"},
    },
)
def enrol_patient(
    body: PatientIn, user: NurseOrAdmin, conn: Conn, response: Response
) -> dict[str, Any]:
    """Enrol a patient (nurse, admin). `care_team_id` is required when you belong to more than
    one team, and must be one of yours. Omitted bands and schedule take the defaults."""
    sent = set(body.model_fields_set) | {"display_name", "language"}
    values = _values(body, sent - {"care_team_id"})
    values["care_team_id"] = _team_for(conn, user, body.care_team_id)
    merged = {**_defaults(), **{k: v for k, v in values.items() if k in _BAND_FIELDS}}
    if body.schedule is not None:
        merged["schedule"] = body.schedule.document()
    _check_bands(merged, sent)
    names = sorted(values)
    row = _write(
        conn,
        f"INSERT INTO patients ({', '.join(names)})"
        f" VALUES ({', '.join(f'%({n})s' for n in names)}) RETURNING id",
        values,
    )
    patient_id = int(row["id"])
    audit.record(conn, user, "patient.create", patient_id=patient_id, fields=sorted(sent))
    response.headers["Location"] = f"/api/v1/patients/{patient_id}"
    return _detail(conn, patient_id)


def _defaults() -> dict[str, Any]:
    p = Profile()
    return {f: getattr(p, f) for f in _BAND_FIELDS}


@router.patch("/api/v1/patients/{patient_id}", responses=example(PATIENT_DETAIL_EXAMPLE))
def edit_patient(
    patient_id: ScopedPatientId, body: PatientPatch, user: NurseOrAdmin, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Change some of a patient's fields (nurse, admin); the rest stay. Bands are checked as
    they will be after the change. The ingest worker and the alerting watchdog use new bands
    and schedule within 30 s."""
    sent = set(body.model_fields_set)
    if not sent:
        raise invalid("body", "send at least one field to change")
    with conn.transaction():
        current = conn.execute(queries.PATIENT_FOR_UPDATE, (patient_id,)).fetchone()
        if current is None:
            raise not_found("patient", patient_id)
        if current["status"] != "active":
            raise HTTPException(status.HTTP_409_CONFLICT, "patient is discharged")
        values = _values(body, sent)
        if "care_team_id" in sent:
            values["care_team_id"] = _team_for(conn, user, body.care_team_id)
        merged = {f: current[f] for f in _BAND_FIELDS} | {"schedule": current["schedule"]}
        merged.update({k: v for k, v in values.items() if k in _BAND_FIELDS})
        if body.schedule is not None:
            merged["schedule"] = body.schedule.document()
        _check_bands(merged, sent)
        changed = sorted(n for n in values if n in _COLUMNS)
        values.update(id=patient_id, now=clock.now())
        _write(
            conn,
            f"UPDATE patients SET {', '.join(f'{n} = %({n})s' for n in changed)},"
            " updated_at = %(now)s WHERE id = %(id)s RETURNING id",
            values,
        )
        audit.record(conn, user, "patient.update", patient_id=patient_id, fields=changed)
    return _detail(conn, patient_id)


@router.post(
    "/api/v1/patients/{patient_id}/discharge",
    responses={
        **example(
            {
                **PATIENT_DETAIL_EXAMPLE,
                "status": "discharged",
                "discharged_at": "2026-11-30T12:00:00Z",
                "devices": [],
                "alerts_resolved": [311],
                "devices_returned": ["oxi-3f9a2c1d7e"],
            }
        ),
        409: {"description": "patient is already discharged"},
    },
)
def discharge_patient(
    patient_id: ScopedPatientId,
    user: NurseOrAdmin,
    conn: Conn,
    clock: Now,
    body: DischargeIn | None = None,
) -> dict[str, Any]:
    """End monitoring (nurse, admin). The patient's unresolved alerts are resolved with
    `alert_outcome` (default `other`, "Patient discharged from monitoring"), so nobody keeps
    being paged about someone no longer monitored; their oximeters go back to the shelf (the
    assignment history records it); readings, alerts, notes and messages are kept. A
    discharged patient's readings are no longer stored (dead letter)."""
    body = body or DischargeIn()
    now = clock.now()
    with conn.transaction():
        current = conn.execute(queries.PATIENT_FOR_UPDATE, (patient_id,)).fetchone()
        if current is None:
            raise not_found("patient", patient_id)
        if current["status"] == "discharged":
            raise HTTPException(status.HTTP_409_CONFLICT, "patient is already discharged")
        alerts = [r["id"] for r in conn.execute(queries.PATIENT_UNRESOLVED_ALERTS, (patient_id,))]
        for alert_id in alerts:
            lifecycle.resolve(
                conn,
                alert_id,
                user.id,
                body.alert_outcome,
                now,
                outcome_text=body.alert_outcome_text if body.alert_outcome == "other" else None,
                note="discharged from monitoring",
            )
        devices = [r["id"] for r in conn.execute(queries.PATIENT_DEVICES, (patient_id,))]
        for device_id in devices:
            move_device(conn, device_id, None, by=user.id, now=now)
        conn.execute(
            "UPDATE patients SET status = 'discharged', discharged_at = %s, discharged_by = %s,"
            " discharge_reason = %s, updated_at = %s WHERE id = %s",
            (now, user.id, body.reason, now, patient_id),
        )
        audit.record(
            conn,
            user,
            "patient.discharge",
            patient_id=patient_id,
            alerts_resolved=alerts,
            devices_returned=devices,
        )
    detail = _detail(conn, patient_id)
    detail["alerts_resolved"] = alerts
    detail["devices_returned"] = devices
    return detail


# --- readings ---------------------------------------------------------------------------------


@router.get("/api/v1/patients/{patient_id}/readings", tags=["readings"])
def patient_readings(
    patient_id: ScopedPatientId,
    user: Clinician,
    conn: Conn,
    clock: Now,
    since: datetime | None = None,
    until: datetime | None = None,
    bucket: Annotated[str | None, Query(description="e.g. 5m, 1h, 1d")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    """Raw readings in [since, until), or min/mean/max per time bucket. All roles; audited as
    `readings.read`."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name}: needs a UTC offset, e.g. 2026-11-24T08:00:00Z")
    now = clock.now()
    try:
        until = until or now + timedelta(minutes=5)
        since = since or until - timedelta(hours=24)
    except OverflowError as exc:
        raise HTTPException(422, "until: out of range") from exc
    if since >= until:
        raise HTTPException(422, "since: must be before until")
    params: dict[str, Any] = {
        "patient_id": patient_id,
        "since": since,
        "until": until,
        "limit": limit,
    }
    audit.record(
        conn,
        user,
        "readings.read",
        patient_id=patient_id,
        since=since.isoformat(),
        until=until.isoformat(),
        bucket=bucket,
    )
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


# --- notes ------------------------------------------------------------------------------------


@router.get(
    "/api/v1/patients/{patient_id}/notes",
    response_model=list[NoteOut],
    responses=example([NOTE_EXAMPLE], headers=TOTAL_HEADER),
)
def list_notes(
    patient_id: ScopedPatientId,
    user: Clinician,
    conn: Conn,
    response: Response,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """A patient's care notes, newest first. All roles; audited as `notes.read`."""
    rows = conn.execute(
        queries.NOTES, {"patient_id": patient_id, "limit": limit, "offset": offset}
    ).fetchall()
    total: Any = conn.execute(
        "SELECT count(*) AS n FROM patient_notes WHERE patient_id = %s", (patient_id,)
    ).fetchone()
    response.headers["X-Total-Count"] = str(total["n"])
    audit.record(conn, user, "notes.read", patient_id=patient_id, n=len(rows))
    return rows


@router.post("/api/v1/patients/{patient_id}/notes", status_code=201, response_model=NoteOut)
def add_note(
    patient_id: ScopedPatientId, body: NoteIn, user: NoteWriter, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Write a care note with your name and the time (nurse, doctor; admins read them)."""
    row: Any = conn.execute(
        queries.NOTE_INSERT,
        {"patient_id": patient_id, "author_id": user.id, "at": clock.now(), "body": body.body},
    ).fetchone()
    audit.record(
        conn, user, "note.create", patient_id=patient_id, object_kind="note", object_id=row["id"]
    )
    return row
