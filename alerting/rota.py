"""The on-call rota: shifts, and who is to be called for an alert at a given instant.

Shifts are stored as UTC instants; people write and read them in the service's zone
(Europe/Oslo). Who is called:

* "nurse" — the nurse on duty: a nurse's shift covering the instant, lowest priority number
  first; with nobody on the rota, a nurse account marked `on_call`.
* "doctor" — the on-call doctor, the same way (the `on_call` flag is how the walking skeleton
  paged doctors, and stays the fallback).
* "next" — the next person in the rota not yet contacted about this alert: people on duty now
  (by priority, nurses before doctors), then those whose shift starts next, then `on_call`
  accounts.

Every shift belongs to a care team, and its person is a member of that team. An alert pages
only the rota (and the `on_call` accounts) of its patient's team, never another municipality's
staff; a shift whose person has since left the team is not called.

Nobody who has opted out of SMS, is inactive or has no phone is ever returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

ROLES = ("nurse", "doctor")
# How far ahead "the next person in the rota" may be looked for.
LOOKAHEAD = timedelta(hours=24)


class ShiftError(ValueError):
    """A shift that cannot be stored; the message starts with the field's name."""


class ShiftNotFoundError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: int
    phone: str
    role: str
    # Why this person: "nurse", "doctor" or "next".
    target: str


def local_instant(value: datetime, timezone: str) -> datetime:
    """A naive time is wall-clock time in `timezone` (the rota is written in local time)."""
    if value.tzinfo is not None:
        return value
    zone = ZoneInfo(timezone)
    aware = value.replace(tzinfo=zone)
    # A time skipped by the spring change (02:30 on the last Sunday of March) does not exist.
    roundtrip = aware.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
    if roundtrip != value:
        raise ShiftError(f"{value.isoformat()} does not exist in {timezone} (clock change)")
    return aware


_SHIFT_COLUMNS = """
s.id, s.care_team_id, s.user_id, u.username, u.full_name, s.role, s.phone, s.starts_at,
s.ends_at, s.priority, s.note, s.created_at, s.created_by
"""


def _with_local(row: dict[str, Any], timezone: str) -> dict[str, Any]:
    zone = ZoneInfo(timezone)
    row["starts_local"] = row["starts_at"].astimezone(zone).isoformat()
    row["ends_local"] = row["ends_at"].astimezone(zone).isoformat()
    row["timezone"] = timezone
    return row


def list_shifts(
    conn: psycopg.Connection[Any],
    since: datetime,
    until: datetime,
    timezone: str,
    teams: list[int],
    user_id: int | None = None,
) -> list[dict[str, Any]]:
    """Shifts of the care teams `teams` overlapping [since, until), in start order."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_SHIFT_COLUMNS} FROM oncall_shifts s JOIN users u ON u.id = s.user_id"
            " WHERE s.ends_at > %s AND s.starts_at < %s AND s.care_team_id = ANY(%s)"
            " AND (%s::bigint IS NULL OR s.user_id = %s)"
            " ORDER BY s.starts_at, s.priority, s.id",
            (since, until, teams, user_id, user_id),
        )
        .fetchall()
    )
    return [_with_local(r, timezone) for r in rows]


def get_shift(
    conn: psycopg.Connection[Any], shift_id: int, timezone: str, teams: list[int]
) -> dict[str, Any]:
    """A shift of one of the care teams `teams` (another team's shift is not found)."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_SHIFT_COLUMNS} FROM oncall_shifts s JOIN users u ON u.id = s.user_id"
            " WHERE s.id = %s AND s.care_team_id = ANY(%s)",
            (shift_id, teams),
        )
        .fetchone()
    )
    if row is None:
        raise ShiftNotFoundError(shift_id)
    return _with_local(row, timezone)


