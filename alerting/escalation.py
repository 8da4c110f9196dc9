"""Escalation: who is told about an alert, and when, until someone takes it.

A policy per severity is a list of steps; each step names whom to notify ("nurse" on duty,
on-call "doctor", "next" person in the rota) and how long to wait after the previous step.
The last step may repeat until the alert is acknowledged. Everyone named comes from the rota of
the care team of the alert's patient (`alerting.rota.recipients`), never another team's. The
policies themselves are installation-wide, the same for every team. Defaults (issue 5, agreed
with the home-care service):

* red: at once the nurse on duty; after 10 minutes without acknowledgement the on-call doctor;
  then every 10 minutes both again and the next person in the rota, until someone takes it.
* amber: the dashboard at once (every alert is there); the nurse on duty by SMS after an hour.

Timers are rows of `escalation_steps`. A step due now runs inside the caller's transaction (so
the first SMS of a red alert is queued in the very transaction that opens the alert); later
ones are claimed by alerting workers with FOR UPDATE SKIP LOCKED — on the step and its alert
together, never waiting — and marked done in the transaction that queues their messages, so
any number of workers can run and a restart neither repeats nor loses a step.

A step that reaches nobody (no one on the rota, everyone opted out) moves on at once. A message
that fails moves the escalation on to the next person in the rota (kind `failover`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from alerting import rota
from alerting.messaging import AlertLine, alert_sms
from core.clock import Clock
from core.logs import event

log = logging.getLogger("oximon.alerting")

TARGETS = ("nurse", "doctor", "next")
# Channel the outbox listens on; a NOTIFY wakes an idle alerting worker at once.
OUTBOX_CHANNEL = "oximon_outbox"


class PolicyError(ValueError):
    """A policy that cannot be used; the message starts with the field's name."""


@dataclass(frozen=True, slots=True)
class Step:
    wait_min: float  # after the previous step; the first step: after the alert opens
    notify: tuple[str, ...]
    repeat: bool = False  # only the last step: again every `wait_min` until someone takes it

    def as_json(self) -> dict[str, Any]:
        return {"wait_min": self.wait_min, "notify": list(self.notify), "repeat": self.repeat}


Policy = tuple[Step, ...]

DEFAULT_POLICIES: dict[str, Policy] = {
    "red": (
        Step(0, ("nurse",)),
        Step(10, ("doctor",)),
        Step(10, ("nurse", "doctor", "next"), repeat=True),
    ),
    "amber": (Step(60, ("nurse",)),),
}


