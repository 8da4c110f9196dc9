"""The on-call rota per care team: two municipalities share one installation, each with its own
rota. Neither sees nor changes the other's shifts (a 404, as if they did not exist), nobody is
put on a team's rota who is not in that team, an alert pages its patient's team only, and a
clinician acknowledges by SMS only their own teams' alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect
from psycopg_pool import ConnectionPool

from alerting import escalation
from alerting.lifecycle import apply_decisions
from core.settings import Settings
from tests import alerting_support
from tests.alerting_support import (
    DOCTOR,
    NURSE,
    NURSE2,
    T0,
    ManualClock,
    add_shift,
    red,
    rota,
    twilio_settings,
)
from tests.conftest import Team, _hash, login
from tests.test_dashboard_browser import log_in, open_dashboard
from tests.twilio_fake import FakeTwilio

# Fixtures shared with the other alerting tests.
pool = alerting_support.pool
twilio = alerting_support.twilio

INBOUND = "http://testserver/api/v1/sms/inbound"
# The neighbouring municipality's staff.
NABO_NURSE, NABO_DOCTOR = "+4799100001", "+4799100009"


@pytest.fixture
def settings(settings: Settings, twilio: FakeTwilio) -> Settings:
    return twilio_settings(settings, twilio.url)


def now() -> datetime:
    return datetime.now(UTC)


def _user(db: psycopg.Connection, username: str, role: str, phone: str | None, team: int) -> int:
    uid = db.execute(
        "INSERT INTO users (username, full_name, role, password_hash, phone)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (username, f"Test {username}", role, _hash(f"{username}-password"), phone),
    ).fetchone()["id"]
    db.execute("INSERT INTO user_care_teams VALUES (%s, %s)", (uid, team))
    return int(uid)


@pytest.fixture
def nabo(db: psycopg.Connection) -> dict[str, Any]:
    """A second municipality: its admin, a nurse and a doctor with phones, and a patient."""
    team = db.execute(
        "INSERT INTO care_teams (name) VALUES ('Hjemmetjenesten Nabokommune') RETURNING id"
    ).fetchone()["id"]
    out: dict[str, Any] = {"team": team}
    for username, role, phone in (
        ("nabo-admin", "admin", None),
        ("nabo-nurse", "nurse", NABO_NURSE),
        ("nabo-doctor", "doctor", NABO_DOCTOR),
    ):
        uid = _user(db, username, role, phone, team)
        out[role] = {"id": uid, "username": username, "password": f"{username}-password"}
    out["patient"] = db.execute(
        "INSERT INTO patients (display_name, phone, care_team_id)"
        " VALUES ('Synthetic Neighbour', '+4791000077', %s) RETURNING id",
        (team,),
    ).fetchone()["id"]
    return out


def nabo_rota(db: psycopg.Connection, nabo: dict[str, Any], at: datetime) -> None:
    """The neighbour's nurse and doctor on duty around `at`, first in line (priority 1)."""
    for role, phone in (("nurse", NABO_NURSE), ("doctor", NABO_DOCTOR)):
        db.execute(
            "INSERT INTO oncall_shifts (care_team_id, user_id, role, phone, starts_at, ends_at,"
            " priority, created_at) VALUES (%s, %s, %s, %s, %s, %s, 1, %s)",
            (
                nabo["team"],
                nabo[role]["id"],
                role,
                phone,
                at - timedelta(hours=12),
                at + timedelta(hours=12),
                at,
            ),
        )


def shift_body(user_id: int, **extra: Any) -> dict[str, Any]:
    start = now().replace(microsecond=0)
    return {
        "user_id": user_id,
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=8)).isoformat(),
        **extra,
    }


# --- the rota API -------------------------------------------------------------------------------


