"""Enrolment from the dashboard: an administrator adds a patient, registers an oximeter for
them and sees its broker credentials once; the credentials work on the real broker."""

from __future__ import annotations

import psycopg
from playwright.sync_api import Page, expect

from tests.conftest import Stack
from tests.helpers import Device
from tests.test_dashboard_browser import log_in, open_dashboard, shot


def test_admin_enrols_a_patient_and_registers_an_oximeter_shown_once(
    stack: Stack, db: psycopg.Connection, api_server: str, care_team, browser_page: Page
) -> None:
    page = browser_page
    admin = care_team["admin"]
    errors = open_dashboard(page, api_server)
    log_in(page, str(admin["username"]), str(admin["password"]))
    page.get_by_role("navigation").get_by_role("link", name="Enrol").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enrol a patient")

    # A bad phone number is refused with the field named, and nobody is enrolled.
    page.get_by_label("Name", exact=True).fill("Synthetic Enrolled Patient")
    page.get_by_label("Phone (+47…)").fill("12345")
    page.get_by_role("button", name="Enrol patient").click()
    expect(page.locator("form .msg.error")).to_contain_text("phone")
    assert db.execute("SELECT count(*) AS n FROM patients").fetchone()["n"] == 0

    page.get_by_label("Phone (+47…)").fill("+47 912 34 567")
    page.get_by_label("Language").last.select_option("en")
    page.get_by_role("button", name="Enrol patient").click()
    done = page.get_by_text("enrolled.")
    expect(done).to_be_visible()
    patient = db.execute("SELECT id, phone, language FROM patients").fetchone()
    assert (patient["phone"], patient["language"]) == ("+4791234567", "en")
    # The new patient's number is filled in for the oximeter.
    expect(page.get_by_label("Patient number")).to_have_value(str(patient["id"]))

    page.get_by_label("Serial number").fill("SN-TEST-0001")
    page.get_by_role("button", name="Register oximeter").click()
    creds = page.get_by_role("region", name="Broker credentials — shown once")
    expect(creds).to_be_visible()
    password = page.locator("#mqtt-password").inner_text()
    device = db.execute("SELECT id, patient_id, serial FROM devices").fetchone()
    assert (device["patient_id"], device["serial"]) == (patient["id"], "SN-TEST-0001")
    assert password and password not in str(db.execute("SELECT * FROM devices").fetchall())
    shot(page, "dashboard-enrol")
    # The shown password opens the broker for this oximeter.
    oximeter = Device(stack.broker.port, device["id"], password)
    try:
        assert oximeter.refused is None
    finally:
        oximeter.close()

    # Shown once: leave the page and come back, and it is gone.
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("table", name="Patients")).to_contain_text("Synthetic Enrolled")
    page.get_by_role("link", name="Enrol", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enrol a patient")
    expect(page.get_by_text(password)).to_have_count(0)
    assert errors == []


def test_admin_puts_a_nurse_on_the_rota_and_she_is_on_duty(
    db: psycopg.Connection, api_server: str, care_team, browser_page: Page
) -> None:
    page = browser_page
    admin, nurse = care_team["admin"], care_team["nurse"]
    errors = open_dashboard(page, api_server)
    log_in(page, str(admin["username"]), str(admin["password"]))
    page.get_by_role("navigation").get_by_role("link", name="Rota and escalation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("On-call rota")
    page.get_by_label("Person").select_option(str(nurse["id"]))
    page.get_by_label("Role").select_option("nurse")
    # Local times in the service's zone, a shift around now.
    now = db.execute(
        "SELECT to_char(now() AT TIME ZONE 'Europe/Oslo' - interval '1 hour',"
        " 'YYYY-MM-DD\"T\"HH24:MI') AS a, to_char(now() AT TIME ZONE 'Europe/Oslo'"
        " + interval '7 hours', 'YYYY-MM-DD\"T\"HH24:MI') AS b"
    ).fetchone()
    page.get_by_label("Starts").fill(now["a"])
    page.get_by_label("Ends").fill(now["b"])
    page.get_by_role("button", name="Add shift").click()
    shifts = page.get_by_role("table", name="Shifts (yesterday to two weeks ahead)")
    expect(shifts).to_contain_text("Test nurse (#")
    expect(shifts).to_contain_text("+4799000001")
    row = db.execute("SELECT user_id, role, phone, created_by FROM oncall_shifts").fetchone()
    assert dict(row) == {
        "user_id": nurse["id"],
        "role": "nurse",
        "phone": "+4799000001",
        "created_by": admin["id"],
    }
    # Who an alert reaches now, on the same page after a reload of it.
    page.reload()
    expect(page.get_by_role("definition").first).to_contain_text(f"#{nurse['id']}")
    assert errors == []
