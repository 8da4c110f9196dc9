"""The alert lifecycle in the database: open or update, acknowledge, notify.

Runs inside the caller's transaction (ingest stores readings and their alerts together, so a
crash before commit redelivers both and nothing is half-done).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerting.rules import Decision, worst


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(ValueError):
    pass


@dataclass(frozen=True)
class Applied:
    alert_id: int
    patient_id: int
    kind: str
    severity: str
    opened: bool
    upgraded: bool


_UPSERT = """
INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason,
                    first_value, worst_value, latest_value, reading_count, last_reading_at)
VALUES (%(patient_id)s, %(kind)s, %(severity)s, %(now)s, %(now)s, %(reason)s,
        %(value)s, %(value)s, %(value)s, %(count)s, %(at)s)
ON CONFLICT (patient_id, kind) WHERE status <> 'resolved' DO UPDATE SET
    updated_at = EXCLUDED.updated_at,
    latest_value = EXCLUDED.latest_value,
    worst_value = CASE WHEN alerts.kind LIKE '%%_low'
                       THEN LEAST(alerts.worst_value, EXCLUDED.worst_value)
                       ELSE GREATEST(alerts.worst_value, EXCLUDED.worst_value) END,
    reading_count = alerts.reading_count + EXCLUDED.reading_count,
    last_reading_at = GREATEST(alerts.last_reading_at, EXCLUDED.last_reading_at),
    severity = CASE WHEN EXCLUDED.severity = 'red' THEN 'red' ELSE alerts.severity END,
    reason = CASE WHEN EXCLUDED.severity = 'red' AND alerts.severity = 'amber'
                  THEN EXCLUDED.reason ELSE alerts.reason END,
    -- An upgrade to red needs someone to take it again.
    status = CASE WHEN EXCLUDED.severity = 'red' AND alerts.severity = 'amber'
                  THEN 'open' ELSE alerts.status END
RETURNING id, severity, (xmax = 0) AS inserted
"""


def apply_decisions(
    conn: psycopg.Connection[Any], decisions: list[Decision], now: datetime
) -> list[Applied]:
    """Open or update one alert per (patient, kind); write events and notifications."""
    applied: list[Applied] = []
    counts: dict[tuple[int, str], int] = {}
    for d in decisions:
        counts[(d.patient_id, d.kind)] = counts.get((d.patient_id, d.kind), 0) + 1
    for d in sorted(worst(decisions), key=lambda d: (d.patient_id, d.kind)):
        before = conn.execute(
            "SELECT severity FROM alerts"
            " WHERE patient_id = %s AND kind = %s AND status <> 'resolved'"
            " FOR UPDATE",
            (d.patient_id, d.kind),
        ).fetchone()
        row = conn.execute(
            _UPSERT,
            {
                "patient_id": d.patient_id,
                "kind": d.kind,
                "severity": d.severity,
                "now": now,
                "reason": d.reason,
                "value": d.value,
                "count": counts[(d.patient_id, d.kind)],
                "at": d.at,
            },
        ).fetchone()
        assert row is not None
        alert_id, severity, inserted = (
            _col(row, "id", 0),
            _col(row, "severity", 1),
            _col(row, "inserted", 2),
        )
        upgraded = bool(before) and _col(before, "severity", 0) == "amber" and severity == "red"
        if inserted or upgraded:
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, action, detail) VALUES (%s, %s, %s, %s)",
                (
                    alert_id,
                    now,
                    "opened" if inserted else "upgraded",
                    Jsonb({"severity": severity, "value": d.value, "reason": d.reason}),
                ),
            )
            notify_alert(conn, alert_id, d, severity, now)
        applied.append(Applied(alert_id, d.patient_id, d.kind, severity, bool(inserted), upgraded))
    return applied


def _col(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


def sms_body(alert_id: int, patient_id: int, severity: str, reason: str) -> str:
    # Patient id, not name: an SMS can be read over a shoulder. The code acknowledges by reply.
    return f"oximon {severity.upper()}: patient #{patient_id}. {reason}. Reply ACK {alert_id}"


def notify_alert(
    conn: psycopg.Connection[Any], alert_id: int, d: Decision, severity: str, now: datetime
) -> None:
    """Red: SMS to the on-call doctor(s). Every alert: a web notification for the dashboard."""
    conn.execute(
        "INSERT INTO notifications (created_at, channel, recipient, patient_id, alert_id, body,"
        " state, next_attempt_at) VALUES (%s, 'web', 'dashboard', %s, %s, %s, 'sent', %s)",
        (now, d.patient_id, alert_id, d.reason, now),
    )
    if severity != "red":
        return
    conn.execute(
        "INSERT INTO notifications (created_at, channel, recipient, recipient_user_id, patient_id,"
        " alert_id, body, next_attempt_at)"
        " SELECT %s, 'sms', u.phone, u.id, %s, %s, %s, %s FROM users u"
        " WHERE u.role = 'doctor' AND u.on_call AND u.active AND u.phone IS NOT NULL",
        (now, d.patient_id, alert_id, sms_body(alert_id, d.patient_id, severity, d.reason), now),
    )


def acknowledge(conn: psycopg.Connection[Any], alert_id: int, user_id: int, now: datetime) -> None:
    """Someone has taken the alert: recorded with who and when."""
    with conn.transaction():
        row = conn.execute(
            "SELECT status FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)
        ).fetchone()
        if row is None:
            raise AlertNotFoundError(alert_id)
        status = _col(row, "status", 0)
        if status == "resolved":
            raise AlertStateError("alert is already resolved")
        if status == "acknowledged":
            return
        conn.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s,"
            " updated_at = %s WHERE id = %s",
            (now, user_id, now, alert_id),
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, user_id, action)"
            " VALUES (%s, %s, %s, 'acknowledged')",
            (alert_id, now, user_id),
        )