def test_another_teams_shift_is_not_listed_and_is_a_404_to_read_change_or_delete(
    client: TestClient, db: psycopg.Connection, care_team: Team, nabo: dict[str, Any]
) -> None:
    ours_admin, ours_nurse = login(client, care_team["admin"]), login(client, care_team["nurse"])
    theirs_admin = login(client, nabo["admin"])
    mine = client.post(
        "/api/v1/rota/shifts", json=shift_body(care_team["nurse"]["id"]), headers=ours_admin
    )
    assert mine.status_code == 201, mine.text
    theirs = client.post(
        "/api/v1/rota/shifts", json=shift_body(nabo["nurse"]["id"]), headers=theirs_admin
    )
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["care_team_id"] == nabo["team"]
    theirs_id = theirs.json()["id"]

    listed = client.get("/api/v1/rota/shifts", headers=ours_nurse).json()
    assert [s["id"] for s in listed] == [mine.json()["id"]]
    assert NABO_NURSE not in str(listed)  # nor the neighbour's phone numbers
    for_them = client.get("/api/v1/rota/shifts", headers=theirs_admin).json()
    assert [s["id"] for s in for_them] == [theirs_id]

    url = f"/api/v1/rota/shifts/{theirs_id}"
    assert client.get(url, headers=ours_nurse).status_code == 404
    moved = client.put(url, json=shift_body(care_team["nurse"]["id"]), headers=ours_admin)
    assert moved.status_code == 404
    assert client.delete(url, headers=ours_admin).status_code == 404
    unknown = client.get("/api/v1/rota/shifts/999999", headers=ours_nurse)
    assert unknown.json() == {"detail": "no shift with id 999999"}
    assert client.get(url, headers=ours_nurse).json() == {"detail": f"no shift with id {theirs_id}"}
    row = db.execute(
        "SELECT user_id, care_team_id FROM oncall_shifts WHERE id = %s", (theirs_id,)
    ).fetchone()
    assert (row["user_id"], row["care_team_id"]) == (nabo["nurse"]["id"], nabo["team"])
    # Nor can a team's rota be asked for by naming the other team.
    named = client.get(f"/api/v1/rota/shifts?care_team_id={nabo['team']}", headers=ours_nurse)
    assert named.status_code == 422 and "care_team_id" in named.text


def test_a_user_of_another_team_cannot_be_put_on_the_rota(
    client: TestClient, db: psycopg.Connection, care_team: Team, nabo: dict[str, Any]
) -> None:
    admin = login(client, care_team["admin"])
    res = client.post("/api/v1/rota/shifts", json=shift_body(nabo["nurse"]["id"]), headers=admin)
    assert res.status_code == 422
    assert res.json()["detail"].startswith("user_id:")
    mine = client.post(
        "/api/v1/rota/shifts", json=shift_body(care_team["nurse"]["id"]), headers=admin
    ).json()
    swapped = client.put(
        f"/api/v1/rota/shifts/{mine['id']}", json=shift_body(nabo["nurse"]["id"]), headers=admin
    )
    assert swapped.status_code == 422 and swapped.json()["detail"].startswith("user_id:")
    rows = db.execute("SELECT user_id FROM oncall_shifts").fetchall()
    assert [r["user_id"] for r in rows] == [care_team["nurse"]["id"]]


def test_an_admin_of_two_teams_names_the_team_of_a_new_shift(
    client: TestClient, db: psycopg.Connection, care_team: Team, nabo: dict[str, Any]
) -> None:
    db.execute(
        "INSERT INTO user_care_teams VALUES (%s, %s)", (care_team["admin"]["id"], nabo["team"])
    )
    admin = login(client, care_team["admin"])
    unnamed = client.post(
        "/api/v1/rota/shifts", json=shift_body(nabo["nurse"]["id"]), headers=admin
    )
    assert unnamed.status_code == 422
    assert unnamed.json()["detail"][0]["loc"] == ["body", "care_team_id"]
    named = client.post(
        "/api/v1/rota/shifts",
        json=shift_body(nabo["nurse"]["id"], care_team_id=nabo["team"]),
        headers=admin,
    )
    assert named.status_code == 201, named.text
    assert named.json()["care_team_id"] == nabo["team"]
    # Both teams' shifts are hers to read; each team's "on duty now" is its own.
    listed = client.get("/api/v1/rota/shifts", headers=admin).json()
    assert [s["user_id"] for s in listed] == [nabo["nurse"]["id"]]
    duty = client.get(f"/api/v1/rota/now?care_team_id={nabo['team']}", headers=admin).json()
    assert duty["nurse"]["user_id"] == nabo["nurse"]["id"]
    default_team = db.execute("SELECT oximon_default_care_team() AS t").fetchone()["t"]
    home = client.get(f"/api/v1/rota/now?care_team_id={default_team}", headers=admin).json()
    assert home["nurse"] is None


