"""Reports for a period, over the user's care teams: alerts by kind and severity, time to
acknowledge and to resolve, outcomes (how many alerts were actionable), readings adherence per
patient, and workload per clinician; as JSON or CSV.

Cohorts: alerts *opened* in [since, until) for counts, response times and outcomes (an alert
opened on the last day and resolved the next still counts, with its resolution); clinicians'
actions *done* in the period for workload; readings *measured* in the period for adherence.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Response

from alerting.lifecycle import OUTCOMES
from alerting.schedule import ScheduleError, parse_schedule
from api import audit
from api.deps import Conn, Now, Zone
from api.scope import MY_TEAMS, PATIENT_ID_IN_SCOPE, PATIENT_IN_SCOPE
from api.security import Clinician

router = APIRouter(tags=["reports"])

# Which outcomes mean the alert led to care (ours; a product decision, see README): a visit,
# a referral or an admission is actionable; a call that found the patient stable, or an
# artefact / false alarm, is not; `other` is described in words and left unclassified.
ACTIONABLE = ("home_visit", "referred_hospital", "admitted")
NOT_ACTIONABLE = ("called_stable", "artefact_false_alarm")
MAX_SPAN = timedelta(days=366)
SECTIONS = ("alerts", "response-times", "outcomes", "adherence", "workload")


def outcome_class(outcome: str) -> str:
    if outcome in ACTIONABLE:
        return "actionable"
    if outcome in NOT_ACTIONABLE:
        return "not_actionable"
    return "unclassified"


_ALERTS = f"""
SELECT a.kind, a.severity, count(*) AS opened,
       count(*) FILTER (WHERE a.status = 'resolved') AS resolved,
       count(*) FILTER (WHERE a.status <> 'resolved') AS unresolved
FROM alerts a
WHERE a.opened_at >= %(since)s AND a.opened_at < %(until)s
  AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
GROUP BY 1, 2 ORDER BY (a.severity = 'red') DESC, opened DESC, a.kind
"""

# Minutes from opening to acknowledgement / resolution, per severity and over all.
_RESPONSE = f"""
WITH t AS (
    SELECT a.severity,
           extract(epoch FROM a.acknowledged_at - a.opened_at) / 60 AS ack_min,
           extract(epoch FROM a.resolved_at - a.opened_at) / 60 AS resolve_min
    FROM alerts a
    WHERE a.opened_at >= %(since)s AND a.opened_at < %(until)s
      AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
)
SELECT coalesce(severity, 'all') AS severity, count(*) AS alerts,
       count(ack_min) AS acknowledged,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ack_min)::numeric, 1)
           AS ack_median_min,
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ack_min)::numeric, 1) AS ack_p90_min,
       count(resolve_min) AS resolved,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_min)::numeric, 1)
           AS resolve_median_min,
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY resolve_min)::numeric, 1)
           AS resolve_p90_min
FROM t GROUP BY ROLLUP (severity)
ORDER BY (severity IS NULL) DESC, severity DESC
"""

_OUTCOMES = f"""
SELECT a.outcome, count(*) AS count FROM alerts a
WHERE a.status = 'resolved' AND a.opened_at >= %(since)s AND a.opened_at < %(until)s
  AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
GROUP BY 1
"""

_PATIENTS = f"""
SELECT p.id, p.display_name, p.schedule, p.enrolled_at, p.discharged_at FROM patients p
WHERE {PATIENT_IN_SCOPE} AND p.enrolled_at < %(until)s
  AND (p.discharged_at IS NULL OR p.discharged_at > %(since)s)
