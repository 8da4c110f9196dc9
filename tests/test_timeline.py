"""A patient's timeline: readings summarised per hour, alert events with who, messages both
ways and care notes, in one chronological list; only for the user's care teams."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerting.lifecycle import acknowledge, resolve
from tests import test_care_teams, test_latest
from tests.test_api import T0, add_reading, open_alert

Team = dict[str, dict[str, object]]
other_team, neighbour = test_care_teams.other_team, test_latest.neighbour  # fixtures
WINDOW = {
    "since": (T0 - timedelta(hours=1)).isoformat(),
    "until": (T0 + timedelta(days=1)).isoformat(),
}


@pytest.fixture
def story(db: psycopg.Connection, patient: int, care_team: Team) -> dict[str, Any]:
    """A morning: readings, a red alert opened by the system, acknowledged and resolved by the
    nurse, an SMS to the patient, the patient's reply, and a note."""
    nurse_id = int(care_team["nurse"]["id"])  # type: ignore[call-overload]
    for minutes, spo2 in ((0, 95), (10, 91), (20, 90), (65, 94), (80, 96)):
        add_reading(db, patient, T0 + timedelta(minutes=minutes), spo2, pulse=70 + minutes // 10)
    db.execute("UPDATE readings SET quality = 'motion' WHERE spo2 = 91")
    alert = open_alert(db, patient)  # opened at T0 by the system
    acknowledge(db, alert, nurse_id, T0 + timedelta(minutes=25))
    db.execute(
        "INSERT INTO notifications (created_at, channel, recipient, patient_id, body, state,"
        " next_attempt_at) VALUES (%s, 'sms', '+4791000001', %s, 'Please measure again', 'sent',"
        " %s)",
        (T0 + timedelta(minutes=30), patient, T0 + timedelta(minutes=30)),
    )
    db.execute(
        "INSERT INTO sms_inbound (received_at, patient_id, body, outcome, reply)"
        " VALUES (%s, %s, '94 80', 'reading', 'Thank you')",
        (T0 + timedelta(minutes=40), patient),
    )
    db.execute(
        "INSERT INTO patient_notes (patient_id, author_id, at, body)"
        " VALUES (%s, %s, %s, 'Called: resting, no chest pain')",
        (patient, nurse_id, T0 + timedelta(minutes=45)),
    )
    resolve(db, alert, nurse_id, "called_stable", T0 + timedelta(minutes=50))
    return {"alert": alert, "nurse_id": nurse_id}


def _timeline(client: TestClient, patient: int, headers: dict[str, str], **params: Any) -> Any:
    res = client.get(
        f"/api/v1/patients/{patient}/timeline", params={**WINDOW, **params}, headers=headers
    )
    assert res.status_code == 200, res.text
    return res.json()


def test_timeline_tells_the_morning_in_order_with_who_did_what(
    client: TestClient,
    nurse: dict[str, str],
    patient: int,
    story: dict[str, Any],
    db: psycopg.Connection,
) -> None:
    body = _timeline(client, patient, nurse)
    assert body["truncated"] is False and body["bucket"] == "1h"
    items = body["items"]
    times = [i["time"] for i in items]
    assert times == sorted(times)
    kinds = [
        (i["type"], i.get("action"))
        for i in items
        if i["type"] != "message_out" or i["to"] == "patient"
    ]
    assert kinds == [
        ("alert", "opened"),
        ("readings", None),  # 08:00 hour; the alert opened at 08:00:00 sorts first by type
        ("alert", "acknowledged"),
        ("message_out", None),
        ("message_in", None),
        ("note", None),
        ("alert", "resolved"),
        ("readings", None),  # 09:00 hour
    ]
    hour8 = [i for i in items if i["type"] == "readings"][0]
    assert (hour8["n"], hour8["spo2_min"], hour8["spo2_max"], hour8["flagged"]) == (3, 90, 95, 1)
    assert hour8["spo2_mean"] == pytest.approx(92.0)
    assert hour8["until"].startswith("2026-11-24T09:00:00")
    opened = items[0]
    assert (opened["alert_id"], opened["kind"], opened["severity"], opened["by"]) == (
        story["alert"],
        "spo2_low",
        "red",
        None,
    )
    by_action = {i["action"]: i for i in items if i["type"] == "alert"}
    assert by_action["acknowledged"]["by"] == {"id": story["nurse_id"], "username": "nurse"}
    assert by_action["resolved"]["detail"]["outcome"] == "called_stable"
    note = next(i for i in items if i["type"] == "note")
    assert (note["body"], note["by"]["username"]) == ("Called: resting, no chest pain", "nurse")
    sms_in = next(i for i in items if i["type"] == "message_in")
    assert (sms_in["body"], sms_in["outcome"]) == ("94 80", "reading")
    audited = db.execute(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'timeline.read' AND patient_id = %s",
        (patient,),
    ).fetchone()
    assert audited["n"] == 1


def test_timeline_types_order_and_limit(
    client: TestClient, nurse: dict[str, str], patient: int, story: dict[str, Any]
) -> None:
    only = _timeline(client, patient, nurse, types="alert,note")
    assert {i["type"] for i in only["items"]} == {"alert", "note"}
    newest = _timeline(client, patient, nurse, order="desc", limit=2)
    assert newest["truncated"] is True
    assert [i["type"] for i in newest["items"]] == ["readings", "alert"]
    assert newest["items"][1]["action"] == "resolved"
    daily = _timeline(client, patient, nurse, types="readings", bucket="1d")
    assert [i["n"] for i in daily["items"]] == [5]


def test_every_role_reads_a_timeline(
    client: TestClient,
    doctor: dict[str, str],
    admin: dict[str, str],
    patient: int,
    story: dict[str, Any],
) -> None:
    for headers in (doctor, admin):
        assert len(_timeline(client, patient, headers)["items"]) >= 8


def test_another_teams_timeline_is_404_like_an_unknown_patient(
    client: TestClient, nurse: dict[str, str], neighbour: dict[str, Any], patient: int
) -> None:
    theirs = client.get(f"/api/v1/patients/{neighbour['patient']}/timeline", headers=nurse)
    unknown = client.get("/api/v1/patients/999999/timeline", headers=nurse)
    assert theirs.status_code == unknown.status_code == 404
    mine = client.get(f"/api/v1/patients/{patient}/timeline", headers=neighbour["headers"])
    assert mine.status_code == 404
    assert client.get(f"/api/v1/patients/{patient}/timeline").status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-11-24T08:00:00"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-11-25T08:00:00Z", "until": "2026-11-24T08:00:00Z"}, "since"),
        ({"types": "readings,gossip"}, "types"),
        ({"bucket": "2h"}, "bucket"),
        ({"limit": "0"}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_timeline_parameters_are_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], patient: int, params: dict[str, str], field: str
) -> None:
    res = client.get(f"/api/v1/patients/{patient}/timeline", params=params, headers=nurse)
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    if isinstance(detail, str):
        assert detail.startswith(f"{field}:")
    else:
        assert field in detail[0]["loc"]