def test_on_duty_now_shows_a_nurse_her_own_teams_rota(
    client: TestClient, db: psycopg.Connection, care_team: Team, nabo: dict[str, Any]
) -> None:
    at = now()
    nabo_rota(db, nabo, at)
    nurse = login(client, care_team["nurse"])
    assert client.get("/api/v1/rota/now", headers=nurse).json()["nurse"] is None
    ids = rota(db, at, existing={"nurse": care_team["nurse"]["id"]})
    res = client.get("/api/v1/rota/now", headers=nurse).json()
    assert (res["nurse"]["user_id"], res["doctor"]["user_id"]) == (ids["nurse"], ids["doctor"])
    theirs = client.get("/api/v1/rota/now", headers=login(client, nabo["nurse"])).json()
    assert theirs["nurse"]["phone"] == NABO_NURSE


# --- paging -------------------------------------------------------------------------------------


def test_an_alert_pages_its_patients_teams_nurse_through_twilio_never_the_other_teams(
    db: psycopg.Connection,
    twilio: FakeTwilio,
    api_server: str,
    service_factory,  # noqa: ANN001
    patient: int,
    nabo: dict[str, Any],
) -> None:
    at = now()
    rota(db, at)
    nabo_rota(db, nabo, at)
    service_factory(
        "alerting", ready="alerting_started", alerting_watchdog=False, public_url=api_server
    )
    with db.transaction():
        [ours] = apply_decisions(db, [red(patient, at)], at)
    [message] = twilio.wait_for(lambda ms: ms, what="our nurse's page")
    assert message.to == NURSE and f"Reply ACK {ours.alert_id}" in message.body
    with db.transaction():
        [theirs] = apply_decisions(db, [red(nabo["patient"], at)], at)
    page = twilio.wait_for(lambda ms: ms[1:], what="the neighbour's page")
    assert [(m.to, m.codes()) for m in page] == [(NABO_NURSE, [theirs.alert_id])]
    assert twilio.sent_to(NABO_NURSE) == page and len(twilio.sent_to(NURSE)) == 1


def test_escalation_climbs_its_own_teams_rota_only(
    db: psycopg.Connection, pool: ConnectionPool, patient: int, nabo: dict[str, Any]
) -> None:
    clock = ManualClock(T0)
    rota(db, T0)
    nabo_rota(db, nabo, T0)
    # The neighbour's on-call doctor account is flagged too: still not ours to call.
    db.execute("UPDATE users SET on_call = true WHERE id = %s", (nabo["doctor"]["id"],))
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, T0)], T0)
    for _ in range(5):  # 10, 20, 30, 40, 50 minutes: doctor, then both and the next person
        clock.advance(minutes=10)
        escalation.process_due(pool, clock)
    rows = db.execute(
        "SELECT DISTINCT recipient FROM notifications WHERE alert_id = %s AND channel = 'sms'",
        (applied.alert_id,),
    ).fetchall()
    called = {r["recipient"] for r in rows}
    assert {NURSE, NURSE2, DOCTOR} <= called
    assert not called & {NABO_NURSE, NABO_DOCTOR}


