"""A patient's timeline: readings summarised per period, alert events with who, messages sent
and received, and care notes, in one chronological list (one query)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from api import audit
from api.deps import Conn, Now
from api.scope import ScopedPatientId
from api.security import Clinician

router = APIRouter(tags=["patients"])

TYPES = ("readings", "alert", "message_out", "message_in", "note")
BUCKETS = {"15m": "15 minutes", "30m": "30 minutes", "1h": "1 hour", "3h": "3 hours",
           "6h": "6 hours", "1d": "1 day"}  # fmt: skip

# Each branch is skipped by the planner when its type is not asked for (a one-time filter).
TIMELINE = """
SELECT time, type, data FROM (
    SELECT time_bucket(%(bucket)s::interval, r.time) AS time, 'readings' AS type,
           jsonb_build_object(
               'until', time_bucket(%(bucket)s::interval, r.time) + %(bucket)s::interval,
               'n', count(*),
               'spo2_min', min(r.spo2), 'spo2_mean', round(avg(r.spo2), 1),
               'spo2_max', max(r.spo2),
               'pulse_min', min(r.pulse), 'pulse_mean', round(avg(r.pulse), 1),
               'pulse_max', max(r.pulse),
               'flagged', count(*) FILTER (WHERE r.quality <> 'ok'),
               'late', count(*) FILTER (WHERE r.late),
               'by_sms', count(*) FILTER (WHERE r.source = 'sms')) AS data
    FROM readings r
    WHERE 'readings' = ANY(%(types)s) AND r.patient_id = %(patient_id)s
      AND r.time >= %(since)s AND r.time < %(until)s
    GROUP BY 1
  UNION ALL
    SELECT e.at, 'alert', jsonb_build_object(
               'alert_id', a.id, 'action', e.action, 'kind', a.kind,
               'severity', coalesce(e.detail->>'severity', a.severity),
               'status', a.status, 'reason', a.reason,
               'by', CASE WHEN u.id IS NULL THEN NULL
                          ELSE jsonb_build_object('id', u.id, 'username', u.username) END,
               'detail', e.detail)
    FROM alert_events e JOIN alerts a ON a.id = e.alert_id LEFT JOIN users u ON u.id = e.user_id
    WHERE 'alert' = ANY(%(types)s) AND a.patient_id = %(patient_id)s
      AND e.at >= %(since)s AND e.at < %(until)s
  UNION ALL
    SELECT n.created_at, 'message_out', jsonb_build_object(
               'id', n.id, 'channel', n.channel,
               'to', CASE WHEN n.recipient_user_id IS NULL THEN 'patient' ELSE 'staff' END,
               'to_user', CASE WHEN u.id IS NULL THEN NULL
                               ELSE jsonb_build_object('id', u.id, 'username', u.username) END,
               'alert_id', n.alert_id, 'state', n.state, 'sent_at', n.sent_at, 'body', n.body)
    FROM notifications n LEFT JOIN users u ON u.id = n.recipient_user_id
    WHERE 'message_out' = ANY(%(types)s) AND n.channel = 'sms'
      AND (n.patient_id = %(patient_id)s
           OR n.alert_id IN (SELECT id FROM alerts WHERE patient_id = %(patient_id)s))
      AND n.created_at >= %(since)s AND n.created_at < %(until)s
  UNION ALL
    SELECT s.received_at, 'message_in', jsonb_build_object(
               'id', s.id, 'channel', 'sms', 'body', s.body, 'outcome', s.outcome,
               'reply', s.reply)
    FROM sms_inbound s
    WHERE 'message_in' = ANY(%(types)s) AND s.patient_id = %(patient_id)s
      AND s.received_at >= %(since)s AND s.received_at < %(until)s
  UNION ALL
    SELECT n.at, 'note', jsonb_build_object(
               'id', n.id, 'body', n.body,
               'by', jsonb_build_object('id', u.id, 'username', u.username))
    FROM patient_notes n JOIN users u ON u.id = n.author_id
    WHERE 'note' = ANY(%(types)s) AND n.patient_id = %(patient_id)s
      AND n.at >= %(since)s AND n.at < %(until)s
) items
ORDER BY CASE WHEN %(desc)s THEN extract(epoch FROM time) END DESC NULLS LAST, time, type
LIMIT %(limit)s
"""

_EXAMPLE = {
    "patient_id": 12,
    "since": "2026-11-23T08:00:00Z",
    "until": "2026-11-24T08:05:00Z",
    "bucket": "1h",
    "truncated": False,
    "items": [
        {
            "time": "2026-11-24T07:00:00Z",
            "type": "readings",
            "until": "2026-11-24T08:00:00+00:00",
            "n": 58,
            "spo2_min": 90,
            "spo2_mean": 93.4,
            "spo2_max": 96,
            "pulse_min": 70,
            "pulse_mean": 78.2,
            "pulse_max": 91,
            "flagged": 2,
            "late": 0,
            "by_sms": 0,
        },
        {
            "time": "2026-11-24T07:41:00Z",
            "type": "alert",
            "alert_id": 7,
            "action": "opened",
            "kind": "spo2_low",
            "severity": "red",
            "status": "acknowledged",
            "reason": "SpO2 90% for 60 s (red at 92% or below)",
            "by": None,
            "detail": {"severity": "red", "value": 90},
        },
        {
            "time": "2026-11-24T07:41:00Z",
            "type": "message_out",
            "id": 31,
            "channel": "sms",
            "to": "staff",
            "to_user": {"id": 4, "username": "nurse1"},
            "alert_id": 7,
            "state": "delivered",
            "sent_at": "2026-11-24T07:41:01+00:00",
            "body": "oximon RED …",
        },
        {
            "time": "2026-11-24T07:44:00Z",
            "type": "alert",
            "alert_id": 7,
            "action": "acknowledged",
            "kind": "spo2_low",
            "severity": "red",
            "status": "acknowledged",
            "reason": "…",
            "by": {"id": 4, "username": "nurse1"},
            "detail": {"via": "api"},
        },
        {
            "time": "2026-11-24T07:50:00Z",
            "type": "message_in",
            "id": 5,
            "channel": "sms",
            "body": "94 80",
            "outcome": "reading",
            "reply": "…",
        },
        {
            "time": "2026-11-24T07:55:00Z",
            "type": "note",
            "id": 3,
            "body": "Called: resting, no chest pain.",
            "by": {"id": 4, "username": "nurse1"},
        },
    ],
}


@router.get(
    "/api/v1/patients/{patient_id}/timeline",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
def patient_timeline(
    patient_id: ScopedPatientId,
    user: Clinician,
    conn: Conn,
    clock: Now,
    since: Annotated[
        datetime | None, Query(description="from (inclusive, with offset); default until − 7 d")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="to (exclusive, with offset); default now")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    bucket: Annotated[
        Literal["15m", "30m", "1h", "3h", "6h", "1d"],
        Query(description="readings are summarised per bucket"),
    ] = "1h",
    types: Annotated[
        str,
        Query(description="comma-separated: readings, alert, message_out, message_in, note"),
    ] = ",".join(TYPES),
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first")
    ] = "asc",
) -> dict[str, Any]:
    """Everything that happened to a patient in [since, until), in time order: readings per
    bucket (count, min/mean/max SpO2 and pulse, flagged, late, texted), alert events (opened,
    upgraded, acknowledged, escalated, resolved, checklist, snoozed …) with who (`by: null` is
    the system), SMS sent (to the patient or to staff about the patient's alerts) and received
    from the patient, and care notes. `truncated` is true when `limit` cut the list: narrow the
    period, or page with `order=desc` and `until`."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name}: needs a UTC offset, e.g. 2026-11-24T08:00:00Z")
    wanted = [t.strip() for t in types.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(TYPES))
    if unknown or not wanted:
        raise HTTPException(422, f"types: each must be one of {', '.join(TYPES)}")
    until = until or clock.now()
    since = since or until - timedelta(days=7)
    if since >= until:
        raise HTTPException(422, "since: must be before until")
    rows = conn.execute(
        TIMELINE,
        {
            "patient_id": patient_id,
            "since": since,
            "until": until,
            "bucket": BUCKETS[bucket],
            "types": wanted,
            "desc": order == "desc",
            "limit": limit + 1,
        },
    ).fetchall()
    audit.record(
        conn,
        user,
        "timeline.read",
        patient_id=patient_id,
        since=since.isoformat(),
        until=until.isoformat(),
        types=wanted,
    )
    return {
        "patient_id": patient_id,
        "since": since,
        "until": until,
        "bucket": bucket,
        "truncated": len(rows) > limit,
        "items": [{"time": r["time"], "type": r["type"], **r["data"]} for r in rows[:limit]],
    }
