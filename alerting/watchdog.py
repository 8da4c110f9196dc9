"""The alerting worker's watchdog: missed readings and device health, on the platform clock.

Once a minute (platform time) one alerting worker — whichever takes the advisory lock — looks at
every active patient and device and acts on what `alerting.schedule` and `alerting.health` say:
a reminder SMS to the patient, an amber `missed_reading` alert for the nurses, amber
`device_offline` and `low_battery` alerts. Device alerts are never red. Each missed expected
reading is acted on once (`missed_reading_actions`), however many workers run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from alerting import messaging
from alerting.escalation import OUTBOX_CHANNEL
from alerting.health import LOW_BATTERY_PCT, OFFLINE_GRACE, device_offline, low_battery
from alerting.lifecycle import apply_decisions
from alerting.rules import Decision
from alerting.schedule import ALERT, REMIND, ScheduleError, due_checks
from core.clock import Clock
from core.logs import event

log = logging.getLogger("oximon.alerting")

_LOCK_KEY = 0x0C5_D06  # any constant shared by every alerting worker

_PATIENTS = """
SELECT p.id, p.schedule, p.enrolled_at, p.phone, p.language, p.sms_opted_out,
       (SELECT max(r.time) FROM readings r WHERE r.patient_id = p.id) AS last_reading_at
FROM patients p WHERE p.status = 'active'
"""

_DEVICES = """
SELECT d.id, d.patient_id, d.online, d.last_seen_at, d.battery_pct, p.schedule
FROM devices d JOIN patients p ON p.id = d.patient_id
WHERE d.status = 'active' AND p.status = 'active' AND d.id NOT LIKE 'sms-%%'
"""


class Watchdog:
    """A job for `AlertingWorker(jobs=[Watchdog(tz)])`."""

    def __init__(
        self,
        tz: str = "Europe/Oslo",
        every: timedelta = timedelta(minutes=1),
        offline_after: timedelta = OFFLINE_GRACE,
        low_battery_pct: int = LOW_BATTERY_PCT,
    ) -> None:
        self.tz = tz
        self.every = every
        self.offline_after = offline_after
        self.low_battery_pct = low_battery_pct
        self._next: datetime | None = None

    def __call__(self, pool: ConnectionPool, clock: Clock) -> int:
        now = clock.now()
        if self._next is not None and now < self._next:
            return 0
        with pool.connection() as conn, conn.transaction():
            locked = (
                conn.cursor(row_factory=tuple_row)
                .execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
                .fetchone()
            )
            if not locked or not locked[0]:
                return 0  # another worker is on it
            done = self.check(conn, now)
        self._next = now + self.every  # only after a pass that went through
        return done

    def check(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        """One look at every patient and device; returns how many things it did."""
        cur = conn.cursor(row_factory=dict_row)
        decisions: list[Decision] = []
        reminders = 0
        for p in cur.execute(_PATIENTS).fetchall():
            try:
                due = due_checks(
                    p["schedule"], p["last_reading_at"], now, self.tz, p["enrolled_at"]
                )
            except ScheduleError:
                event(log, "schedule_invalid", logging.WARNING, patient_id=p["id"])
                continue
            for item in due:
                first = cur.execute(
                    "INSERT INTO missed_reading_actions (patient_id, slot_at, action, done_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                    (p["id"], item.slot_at, item.action, now),
                ).fetchone()
                if not first:
                    continue
                if item.action == ALERT:
                    decisions.append(item.decision(p["id"]))
                elif item.action == REMIND and p["phone"] and not p["sms_opted_out"]:
                    cur.execute(
                        "INSERT INTO notifications (created_at, channel, recipient, patient_id,"
                        " body, next_attempt_at) VALUES (%s, 'sms', %s, %s, %s, %s)",
                        (now, p["phone"], p["id"],
                         messaging.patient_text("reminder", p["language"]), now),
                    )  # fmt: skip
                    reminders += 1
        for d in cur.execute(_DEVICES).fetchall():
            continuous = (d["schedule"] or {}).get("kind") == "continuous"
            for found in (
                device_offline(d["patient_id"], d["id"], d["online"], d["last_seen_at"], now,
                               continuous, self.offline_after),
                low_battery(d["patient_id"], d["id"], d["battery_pct"], now, self.low_battery_pct),
            ):  # fmt: skip
                if found is not None:
                    decisions.append(found)
        # A device alert already open is left as it is (not re-counted every minute).
        fresh = [d for d in decisions if not _open(cur, d)]
        if fresh:
            apply_decisions(conn, fresh, now)
        if reminders:
            cur.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        if fresh or reminders:
            event(log, "watchdog", alerts=len(fresh), reminders=reminders)
        return len(fresh) + reminders


def _open(cur: psycopg.Cursor[Any], d: Decision) -> bool:
    return (
        cur.execute(
            "SELECT 1 FROM alerts WHERE patient_id = %s AND kind = %s AND status <> 'resolved'",
            (d.patient_id, d.kind),
        ).fetchone()
        is not None
    )
