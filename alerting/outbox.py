"""The alerting service's outbox loop: send pending SMS, or log them when Twilio is not set up.

Rows are claimed with FOR UPDATE SKIP LOCKED and held for the length of the send, so any
number of alerting workers can run side by side and a crash leaves the row pending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.clock import Clock
from core.logs import event

log = logging.getLogger("oximon.alerting")

# send(recipient, body) -> provider message id; raises on failure.
Sender = Callable[[str, str], str]

_CLAIM = """
SELECT id, recipient, body, attempts FROM notifications
WHERE state = 'pending' AND channel = 'sms' AND next_attempt_at <= %s
ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED
"""

MAX_ATTEMPTS = 5


def process_outbox_once(
    pool: ConnectionPool, clock: Clock, sender: Sender | None, limit: int = 50
) -> int:
    """Handle up to `limit` due messages; return how many were handled."""
    handled = 0
    with pool.connection() as conn, conn.transaction():
        now = clock.now()
        claimed = conn.cursor(row_factory=dict_row).execute(_CLAIM, (now, limit)).fetchall()
        for row in claimed:
            handled += 1
            if sender is None:
                # The demo's SMS log: the message is kept in the outbox and shown on the dashboard.
                conn.execute(
                    "UPDATE notifications SET state = 'logged', sent_at = %s WHERE id = %s",
                    (now, row["id"]),
                )
                event(log, "sms_logged", notification_id=row["id"])
                continue
            try:
                provider_id = sender(row["recipient"], row["body"])
            except Exception as exc:  # noqa: BLE001 - any provider failure is retried, then failed
                attempts = row["attempts"] + 1
                state = "failed" if attempts >= MAX_ATTEMPTS else "pending"
                conn.execute(
                    "UPDATE notifications SET attempts = %s, state = %s, last_error = %s,"
                    " next_attempt_at = %s WHERE id = %s",
                    (
                        attempts,
                        state,
                        type(exc).__name__,
                        now + timedelta(seconds=2**attempts),
                        row["id"],
                    ),
                )
                event(
                    log,
                    "sms_failed",
                    logging.WARNING,
                    notification_id=row["id"],
                    attempts=attempts,
                    error=type(exc).__name__,
                )
                continue
            conn.execute(
                "UPDATE notifications SET state = 'sent', attempts = attempts + 1, sent_at = %s,"
                " provider_id = %s WHERE id = %s",
                (now, provider_id, row["id"]),
            )
            event(log, "sms_sent", notification_id=row["id"])
    return handled


def twilio_sender(account_sid: str, auth_token: str, from_number: str) -> Sender:
    from twilio.rest import Client

    client = Client(account_sid, auth_token)

    def send(recipient: str, body: str) -> str:
        message = client.messages.create(to=recipient, from_=from_number, body=body)
        return str(message.sid)

    return send


def run_outbox(
    pool: ConnectionPool,
    clock: Clock,
    sender: Sender | None,
    stop: threading.Event,
    poll_s: float = 0.5,
) -> None:
    while not stop.is_set():
        try:
            handled = process_outbox_once(pool, clock, sender)
        except Exception:  # noqa: BLE001 - the loop must survive a database outage
            log.exception("outbox_error")
            handled = 0
        if not handled:
            stop.wait(poll_s)
