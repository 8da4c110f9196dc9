"""The outbox: send pending SMS (grouped per recipient), or log them when Twilio is not set up;
record Twilio's status callbacks.

One recipient's due messages are claimed together with FOR UPDATE SKIP LOCKED and held for the
length of the send, in a transaction of their own: any number of alerting workers can run side
by side, and a crash leaves the messages pending. The one window left is a crash after Twilio
accepted a message and before the commit: that message is sent again after the restart. For a
clinical page a duplicate is the lesser harm, and the window is one HTTP call wide.

Several alert pages due for one person at once go out as one message ("3 alerts … Reply ACK 12
13 14"); each row keeps its own state, and all carry the same provider id.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerting import escalation
from alerting.messaging import AlertLine, grouped_sms
from alerting.provider import FAILED, RANK, STATES, Sender, SendError, Sent, twilio_sender
from core.clock import Clock
from core.logs import event

log = logging.getLogger("oximon.alerting")

__all__ = ["Sender", "Sent", "process_outbox_once", "record_status", "twilio_sender"]

MAX_ATTEMPTS = 5
# Transient failures wait 2, 4, 8 … wall seconds, at most this long, between attempts.
BACKOFF_MAX_S = 60.0

_NEXT_RECIPIENT = """
SELECT recipient FROM notifications
WHERE state = 'pending' AND channel = 'sms' AND next_attempt_at <= %s
ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
"""

_CLAIM_GROUP = """
SELECT n.id, n.recipient, n.body, n.attempts, n.alert_id, n.recipient_user_id,
       a.patient_id AS alert_patient_id, a.severity, a.reason, a.status AS alert_status,
       coalesce(u.sms_opted_out, p.sms_opted_out, false) AS opted_out
FROM notifications n
LEFT JOIN alerts a ON a.id = n.alert_id
LEFT JOIN users u ON u.id = n.recipient_user_id
LEFT JOIN patients p ON n.recipient_user_id IS NULL AND p.id = n.patient_id
                      AND p.phone = n.recipient
WHERE n.recipient = %s AND n.state = 'pending' AND n.channel = 'sms' AND n.next_attempt_at <= %s
ORDER BY n.id
FOR UPDATE OF n SKIP LOCKED
"""


def _backoff(clock: Clock, attempts: int) -> timedelta:
    # Provider outages are wall-clock facts; the outbox compares platform time.
    wall_s = min(BACKOFF_MAX_S, 2.0**attempts)
    return timedelta(seconds=wall_s * clock.speed)


def _set(conn: psycopg.Connection[Any], ids: list[int], sql: str, params: tuple[Any, ...]) -> None:
    conn.execute(f"UPDATE notifications SET {sql} WHERE id = ANY(%s)", (*params, ids))


def _send_group(
    conn: psycopg.Connection[Any],
    rows: list[dict[str, Any]],
    sender: Sender | None,
    clock: Clock,
    now: datetime,
    max_attempts: int,
) -> None:
    recipient = rows[0]["recipient"]
    # Pages about alerts someone has taken since they were queued are not sent.
    taken = [r["id"] for r in rows if r["alert_status"] in ("acknowledged", "resolved")]
    if taken:
        _set(conn, taken, "state = 'cancelled', status_at = %s", (now,))
    rows = [r for r in rows if r["id"] not in taken]
    opted_out = [r["id"] for r in rows if r["opted_out"]]
    if opted_out:
        _set(
            conn,
            opted_out,
            "state = 'failed', last_error = 'opted out (STOP)', status_at = %s",
            (now,),
        )
        escalation.delivery_failed(conn, opted_out, now)
    rows = [r for r in rows if not r["opted_out"]]
    pages = [r for r in rows if r["alert_id"] is not None]
    batches = [pages] if pages else []
    batches += [[r] for r in rows if r["alert_id"] is None]
    for batch in batches:
        ids = [r["id"] for r in batch]
        if sender is None:
            # The demo's SMS log: kept in the outbox and shown on the dashboard.
            _set(conn, ids, "state = 'logged', sent_at = %s, status_at = %s", (now, now))
            event(log, "sms_logged", notification_ids=ids)
            continue
        if len(batch) == 1:
            body = batch[0]["body"]
        else:
            body = grouped_sms(
                [
                    AlertLine(r["alert_id"], r["alert_patient_id"], r["severity"], r["reason"])
                    for r in batch
                ]
            )
        attempts = max(r["attempts"] for r in batch) + 1
        try:
            sent = sender(recipient, body)
        except SendError as exc:
            if exc.transient and attempts < max_attempts:
                _set(
                    conn,
                    ids,
                    "attempts = %s, last_error = %s, error_code = %s, next_attempt_at = %s",
                    (attempts, str(exc), exc.code, now + _backoff(clock, attempts)),
                )
                level = logging.WARNING
            else:
                _set(
                    conn,
                    ids,
                    "attempts = %s, state = 'failed', last_error = %s, error_code = %s,"
                    " status_at = %s",
                    (attempts, str(exc), exc.code, now),
                )
                escalation.delivery_failed(conn, ids, now)
                level = logging.ERROR
            event(
                log,
                "sms_failed",
                level,
                notification_ids=ids,
                attempts=attempts,
                transient=exc.transient,
                error=str(exc),
            )
            continue
        state = STATES.get(sent.status, "queued")
        _set(
            conn,
            ids,
            "state = %s, attempts = %s, sent_at = %s, status_at = %s, provider_id = %s,"
            " provider_status = %s",
            (state, attempts, now, now, sent.provider_id, sent.status),
        )
        if state in FAILED:
            escalation.delivery_failed(conn, ids, now)
        event(log, "sms_sent", notification_ids=ids, provider_id=sent.provider_id, grouped=len(ids))


def process_outbox_once(
    pool: ConnectionPool,
    clock: Clock,
    sender: Sender | None,
    limit: int = 50,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Send up to `limit` recipients' due messages, one recipient per transaction; return how
    many recipients were handled."""
    handled = 0
    with pool.connection() as conn:
        while handled < limit:
            with conn.transaction():
                now = clock.now()
                head = conn.execute(_NEXT_RECIPIENT, (now,)).fetchone()
                if head is None:
                    break
                recipient = head["recipient"] if isinstance(head, dict) else head[0]
                rows = (
                    conn.cursor(row_factory=dict_row)
                    .execute(_CLAIM_GROUP, (recipient, now))
                    .fetchall()
                )
                if rows:
                    _send_group(conn, rows, sender, clock, now, max_attempts)
            handled += 1
    return handled


def record_status(
    conn: psycopg.Connection[Any],
    provider_id: str,
    status: str,
    error_code: str | None,
    now: datetime,
) -> int:
    """A status callback: move every message with this provider id forward (never back). A
    failure moves the escalation on. Returns how many messages changed."""
    state = STATES.get(status)
    if state is None:
        return 0
    ranks = [s for s, r in RANK.items() if r < RANK[state]]
    with conn.transaction():
        changed = conn.execute(
            "UPDATE notifications SET state = %s, provider_status = %s, status_at = %s,"
            " error_code = coalesce(%s, error_code)"
            " WHERE provider_id = %s AND state = ANY(%s) RETURNING id",
            (state, status, now, error_code, provider_id, ranks),
        ).fetchall()
        ids = [int(r["id"] if isinstance(r, dict) else r[0]) for r in changed]
        if state in FAILED and ids:
            escalation.delivery_failed(conn, ids, now)
    return len(ids)
