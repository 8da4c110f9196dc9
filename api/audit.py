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
from typing import Any

from psycopg.types.json import Jsonb

from api.security import CurrentUser

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
