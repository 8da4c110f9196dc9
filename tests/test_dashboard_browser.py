"""The clinician dashboard in a real headless Chromium, against the real API server, broker,
ingest worker and database: what a nurse sees and does."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from playwright.sync_api import Page, expect

from core.settings import Settings
from devices.registry import register_device
from tests.conftest import Stack
from tests.helpers import Device

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # git-ignored
TIMEOUT_MS = 15_000  # a dashboard poll is 5 s; the ingest worker stores within a second

expect.set_options(timeout=TIMEOUT_MS)


def open_dashboard(page: Page, base_url: str) -> list[str]:
    """Open /dashboard and collect uncaught script errors (a broken page must fail the test)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base_url}/dashboard")
    return errors


def log_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def publish_red(db: psycopg.Connection, settings: Settings, stack: Stack, patient: int) -> None:
    """The patient's oximeter sends a red reading over MQTT; the real ingest worker stores it."""
    creds = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, creds.username, creds.password)
    assert device.refused is None
    red = {"ts": datetime.now(UTC).isoformat(), "spo2": 88, "pulse": 104, "seq": 1, "battery": 64}
    try:
        device.publish(creds.device_id, red)
    finally:
        device.close()


def test_nurse_sees_a_patient_turn_red_live_then_takes_and_resolves_the_alert(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    api_server: str,
    ingest,
    care_team,
    patient: int,
    browser_page: Page,
) -> None:
    page = browser_page
    nurse = care_team["nurse"]
    quiet = db.execute(
        "INSERT INTO patients (display_name) VALUES ('Quiet Synthetic Patient') RETURNING id"
    ).fetchone()["id"]
    errors = open_dashboard(page, api_server)
    expect(page).to_have_title("oximon")

    log_in(page, nurse["username"], nurse["password"])
    expect(page.get_by_text("nurse (nurse)")).to_be_visible()
    patients = page.get_by_role("table", name="Patients")
    patient_row = patients.get_by_role("row").filter(has_text="Synthetic Test Patient")
    expect(patient_row).to_contain_text(f"#{patient}")
    expect(patient_row).to_contain_text("OK")
    expect(page.get_by_text("2 of 2 patients")).to_be_visible()
    # Live by server-sent events (polling only every 30 s meanwhile, as a safety net).
    expect(page.locator("#live")).to_have_attribute("data-mode", "stream")
    # A marker that survives only as long as this document: proves no reload happens below.
    page.evaluate("window.sameDocument = true")

    publish_red(db, settings, stack, patient)

    # It reaches the open page live: red in words and an icon, not only colour, first in the
    # list, in a banner, in the tab title, with a sound (counted: headless Chromium has no
    # speakers).
    expect(patient_row).to_contain_text("RED")
    expect(patient_row).to_contain_text("88%")
    expect(patient_row).to_contain_text("104/min")
    expect(patient_row).to_contain_text("battery 64%")
    expect(patients.locator("tbody tr").first).to_contain_text("Synthetic Test Patient")
    expect(patients.locator("tbody tr").nth(1)).to_contain_text(f"#{quiet}")
    banner = page.get_by_role("alert").filter(has_text="New RED alert")
    expect(banner).to_contain_text("Synthetic Test Patient")
    expect(page).to_have_title(re.compile(r"^\(1\) RED"))
    assert int(page.evaluate("document.body.dataset.alarms || '0'")) >= 1
    assert page.evaluate("window.sameDocument === true"), "the dashboard reloaded the page"
    # The search box and the filter narrow the list.
    page.get_by_label("Show").select_option("red")
    expect(patients.locator("tbody tr")).to_have_count(1)
    page.get_by_label("Show").select_option("all")
    page.get_by_label("Search name or number").fill("quiet")
    expect(patients.locator("tbody tr")).to_have_count(1)
    expect(patients.locator("tbody tr").first).to_contain_text("Quiet Synthetic Patient")
    page.get_by_label("Search name or number").fill("")
    shot(page, "dashboard-overview")

    # The alert inbox: the nurse takes it; the card says who; the banner and title calm down.
    page.get_by_role("navigation").get_by_role("link", name="Alerts").click()
    card = page.locator(".alert-card").filter(has_text="Synthetic Test Patient")
    expect(card).to_contain_text("RED")
    expect(card).to_contain_text("nobody has taken it")
    card.get_by_role("button", name=re.compile("^Acknowledge alert")).click()
    expect(card).to_contain_text("taken by nurse")
    expect(page).to_have_title("oximon")
    expect(banner).to_be_hidden()

    # The checklist, then resolve with an outcome.
    card.get_by_role("button", name="Details").click()
    first_item = card.get_by_role("checkbox").first
    first_item.check()
    expect(card.get_by_role("status")).to_have_text("Saved.")
    expect(card).to_contain_text("by nurse")
    card.get_by_label("Outcome", exact=True).select_option("home_visit")
    card.get_by_label("Note (optional)").fill("Visited; resting, SpO2 95% on recheck.")
    shot(page, "dashboard-alerts")
    card.get_by_role("button", name="Resolve").click()
    expect(card).to_have_count(0)
    expect(page.get_by_text("No open alerts.")).to_be_visible()

    stored = db.execute(
        "SELECT status, acknowledged_by, resolved_by, outcome FROM alerts"
    ).fetchall()
    nurse_id = nurse["id"]
    assert [dict(a) for a in stored] == [
        {
            "status": "resolved",
            "acknowledged_by": nurse_id,
            "resolved_by": nurse_id,
            "outcome": "home_visit",
        }
    ]
    # Every action is recorded with who did it.
    actions = db.execute(
        "SELECT action FROM alert_events WHERE user_id = %s ORDER BY at, id", (nurse_id,)
    ).fetchall()
    assert [a["action"] for a in actions] == ["acknowledged", "checklist_ticked", "resolved"]

    # The patient's charts, with the bands, over 24 hours and then 7 days.
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("link", name=f"#{patient} Synthetic Test Patient").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"#{patient} Synthetic Test Patient")
    spo2_chart = page.get_by_role("img", name=re.compile("^SpO2 chart, 24 hours: 1 points"))
    expect(spo2_chart).to_be_visible()
    expect(page.get_by_text("red at or below 92%")).to_be_visible()
    page.get_by_role("button", name="7 days").click()
    expect(page.get_by_role("img", name=re.compile("^SpO2 chart, 7 days"))).to_be_visible()
    expect(page.get_by_role("button", name="7 days")).to_have_attribute("aria-pressed", "true")
    shot(page, "dashboard-patient")
    assert page.evaluate("window.sameDocument === true")
    assert errors == []


