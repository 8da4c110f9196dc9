"""Scores a live run against its ground truth: the alerts the platform raised (the `alerts`
table and its `alert_events`) for the patients an `oximon simulate --truth FILE.json` run fed,
reported with the clinical benchmark's measures and tables (`bench.clinical.summarise`).

Stable patients: alerts per patient-day, by kind and the severity each opened with, red pages
(opened red, or amber turned red). Deteriorating patients: detected or not with a red `spo2_low`
alert, and the delay from the true onset (and from the moment the true SpO2 reached the red
band) to it, median and worst. A delay is measured to the time of the reading that raised the
alert (`measured_at` in its event), as the clinical benchmark measures it; the platform's own
time to open it is in the JSON per patient (`first_red_opened_at`).

Only what the run caused counts: alert events at or after the run's start on the platform
clock, from readings measured before its end. The alerts are the lifecycle's: one open per
patient and kind until a nurse resolves it, so a run nobody works through counts each kind at
most once per patient and episode. Reminders and missed-reading alerts exist only if an
alerting worker ran beside ingest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from alerting.profile import PI_MIN_PCT, PULSE_PLAUSIBLE_MAX_BPM, PULSE_PLAUSIBLE_MIN_BPM
from alerting.profile import SPO2_PLAUSIBLE_MIN_PCT as SPO2_MIN
from bench.clinical import (
    CLINICAL_KINDS,
    PatientResult,
    deteriorating_table,
    stable_table,
    summarise,
)
from simulator.population import DAY_S, STABLE


class TruthError(ValueError):
    """The ground-truth file cannot be scored; the message says why."""


# Alert openings and upgrades caused by the run, with the reading time behind each.
_EVENTS = """
SELECT a.id AS alert_id, a.patient_id, a.kind, e.action, e.at,
       e.detail->>'severity' AS severity,
       COALESCE((e.detail->>'measured_at')::timestamptz, e.at) AS measured_at,
       COALESCE((e.detail->>'history')::boolean, false) AS history
FROM alert_events e JOIN alerts a ON a.id = e.alert_id
WHERE a.patient_id = ANY(%(ids)s) AND e.action IN ('opened', 'upgraded')
  AND e.at >= %(since)s
  AND COALESCE((e.detail->>'measured_at')::timestamptz, e.at) <= %(until)s
ORDER BY measured_at, e.id
"""

# Readings measured during the run; "flagged" as the engine judges quality (alerting.engine).
_READINGS = """
SELECT patient_id, count(*) AS readings,
       count(*) FILTER (WHERE quality <> 'ok' OR pi < %(pi_min)s OR spo2 < %(spo2_min)s
                        OR spo2 > 100 OR pulse NOT BETWEEN %(pulse_min)s AND %(pulse_max)s)
           AS flagged,
       count(*) FILTER (WHERE received_at - time > interval '600 seconds') AS late
FROM readings
WHERE patient_id = ANY(%(ids)s) AND time >= %(since)s AND time <= %(until)s
GROUP BY patient_id
"""

# Alerts a previous run left unresolved: this run's readings only update them (no new event),
# so they hide what this run would have opened.
_OPEN_AT_START = """
SELECT count(*) AS n FROM alerts
WHERE patient_id = ANY(%(ids)s) AND opened_at < %(since)s
  AND (resolved_at IS NULL OR resolved_at > %(since)s)
"""

_REMINDERS = """
SELECT patient_id, count(*) AS n FROM missed_reading_actions
WHERE patient_id = ANY(%(ids)s) AND action = 'remind_patient'
  AND done_at >= %(since)s AND done_at <= %(until)s
