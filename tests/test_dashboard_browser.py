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
TIMEOUT_MS = 15_000  # a dashboard poll is 3 s; the ingest worker stores within a second

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


def test_nurse_sees_red_reading_live_and_acknowledges_it(
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
    errors = open_dashboard(page, api_server)
    expect(page).to_have_title("oximon")

    log_in(page, nurse["username"], nurse["password"])
    expect(page.get_by_text("nurse (nurse)")).to_be_visible()
    patients = page.get_by_role("table", name="Patients")
    patient_row = patients.get_by_role("row").filter(has_text="Synthetic Test Patient")
    expect(patient_row).to_be_visible()
    expect(patient_row).to_contain_text(f"#{patient}")
    expect(page.get_by_text("No open alerts.")).to_be_visible()
    # A marker that survives only as long as this document: proves no reload happens below.
    page.evaluate("window.sameDocument = true")

    # The patient's oximeter sends a red reading over MQTT; the real ingest worker stores it.
    creds = register_device(db, settings.mqtt_admin_url, patient)
    device = Device(stack.broker.port, creds.username, creds.password)
    assert device.refused is None
    red = {"ts": datetime.now(UTC).isoformat(), "spo2": 88, "pulse": 104, "seq": 1}
    try:
        device.publish(creds.device_id, red)
    finally:
        device.close()

    # It reaches the open page by polling: red in words, not only in colour, and in the tab.
    alerts = page.get_by_role("table", name="Open alerts")
    alert_row = alerts.get_by_role("row").filter(has_text="SpO2 88%")
    expect(alert_row).to_be_visible()
    expect(alert_row).to_contain_text("RED")
    expect(alert_row).to_contain_text("Synthetic Test Patient")
    expect(alert_row).to_contain_text("open")
    expect(page).to_have_title(re.compile(r"^\(1\) RED"))
    expect(patient_row).to_contain_text("88%")
    expect(patient_row).to_contain_text("RED")
    expect(page.get_by_text("No open alerts.")).to_be_hidden()
    assert page.evaluate("window.sameDocument === true"), "the dashboard reloaded the page"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # A keyboard user's focus on the button survives the next poll, which redraws the table.
    acknowledge = alert_row.get_by_role("button", name="Acknowledge")
    acknowledge.focus()
    updated = page.locator("#updated")
    expect(updated).not_to_have_text(updated.inner_text())
    expect(acknowledge).to_be_focused()

    # The nurse takes it; the row says who, and nobody else is asked to.
    acknowledge.click()
    expect(alert_row).to_contain_text("taken by nurse")
    expect(acknowledge).to_have_count(0)
    expect(page).to_have_title("oximon")
    page.screenshot(path=ARTIFACTS / "dashboard-acknowledged.png", full_page=True)

    stored = db.execute("SELECT status, acknowledged_by FROM alerts").fetchall()
    assert [(a["status"], a["acknowledged_by"]) for a in stored] == [("acknowledged", nurse["id"])]
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
