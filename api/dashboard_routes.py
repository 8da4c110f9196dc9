"""What the clinician dashboard needs beyond the clinical API: each user's own preferences
(language, alert sound) and every patient's 24-hour sparkline in one request."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel

from alerting import profile, trend
from api import audit
from api.deps import Conn, Now
from api.scope import PATIENT_ID_IN_SCOPE, ScopedPatientId
from api.security import Clinician

router = APIRouter(tags=["dashboard"])


class PreferencesIn(BaseModel):
    language: Literal["nb", "en"] | None = None
    alert_sound: bool | None = None


_PREFERENCES = "SELECT language, alert_sound FROM user_preferences WHERE user_id = %s"


def _preferences(conn: Conn, user_id: int) -> dict[str, Any]:
    row = conn.execute(_PREFERENCES, (user_id,)).fetchone()
    # No row: nothing chosen yet; the dashboard takes the browser's language and plays sounds.
    return dict(row) if row else {"language": None, "alert_sound": True}


@router.get("/api/v1/me/preferences")
def get_preferences(user: Clinician, conn: Conn) -> dict[str, Any]:
    """The user's dashboard language (`nb`, `en`, or null: the browser's) and alert sound."""
    return _preferences(conn, user.id)


@router.put("/api/v1/me/preferences")
def put_preferences(body: PreferencesIn, user: Clinician, conn: Conn) -> dict[str, Any]:
    """Change the fields given; the others keep their value."""
    conn.execute(
        "INSERT INTO user_preferences (user_id, language, alert_sound, updated_at)"
        " VALUES (%(user)s, %(language)s, coalesce(%(sound)s, true), now())"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " language = CASE WHEN %(set_language)s THEN EXCLUDED.language"
        "            ELSE user_preferences.language END,"
        " alert_sound = coalesce(%(sound)s, user_preferences.alert_sound), updated_at = now()",
        {
            "user": user.id,
            "language": body.language,
            "sound": body.alert_sound,
            "set_language": "language" in body.model_fields_set,
        },
    )
    return _preferences(conn, user.id)


# Complete hours come from the hourly summary (core.storage) when it has them; the rest from raw
# readings, so a 24-hour sparkline of a streaming patient does not aggregate 21,600 rows.
_SPARKLINES_SUMMARY = f"""
WITH cut AS (
    SELECT coalesce(max(bucket) + interval '1 hour', %(since)s) AS t
    FROM readings_hourly WHERE bucket >= %(since)s
)
SELECT patient_id, bucket AS time, spo2_avg AS spo2, pulse_avg AS pulse
FROM readings_hourly
WHERE bucket >= %(since)s AND patient_id IN ({PATIENT_ID_IN_SCOPE} AND p.status = 'active')
UNION ALL
SELECT patient_id, time_bucket(interval '1 hour', time), avg(spo2)::real, avg(pulse)::real
FROM readings, cut
WHERE time >= greatest(cut.t, %(since)s) AND time < %(until)s
  AND patient_id IN ({PATIENT_ID_IN_SCOPE} AND p.status = 'active')
GROUP BY 1, 2
ORDER BY 1, 2
"""

_SPARKLINES_RAW = f"""
SELECT patient_id, time_bucket(interval '1 hour', time) AS time,
       avg(spo2)::real AS spo2, avg(pulse)::real AS pulse
FROM readings
WHERE time >= %(since)s AND time < %(until)s
  AND patient_id IN ({PATIENT_ID_IN_SCOPE} AND p.status = 'active')