GROUP BY patient_id
"""


def load_truth(path: Path) -> dict[str, Any]:
    """The JSON ground truth `oximon simulate --truth FILE.json` writes (run, patients, faults)."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise TruthError(f"ground truth {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        hint = (
            " (a .csv truth has no run times: write it as .json)" if path.suffix == ".csv" else ""
        )
        raise TruthError(f"ground truth {path}: not JSON{hint}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("patients"), list):
        raise TruthError(f"ground truth {path}: no 'patients' list (not written by simulate?)")
    run = document.get("run") or {}
    if not run.get("started_at"):
        raise TruthError(f"ground truth {path}: run.started_at missing")
    return document


def _instant(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromisoformat(str(value))


def _ts(value: Any) -> float | None:
    instant = _instant(value)
    return None if instant is None else instant.timestamp()


def score(database_url: str, truth: dict[str, Any]) -> dict[str, Any]:
    """Score one run: `truth` as `load_truth` returns it, the database the run fed."""
    run = truth["run"]
    rows = truth["patients"]
    ids = [int(r["patient_id"]) for r in rows]
    since = _instant(run["started_at"])
    assert since is not None
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        until = _instant(run.get("ended_at"))
        until_source = "run.ended_at"
        if until is None:
            # The run was killed before it wrote its end: up to its newest reading.
            row = conn.execute(
                "SELECT max(time) AS t FROM readings WHERE patient_id = ANY(%s)", (ids,)
            ).fetchone()
            until = row["t"] if row and row["t"] else since
            until_source = "newest reading (the truth has no ended_at)"
        params = {
            "ids": ids,
            "since": since,
            "until": until,
            "pi_min": PI_MIN_PCT,
            "spo2_min": SPO2_MIN,
            "pulse_min": PULSE_PLAUSIBLE_MIN_BPM,
            "pulse_max": PULSE_PLAUSIBLE_MAX_BPM,
        }
        events = conn.execute(_EVENTS, params).fetchall()
        readings = {r["patient_id"]: r for r in conn.execute(_READINGS, params).fetchall()}
        reminders = {r["patient_id"]: r["n"] for r in conn.execute(_REMINDERS, params)}
        open_row = conn.execute(_OPEN_AT_START, params).fetchone()
        open_at_start = int(open_row["n"]) if open_row else 0
    days = max(0.0, (until - since).total_seconds()) / DAY_S
    results: list[PatientResult] = []
    extra: dict[int, dict[str, Any]] = {}
    for truth_row in rows:
        pid = int(truth_row["patient_id"])
        counted = readings.get(pid, {})
        result = PatientResult(
            pid,
            str(truth_row.get("pattern") or STABLE),
            str(truth_row.get("mode") or "spot"),
            bool(truth_row.get("copd")),
            days,
            readings=int(counted.get("readings", 0)),
            poor=int(counted.get("flagged", 0)),
            late=int(counted.get("late", 0)),
            reminders=int(reminders.get(pid, 0)),
            onset_s=_ts(truth_row.get("onset_at")),
            red_cross_s=_ts(truth_row.get("red_cross_at")),
        )
        extra[pid] = {"device_id": truth_row.get("device_id"), "first_red_opened_at": None}
        results.append(result)
    by_id = {r.patient_id: r for r in results}
    for e in events:
        r = by_id[e["patient_id"]]
        measured_s = e["measured_at"].timestamp()
        severity = e["severity"] or "amber"
        if e["action"] == "opened":
            r.alerts[f"{e['kind']}/{severity}"] += 1
            if e["kind"] == "missed_reading":
                r.missed_alerts += 1
        if severity == "red":
            r.red_pages += 1
        if r.onset_s is None or e["kind"] not in CLINICAL_KINDS:
            continue
        if measured_s < r.onset_s:
            if e["action"] == "opened":
                r.alerts_before_onset += 1
            continue
        if r.first_alert_s is None:
            r.first_alert_s = measured_s
        live_red = e["kind"] == "spo2_low" and severity == "red" and not e["history"]
        if live_red and r.first_red_s is None:
            r.first_red_s = measured_s
            extra[r.patient_id]["first_red_opened_at"] = e["at"].isoformat()
    patients = []
    for r in results:
        row = {**asdict(r), "alerts": dict(sorted(r.alerts.items())), **extra[r.patient_id]}
        for key in ("onset_s", "red_cross_s", "first_red_s", "first_alert_s"):
            value = row.pop(key)
            row[key[:-2] + "_at"] = None if value is None else _iso(value)
        if r.first_red_s is not None and r.onset_s is not None:
            row["onset_to_red_min"] = round((r.first_red_s - r.onset_s) / 60.0, 2)
        if r.first_red_s is not None and r.red_cross_s is not None:
            row["red_band_to_red_min"] = round((r.first_red_s - r.red_cross_s) / 60.0, 2)
        patients.append(row)
    return {
        "params": {
            "started_at": since.isoformat(),
            "ended_at": until.isoformat(),
            "ended_from": until_source,
            "clock_speed": run.get("clock_speed"),
            "platform_days": round(days, 4),
            "alerts_open_at_start": open_at_start,
            "scenario": run.get("scenario"),
        },
        "summary": summarise(results),
        "alerts_by_kind": _by_kind(results),
        "patients": patients,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _by_kind(results: list[PatientResult]) -> dict[str, dict[str, int]]:
    """Every alert opened (clinical and device), by kind and opening severity, stable and not."""
    out: dict[str, Counter[str]] = {"stable": Counter(), "deteriorating": Counter()}
    for r in results:
        out["stable" if r.scenario == STABLE else "deteriorating"].update(r.alerts)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def markdown(report: dict[str, Any]) -> str:
    p = report["params"]
    hours = p["platform_days"] * 24
    lines = [
        f"Live run scored against its ground truth: {p['started_at']} to {p['ended_at']} "
        f"on the platform clock ({hours:.2f} platform hours, clock speed {p['clock_speed']}).",
        "",
    ]
    if p["alerts_open_at_start"]:
        lines += [
            f"Warning: {p['alerts_open_at_start']} alert(s) of these patients were already open "
            "when the run started (an earlier run's, never resolved): this run's readings only "
            "update them, so what it would have opened is not counted. Score a fresh database, "
            "or resolve them first.",
            "",
        ]
    lines += [
        *stable_table(report["summary"]["stable"]),
        "",
        *deteriorating_table(report["summary"]["deteriorating"]),
        "",
        "Alerts opened, by kind and the severity each opened with:",
        "",
        "| patients | kind/severity | alerts |",
        "|---|---|---|",
    ]
    for group, kinds in report["alerts_by_kind"].items():
        for kind, n in kinds.items():
            lines.append(f"| {group} | {kind} | {n} |")
        if not kinds:
            lines.append(f"| {group} | – | 0 |")
    late = [r for r in report["patients"] if r["onset_at"] is not None]
    if late:
        lines += [
            "",
            "Deteriorating patients one by one (minutes; the reading's time of the first red):",
            "",
            "| patient | device | pattern, mode | onset | first red | onset→red | red band→red |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in late:
            lines.append(
                f"| {r['patient_id']} | {r['device_id']} | {r['scenario']}, {r['mode']} "
                f"| {r['onset_at']} | {r['first_red_at'] or 'not detected'} "
                f"| {r.get('onset_to_red_min', '–')} | {r.get('red_band_to_red_min', '–')} |"
            )
    return "\n".join(lines) + "\n"


def run(truth_path: Path, database_url: str, out: Path | None = Path("results")) -> dict[str, Any]:
    """Score the run, write `score.json` and `score.md` under `out`, return the report."""
    report = score(database_url, load_truth(truth_path))
    report["params"]["truth"] = str(truth_path)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "score.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out / "score.md").write_text(markdown(report))
    return report