ORDER BY p.id
"""

# Only patient_id and time: an index-only scan of the readings index, per patient and hour
# (a month of 1,000 continuous oximeters, 43 M readings: about 18 s on the benchmark database;
# counting flagged readings too needed the table itself and took 207 s).
_READING_COUNTS = """
SELECT patient_id, sum(n) AS readings, count(*) AS hours_with_readings FROM (
    SELECT r.patient_id, time_bucket('1 hour', r.time) AS hour, count(*) AS n
    FROM readings r
    JOIN unnest(%(ids)s::bigint[], %(los)s::timestamptz[], %(his)s::timestamptz[])
         AS w(id, lo, hi) ON w.id = r.patient_id
    WHERE r.time >= w.lo AND r.time < w.hi
    GROUP BY 1, 2
) per_hour
GROUP BY patient_id
"""

# A spot slot is met by a reading from `early` before it to `grace` after it.
_SLOTS_MET = """
SELECT s.patient_id, count(*) AS met FROM
unnest(%(ids)s::bigint[], %(los)s::timestamptz[], %(his)s::timestamptz[]) AS s(patient_id, lo, hi)
WHERE EXISTS (SELECT 1 FROM readings r WHERE r.patient_id = s.patient_id
              AND r.time >= s.lo AND r.time <= s.hi)
GROUP BY 1
"""

_WORKLOAD_EVENTS = f"""
SELECT e.user_id, count(*) FILTER (WHERE e.action = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE e.action = 'resolved') AS resolved,
       count(*) FILTER (WHERE e.action NOT IN ('acknowledged', 'resolved')) AS other_actions
FROM alert_events e JOIN alerts a ON a.id = e.alert_id
WHERE e.user_id IS NOT NULL AND e.at >= %(since)s AND e.at < %(until)s
  AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
GROUP BY 1
"""

_WORKLOAD_NOTES = f"""
SELECT author_id AS user_id, count(*) AS notes FROM patient_notes n
WHERE n.at >= %(since)s AND n.at < %(until)s AND n.patient_id IN ({PATIENT_ID_IN_SCOPE})
GROUP BY 1
"""

_WORKLOAD_PAGES = f"""
SELECT n.recipient_user_id AS user_id, count(*) AS pages_received FROM notifications n
JOIN alerts a ON a.id = n.alert_id
WHERE n.channel = 'sms' AND n.recipient_user_id IS NOT NULL
  AND n.created_at >= %(since)s AND n.created_at < %(until)s
  AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
GROUP BY 1
"""

# Members of the user's teams, and anyone who acted on their patients (a doctor of another
# team covering a night) — ids from the three counts above.
_USERS = f"""
SELECT u.id AS user_id, u.username, u.role FROM users u
WHERE u.id IN (SELECT user_id FROM user_care_teams WHERE care_team_id IN ({MY_TEAMS}))
   OR u.id = ANY(%(actors)s::bigint[])
