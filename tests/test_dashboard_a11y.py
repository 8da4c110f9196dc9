"""The dashboard for everyone: axe-core finds no serious or critical WCAG 2.1 A/AA violation on
any main page, a nurse can do the whole alert flow with the keyboard alone, the language is
chosen per user and remembered, and thresholds and notes are edited from the patient page."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.helpers import wait_until
from tests.test_api import open_alert
from tests.test_dashboard_browser import ARTIFACTS, log_in, open_dashboard

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical violations of WCAG 2.1 A/AA on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}}))"
        ".violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))",
        WCAG,
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def seed(db: psycopg.Connection, patient: int) -> int:
    """A day of readings and an open red alert for the patient, straight into the database (the
    MQTT path is tested in test_dashboard_browser); returns the alert id."""
    now = datetime.now(UTC)
    rows = [
        (now - timedelta(minutes=20 * i), "seed-device", patient, 95 - (i % 4), 70 + (i % 9), now)
        for i in range(72)
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    alert = db.execute(
        "INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason)"
        " VALUES (%s, 'spo2_low', 'red', %s, %s, %s) RETURNING id",
        (patient, now, now, "SpO2 88% on a spot check (seeded)"),
    ).fetchone()["id"]
    db.execute(
        "INSERT INTO alert_checklist (alert_id, item, label, position)"
        " VALUES (%s, 'called', 'Called the patient', 1)",
        (alert,),
    )
    return int(alert)


PAGES = [
    ("overview", "#/", "Patients"),
    ("alerts", "#/alerts", "Alert inbox"),
    ("rota", "#/rota", "On-call rota"),
    ("sms", "#/sms", "SMS log"),
    ("reports", "#/reports", "Reports"),
    ("enrol", "#/enrol", "Enrol a patient"),
    ("dead-letters", "#/dead-letters", "Dead letters"),
]


def test_every_main_page_has_no_serious_accessibility_violations(
    db: psycopg.Connection, api_server: str, care_team, patient: int, browser_page: Page
) -> None:
    page = browser_page
    seed(db, patient)
    errors = open_dashboard(page, api_server)
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    found: dict[str, list[dict[str, Any]]] = {"login": axe_violations(page)}
    admin = care_team["admin"]
    log_in(page, admin["username"], admin["password"])
    expect(page.get_by_role("table", name="Patients")).to_contain_text("Synthetic Test Patient")
    ARTIFACTS.mkdir(exist_ok=True)
    for name, route, heading in PAGES:
        page.goto(f"{api_server}/dashboard{route}")
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        if name == "alerts":
            page.get_by_role("button", name="Details").first.click()
            expect(page.get_by_label("Called the patient", exact=True)).to_be_visible()
        if name == "overview":
            expect(page.get_by_role("img", name=re.compile("SpO2 over 24 h"))).to_be_visible()
        page.wait_for_load_state("networkidle")
        found[name] = axe_violations(page)
        page.screenshot(path=ARTIFACTS / f"dashboard-{name}-admin.png", full_page=True)
    page.goto(f"{api_server}/dashboard#/patients/{patient}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"#{patient} Synthetic Test Patient")
    expect(page.get_by_role("img", name=re.compile("^SpO2 chart"))).to_be_visible()
    page.wait_for_load_state("networkidle")
    found["patient"] = axe_violations(page)
    # A tablet in portrait: the same page, narrower, still usable and still clean.
    page.set_viewport_size({"width": 810, "height": 1080})
    page.goto(f"{api_server}/dashboard#/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    page.wait_for_load_state("networkidle")
    found["overview-tablet"] = axe_violations(page)
    page.screenshot(path=ARTIFACTS / "dashboard-tablet.png", full_page=True)

    bad = {name: v for name, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1)
    assert errors == []
    # The checker itself sees a real violation (an image without a text alternative).
    page.set_content("<html lang='en'><title>x</title><main><img src='/x.png'></main></html>")
    assert [v["id"] for v in axe_violations(page)] == ["image-alt"]


def test_patient_link_page_has_no_serious_accessibility_violations(
    client, nurse: dict[str, str], patient: int, api_server: str, chromium: Browser
) -> None:
    url = client.post(
        f"/api/v1/patients/{patient}/link", json={"send_sms": False}, headers=nurse
    ).json()["url"]
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(f"{api_server}{url[url.index('/p/') :]}")
        expect(page.get_by_role("button", name="Send målingen")).to_be_visible()
        assert axe_violations(page) == []
    finally:
        context.close()


def focus_by_tab(page: Page, name: str, role: str | None = None, limit: int = 80) -> None:
    """Press Tab until the focused element's accessible text starts with `name`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        label = page.evaluate(
            "() => { const e = document.activeElement; return [e.getAttribute('aria-label')"
            " || e.labels?.[0]?.textContent || e.textContent || '', e.tagName.toLowerCase()] }"
        )
        if label[0].strip().startswith(name) and (role is None or label[1] == role):
            return
    pytest.fail(f"Tab never reached {name!r}")


