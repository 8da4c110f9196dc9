"""Reports for a period over the user's care teams: alerts by kind and severity, time to
acknowledge and resolve, outcomes, readings adherence per patient, workload per clinician;
JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerting.lifecycle import acknowledge, apply_decisions, resolve
from alerting.rules import Decision
from tests import test_care_teams, test_latest
from tests.test_api import T0, add_reading

Team = dict[str, dict[str, object]]
other_team, neighbour = test_care_teams.other_team, test_latest.neighbour  # fixtures
PERIOD = {
    "since": (T0 - timedelta(days=1)).isoformat(),
    "until": (T0 + timedelta(days=1)).isoformat(),
}


def _alert(db: psycopg.Connection, patient: int, kind: str, severity: str, at: datetime) -> int:
    [applied] = apply_decisions(db, [Decision(patient, kind, severity, 90, at, "test")], at)
    return applied.alert_id


@pytest.fixture
def month(
    db: psycopg.Connection, patient: int, care_team: Team, neighbour: dict[str, Any]
) -> dict[str, Any]:
    nurse = int(care_team["nurse"]["id"])  # type: ignore[call-overload]
    doctor = int(care_team["doctor"]["id"])  # type: ignore[call-overload]
    minutes = timedelta(minutes=1)
    red = _alert(db, patient, "spo2_low", "red", T0)
    acknowledge(db, red, nurse, T0 + 5 * minutes)
    resolve(db, red, nurse, "home_visit", T0 + 30 * minutes)
    trend = _alert(db, patient, "trend", "amber", T0 + 60 * minutes)
    acknowledge(db, trend, doctor, T0 + 75 * minutes)
    resolve(db, trend, doctor, "artefact_false_alarm", T0 + 180 * minutes)
    _alert(db, patient, "missed_reading", "amber", T0 + 120 * minutes)
    db.execute(
        "INSERT INTO patient_notes (patient_id, author_id, at, body) VALUES (%s, %s, %s, 'ok')",
        (patient, nurse, T0 + 20 * minutes),
    )
    # Spot checks at 08:00, 14:00, 20:00 Oslo (07:00, 13:00, 19:00 UTC in November).
    db.execute(
        "UPDATE patients SET enrolled_at = %s WHERE id = %s", (T0 - timedelta(days=3), patient)
    )
    add_reading(db, patient, T0 - 30 * minutes, 96)  # 07:30Z: the 07:00Z slot, within grace
    add_reading(db, patient, T0 + timedelta(hours=4, minutes=10), 95)  # 12:10Z: 13:00Z, early
    add_reading(db, patient, T0 + timedelta(hours=8), 94)  # 16:00Z: no slot
    db.execute("UPDATE readings SET quality = 'motion' WHERE spo2 = 94")
    stream = db.execute(
        "INSERT INTO patients (display_name, schedule, enrolled_at) VALUES ('Synthetic Stream',"
        ' \'{"kind": "continuous", "max_gap_min": 30}\', %s) RETURNING id',
        (T0,),
    ).fetchone()["id"]
    for at in (0, 1, 30, 59, 61, 300):  # three distinct hours out of 24
        add_reading(db, stream, T0 + at * minutes, 97, device_id="oxi-stream")
    return {"patient": patient, "stream": stream, "nurse": nurse, "doctor": doctor}


def test_summary_counts_times_outcomes_adherence_and_workload(
    client: TestClient, nurse: dict[str, str], month: dict[str, Any], db: psycopg.Connection
) -> None:
    res = client.get("/api/v1/reports/summary", params=PERIOD, headers=nurse)
    assert res.status_code == 200, res.text
    body = res.json()

    alerts = {(a["kind"], a["severity"]): a for a in body["alerts"]}
    assert set(alerts) == {("spo2_low", "red"), ("trend", "amber"), ("missed_reading", "amber")}
    assert (alerts[("spo2_low", "red")]["opened"], alerts[("spo2_low", "red")]["resolved"]) == (
        1,
        1,
    )
    assert alerts[("missed_reading", "amber")]["unresolved"] == 1

    times = {r["severity"]: r for r in body["response_times"]}
    overall = times["all"]
    assert (overall["alerts"], overall["acknowledged"], overall["resolved"]) == (3, 2, 2)
    assert (overall["ack_median_min"], overall["ack_p90_min"]) == (10.0, 14.0)
    assert (overall["resolve_median_min"], overall["resolve_p90_min"]) == (75.0, 111.0)
    assert times["red"]["ack_median_min"] == 5.0

    outcomes = body["outcomes"]
    assert (outcomes["resolved"], outcomes["actionable"], outcomes["not_actionable"]) == (2, 1, 1)
    assert (outcomes["actionable_pct"], outcomes["false_alarm_pct"]) == (50.0, 50.0)

    adherence = {r["patient_id"]: r for r in body["adherence"]}
    spot = adherence[month["patient"]]
    assert (spot["schedule"], spot["expected"], spot["met"], spot["adherence_pct"]) == (
        "spot",
        6,
        2,
        33.3,
    )
    assert spot["readings"] == 3
    stream = adherence[month["stream"]]
    assert (stream["schedule"], stream["expected"], stream["met"]) == ("continuous", 24, 3)

    work = {w["username"]: w for w in body["workload"]}
    assert (work["nurse"]["acknowledged"], work["nurse"]["resolved"], work["nurse"]["notes"]) == (
        1,
        1,
        1,
    )
    assert (work["doctor"]["acknowledged"], work["doctor"]["resolved"]) == (1, 1)
    assert work["admin"]["acknowledged"] == 0
    assert "nabo-nurse" not in work
    assert (
        db.execute("SELECT count(*) AS n FROM audit_log WHERE action = 'report.read'").fetchone()[
            "n"
        ]
        == 1
    )


def test_another_team_reports_only_its_own(
    client: TestClient, db: psycopg.Connection, month: dict[str, Any], neighbour: dict[str, Any]
) -> None:
    db.execute("UPDATE patients SET enrolled_at = %s WHERE id = %s", (T0, neighbour["patient"]))
    body = client.get("/api/v1/reports/summary", params=PERIOD, headers=neighbour["headers"]).json()
    assert [(a["kind"], a["opened"]) for a in body["alerts"]] == [("spo2_low", 1)]
    assert [r["patient_id"] for r in body["adherence"]] == [neighbour["patient"]]
    work = {w["username"]: w for w in body["workload"]}
    # Their members only: our nurse's and doctor's work on our patients is not theirs (and our
    # on-call doctor is not paged about their patients: paging follows the patient's team).
    assert "nurse" not in work and "doctor" not in work
    assert {"nabo-nurse", "nabo-admin"} <= set(work)


def test_summary_as_csv_is_one_tidy_table_to_download(
    client: TestClient, nurse: dict[str, str], month: dict[str, Any]
) -> None:
    res = client.get("/api/v1/reports/summary", params={**PERIOD, "format": "csv"}, headers=nurse)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/csv")
    assert res.headers["content-disposition"] == (
        'attachment; filename="oximon-summary-20261123-20261125.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(res.text)))
    assert list(rows[0]) == ["section", "group", "metric", "value"]
    found = {(r["section"], r["group"], r["metric"]): r["value"] for r in rows}
    assert found[("outcomes", "all", "actionable_pct")] == "50.0"
    assert found[("alerts", "spo2_low/red", "opened")] == "1"


@pytest.mark.parametrize(
    ("section", "header"),
    [
        ("alerts", "kind,severity,opened,resolved,unresolved"),
        ("outcomes", "outcome,label,class,count"),
        (
            "adherence",
            "patient_id,display_name,schedule,expected,met,adherence_pct,readings",
        ),
        (
            "workload",
            "user_id,username,role,acknowledged,resolved,other_actions,notes,pages_received",
        ),
        (
            "response-times",
            "severity,alerts,acknowledged,ack_median_min,ack_p90_min,resolved,"
            "resolve_median_min,resolve_p90_min",
        ),
    ],
)
def test_each_section_is_its_own_report_in_json_and_csv(
    client: TestClient, nurse: dict[str, str], month: dict[str, Any], section: str, header: str
) -> None:
    as_json = client.get(f"/api/v1/reports/{section}", params=PERIOD, headers=nurse)
    assert as_json.status_code == 200 and as_json.json()
    as_csv = client.get(
        f"/api/v1/reports/{section}", params={**PERIOD, "format": "csv"}, headers=nurse
    )
    assert as_csv.text.splitlines()[0] == header
    assert len(as_csv.text.splitlines()) == len(as_json.json()) + 1
    assert f"oximon-{section}-" in as_csv.headers["content-disposition"]


def test_every_clinician_role_reads_reports_and_anonymous_cannot(
    client: TestClient, doctor: dict[str, str], admin: dict[str, str]
) -> None:
    for headers in (doctor, admin):
        assert client.get("/api/v1/reports/summary", headers=headers).status_code == 200
    assert client.get("/api/v1/reports/summary").status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("summary", {"since": "2026-11-01T00:00:00"}, "since"),
        ("summary", {"until": "soon"}, "until"),
        ("summary", {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
        ("summary", {"since": "2024-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
        ("summary", {"format": "xml"}, "format"),
        ("gossip", {}, "section"),
    ],
)
def test_bad_report_parameters_are_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], path: str, params: dict[str, str], field: str
) -> None:
    res = client.get(f"/api/v1/reports/{path}", params=params, headers=nurse)
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    if isinstance(detail, str):
        assert detail.startswith(f"{field}:")
    else:
        assert field in detail[0]["loc"]


def test_a_name_that_looks_like_a_formula_stays_text_in_the_csv(
    client: TestClient, nurse: dict[str, str], month: dict[str, Any], db: psycopg.Connection
) -> None:
    db.execute(
        "UPDATE patients SET display_name = '=HYPERLINK(\"http://x\")' WHERE id = %s",
        (month["patient"],),
    )
    res = client.get("/api/v1/reports/adherence", params={**PERIOD, "format": "csv"}, headers=nurse)
    names = [r["display_name"] for r in csv.DictReader(io.StringIO(res.text))]
    assert '\'=HYPERLINK("http://x")' in names
    assert not any(n.startswith("=") for n in names)