def save_shift(
    conn: psycopg.Connection[Any],
    *,
    user_id: int,
    care_team_id: int,
    teams: list[int],
    starts_at: datetime,
    ends_at: datetime,
    role: str | None,
    phone: str | None,
    priority: int,
    note: str | None,
    timezone: str,
    now: datetime,
    by: int | None,
    shift_id: int | None = None,
) -> dict[str, Any]:
    """Create (or, with `shift_id`, replace) a shift of `care_team_id` for a member of that
    team. `teams` are the care teams the writer may touch: a shift of another team is not found
    (and `care_team_id` is one of `teams`, checked by the caller). Role and phone default to the
    user's."""
    starts_at = local_instant(starts_at, timezone)
    ends_at = local_instant(ends_at, timezone)
    if ends_at <= starts_at:
        raise ShiftError("ends_at: must be after starts_at")
    with conn.transaction():
        user = (
            conn.cursor(row_factory=dict_row)
            .execute("SELECT role, phone, active FROM users WHERE id = %s", (user_id,))
            .fetchone()
        )
        if user is None or not user["active"]:
            raise ShiftError(f"user_id: no active user with id {user_id}")
        if not is_member(conn, user_id, care_team_id):
            raise ShiftError(f"user_id: user {user_id} is not a member of care team {care_team_id}")
        role = role or user["role"]
        if role not in ROLES:
            raise ShiftError(f"role: must be nurse or doctor (user {user_id} is {user['role']})")
        phone = phone or user["phone"]
        if not phone:
            raise ShiftError(f"phone: user {user_id} has no phone number; give one")
        params = (care_team_id, user_id, role, phone, starts_at, ends_at, priority, note)
        if shift_id is None:
            row = conn.execute(
                "INSERT INTO oncall_shifts (care_team_id, user_id, role, phone, starts_at,"
                " ends_at, priority, note, created_at, created_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (*params, now, by),
            ).fetchone()
        else:
            row = conn.execute(
                "UPDATE oncall_shifts SET care_team_id = %s, user_id = %s, role = %s, phone = %s,"
                " starts_at = %s, ends_at = %s, priority = %s, note = %s"
                " WHERE id = %s AND care_team_id = ANY(%s) RETURNING id",
                (*params, shift_id, teams),
            ).fetchone()
            if row is None:
                raise ShiftNotFoundError(shift_id)
    new_id = row["id"] if isinstance(row, dict) else row[0]  # type: ignore[index]
    return get_shift(conn, int(new_id), timezone, teams)


def delete_shift(conn: psycopg.Connection[Any], shift_id: int, teams: list[int]) -> None:
    with conn.transaction():
        deleted = conn.execute(
            "DELETE FROM oncall_shifts WHERE id = %s AND care_team_id = ANY(%s)",
            (shift_id, teams),
        )
        if deleted.rowcount == 0:
            raise ShiftNotFoundError(shift_id)


# --- who is called --------------------------------------------------------------------------

_CALLABLE = "u.active AND NOT u.sms_opted_out"
# The person of shift `s` is (still) a member of the shift's team, the alert's team.
_SHIFT_OF_TEAM = (
    "s.care_team_id = %(team)s AND EXISTS (SELECT 1 FROM user_care_teams m"
    " WHERE m.user_id = s.user_id AND m.care_team_id = s.care_team_id)"
)
# Account `u` is a member of the alert's team.
_USER_OF_TEAM = (
    "EXISTS (SELECT 1 FROM user_care_teams m WHERE m.user_id = u.id AND m.care_team_id = %(team)s)"
)

_ON_DUTY = f"""
SELECT s.user_id, s.phone, s.role FROM oncall_shifts s JOIN users u ON u.id = s.user_id
WHERE s.role = %(role)s AND s.starts_at <= %(at)s AND s.ends_at > %(at)s AND {_CALLABLE}
  AND {_SHIFT_OF_TEAM} AND NOT (s.user_id = ANY(%(exclude)s))
ORDER BY s.priority, s.starts_at, s.id LIMIT 1
"""

_ON_CALL_FLAG = f"""
SELECT u.id AS user_id, u.phone, u.role FROM users u
WHERE u.role = %(role)s AND u.on_call AND u.phone IS NOT NULL AND {_CALLABLE}
  AND {_USER_OF_TEAM} AND NOT (u.id = ANY(%(exclude)s))
ORDER BY u.id LIMIT 1
"""

_NEXT_IN_ROTA = f"""
SELECT user_id, phone, role FROM (
    SELECT s.user_id, s.phone, s.role,
           (s.starts_at > %(at)s) AS upcoming, s.starts_at, s.priority, s.id
    FROM oncall_shifts s JOIN users u ON u.id = s.user_id
    WHERE s.ends_at > %(at)s AND s.starts_at <= %(horizon)s AND {_CALLABLE} AND {_SHIFT_OF_TEAM}
    UNION ALL
    SELECT u.id, u.phone, u.role, true, 'infinity'::timestamptz, 9, u.id FROM users u
    WHERE u.on_call AND u.phone IS NOT NULL AND u.role IN ('nurse', 'doctor') AND {_CALLABLE}
      AND {_USER_OF_TEAM}
) c
WHERE NOT (user_id = ANY(%(exclude)s))
ORDER BY upcoming, CASE WHEN upcoming THEN starts_at END, priority,
         (role = 'doctor'), starts_at, id
LIMIT 1
"""


