"""The alert lifecycle in the database: open or update, acknowledge, resolve, checklist, snooze.

States: open → (escalated) → acknowledged → resolved; an amber alert that turns red goes back to
open and is notified again. Every transition is an `alert_events` row with who and when.

`apply_decisions` runs inside the caller's transaction (ingest stores readings and their alerts
together, so a crash before commit redelivers both and nothing is half-done). The other
functions open their own transaction on the connection they are given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerting import escalation
from alerting.messaging import patient_text
from alerting.rules import Decision, worst

# Outcomes a nurse closes an alert with (kept in step with the CHECK in migration 0003).
OUTCOMES: dict[str, str] = {
    "called_stable": "Called the patient: stable",
    "home_visit": "Home visit",
    "referred_hospital": "Referred to hospital",
    "admitted": "Admitted",
    "artefact_false_alarm": "Artefact or false alarm",
    "other": "Other (described in words)",
}

# Response checklists: the same care for every patient, whoever is on duty. Defaults per alert
# kind; `*` for any kind without its own. Overrides live in `checklist_templates`.
DEFAULT_CHECKLISTS: dict[str, list[dict[str, str]]] = {
    "*": [
        {"item": "called_patient", "label": "Called the patient"},
        {"item": "repeat_reading", "label": "Asked for a repeat reading"},
        {"item": "spoke_to_doctor", "label": "Spoke to the doctor"},
    ],
    "spo2_low": [
        {"item": "called_patient", "label": "Called the patient"},
        {"item": "repeat_reading", "label": "Asked for a repeat reading (warm hand, at rest)"},
        {"item": "asked_symptoms", "label": "Asked about breathlessness, chest pain, confusion"},
        {"item": "spoke_to_doctor", "label": "Spoke to the doctor"},
    ],
    "missed_reading": [
        {"item": "called_patient", "label": "Called the patient"},
        {"item": "checked_device", "label": "Checked the oximeter works"},
        {"item": "repeat_reading", "label": "Asked for a reading now"},
    ],
    "device_offline": [
        {"item": "called_patient", "label": "Called the patient"},
        {"item": "checked_device", "label": "Checked the oximeter and its connection"},
    ],
}

# Longest snooze: a week. Anything longer is a change of the patient's thresholds, not a snooze.
SNOOZE_MAX = timedelta(days=7)


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(ValueError):
    """The transition is not possible from the alert's state (HTTP 409)."""


class AlertInputError(ValueError):
    """Bad input; the message starts with the field's name (HTTP 422)."""


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
                    first_value, worst_value, latest_value, reading_count, last_reading_at,
                    confirmed)
VALUES (%(patient_id)s, %(kind)s, %(severity)s, %(now)s, %(now)s, %(reason)s,
        %(value)s, %(value)s, %(value)s, %(count)s, %(at)s, %(confirmed)s)