def test_keyboard_only_nurse_logs_in_takes_and_resolves_an_alert(
    db: psycopg.Connection, api_server: str, care_team, patient: int, browser_page: Page
) -> None:
    page = browser_page
    alert = seed(db, patient)
    nurse = care_team["nurse"]
    errors = open_dashboard(page, api_server)
    focus_by_tab(page, "Username", "input")
    page.keyboard.type(str(nurse["username"]))
    page.keyboard.press("Tab")
    page.keyboard.type(str(nurse["password"]))
    page.keyboard.press("Enter")
    expect(page.get_by_role("table", name="Patients")).to_contain_text("Synthetic Test Patient")

    focus_by_tab(page, "Alerts", "a")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Alert inbox")
    focus_by_tab(page, "Acknowledge alert", "button")
    page.keyboard.press("Enter")
    expect(page.get_by_text("taken by nurse")).to_be_visible()
    focus_by_tab(page, "Details", "button")
    page.keyboard.press("Enter")
    focus_by_tab(page, "Called the patient", "input")
    page.keyboard.press("Space")
    expect(page.get_by_text("Saved.")).to_be_visible()
    focus_by_tab(page, "Outcome", "select")
    # A closed <select> takes arrow keys: the first real choice is "Called the patient: stable".
    page.keyboard.press("ArrowDown")
    focus_by_tab(page, "Resolve", "button")
    page.keyboard.press("Enter")
    expect(page.get_by_text("No open alerts.")).to_be_visible()
    row = db.execute("SELECT status, outcome, resolved_by FROM alerts WHERE id = %s", (alert,))
    assert dict(row.fetchone()) == {
        "status": "resolved",
        "outcome": "called_stable",
        "resolved_by": nurse["id"],
    }
    # Focus is always visible: the focused element draws an outline.
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none" or page.evaluate("document.activeElement === document.body")
    assert errors == []