def contacted(conn: psycopg.Connection[Any], alert_id: int) -> list[int]:
    """Everyone an SMS about this alert has been addressed to (sent or not)."""
    rows = conn.execute(
        "SELECT DISTINCT recipient_user_id FROM notifications"
        " WHERE alert_id = %s AND channel = 'sms' AND recipient_user_id IS NOT NULL",
        (alert_id,),
    ).fetchall()
    return [r["recipient_user_id"] if isinstance(r, dict) else r[0] for r in rows]


def _one(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> Any:
    return conn.cursor(row_factory=dict_row).execute(sql, params).fetchone()


def on_duty(
    conn: psycopg.Connection[Any],
    role: str,
    at: datetime,
    care_team_id: int,
    exclude: list[int] | None = None,
) -> Recipient | None:
    """The nurse on duty or the on-call doctor of a care team at `at`."""
    params = {"role": role, "at": at, "team": care_team_id, "exclude": exclude or []}
    row = _one(conn, _ON_DUTY, params) or _one(conn, _ON_CALL_FLAG, params)
    return Recipient(row["user_id"], row["phone"], row["role"], role) if row else None


def next_in_rota(
    conn: psycopg.Connection[Any], at: datetime, care_team_id: int, exclude: list[int]
) -> Recipient | None:
    params = {"at": at, "horizon": at + LOOKAHEAD, "team": care_team_id, "exclude": exclude}
    row = _one(conn, _NEXT_IN_ROTA, params)
    return Recipient(row["user_id"], row["phone"], row["role"], "next") if row else None


def recipients(
    conn: psycopg.Connection[Any], targets: list[str], alert_id: int, at: datetime
) -> list[Recipient]:
    """The people a step's `targets` name, each once, in the order named, from the rota of the
    care team of the alert's patient."""
    team = alert_care_team(conn, alert_id)
    if team is None:
        return []
    already = contacted(conn, alert_id)
    out: list[Recipient] = []
    for target in targets:
        chosen = [r.user_id for r in out]
        if target in ROLES:
            found = on_duty(conn, target, at, team, exclude=chosen)
        elif target == "next":
            found = next_in_rota(conn, at, team, exclude=already + chosen)
        else:
            raise ValueError(f"unknown escalation target {target!r}")
        if found is not None and found.user_id not in chosen:
            out.append(found)
    return out


def alert_care_team(conn: psycopg.Connection[Any], alert_id: int) -> int | None:
    """The care team of the alert's patient (None: no such alert)."""
    row = conn.execute(
        "SELECT p.care_team_id FROM alerts a JOIN patients p ON p.id = a.patient_id"
        " WHERE a.id = %s",
        (alert_id,),
    ).fetchone()
    if row is None:
        return None
    return int(row["care_team_id"] if isinstance(row, dict) else row[0])


def is_member(conn: psycopg.Connection[Any], user_id: int, care_team_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM user_care_teams WHERE user_id = %s AND care_team_id = %s",
        (user_id, care_team_id),
    ).fetchone()
    return row is not None


def rota_user_for_number(
    conn: psycopg.Connection[Any], phone: str, at: datetime, care_team_id: int | None = None
) -> int | None:
    """The user a number belongs to if that person is on the rota now (a covering shift), of
    the care team `care_team_id` when given, of any team otherwise."""
    row = conn.execute(
        "SELECT s.user_id FROM oncall_shifts s JOIN users u ON u.id = s.user_id"
        " WHERE s.phone = %s AND s.starts_at <= %s AND s.ends_at > %s AND u.active"
        " AND (%s::bigint IS NULL OR s.care_team_id = %s)"
        " ORDER BY s.priority, s.id LIMIT 1",
        (phone, at, at, care_team_id, care_team_id),
    ).fetchone()
    if row is None:
        return None
    return int(row["user_id"] if isinstance(row, dict) else row[0])