ON CONFLICT (patient_id, kind) WHERE status <> 'resolved' DO UPDATE SET
    updated_at = EXCLUDED.updated_at,
    latest_value = EXCLUDED.latest_value,
    worst_value = CASE WHEN alerts.kind LIKE '%%_low'
                       THEN LEAST(alerts.worst_value, EXCLUDED.worst_value)
                       ELSE GREATEST(alerts.worst_value, EXCLUDED.worst_value) END,
    reading_count = alerts.reading_count + EXCLUDED.reading_count,
    last_reading_at = GREATEST(alerts.last_reading_at, EXCLUDED.last_reading_at),
    severity = CASE WHEN EXCLUDED.severity = 'red' THEN 'red' ELSE alerts.severity END,
    -- A confirmation (a re-check still low, a stream's condition held) of the alert's own
    -- severity marks it confirmed and its words replace the single reading's.
    reason = CASE WHEN (EXCLUDED.severity = 'red' AND alerts.severity = 'amber')
                    OR (EXCLUDED.confirmed AND NOT alerts.confirmed
                        AND EXCLUDED.severity = alerts.severity)
                  THEN EXCLUDED.reason ELSE alerts.reason END,
    confirmed = CASE WHEN EXCLUDED.severity = 'red' AND alerts.severity = 'amber'
                     THEN EXCLUDED.confirmed
                     WHEN EXCLUDED.severity = alerts.severity
                     THEN alerts.confirmed OR EXCLUDED.confirmed
                     ELSE alerts.confirmed END,
    -- An upgrade to red needs someone to take it again.
    status = CASE WHEN EXCLUDED.severity = 'red' AND alerts.severity = 'amber'
                  THEN 'open' ELSE alerts.status END
RETURNING id, severity, status, reason, (xmax = 0) AS inserted, confirmed
"""


def apply_decisions(
    conn: psycopg.Connection[Any], decisions: list[Decision], now: datetime
) -> list[Applied]:
    """Open or update one alert per (patient, kind); write events, start escalation.

    A new or upgraded alert goes to the dashboard, and its escalation starts: for red the first
    SMS is queued in this same transaction. A confirmation of an open alert's own severity (a
    re-check still low) marks it `confirmed` with the confirming words, as a `confirmed` event;
    its escalation is already running. While a snooze covers it, or when it comes from a
    late upload (history), it is recorded and shown but nobody is paged.
    """
    applied: list[Applied] = []
    counts: dict[tuple[int, str], int] = {}
    for d in decisions:
        counts[(d.patient_id, d.kind)] = counts.get((d.patient_id, d.kind), 0) + 1
    notify = False
    for d in sorted(worst(decisions), key=lambda d: (d.patient_id, d.kind)):
        before = conn.execute(
            "SELECT severity, confirmed FROM alerts"
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
                "confirmed": d.confirmed,
            },
        ).fetchone()
        assert row is not None
        alert = escalation.Alert(
            _col(row, "id", 0),
            d.patient_id,
            d.kind,
            _col(row, "severity", 1),
            _col(row, "status", 2),
            _col(row, "reason", 3),
        )
        inserted = bool(_col(row, "inserted", 4))
        upgraded = (
            bool(before) and _col(before, "severity", 0) == "amber" and alert.severity == "red"
        )
        newly_confirmed = (
            bool(before)
            and not upgraded
            and not _col(before, "confirmed", 1)
            and bool(_col(row, "confirmed", 5))
        )
        if newly_confirmed:
            # Recorded and shown (the alert's words now say what confirmed it); its escalation
            # is already running.
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, action, detail) VALUES (%s, %s, %s, %s)",
                (alert.id, now, "confirmed", Jsonb(_decision_detail(d, alert.severity))),
            )
            conn.execute(
                "SELECT pg_notify('oximon_alerts', %s)",
                (
                    json.dumps(
                        {
                            "alert_id": alert.id,
                            "patient_id": d.patient_id,
                            "kind": d.kind,
                            "severity": alert.severity,
                            "event": "confirmed",
                        }
                    ),
                ),
            )
        if inserted or upgraded:
            history = bool(getattr(d, "history", False))
            snooze = escalation.snooze_covering(conn, d.patient_id, d.kind, alert.severity, now)
            detail = _decision_detail(d, alert.severity)
            if snooze is not None:
                detail["snoozed_until"] = snooze["until"].isoformat()
            conn.execute(
                "INSERT INTO alert_events (alert_id, at, action, detail) VALUES (%s, %s, %s, %s)",
                (alert.id, now, "opened" if inserted else "upgraded", Jsonb(detail)),
            )
            if inserted:
                _copy_checklist(conn, alert.id, d.kind)
            if snooze is None:
                conn.execute(
                    "INSERT INTO notifications (created_at, channel, recipient, patient_id,"
                    " alert_id, body, state, next_attempt_at)"
                    " VALUES (%s, 'web', 'dashboard', %s, %s, %s, 'sent', %s)",
                    (now, d.patient_id, alert.id, d.reason, now),
                )
            if history:
                pass  # an old state: on the record and the dashboard, never a page
            elif snooze is None:
                escalation.start(conn, alert, now, fresh=inserted)
            else:
                escalation.cancel_pending(conn, alert.id, now)
                escalation.rearm_at(conn, alert.id, snooze["until"], now)
            if getattr(d, "recheck", False) and not history:
                _ask_patient_to_measure_again(conn, d.patient_id, now)
            notify = True
            payload = {
                "alert_id": alert.id,
                "patient_id": d.patient_id,
                "kind": d.kind,
                "severity": alert.severity,
                "event": "opened" if inserted else "upgraded",
            }
            conn.execute("SELECT pg_notify('oximon_alerts', %s)", (json.dumps(payload),))
        applied.append(Applied(alert.id, d.patient_id, d.kind, alert.severity, inserted, upgraded))
    if notify:
        conn.execute("SELECT pg_notify(%s, '')", (escalation.OUTBOX_CHANNEL,))
    return applied


def _decision_detail(d: Decision, severity: str) -> dict[str, Any]:
    """What an alert event records of the decision behind it: the words, the value, when the
    reading was measured, and its flags (only those set)."""
    detail: dict[str, Any] = {
        "severity": severity,
        "value": d.value,
        "reason": d.reason,
        "measured_at": d.at.isoformat(),
    }
    for flag in ("recheck", "confirmed", "history"):
        if getattr(d, flag, False):
            detail[flag] = True
    return detail


def _ask_patient_to_measure_again(
    conn: psycopg.Connection[Any], patient_id: int, now: datetime
) -> None:
    """An unconfirmed red spot check: the patient is asked by SMS to rest and measure again
    (NHS Oximetry @home). A patient who texted the reading already had that advice in the
    reply; one who texted STOP, or has no phone, gets nothing."""
    conn.execute(
        "INSERT INTO notifications (created_at, channel, recipient, patient_id, body,"
        " next_attempt_at)"
        " SELECT %(now)s, 'sms', p.phone, p.id, CASE p.language"
        "   WHEN 'en' THEN %(en)s ELSE %(nb)s END, %(now)s"
        " FROM patients p WHERE p.id = %(patient_id)s AND p.phone IS NOT NULL"
        " AND NOT p.sms_opted_out AND NOT EXISTS ("
        "   SELECT 1 FROM readings r WHERE r.patient_id = p.id AND r.source = 'sms'"
        "   AND r.time > %(now)s - interval '15 minutes')",
        {
            "now": now,
            "patient_id": patient_id,
            "en": patient_text("recheck", "en"),
            "nb": patient_text("recheck", "nb"),
        },
    )


def _col(row: Any, name: str, index: int) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


def _event(
    conn: psycopg.Connection[Any],
    alert_id: int,
    now: datetime,
    action: str,
    user_id: int | None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO alert_events (alert_id, at, user_id, action, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (alert_id, now, user_id, action, Jsonb(detail or {})),
    )


def _lock(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any]:
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, patient_id, kind, severity, status, acknowledged_at FROM alerts"
            " WHERE id = %s FOR UPDATE",
            (alert_id,),
        )
        .fetchone()
    )
    if row is None:
        raise AlertNotFoundError(alert_id)
    return row


def acknowledge(
    conn: psycopg.Connection[Any],
    alert_id: int,
    user_id: int,
    now: datetime,
    via: str = "api",
) -> bool:
    """Someone has taken the alert: recorded with who, when and how (api, dashboard, sms);
    pending escalation steps and unsent pages stop. Returns False if it was already taken."""
    with conn.transaction():
        status = _lock(conn, alert_id)["status"]
        if status == "resolved":
            raise AlertStateError("alert is already resolved")
        if status == "acknowledged":
            return False
        conn.execute(
            "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s, acknowledged_by = %s,"
            " updated_at = %s WHERE id = %s",
            (now, user_id, now, alert_id),
        )
        _event(conn, alert_id, now, "acknowledged", user_id, {"via": via})
        escalation.cancel_pending(conn, alert_id, now)
    return True


def resolve(
    conn: psycopg.Connection[Any],
    alert_id: int,
    user_id: int,
    outcome: str,
    now: datetime,
    outcome_text: str | None = None,
    note: str | None = None,
) -> None:
    """Close the alert with an outcome from `OUTCOMES` (`other` needs `outcome_text`).

    Resolving an alert nobody had acknowledged records the acknowledgement too: whoever closes
    it has taken it."""
    if outcome not in OUTCOMES:
        raise AlertInputError(f"outcome: must be one of {', '.join(OUTCOMES)}")
    outcome_text = (outcome_text or "").strip() or None
    note = (note or "").strip() or None
    if outcome == "other" and not outcome_text:
        raise AlertInputError("outcome_text: say what happened when the outcome is 'other'")
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert["status"] == "resolved":
            raise AlertStateError("alert is already resolved")
        if alert["acknowledged_at"] is None:
            conn.execute(
                "UPDATE alerts SET acknowledged_at = %s, acknowledged_by = %s WHERE id = %s",
                (now, user_id, alert_id),
            )
            _event(conn, alert_id, now, "acknowledged", user_id, {"via": "resolve"})
        conn.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
            " outcome = %s, outcome_text = %s, resolution_note = %s, updated_at = %s"
            " WHERE id = %s",
            (now, user_id, outcome, outcome_text, note, now, alert_id),
        )
        detail = {"outcome": outcome, "outcome_text": outcome_text, "note": note}
        _event(conn, alert_id, now, "resolved", user_id, {k: v for k, v in detail.items() if v})
        escalation.cancel_pending(conn, alert_id, now)


# --- checklists -------------------------------------------------------------------------------


def checklist_template(conn: psycopg.Connection[Any], kind: str) -> list[dict[str, str]]:
    """The items an alert of `kind` starts with: its own override, the `*` override, or the
    defaults."""
    rows = conn.execute(
        "SELECT kind, items FROM checklist_templates WHERE kind = %s OR kind = '*'", (kind,)
    ).fetchall()
    custom = {_col(r, "kind", 0): _col(r, "items", 1) for r in rows}
    if kind in custom:
        return list(custom[kind])
    if kind in DEFAULT_CHECKLISTS:
        return list(DEFAULT_CHECKLISTS[kind])
    return list(custom.get("*") or DEFAULT_CHECKLISTS["*"])


def checklist_templates(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT kind, items, updated_at, updated_by FROM checklist_templates")
        .fetchall()
    )
    out: dict[str, dict[str, Any]] = {
        k: {"kind": k, "items": v, "source": "default"} for k, v in DEFAULT_CHECKLISTS.items()
    }
    for r in rows:
        out[r["kind"]] = {**r, "source": "custom"}
    return out


def save_checklist_template(
    conn: psycopg.Connection[Any], kind: str, items: list[dict[str, str]], now: datetime, by: int
) -> None:
    keys = [i["item"] for i in items]
    if not items:
        raise AlertInputError("items: give at least one item")
    if len(set(keys)) != len(keys):
        raise AlertInputError("items: each item key once")
    conn.execute(
        "INSERT INTO checklist_templates (kind, items, updated_at, updated_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (kind) DO UPDATE SET items = EXCLUDED.items,"
        " updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        (kind, Jsonb(items), now, by),
    )


def _copy_checklist(conn: psycopg.Connection[Any], alert_id: int, kind: str) -> None:
    items = checklist_template(conn, kind)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_checklist (alert_id, item, label, position)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(alert_id, i["item"], i["label"], n) for n, i in enumerate(items)],
        )


def checklist(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT c.item, c.label, c.done, c.done_at, c.done_by, u.username AS done_by_username"
            " FROM alert_checklist c LEFT JOIN users u ON u.id = c.done_by"
            " WHERE c.alert_id = %s ORDER BY c.position, c.item",
            (alert_id,),
        )
        .fetchall()
    )


def tick(
    conn: psycopg.Connection[Any],
    alert_id: int,
    item: str,
    done: bool,
    user_id: int,
    now: datetime,
) -> None:
    """Tick (or untick) one checklist item; who and when are kept on the item and in history."""
    with conn.transaction():
        alert = _lock(conn, alert_id)
        if alert["status"] == "resolved":
            raise AlertStateError("alert is resolved: its checklist is closed")
        found = conn.execute(
            "SELECT done FROM alert_checklist WHERE alert_id = %s AND item = %s FOR UPDATE",
            (alert_id, item),
        ).fetchone()
        if found is None:
            # An alert opened before checklists existed gets its kind's items now.
            _copy_checklist(conn, alert_id, alert["kind"])
            found = conn.execute(
                "SELECT done FROM alert_checklist WHERE alert_id = %s AND item = %s FOR UPDATE",
                (alert_id, item),
            ).fetchone()
        if found is None:
            known = [c["item"] for c in checklist(conn, alert_id)]
            raise AlertInputError(f"item: not on this alert's checklist ({', '.join(known)})")
        if bool(_col(found, "done", 0)) == done:
            return
        conn.execute(
            "UPDATE alert_checklist SET done = %s, done_at = %s, done_by = %s"
            " WHERE alert_id = %s AND item = %s",
            (done, now if done else None, user_id if done else None, alert_id, item),
        )
        _event(
            conn,
            alert_id,
            now,
            "checklist_ticked" if done else "checklist_unticked",
            user_id,
            {"item": item},
        )


# --- snoozes ----------------------------------------------------------------------------------


def snooze(
    conn: psycopg.Connection[Any],
    patient_id: int,
    kind: str,
    duration: timedelta,
    reason: str,
    include_red: bool,
    user_id: int,
    now: datetime,
    alert_id: int | None = None,
) -> dict[str, Any]:
    """Silence a patient's alerts of `kind` for `duration` (platform time) with a reason.

    Unresolved alerts it covers stop escalating and are looked at again when it ends; new ones
    are recorded but page nobody. Red breaks through unless `include_red`."""
    reason = reason.strip()
    if not reason:
        raise AlertInputError("reason: say why the alerts may wait")
    if duration <= timedelta(0) or duration > SNOOZE_MAX:
        raise AlertInputError("minutes: between 1 minute and 7 days")
    until = now + duration
    with conn.transaction():
        if alert_id is not None:
            alert = _lock(conn, alert_id)
            if alert["status"] == "resolved":
                raise AlertStateError("alert is resolved: nothing to snooze")
            if alert["severity"] == "red" and not include_red:
                raise AlertStateError(
                    "alert is red and red breaks through a snooze: set include_red to snooze it"
                )
        elif (
            conn.execute(
                "SELECT 1 FROM patients WHERE id = %s AND status = 'active'", (patient_id,)
            ).fetchone()
            is None
        ):
            raise AlertNotFoundError(patient_id)
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "INSERT INTO alert_snoozes (patient_id, kind, include_red, starts_at, until,"
                " reason, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id, patient_id, kind, include_red, starts_at, until, reason,"
                " created_by",
                (patient_id, kind, include_red, now, until, reason, user_id),
            )
            .fetchone()
        )
        assert row is not None
        covered = conn.execute(
            "SELECT id FROM alerts WHERE patient_id = %s AND kind = %s AND status <> 'resolved'"
            " AND (severity <> 'red' OR %s) FOR UPDATE",
            (patient_id, kind, include_red),
        ).fetchall()
        for c in covered:
            cid = _col(c, "id", 0)
            escalation.cancel_pending(conn, cid, now)
            escalation.rearm_at(conn, cid, until, now)
            _event(
                conn,
                cid,
                now,
                "snoozed",
                user_id,
                {"until": until.isoformat(), "reason": reason, "include_red": include_red},
            )
    return row


def cancel_snooze(
    conn: psycopg.Connection[Any], snooze_id: int, user_id: int, now: datetime
) -> None:
    """End a snooze early: the alerts it covered are looked at again now."""
    with conn.transaction():
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "UPDATE alert_snoozes SET cancelled_at = %s, cancelled_by = %s"
                " WHERE id = %s AND cancelled_at IS NULL AND until > %s"
                " RETURNING patient_id, kind, include_red",
                (now, user_id, snooze_id, now),
            )
            .fetchone()
        )
        if row is None:
            raise AlertNotFoundError(snooze_id)
        covered = conn.execute(
            "SELECT id FROM alerts WHERE patient_id = %s AND kind = %s AND status <> 'resolved'"
            " AND (severity <> 'red' OR %s)",
            (row["patient_id"], row["kind"], row["include_red"]),
        ).fetchall()
        for c in covered:
            escalation.rearm_at(conn, _col(c, "id", 0), now, now)
        if covered:
            conn.execute("SELECT pg_notify(%s, '')", (escalation.OUTBOX_CHANNEL,))


def snoozes(
    conn: psycopg.Connection[Any], patient_id: int, now: datetime, active_only: bool = True
) -> list[dict[str, Any]]:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT s.id, s.patient_id, s.kind, s.include_red, s.starts_at, s.until, s.reason,"
            " s.created_by, u.username AS created_by_username, s.cancelled_at, s.cancelled_by,"
            " (s.cancelled_at IS NULL AND s.until > %s) AS active"
            " FROM alert_snoozes s LEFT JOIN users u ON u.id = s.created_by"
            " WHERE s.patient_id = %s AND (NOT %s OR (s.cancelled_at IS NULL AND s.until > %s))"
            " ORDER BY s.starts_at DESC, s.id DESC",
            (now, patient_id, active_only, now),
        )
        .fetchall()
    )


# --- reading an alert -------------------------------------------------------------------------

_DETAIL = """
SELECT a.id, a.patient_id, a.kind, a.severity, a.status, a.opened_at, a.updated_at, a.reason,
       a.acknowledged_at, a.acknowledged_by, ua.username AS acknowledged_by_username,
       a.resolved_at, a.resolved_by, ur.username AS resolved_by_username,
       a.outcome, a.outcome_text, a.resolution_note,
       a.first_value, a.worst_value, a.latest_value, a.reading_count, a.last_reading_at