def test_language_is_chosen_per_user_and_remembered(
    db: psycopg.Connection, api_server: str, care_team, patient: int, chromium: Browser
) -> None:
    nurse = care_team["nurse"]
    open_alert(db, patient, kind="spo2_low", severity="amber", value=93)
    # A Norwegian browser gets bokmål before anyone has chosen.
    context = chromium.new_context(locale="nb-NO", viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        errors = open_dashboard(page, api_server)
        expect(page.get_by_role("button", name="Logg inn")).to_be_visible()
        expect(page.locator("html")).to_have_attribute("lang", "nb")
        # The nurse switches to English; the choice is stored with the user.
        page.get_by_label("Språk").select_option("en")
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        log_in(page, str(nurse["username"]), str(nurse["password"]))
        expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
        # The alert sound is switched off, and that too is kept with the user.
        page.get_by_role("button", name="Alert sound: on").click()
        expect(page.get_by_role("button", name="Alert sound: off")).to_have_attribute(
            "aria-pressed", "false"
        )
        page.get_by_label("Language").select_option("nb")
        expect(page.get_by_role("heading", level=1)).to_have_text("Pasienter")
        expect(page.get_by_role("navigation").get_by_role("link", name="Oversikt")).to_be_visible()
        expect(page.get_by_role("table", name="Pasienter")).to_contain_text(
            "Synthetic Test Patient"
        )
        # The alert's kind in her language (the engine's reason that follows is in English).
        expect(page.get_by_role("table", name="Pasienter")).to_contain_text(
            "Lav oksygenmetning (SpO2)"
        )
        wait_until(
            lambda: (
                db.execute(
                    "SELECT language = 'nb' AND NOT alert_sound AS ok FROM user_preferences"
                    " WHERE user_id = %s",
                    (nurse["id"],),
                ).fetchone()
                == {"ok": True}
            ),
            10,
            "the language and sound to be stored with the user",
        )
        assert errors == []
    finally:
        context.close()
    # On another computer with an English browser, the nurse's own choice wins after login.
    context = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        open_dashboard(page, api_server)
        log_in(page, str(nurse["username"]), str(nurse["password"]))
        expect(page.get_by_role("heading", level=1)).to_have_text("Pasienter")
        expect(page.get_by_role("button", name="Logg ut")).to_be_visible()
        expect(page.get_by_role("button", name="Varsellyd: av")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "dashboard-nb.png", full_page=True)
    finally:
        context.close()


def test_nurse_edits_bands_and_adds_a_note_on_the_patient_page(
    db: psycopg.Connection, api_server: str, care_team, patient: int, browser_page: Page
) -> None:
    page = browser_page
    nurse = care_team["nurse"]
    errors = open_dashboard(page, api_server)
    log_in(page, str(nurse["username"]), str(nurse["password"]))
    page.get_by_role("link", name=f"#{patient} Synthetic Test Patient").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"#{patient} Synthetic Test Patient")
    # A COPD patient: target 88–92%, amber at 87, red at 85.
    page.get_by_label("Red at or below (%)").fill("85")
    page.get_by_label("Amber at or below (%)").fill("87")
    page.get_by_label("Target range from (%)").fill("88")
    page.get_by_label("Target range to (%)").fill("92")
    page.get_by_label("Times (HH:MM, comma separated)").fill("09:00, 21:00")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.", exact=True)).to_be_visible()
    # The chart redraws with the new bands.
    expect(page.get_by_text("red at or below 85%")).to_be_visible()
    row = db.execute(
        "SELECT spo2_red_max_pct, spo2_amber_max_pct, spo2_target_min_pct, spo2_target_max_pct,"
        " schedule FROM patients WHERE id = %s",
        (patient,),
    ).fetchone()
    assert (row["spo2_red_max_pct"], row["spo2_amber_max_pct"]) == (85, 87)
    assert (row["spo2_target_min_pct"], row["spo2_target_max_pct"]) == (88, 92)
    assert row["schedule"]["times"] == ["09:00", "21:00"]
    # Inconsistent bands are refused with the reason, and nothing changes.
    page.get_by_label("Red at or below (%)").fill("90")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("form .msg.error")).to_be_visible()
    assert (
        db.execute("SELECT spo2_red_max_pct FROM patients WHERE id = %s", (patient,)).fetchone()[
            "spo2_red_max_pct"
        ]
        == 85
    )

    page.get_by_label("Note", exact=True).fill("Called: feels better, SpO2 95%.")
    page.get_by_role("button", name="Add note").click()
    notes = page.locator(".notes li")
    expect(notes.first).to_contain_text("Called: feels better, SpO2 95%.")
    expect(notes.first).to_contain_text("Test nurse")

    # Discharge: monitoring ends, the patient leaves the overview, the history stays.
    page.get_by_label("Reason (optional)").fill("Recovered")
    page.get_by_role("button", name="Discharge").click()  # not confirmed: nothing happens
    assert (
        db.execute("SELECT status FROM patients WHERE id = %s", (patient,)).fetchone()["status"]
        == "active"
    )
    page.get_by_label("Monitoring of this patient ends now; history is kept").check()
    page.get_by_role("button", name="Discharge").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients")
    expect(page.get_by_text("Synthetic Test Patient")).to_have_count(0)
    discharged = db.execute("SELECT status FROM patients WHERE id = %s", (patient,)).fetchone()
    assert discharged["status"] == "discharged"
    assert db.execute("SELECT count(*) AS n FROM patient_notes").fetchone()["n"] == 1
    assert errors == []
