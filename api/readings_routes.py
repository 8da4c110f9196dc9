"""Readings across patients: the latest reading of every patient a user sees, in one query."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, TypeAdapter

from api import audit
from api.deps import Conn
from api.scope import PATIENT_IN_SCOPE
from api.security import Clinician

router = APIRouter(tags=["readings"])

# One index probe per patient: the LATERAL reads `readings_patient_time_cover_idx`
# (patient_id, time DESC) from its newest entry and stops at the first row; TimescaleDB's
# ordered append opens the newest chunk first and stops there when it holds a reading of that
# patient.
LATEST = f"""
SELECT p.id AS patient_id, r.time, r.spo2, r.pulse, r.pi, r.quality, r.source, r.late,
       r.device_id, r.received_at
FROM patients p
CROSS JOIN LATERAL (
    SELECT time, spo2, pulse, pi, quality, source, late, device_id, received_at FROM readings
    WHERE readings.patient_id = p.id ORDER BY time DESC LIMIT 1
) r
WHERE p.status = %(status)s AND {PATIENT_IN_SCOPE}
  AND (%(patient_ids)s::bigint[] IS NULL OR p.id = ANY(%(patient_ids)s::bigint[]))
ORDER BY p.id
"""


class LatestReading(BaseModel):
    patient_id: int
    time: datetime
    spo2: int
    pulse: int
    pi: float | None
    quality: str
    source: str
    late: bool
    device_id: str
    received_at: datetime


# Rows go to JSON in one call of pydantic-core: FastAPI's generic encoding of a thousand rows
# cost more than the query (21 ms against 12 ms, measured on 1,000 patients).
_AS_JSON = TypeAdapter(list[dict[str, Any]])

_EXAMPLE = [
    {
        "patient_id": 12,
        "time": "2026-11-24T08:00:00Z",
        "spo2": 95,
        "pulse": 72,
        "pi": 2.4,
        "quality": "ok",
        "source": "mqtt",
        "late": False,
        "device_id": "oxi-0012",
        "received_at": "2026-11-24T08:00:00.210Z",
    }
]


@router.get(
    "/api/v1/readings/latest",
    response_model=list[LatestReading],
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
def latest_readings(
    user: Clinician,
    conn: Conn,
    patient_status: Annotated[
        Literal["active", "discharged"], Query(alias="status", description="patients' status")
    ] = "active",
    patient_id: Annotated[
        list[int] | None, Query(description="only these patients (repeatable)")
    ] = None,
) -> Response:
    """The newest reading (by measured time) of every patient of the user's care teams, one
    row per patient that has any reading, ordered by patient id. Poll it, or follow
    `GET /api/v1/stream` for each new one."""
    rows: list[dict[str, Any]] = conn.execute(
        LATEST,
        {"status": patient_status, "patient_ids": patient_id, "user_id": user.id},
    ).fetchall()
    audit.record(conn, user, "readings.latest", count=len(rows))
    return Response(_AS_JSON.dump_json(rows), media_type="application/json")