FROM alerts a
LEFT JOIN users ua ON ua.id = a.acknowledged_by
LEFT JOIN users ur ON ur.id = a.resolved_by
WHERE a.id = %s
"""

_HISTORY = """
SELECT e.at, e.action, e.user_id, u.username, e.detail FROM alert_events e
LEFT JOIN users u ON u.id = e.user_id WHERE e.alert_id = %s ORDER BY e.at, e.id
"""

_STEPS = """
SELECT id, kind, step, round, due_at, state, done_at FROM escalation_steps
WHERE alert_id = %s ORDER BY due_at, id
"""

_MESSAGES = """
SELECT n.id, n.created_at, n.channel, n.recipient_user_id, u.username AS recipient_username,
       n.state, n.provider_status, n.attempts, n.sent_at, n.status_at, n.error_code,
       s.kind AS escalation_kind, s.step AS escalation_step, s.round AS escalation_round
FROM notifications n
LEFT JOIN users u ON u.id = n.recipient_user_id
LEFT JOIN escalation_steps s ON s.id = n.escalation_step_id
WHERE n.alert_id = %s ORDER BY n.id
"""


def detail(conn: psycopg.Connection[Any], alert_id: int, now: datetime) -> dict[str, Any]:
    """The alert with its history, checklist, escalation, messages and any snooze on it."""
    cur = conn.cursor(row_factory=dict_row)
    row = cur.execute(_DETAIL, (alert_id,)).fetchone()
    if row is None:
        raise AlertNotFoundError(alert_id)
    row["outcome_label"] = OUTCOMES.get(row["outcome"] or "")
    row["history"] = cur.execute(_HISTORY, (alert_id,)).fetchall()
    row["checklist"] = checklist(conn, alert_id)
    row["escalation"] = cur.execute(_STEPS, (alert_id,)).fetchall()
    row["messages"] = cur.execute(_MESSAGES, (alert_id,)).fetchall()
    row["snoozed_by"] = escalation.snooze_covering(
        conn, row["patient_id"], row["kind"], row["severity"], now
    )
    return row