ORDER BY u.username
"""


def _period(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name}: needs a UTC offset, e.g. 2026-11-01T00:00:00Z")
    until = until or now
    since = since or until - timedelta(days=30)
    if since >= until:
        raise HTTPException(422, "since: must be before until")
    if until - since > MAX_SPAN:
        raise HTTPException(422, "since: a report covers at most 366 days")
    return since, until


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def alerts_by_kind(conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    return list(conn.execute(_ALERTS, params).fetchall())


def response_times(conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = conn.execute(_RESPONSE, params).fetchall()
    out = []
    for r in rows:
        out.append({**r, **{k: _num(r[k]) for k in r if k.endswith("_min")}})
    if not out:  # no alert at all: one 'all' row of zeros, so a table always has its total
        out.append(
            {
                "severity": "all",
                "alerts": 0,
                "acknowledged": 0,
                "ack_median_min": None,
                "ack_p90_min": None,
                "resolved": 0,
                "resolve_median_min": None,
                "resolve_p90_min": None,
            }
        )
    return out


def outcomes(conn: Any, params: dict[str, Any]) -> dict[str, Any]:
    counts = {r["outcome"]: int(r["count"]) for r in conn.execute(_OUTCOMES, params).fetchall()}
    by: list[dict[str, Any]] = [
        {"outcome": o, "label": label, "class": outcome_class(o), "count": counts.get(o, 0)}
        for o, label in OUTCOMES.items()
    ]
    resolved = sum(counts.values())
    classes: dict[str, int] = {c: sum(int(b["count"]) for b in by if b["class"] == c) for c in
                               ("actionable", "not_actionable", "unclassified")}  # fmt: skip
    return {
        "resolved": resolved,
        **classes,
        "actionable_pct": round(100 * classes["actionable"] / resolved, 1) if resolved else None,
        "false_alarm_pct": (
            round(100 * counts.get("artefact_false_alarm", 0) / resolved, 1) if resolved else None
        ),
        "by_outcome": by,
    }


def _spot_slots(plan: Any, lo: datetime, hi: datetime, zone: ZoneInfo) -> list[datetime]:
    out = []
    day = lo.astimezone(zone).date()
    last = hi.astimezone(zone).date()
    while day <= last:
        for t in plan.times:
            at = datetime.combine(day, time(t.hour, t.minute), tzinfo=zone).astimezone(UTC)
            if lo <= at < hi:
                out.append(at)
        day += timedelta(days=1)
    return out


def adherence(conn: Any, params: dict[str, Any], now: datetime, zone: str) -> list[dict[str, Any]]:
    """Per patient: expected readings by their schedule against those received. Spot checks:
    each slot (a local time) is met by a reading from `early_min` before to `grace_min` after
    it. A continuous oximeter: each hour of the period is expected to hold a reading."""
    tz = ZoneInfo(zone)
    patients = conn.execute(_PATIENTS, params).fetchall()
    windows: dict[int, tuple[datetime, datetime]] = {}
    plans: dict[int, Any] = {}
    slot_ids: list[int] = []
    slot_lo: list[datetime] = []
    slot_hi: list[datetime] = []
    expected: dict[int, int | None] = {}
    for p in patients:
        lo = max(params["since"], p["enrolled_at"])
        hi = min(params["until"], p["discharged_at"] or params["until"], now)
        windows[p["id"]] = (lo, max(lo, hi))
        try:
            plans[p["id"]] = parse_schedule(p["schedule"] or {})
        except ScheduleError:
            expected[p["id"]] = None
            continue
        plan = plans[p["id"]]
        if plan.kind == "continuous":
            expected[p["id"]] = int(max(timedelta(0), hi - lo).total_seconds() // 3600)
            continue
        # A slot whose grace has not passed yet may still be met: not expected yet.
        slots = _spot_slots(plan, lo, min(hi, now - plan.grace), tz)
        expected[p["id"]] = len(slots)
        for s in slots:
            slot_ids.append(p["id"])
            slot_lo.append(s - plan.early)
            slot_hi.append(s + plan.grace)
    ids = list(windows)
    counts = {
        r["patient_id"]: r
        for r in conn.execute(
            _READING_COUNTS,
            {
                "ids": ids,
                "los": [windows[i][0] for i in ids],
                "his": [windows[i][1] for i in ids],
            },
        ).fetchall()
    }
    met_spot = {
        r["patient_id"]: int(r["met"])
        for r in conn.execute(
            _SLOTS_MET, {"ids": slot_ids, "los": slot_lo, "his": slot_hi}
        ).fetchall()
    }
    out = []
    for p in patients:
        pid = p["id"]
        plan = plans.get(pid)
        c = counts.get(pid)
        met: int | None
        if plan is None:
            met = None
        elif plan.kind == "continuous":
            met = min(int(c["hours_with_readings"]) if c else 0, expected[pid] or 0)
        else:
            met = met_spot.get(pid, 0)
        exp = expected[pid]
        out.append(
            {
                "patient_id": pid,
                "display_name": p["display_name"],
                "schedule": plan.kind if plan else "unreadable",
                "expected": exp,
                "met": met,
                "adherence_pct": round(100 * met / exp, 1) if exp and met is not None else None,
                "readings": int(c["readings"]) if c else 0,
            }
        )
    return out


def workload(conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    per_user: dict[int, dict[str, int]] = {}
    for sql in (_WORKLOAD_EVENTS, _WORKLOAD_NOTES, _WORKLOAD_PAGES):
        for r in conn.execute(sql, params).fetchall():
            per_user.setdefault(r["user_id"], {}).update(
                {k: int(v) for k, v in r.items() if k != "user_id"}
            )
    users = conn.execute(_USERS, {**params, "actors": list(per_user)}).fetchall()
    zero = {"acknowledged": 0, "resolved": 0, "other_actions": 0, "notes": 0, "pages_received": 0}
    return [{**u, **zero, **per_user.get(u["user_id"], {})} for u in users]


def summary(conn: Any, params: dict[str, Any], now: datetime, zone: str) -> dict[str, Any]:
    return {
        "since": params["since"],
        "until": params["until"],
        "alerts": alerts_by_kind(conn, params),
        "response_times": response_times(conn, params),
        "outcomes": outcomes(conn, params),
        "adherence": adherence(conn, params, now, zone),
        "workload": workload(conn, params),
    }


# --- CSV --------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a name like "=HYPERLINK(…)" (or starting with
    +, -, @, a tab or a carriage return) would otherwise run as a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(rows: list[dict[str, Any]], columns: list[str], filename: str) -> Response:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _long(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole summary as one tidy table: section, group, metric, value."""
    rows: list[dict[str, Any]] = []

    def add(section: str, group: str, metrics: dict[str, Any]) -> None:
        for metric, value in metrics.items():
            rows.append({"section": section, "group": group, "metric": metric, "value": value})

    for r in report["alerts"]:
        add(
            "alerts",
            f"{r['kind']}/{r['severity']}",
            {k: r[k] for k in ("opened", "resolved", "unresolved")},
        )
    for r in report["response_times"]:
        add("response_times", r["severity"], {k: v for k, v in r.items() if k != "severity"})
    o = report["outcomes"]
    add("outcomes", "all", {k: v for k, v in o.items() if k != "by_outcome"})
    for b in o["by_outcome"]:
        add("outcomes", b["outcome"], {"count": b["count"], "class": b["class"]})
    for r in report["adherence"]:
        add("adherence", f"patient {r['patient_id']}", {k: r[k] for k in _COLUMNS["adherence"][2:]})
    for r in report["workload"]:
        add(
            "workload",
            r["username"],
            {k: v for k, v in r.items() if k not in ("user_id", "username")},
        )
    return rows