GROUP BY 1, 2 ORDER BY 1, 2
"""


@router.get("/api/v1/dashboard/sparklines")
def sparklines(
    user: Clinician,
    conn: Conn,
    clock: Now,
    hours: Annotated[int, Query(ge=1, le=72)] = 24,
) -> dict[str, Any]:
    """Hourly mean SpO2 and pulse of every active patient in the user's care teams over the
    last `hours`: `{"since": …, "patients": {"12": [[time, spo2, pulse], …]}}`."""
    now = clock.now()
    params: dict[str, Any] = {
        "since": now - timedelta(hours=hours),
        "until": now + timedelta(minutes=5),
        "user_id": user.id,
    }
    has_summary = conn.execute("SELECT to_regclass('readings_hourly') IS NOT NULL AS ok").fetchone()
    sql = _SPARKLINES_SUMMARY if has_summary and has_summary["ok"] else _SPARKLINES_RAW
    out: dict[str, list[list[Any]]] = {}
    for row in conn.execute(sql, params).fetchall():
        out.setdefault(str(row["patient_id"]), []).append(
            [row["time"], round(row["spo2"], 1), round(row["pulse"], 1)]
        )
    audit.record(conn, user, "sparklines.read", patients=sorted(int(k) for k in out))
    return {"since": params["since"], "hours": hours, "patients": out}


# The engine's points (alerting.engine): a good-quality spot check, or a stream's 5-minute
# median. Eight days cover the baseline's 7-day window that ends 24 h ago.
_TREND_POINTS = """
SELECT extract(epoch FROM time_bucket(%(bucket)s, time))::float8 AS t,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY spo2)::float8 AS v
FROM readings
WHERE patient_id = %(patient_id)s AND time >= %(since)s AND time < %(until)s
  AND quality = 'ok' AND (pi IS NULL OR pi >= 0.3)
GROUP BY 1 ORDER BY 1
"""


@router.get("/api/v1/dashboard/patients/{patient_id}/trend")
def patient_trend(
    patient_id: ScopedPatientId, user: Clinician, conn: Conn, clock: Now
) -> dict[str, Any]:
    """The personal baseline and recent SpO2 slope as the engine defines them (alerting.trend,
    alerting.profile), recomputed from stored readings for display. Null when there are too few
    readings yet (the baseline needs 48 h)."""
    audit.record(conn, user, "trend.read", patient_id=patient_id)
    patient = conn.execute(
        "SELECT schedule, spo2_red_max_pct FROM patients WHERE id = %s", (patient_id,)
    ).fetchone()
    schedule = (patient or {}).get("schedule") or {}
    continuous = isinstance(schedule, dict) and schedule.get("kind") == "continuous"
    windows = trend.CONTINUOUS_WINDOWS if continuous else trend.SPOT_WINDOWS
    now = clock.now()
    rows = conn.execute(
        _TREND_POINTS,
        {
            "patient_id": patient_id,
            "bucket": timedelta(minutes=5) if continuous else timedelta(seconds=1),
            "since": now - timedelta(days=8),
            "until": now + timedelta(minutes=5),
        },
    ).fetchall()
    out: dict[str, Any] = {
        "mode": "continuous" if continuous else "spot",
        "points": len(rows),
        "baseline_pct": None,
        "slope_pct_per_day": None,
        "hours_to_red": None,
    }
    if not rows:
        return out
    t = np.array([r["t"] for r in rows], dtype=np.float64)
    v = np.array([r["v"] for r in rows], dtype=np.float64)
    span = trend.baseline_span(
        float(t[0]),
        now.timestamp(),
        profile.BASELINE_INITIAL_S,
        profile.BASELINE_WINDOW_S,
        profile.BASELINE_LAG_S,
    )
    if span is not None:
        out["baseline_pct"] = trend.personal_baseline(t, v, span, windows.baseline_min_points)
    fit = trend.fit_slope(
        t, v, windows.slope_window_s, windows.slope_min_points, windows.slope_min_span_s
    )
    if fit is not None:
        out["slope_pct_per_day"] = round(fit.slope_pct_per_h * 24, 2)
        out["level_now_pct"] = round(fit.level_now_pct, 1)
        red = float(patient["spo2_red_max_pct"]) if patient else 92.0
        hours = trend.hours_to_reach(fit, red)
        out["hours_to_red"] = None if hours is None else round(hours, 1)
    if out["baseline_pct"] is not None:
        out["baseline_pct"] = round(out["baseline_pct"], 1)
    return out