def test_without_the_stream_the_dashboard_polls_and_still_turns_red(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    api_server: str,
    ingest,
    care_team,
    patient: int,
    browser_page: Page,
) -> None:
    page = browser_page
    # A proxy that drops server-sent events: every attempt at the stream fails.
    page.route(re.compile(r".*/api/v1/stream\?.*"), lambda route: route.abort())
    errors = open_dashboard(page, api_server)
    log_in(page, str(care_team["nurse"]["username"]), str(care_team["nurse"]["password"]))
    expect(page.locator("#live")).to_have_attribute("data-mode", "polling")
    expect(page.locator("#live")).to_have_text("Updating every 5 s")
    patient_row = page.get_by_role("row").filter(has_text="Synthetic Test Patient")
    expect(patient_row).to_contain_text("OK")
    publish_red(db, settings, stack, patient)
    expect(patient_row).to_contain_text("RED")
    expect(page).to_have_title(re.compile(r"^\(1\) RED"))
    assert errors == []


def test_wrong_password_shows_an_error_and_keeps_the_dashboard_closed(
    api_server: str, care_team, patient: int, browser_page: Page
) -> None:
    page = browser_page
    nurse = care_team["nurse"]
    errors = open_dashboard(page, api_server)

    log_in(page, nurse["username"], "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_role("table", name="Patients")).to_be_hidden()
    expect(page.get_by_text("Synthetic Test Patient")).to_have_count(0)

    # The right password then opens it, and the error goes away.
    log_in(page, nurse["username"], nurse["password"])
    expect(page.get_by_role("table", name="Patients")).to_contain_text("Synthetic Test Patient")
    expect(page.get_by_text("Wrong username or password.")).to_be_hidden()
    assert errors == []
