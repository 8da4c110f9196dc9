"""Personal reading links: a nurse texts a patient a link; the phone-sized page it opens takes a
reading into the platform through the broker, like a texted one, and answers as an SMS would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from psycopg.types.json import Jsonb

from alerting import messaging
from api.patient_link import make_token, read_token
from core.settings import Settings
from tests.helpers import wait_until

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _link(client: TestClient, headers: dict[str, str], patient: int, **body: object) -> dict:
    res = client.post(f"/api/v1/patients/{patient}/link", json=body, headers=headers)
    assert res.status_code == 201, res.text
    return res.json()


def _token(url: str) -> str:
    return url.rsplit("/p/", 1)[1]


def test_nurse_texts_a_link_that_goes_through_the_outbox(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection, care_team
) -> None:
    link = _link(client, nurse, patient)
    assert "/p/" in link["url"]
    # Short enough for one SMS with the sentence around it.
    assert len(_token(link["url"])) <= 40
    sms = db.execute(
        "SELECT recipient, patient_id, body, state FROM notifications WHERE id = %s",
        (link["notification_id"],),
    ).fetchone()
    assert sms["recipient"] == "+4791000001"
    assert sms["patient_id"] == patient
    assert link["url"] in sms["body"]
    assert sms["body"].startswith("Hjemmesykepleien")  # the patient's language (nb by default)
    made = db.execute("SELECT created_by, expires_at FROM patient_links").fetchone()
    assert made["created_by"] == care_team["nurse"]["id"]
    # The nurse sees who made it in the patient's list of links.
    listed = client.get(f"/api/v1/patients/{patient}/links", headers=nurse).json()
    assert listed[0]["created_by"] == "nurse"


def test_link_without_a_phone_or_after_stop_is_refused_naming_the_field(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection
) -> None:
    db.execute("UPDATE patients SET sms_opted_out = true WHERE id = %s", (patient,))
    res = client.post(f"/api/v1/patients/{patient}/link", json={}, headers=nurse)
    assert res.status_code == 422
    assert "send_sms" in res.text
    db.execute("UPDATE patients SET phone = NULL WHERE id = %s", (patient,))
    res = client.post(f"/api/v1/patients/{patient}/link", json={"days": 0}, headers=nurse)
    assert res.status_code == 422
    assert "days" in res.text
    # Without texting it, the nurse still gets a link to hand over.
    link = _link(client, nurse, patient, send_sms=False)
    assert link["notification_id"] is None


def test_a_forged_expired_or_revoked_link_opens_nothing(
    client: TestClient, nurse: dict[str, str], patient: int, settings: Settings
) -> None:
    link = _link(client, nurse, patient, send_sms=False)
    token = _token(link["url"])
    assert client.get(f"/api/v1/patient-link/{token}").status_code == 200
    link_id, expires = read_token(settings, token)  # type: ignore[misc]

    forged = make_token(settings, link_id + 1, expires)
    assert client.get(f"/api/v1/patient-link/{forged}").status_code == 404
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(f"/api/v1/patient-link/{tampered}").status_code == 404
    # Signed with another installation's secret.
    other = Settings(jwt_secret="another-secret-entirely-0123456789abcdef")  # noqa: S106
    foreign = make_token(other, link_id, expires)
    assert client.get(f"/api/v1/patient-link/{foreign}").status_code == 404
    expired = make_token(settings, link_id, datetime.now(UTC) - timedelta(seconds=1))
    assert client.get(f"/api/v1/patient-link/{expired}").status_code == 410

    res = client.post(f"/api/v1/patients/{patient}/links/revoke", headers=nurse)
    assert res.json() == {"revoked": 1}
    gone = client.get(f"/api/v1/patient-link/{token}")
    assert gone.status_code == 410
    assert "expired" in gone.json()["detail"]["en"]
    res = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 95, "pulse": 70})
    assert res.status_code == 410


def test_bad_values_are_refused_naming_the_field_and_nothing_is_published(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection
) -> None:
    token = _token(_link(client, nurse, patient, send_sms=False)["url"])
    res = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 140, "pulse": 70})
    assert res.status_code == 422
    assert "spo2" in res.text
    res = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 95})
    assert res.status_code == 422
    assert "pulse" in res.text
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 0


def test_the_reply_follows_the_patients_own_alert_rules(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection, ingest
) -> None:
    """Judged by the patient's own rules, as the engine and the SMS reply judge it: with graded
    pulse alerts switched on for this patient, a pulse of 120 is for a nurse to look at."""
    db.execute(
        "UPDATE patients SET language = 'en', alert_rules = %s WHERE id = %s",
        (Jsonb({"pulse_amber_alerts": True}), patient),
    )
    token = _token(_link(client, nurse, patient, send_sms=False)["url"])
    res = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 97, "pulse": 120})
    assert res.status_code == 202, res.text
    amber = messaging.patient_text("amber", "en", messaging.TextedReading(97, 120))
    assert amber in res.text


def test_a_second_reading_within_half_a_minute_is_refused_in_the_patients_language(
    client: TestClient, nurse: dict[str, str], patient: int, db: psycopg.Connection, ingest
) -> None:
    token = _token(_link(client, nurse, patient, send_sms=False)["url"])
    first = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 96, "pulse": 70})
    assert first.status_code == 202, first.text
    again = client.post(f"/api/v1/patient-link/{token}/readings", json={"spo2": 96, "pulse": 70})
    assert again.status_code == 429
    assert "Vent et halvt minutt" in again.json()["detail"]["nb"]
    wait_until(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 1,
        15,
        "the first reading to be stored",
    )


def test_patient_enters_a_red_reading_on_the_page_and_it_arrives_through_mqtt(
    client: TestClient,
    nurse: dict[str, str],
    patient: int,
    db: psycopg.Connection,
    api_server: str,
    ingest,
    chromium: Browser,
) -> None:
    db.execute("UPDATE patients SET language = 'en' WHERE id = %s", (patient,))
    url = _link(client, nurse, patient, send_sms=False)["url"]
    path = url[url.index("/p/") :]
    # A phone: narrow, touch, English browser (the page follows the patient's language anyway).
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="en-GB"
    )
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{api_server}{path}")
        expect(page.get_by_text("No readings yet.")).to_be_visible()
        # A value out of range is caught on the page, with words, before anything is sent.
        page.get_by_label("Oxygen level (SpO2), %").fill("150")
        page.get_by_label("Pulse, beats per minute").fill("72")
        page.get_by_role("button", name="Send reading").click()
        hint = page.get_by_text("Enter your oxygen level as a number from 50 to 100.")
        expect(hint).to_be_visible()

        page.get_by_label("Oxygen level (SpO2), %").fill("88")
        page.get_by_role("button", name="Send reading").click()
        # The same words an SMS reply would carry, safety advice included.
        reply = messaging.patient_text("red", "en", messaging.TextedReading(88, 72))
        expect(page.get_by_role("status")).to_have_text(reply, timeout=15_000)
        stored = wait_until(
            lambda: db.execute(
                "SELECT device_id, spo2, pulse, source FROM readings WHERE patient_id = %s",
                (patient,),
            ).fetchone(),
            15,
            "the reading to be stored by the ingest worker",
        )
        assert stored == {
            "device_id": f"sms-{patient}",
            "spo2": 88,
            "pulse": 72,
            "source": "sms",
        }
        # The engine judged it like any reading: a red alert for the nurses.
        alert = wait_until(
            lambda: db.execute(
                "SELECT severity FROM alerts WHERE patient_id = %s", (patient,)
            ).fetchone(),
            15,
            "the red alert",
        )
        assert alert["severity"] == "red"
        # The patient sees it among their own last readings, no longer "on its way".
        rows = page.locator("#last-body tr")
        expect(rows).to_have_count(1, timeout=15_000)
        expect(rows.first).to_contain_text("88 %")
        expect(rows.first).not_to_contain_text("on its way")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "patient-link.png", full_page=True)
        assert errors == []
    finally:
        context.close()