_COLUMNS = {
    "alerts": ["kind", "severity", "opened", "resolved", "unresolved"],
    "response-times": ["severity", "alerts", "acknowledged", "ack_median_min", "ack_p90_min",
                       "resolved", "resolve_median_min", "resolve_p90_min"],
    "outcomes": ["outcome", "label", "class", "count"],
    "adherence": ["patient_id", "display_name", "schedule", "expected", "met", "adherence_pct",
                  "readings"],
    "workload": ["user_id", "username", "role", "acknowledged", "resolved", "other_actions",
                 "notes", "pages_received"],
}  # fmt: skip

_SUMMARY_EXAMPLE = {
    "since": "2026-11-01T00:00:00Z",
    "until": "2026-12-01T00:00:00Z",
    "alerts": [
        {"kind": "spo2_low", "severity": "red", "opened": 4, "resolved": 4, "unresolved": 0}
    ],
    "response_times": [
        {"severity": "all", "alerts": 11, "acknowledged": 11, "ack_median_min": 6.5,
         "ack_p90_min": 21.0, "resolved": 10, "resolve_median_min": 48.0,
         "resolve_p90_min": 180.0},
    ],
    "outcomes": {
        "resolved": 10, "actionable": 3, "not_actionable": 6, "unclassified": 1,
        "actionable_pct": 30.0, "false_alarm_pct": 20.0,
        "by_outcome": [{"outcome": "home_visit", "label": "Home visit", "class": "actionable",
                        "count": 2}],
    },
    "adherence": [{"patient_id": 12, "display_name": "Synthetic Patient", "schedule": "spot",
                   "expected": 90, "met": 84, "adherence_pct": 93.3, "readings": 97}],
    "workload": [{"user_id": 4, "username": "nurse1", "role": "nurse", "acknowledged": 7,
                  "resolved": 6, "other_actions": 12, "notes": 5, "pages_received": 3}],
}  # fmt: skip

