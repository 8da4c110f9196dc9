"""Care-team scope: a user sees and acts only on the patients of their care teams, and on those
patients' alerts, devices and messages. Outside the scope a thing does not exist: 404, never
403, so ids leak nothing about other teams.

SQL fragments take the parameter `%(user_id)s`; the guards are FastAPI dependencies that read
the path parameter of the same name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, status

from api.deps import Conn
from api.security import Clinician, CurrentUser

# The care teams of the user; patients of these teams are in scope.
MY_TEAMS = "SELECT care_team_id FROM user_care_teams WHERE user_id = %(user_id)s"
# `p` is `patients`: a WHERE clause keeping patients in scope.
PATIENT_IN_SCOPE = f"p.care_team_id IN ({MY_TEAMS})"
# A WHERE clause keeping rows whose `patient_id` column (qualified by the caller) is in scope.
PATIENT_ID_IN_SCOPE = f"SELECT id FROM patients p WHERE {PATIENT_IN_SCOPE}"


def not_found(what: str, ident: object) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} with id {ident}")


def teams_of(conn: Any, user_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT t.id, t.name FROM care_teams t JOIN user_care_teams m ON m.care_team_id = t.id"
        " WHERE m.user_id = %s ORDER BY t.name",
        (user_id,),
    ).fetchall()
    return rows


def patient_visible(conn: Any, user: CurrentUser, patient_id: int) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM patients p WHERE p.id = %(id)s AND {PATIENT_IN_SCOPE}",
        {"id": patient_id, "user_id": user.id},
    ).fetchone()
    return row is not None


def alert_visible(conn: Any, user: CurrentUser, alert_id: int) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM alerts a JOIN patients p ON p.id = a.patient_id"
        f" WHERE a.id = %(id)s AND {PATIENT_IN_SCOPE}",
        {"id": alert_id, "user_id": user.id},
    ).fetchone()
    return row is not None


# The patient a device belongs with: the one wearing it, else the last one who wore it (a device
# back on the shelf after a discharge stays with that patient's team).
DEVICE_PATIENT = """coalesce(d.patient_id, (
    SELECT a.patient_id FROM device_assignments a WHERE a.device_id = d.id
    ORDER BY a.assigned_at DESC, a.id DESC LIMIT 1))"""


def device_visible(conn: Any, user: CurrentUser, device_id: str) -> bool:
    """A device is in scope while worn by, or last given to, a patient of the user's teams; a
    device never given to anyone (new on the shelf) is in scope for administrators."""
    row = conn.execute(
        f"SELECT {DEVICE_PATIENT} AS patient_id FROM devices d WHERE d.id = %(id)s",
        {"id": device_id},
    ).fetchone()
    if row is None:
        return False
    if row["patient_id"] is None:
        return user.role == "admin"
    return patient_visible(conn, user, row["patient_id"])


def _patient_guard(patient_id: int, user: Clinician, conn: Conn) -> int:
    if not patient_visible(conn, user, patient_id):
        raise not_found("patient", patient_id)
    return patient_id


def _alert_guard(alert_id: int, user: Clinician, conn: Conn) -> int:
    if not alert_visible(conn, user, alert_id):
        raise not_found("alert", alert_id)
    return alert_id


def _device_guard(device_id: str, user: Clinician, conn: Conn) -> str:
    if not device_visible(conn, user, device_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device with id {device_id}")
    return device_id


# Route dependencies: `dependencies=[InScopePatient]`, or as a parameter's annotation.
InScopePatient = Depends(_patient_guard)
InScopeAlert = Depends(_alert_guard)
InScopeDevice = Depends(_device_guard)
ScopedPatientId = Annotated[int, InScopePatient]
ScopedAlertId = Annotated[int, InScopeAlert]