def parse_policy(steps: Any) -> Policy:
    """A policy from its JSON form, checked; PolicyError names the offending field."""
    if not isinstance(steps, list) or not steps:
        raise PolicyError("steps: must be a non-empty list")
    out: list[Step] = []
    for i, raw in enumerate(steps):
        where = f"steps[{i}]"
        if not isinstance(raw, dict):
            raise PolicyError(f"{where}: must be an object")
        wait = raw.get("wait_min", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise PolicyError(f"{where}.wait_min: must be a number of minutes, 0 or more")
        notify = raw.get("notify")
        if (
            not isinstance(notify, list)
            or not notify
            or any(t not in TARGETS for t in notify)
            or len(set(notify)) != len(notify)
        ):
            raise PolicyError(f"{where}.notify: a list of distinct nurse, doctor, next")
        repeat = raw.get("repeat", False)
        if not isinstance(repeat, bool):
            raise PolicyError(f"{where}.repeat: must be true or false")
        if repeat and i != len(steps) - 1:
            raise PolicyError(f"{where}.repeat: only the last step may repeat")
        if repeat and wait <= 0:
            raise PolicyError(f"{where}.wait_min: a repeating step must wait more than 0")
        extra = set(raw) - {"wait_min", "notify", "repeat"}
        if extra:
            raise PolicyError(f"{where}.{sorted(extra)[0]}: unknown field")
        out.append(Step(float(wait), tuple(notify), repeat))
    return tuple(out)


def load_policy(conn: psycopg.Connection[Any], severity: str) -> Policy:
    row = conn.execute(
        "SELECT steps FROM escalation_policies WHERE severity = %s", (severity,)
    ).fetchone()
    if row is None:
        return DEFAULT_POLICIES[severity]
    return parse_policy(row["steps"] if isinstance(row, dict) else row[0])


def policies(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Both severities' policies as used now, and whether each is the default."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT severity, steps, updated_at, updated_by FROM escalation_policies")
        .fetchall()
    )
    custom = {r["severity"]: r for r in rows}
    out = []
    for severity in ("red", "amber"):
        if severity in custom:
            r = custom[severity]
            out.append({**r, "source": "custom"})
        else:
            steps = [s.as_json() for s in DEFAULT_POLICIES[severity]]
            out.append({"severity": severity, "steps": steps, "source": "default"})
    return out


def save_policy(
    conn: psycopg.Connection[Any], severity: str, steps: Any, now: datetime, by: int | None
) -> None:
    policy = parse_policy(steps)
    conn.execute(
        "INSERT INTO escalation_policies (severity, steps, updated_at, updated_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (severity) DO UPDATE SET steps = EXCLUDED.steps,"
        " updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        (severity, Jsonb([s.as_json() for s in policy]), now, by),
    )


def reset_policy(conn: psycopg.Connection[Any], severity: str) -> None:
    conn.execute("DELETE FROM escalation_policies WHERE severity = %s", (severity,))


# --- snoozes (read here: a snoozed alert is not escalated) ---------------------------------------


def snooze_covering(
    conn: psycopg.Connection[Any], patient_id: int, kind: str, severity: str, now: datetime
) -> dict[str, Any] | None:
    """The snooze (latest-ending) that silences this patient's alerts of `kind` now, if any.
    Red breaks through a snooze unless the snooze explicitly includes red."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, until, include_red FROM alert_snoozes WHERE patient_id = %s AND kind = %s"
            " AND starts_at <= %s AND until > %s AND cancelled_at IS NULL"
            " AND (%s <> 'red' OR include_red) ORDER BY until DESC LIMIT 1",
            (patient_id, kind, now, now, severity),
        )
        .fetchone()
    )


# --- running steps ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    patient_id: int
    kind: str
    severity: str
    status: str
    reason: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alert:
        return cls(
            row["id"], row["patient_id"], row["kind"], row["severity"], row["status"], row["reason"]
        )


def load_alert(conn: psycopg.Connection[Any], alert_id: int) -> Alert:
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, patient_id, kind, severity, status, reason FROM alerts WHERE id = %s",
            (alert_id,),
        )
        .fetchone()
    )
    assert row is not None, f"alert {alert_id} vanished"
    return Alert.from_row(row)


def _event(
    conn: psycopg.Connection[Any], alert_id: int, now: datetime, action: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO alert_events (alert_id, at, action, detail) VALUES (%s, %s, %s, %s)",
        (alert_id, now, action, Jsonb(detail)),
    )


def _insert_step(
    conn: psycopg.Connection[Any],
    alert_id: int,
    kind: str,
    step: int,
    rnd: int,
    due_at: datetime,
    now: datetime,
    state: str = "pending",
) -> int:
    row = conn.execute(
        "INSERT INTO escalation_steps (alert_id, kind, step, round, due_at, state, done_at,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (alert_id, kind, step, rnd, due_at, state, now if state == "done" else None, now),
    ).fetchone()
    assert row is not None
    return int(row["id"] if isinstance(row, dict) else row[0])


def _finish_step(conn: psycopg.Connection[Any], step_id: int, state: str, now: datetime) -> None:
    conn.execute(
        "UPDATE escalation_steps SET state = %s, done_at = %s WHERE id = %s",
        (state, now, step_id),
    )


def _queue(
    conn: psycopg.Connection[Any],
    alert: Alert,
    people: list[rota.Recipient],
    step_id: int,
    escalated: bool,
    now: datetime,
) -> None:
    body = alert_sms(AlertLine(alert.id, alert.patient_id, alert.severity, alert.reason), escalated)
    for person in people:
        conn.execute(
            "INSERT INTO notifications (created_at, channel, recipient, recipient_user_id,"
            " patient_id, alert_id, body, next_attempt_at, escalation_step_id)"
            " VALUES (%s, 'sms', %s, %s, %s, %s, %s, %s, %s)",
            (now, person.phone, person.user_id, alert.patient_id, alert.id, body, now, step_id),
        )
    if people:
        conn.execute("SELECT pg_notify(%s, '')", (OUTBOX_CHANNEL,))


def _record(
    conn: psycopg.Connection[Any],
    alert: Alert,
    step_id: int,
    now: datetime,
    people: list[rota.Recipient],
    escalated: bool,
    **detail: Any,
) -> None:
    """Who a step reached, on the step; and, when the alert went up the ladder because nobody
    took it in time (or a page failed), an `escalated` transition in the alert's history."""
    who = [{"user_id": p.user_id, "role": p.role, "as": p.target} for p in people]
    conn.execute(
        "UPDATE escalation_steps SET detail = %s WHERE id = %s", (Jsonb({"to": who}), step_id)
    )
    if not escalated:
        return
    _event(conn, alert.id, now, "escalated", {**detail, "to": who})
    if people:
        conn.execute(
            "UPDATE alerts SET status = 'escalated', updated_at = %s"
            " WHERE id = %s AND status = 'open'",
            (now, alert.id),
        )


def _run_ladder(
    conn: psycopg.Connection[Any],
    alert: Alert,
    policy: Policy,
    index: int,
    rnd: int,
    now: datetime,
    step_id: int | None,
    escalating: bool,
) -> int:
    """Run ladder step `index` (round `rnd`) now, and every following step that is due at once;
    leave the next one as a pending row. `escalating`: the alert waited (a timer fired), as
    opposed to being opened now. Returns how many messages were queued."""
    queued = 0
    for _ in range(len(policy) + 2):  # bounded: each pass moves on or stops
        step = policy[index]
        if step_id is None:
            step_id = _insert_step(conn, alert.id, "ladder", index, rnd, now, now, state="done")
        else:
            _finish_step(conn, step_id, "done", now)
        people = rota.recipients(conn, list(step.notify), alert.id, now)
        _queue(conn, alert, people, step_id, escalating, now)
        _record(conn, alert, step_id, now, people, escalating, step=index, round=rnd)
        queued += len(people)
        if index + 1 < len(policy):
            nxt, nxt_round, wait = index + 1, 0, policy[index + 1].wait_min
            if not people:
                wait = 0  # nobody reached: on to the next step at once
        elif step.repeat:
            nxt, nxt_round, wait = index, rnd + 1, step.wait_min
        else:
            return queued
        due = now + timedelta(minutes=wait)
        if due > now:
            _insert_step(conn, alert.id, "ladder", nxt, nxt_round, due, now)
            return queued
        index, rnd, step_id = nxt, nxt_round, None
    return queued


def cancel_pending(conn: psycopg.Connection[Any], alert_id: int, now: datetime) -> None:
    """Someone has taken the alert (or it is snoozed): no more steps, no unsent pages."""
    conn.execute(
        "UPDATE escalation_steps SET state = 'cancelled', done_at = %s"
        " WHERE alert_id = %s AND state = 'pending'",
        (now, alert_id),
    )
    # A page the outbox is sending right now (its row locked) is let go, not waited for: the
    # outbox may be waiting for this alert's row, and a page in flight cannot be recalled.
    conn.execute(
        "UPDATE notifications SET state = 'cancelled', status_at = %s WHERE id IN ("
        " SELECT id FROM notifications WHERE alert_id = %s AND channel = 'sms'"
        " AND state = 'pending' FOR UPDATE SKIP LOCKED)",
        (now, alert_id),
    )


def start(conn: psycopg.Connection[Any], alert: Alert, now: datetime, fresh: bool = False) -> int:
    """Start (or, after an upgrade or a snooze, restart) the alert's ladder. Runs the steps due
    at once in the caller's transaction; returns how many messages were queued. `fresh`: the
    alert was opened in this transaction, so nothing of it can be pending yet."""
    if not fresh:
        cancel_pending(conn, alert.id, now)
    policy = load_policy(conn, alert.severity)
    first = policy[0]
    if first.wait_min > 0:
        _insert_step(conn, alert.id, "ladder", 0, 0, now + timedelta(minutes=first.wait_min), now)
        return 0
    return _run_ladder(conn, alert, policy, 0, 0, now, None, escalating=False)


def rearm_at(conn: psycopg.Connection[Any], alert_id: int, at: datetime, now: datetime) -> None:
    """When a snooze ends at `at`, look at the alert again."""
    conn.execute(
        "UPDATE escalation_steps SET state = 'cancelled', done_at = %s"
        " WHERE alert_id = %s AND kind = 'rearm' AND state = 'pending'",
        (now, alert_id),
    )
    _insert_step(conn, alert_id, "rearm", 0, 0, at, now)


def delivery_failed(
    conn: psycopg.Connection[Any], notification_ids: list[int], now: datetime
) -> int:
    """Messages that failed for good: each alert page moves on to the next person in the rota,
    once per message. Returns how many failovers were scheduled."""
    if not notification_ids:
        return 0
    cur = conn.execute(
        "INSERT INTO escalation_steps (alert_id, kind, due_at, cause_notification_id, created_at)"
        " SELECT n.alert_id, 'failover', %s, n.id, %s FROM notifications n"
        " JOIN alerts a ON a.id = n.alert_id"
        " WHERE n.id = ANY(%s) AND n.recipient_user_id IS NOT NULL"
        "   AND a.status IN ('open', 'escalated')"
        " ON CONFLICT (cause_notification_id) DO NOTHING",
        (now, now, notification_ids),
    )
    if cur.rowcount:
        conn.execute("SELECT pg_notify(%s, '')", (OUTBOX_CHANNEL,))
    return max(cur.rowcount, 0)


_CLAIM = """
SELECT s.id, s.kind, s.step, s.round, s.due_at,
       a.id AS alert_id, a.patient_id, a.kind AS alert_kind, a.severity, a.status, a.reason
FROM escalation_steps s JOIN alerts a ON a.id = s.alert_id
WHERE s.state = 'pending' AND s.due_at <= %s
ORDER BY s.due_at, s.id LIMIT 1
FOR UPDATE OF s, a SKIP LOCKED
"""


def run_claimed(conn: psycopg.Connection[Any], row: dict[str, Any], now: datetime) -> int:
    """Do one claimed step (its row and its alert locked). Returns messages queued."""
    alert = Alert(
        row["alert_id"],
        row["patient_id"],
        row["alert_kind"],
        row["severity"],
        row["status"],
        row["reason"],
    )
    if alert.status not in ("open", "escalated"):
        _finish_step(conn, row["id"], "cancelled", now)
        return 0
    snooze = snooze_covering(conn, alert.patient_id, alert.kind, alert.severity, now)
    if row["kind"] == "rearm":
        _finish_step(conn, row["id"], "done", now)
        if snooze is not None:
            return 0  # a longer snooze took over; its own rearm row will come
        _event(conn, alert.id, now, "snooze_ended", {})
        return start(conn, alert, now)
    if snooze is not None:
        _finish_step(conn, row["id"], "cancelled", now)
        rearm_at(conn, alert.id, snooze["until"], now)
        return 0
    if row["kind"] == "failover":
        _finish_step(conn, row["id"], "done", now)
        people = rota.recipients(conn, ["next"], alert.id, now)
        _queue(conn, alert, people, row["id"], True, now)
        _record(conn, alert, row["id"], now, people, True, failover=True)
        return len(people)
    policy = load_policy(conn, alert.severity)
    if row["step"] >= len(policy):
        _finish_step(conn, row["id"], "cancelled", now)  # the policy was shortened since
        return 0
    return _run_ladder(
        conn, alert, policy, row["step"], row["round"], now, row["id"], escalating=True
    )


def process_due(pool: ConnectionPool, clock: Clock, limit: int = 200) -> int:
    """Run up to `limit` due steps, each in its own transaction. Returns steps run."""
    done = 0
    with pool.connection() as conn:
        while done < limit:
            with conn.transaction():
                now = clock.now()
                row = conn.cursor(row_factory=dict_row).execute(_CLAIM, (now,)).fetchone()
                if row is None:
                    break
                queued = run_claimed(conn, row, now)
            done += 1
            event(
                log,
                "escalation_step",
                step_id=row["id"],
                alert_id=row["alert_id"],
                kind=row["kind"],
                step=row["step"],
                round=row["round"],
                queued=queued,
            )
    return done


def next_due(conn: psycopg.Connection[Any]) -> datetime | None:
    """The earliest pending step or message, for the worker to sleep until."""
    row = conn.execute(
        "SELECT least((SELECT min(due_at) FROM escalation_steps WHERE state = 'pending'),"
        " (SELECT min(next_attempt_at) FROM notifications"
        "   WHERE state = 'pending' AND channel = 'sms')) AS due"
    ).fetchone()
    if row is None:
        return None
    value = row["due"] if isinstance(row, dict) else row[0]
    return value if isinstance(value, datetime) else None