def test_a_shift_of_someone_who_left_the_team_is_not_paged(
    db: psycopg.Connection, patient: int, nabo: dict[str, Any]
) -> None:
    ids = rota(db, T0)
    # Our nurse moves to the neighbour's team; her shift with us no longer pages her.
    db.execute(
        "UPDATE user_care_teams SET care_team_id = %s WHERE user_id = %s",
        (nabo["team"], ids["nurse"]),
    )
    add_shift(db, nabo["nurse"]["id"], "nurse", NABO_NURSE, T0, T0 + timedelta(hours=1))
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, T0)], T0)
    rows = db.execute(
        "SELECT recipient FROM notifications WHERE alert_id = %s AND channel = 'sms'",
        (applied.alert_id,),
    ).fetchall()
    assert [r["recipient"] for r in rows] == [NURSE2]


# --- acknowledging by SMS -----------------------------------------------------------------------


def reply_text(res: Any) -> str:
    assert res.status_code == 200, res.text
    return str(res.text.split("<Message>")[1].split("</Message>")[0])


def test_an_sms_ack_of_another_teams_alert_is_refused_like_an_unknown_alert(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio, nabo: dict[str, Any]
) -> None:
    at = now()
    rota(db, at)
    nabo_rota(db, nabo, at)
    with db.transaction():
        [applied] = apply_decisions(db, [red(nabo["patient"], at)], at)
    alert = applied.alert_id
    refused = reply_text(twilio.inbound(client, INBOUND, NURSE, f"ACK {alert}"))
    unknown = reply_text(twilio.inbound(client, INBOUND, NURSE, "ACK 999999"))
    assert refused == unknown.replace("999999", str(alert))
    assert "no such alert" in refused
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert (row["status"], row["acknowledged_by"]) == ("open", None)
    acks = db.execute(
        "SELECT 1 FROM alert_events WHERE alert_id = %s AND action = 'acknowledged'", (alert,)
    ).fetchall()
    assert acks == []

    done = reply_text(twilio.inbound(client, INBOUND, NABO_NURSE, f"ack {alert}"))
    assert done == f"Acknowledged: #{alert}. Thank you."
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert (row["status"], row["acknowledged_by"]) == ("acknowledged", nabo["nurse"]["id"])


# --- the dashboard's rota page --------------------------------------------------------------------


def test_an_admin_of_two_teams_puts_a_nurse_on_the_other_teams_rota_from_the_dashboard(
    db: psycopg.Connection,
    api_server: str,
    care_team: Team,
    nabo: dict[str, Any],
    browser_page: Page,
) -> None:
    page = browser_page
    admin = care_team["admin"]
    db.execute("INSERT INTO user_care_teams VALUES (%s, %s)", (admin["id"], nabo["team"]))
    errors = open_dashboard(page, api_server)
    log_in(page, str(admin["username"]), str(admin["password"]))
    page.get_by_role("navigation").get_by_role("link", name="Rota and escalation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("On-call rota")
    page.get_by_label("Care team").select_option(label="Hjemmetjenesten Nabokommune")
    page.get_by_label("Person").select_option(str(nabo["nurse"]["id"]))
    page.get_by_label("Role").select_option("nurse")
    oslo = datetime.now(ZoneInfo("Europe/Oslo"))  # the form takes the service's local time
    page.get_by_label("Starts").fill((oslo - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Ends").fill((oslo + timedelta(hours=7)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Add shift").click()
    shifts = page.get_by_role("table", name="Shifts (yesterday to two weeks ahead)")
    expect(shifts).to_contain_text(NABO_NURSE)
    row = db.execute("SELECT user_id, care_team_id FROM oncall_shifts").fetchone()
    assert (row["user_id"], row["care_team_id"]) == (nabo["nurse"]["id"], nabo["team"])
    # Each team's nurse on duty, under the team's name: the neighbour's is her, ours nobody.
    page.reload()
    duty = page.get_by_role("region", name="On duty now")
    expect(duty.get_by_role("heading", name="Hjemmetjenesten Nabokommune")).to_be_visible()
    expect(duty).to_contain_text(f"#{nabo['nurse']['id']} {NABO_NURSE}")
    expect(duty.get_by_role("definition").first).to_have_text("nobody")
    assert errors == []
