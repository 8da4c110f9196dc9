"""The fleet view: every device with its presence, health and problems, most urgent first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices import queries
from devices.health import DeviceSnapshot, Limits, expectation, problems, urgency

SORTS = ("problem", "last_seen", "battery", "device_id", "patient")


def _skew(row: dict[str, Any], since: datetime) -> float | None:
    """The worker's own estimate when it is recent, else the median over stored readings."""
    measured_at = row["clock_skew_at"]
    if row["reported_skew_s"] is not None and measured_at is not None and measured_at >= since:
        return float(row["reported_skew_s"])
    if row["readings_skew_s"] is not None:
        return float(row["readings_skew_s"])
    return None


def fleet(
    conn: psycopg.Connection[Any],
    now: datetime,
    limits: Limits = Limits(),
    *,
    status: str | None = "active",
    problem: str | None = None,
    sort: str = "problem",
    device_id: str | None = None,
) -> list[dict[str, Any]]:
    """Devices (`status` active, retired, or None for both) with their problems; only those
    with `problem` when given; sorted by `sort` (one of SORTS)."""
    if sort not in SORTS:
        raise ValueError(f"sort: one of {', '.join(SORTS)}")
    since = now - limits.window
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            queries.FLEET,
            {"since": since, "status": status, "device_id": device_id},
        )
        .fetchall()
    )
    out = []
    for row in rows:
        skew = _skew(row, since)
        snapshot = DeviceSnapshot(
            device_id=row["device_id"],
            status=row["status"],
            patient_id=row["patient_id"],
            patient_status=row["patient_status"],
            schedule=row["schedule"],
            assigned_at=row["assigned_at"],
            credentials_revoked_at=row["credentials_revoked_at"],
            online=row["online"],
            last_seen_at=row["last_seen_at"],
            battery_pct=row["battery_pct"],
            readings_n=row["readings_n"],
            bad_n=row["bad_n"],
            clock_skew_s=skew,
            future_refused_n=row["future_refused_n"],
        )
        found = problems(snapshot, now, limits)
        if problem and all(p.kind != problem for p in found):
            continue
        expect = expectation(row["schedule"], limits) if row["patient_id"] else None
        out.append(
            {
                "device_id": row["device_id"],
                "serial": row["serial"],
                "model": row["model"],
                "firmware": row["firmware"],
                "status": row["status"],
                "patient_id": row["patient_id"],
                "patient_name": row["patient_name"],
                "assigned_at": row["assigned_at"],
                "credentials": "revoked" if row["credentials_revoked_at"] else "issued",
                "credentials_issued_at": row["credentials_issued_at"],
                "online": row["online"],
                "online_changed_at": row["online_changed_at"],
                "last_seen_at": row["last_seen_at"],
                "battery_pct": row["battery_pct"],
                "readings_in_window": row["readings_n"],
                "expected_per_day": expect.per_day if expect else None,
                "bad_share": round(row["bad_n"] / row["readings_n"], 3)
                if row["readings_n"]
                else None,
                "clock_skew_s": round(skew, 1) if skew is not None else None,
                "retired_at": row["retired_at"],
                "problems": [{"kind": p.kind, "detail": p.detail} for p in found],
                "_urgency": urgency(found),
            }
        )
    out.sort(key=_SORT_KEYS[sort])
    for item in out:
        del item["_urgency"]
    return out


def _last_seen_key(d: dict[str, Any]) -> tuple[Any, ...]:
    # Never seen first, then the longest silent.
    seen = d["last_seen_at"]
    return (seen is not None, seen.timestamp() if seen else 0.0, d["device_id"])


_SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "problem": lambda d: (*d["_urgency"], *_last_seen_key(d)),
    "last_seen": _last_seen_key,
    "battery": lambda d: (d["battery_pct"] is None, d["battery_pct"] or 0, d["device_id"]),
    "device_id": lambda d: d["device_id"],
    "patient": lambda d: (d["patient_id"] is None, d["patient_id"] or 0, d["device_id"]),
}