Since = Annotated[
    datetime | None, Query(description="start (inclusive, with offset); default until − 30 days")
]
Until = Annotated[datetime | None, Query(description="end (exclusive, with offset); default now")]
Format = Annotated[Literal["json", "csv"], Query(description="json, or csv with a header row")]


def _run(
    section: str,
    user: Any,
    conn: Any,
    clock: Any,
    zone: str,
    since: datetime | None,
    until: datetime | None,
) -> tuple[Any, datetime, datetime]:
    since, until = _period(since, until, clock.now())
    params = {"since": since, "until": until, "user_id": user.id}
    now = clock.now()
    data: Any
    if section == "summary":
        data = summary(conn, params, now, zone)
    elif section == "alerts":
        data = alerts_by_kind(conn, params)
    elif section == "response-times":
        data = response_times(conn, params)
    elif section == "outcomes":
        data = outcomes(conn, params)["by_outcome"]
    elif section == "adherence":
        data = adherence(conn, params, now, zone)
    else:
        data = workload(conn, params)
    audit.record(
        conn, user, "report.read", section=section, since=since.isoformat(), until=until.isoformat()
    )
    return data, since, until


def _filename(section: str, since: datetime, until: datetime) -> str:
    return f"oximon-{section}-{since:%Y%m%d}-{until:%Y%m%d}.csv"


@router.get(
    "/api/v1/reports/summary",
    responses={
        200: {
            "content": {
                "application/json": {"example": _SUMMARY_EXAMPLE},
                "text/csv": {
                    "example": "section,group,metric,value\r\nalerts,spo2_low/red,opened,4\r\n"
                },
            }
        }
    },
)
def report_summary(
    user: Clinician,
    conn: Conn,
    clock: Now,
    zone: Zone,
    since: Since = None,
    until: Until = None,
    format: Format = "json",
) -> Any:
    """Everything for the period over your care teams. `format=csv` gives one tidy table
    (section, group, metric, value); each section is also its own report
    (`/api/v1/reports/{section}`) with a wide CSV. Actionable outcomes: home_visit,
    referred_hospital, admitted; not actionable: called_stable, artefact_false_alarm; `other`
    is unclassified."""
    data, since, until = _run("summary", user, conn, clock, zone, since, until)
    if format == "csv":
        return _csv(_long(data), ["section", "group", "metric", "value"],
                    _filename("summary", since, until))  # fmt: skip
    return data


@router.get(
    "/api/v1/reports/{section}",
    responses={
        200: {
            "content": {
                "application/json": {"example": _SUMMARY_EXAMPLE["workload"]},
                "text/csv": {
                    "example": "user_id,username,role,acknowledged,resolved,other_actions,notes,"
                    "pages_received\r\n4,nurse1,nurse,7,6,12,5,3\r\n"
                },
            }
        }
    },
)
def report_section(
    section: Literal["alerts", "response-times", "outcomes", "adherence", "workload"],
    user: Clinician,
    conn: Conn,
    clock: Now,
    zone: Zone,
    since: Since = None,
    until: Until = None,
    format: Format = "json",
) -> Any:
    """One section of the summary as a table (a list of rows), JSON or CSV."""
    data, since, until = _run(section, user, conn, clock, zone, since, until)
    if format == "csv":
        return _csv(data, _COLUMNS[section], _filename(section, since, until))
    return data
