"""SMS both ways: Twilio's webhooks (signature, patients texting readings, STOP/START/HELP,
acknowledgement by reply) and outgoing messages through the real twilio library to a local
server that speaks Twilio's Messages API and posts status callbacks."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from alerting import messaging
from alerting.lifecycle import apply_decisions
from core.settings import Settings
from tests import alerting_support
from tests.alerting_support import (
    ACCOUNT_SID,
    NURSE,
    NURSE2,
    add_patient,
    add_user,
    red,
    rota,
    twilio_settings,
)
from tests.helpers import wait_until
from tests.twilio_fake import FakeTwilio

# Fixtures shared with the other alerting tests.
twilio = alerting_support.twilio

INBOUND = "http://testserver/api/v1/sms/inbound"
STATUS = "http://testserver/api/v1/sms/status"
PATIENT_NB, PATIENT_EN = "+4791000001", "+4791000002"


@pytest.fixture
def settings(settings: Settings, twilio: FakeTwilio) -> Settings:
    return twilio_settings(settings, twilio.url)


def now() -> datetime:
    return datetime.now(UTC)


def count(db: psycopg.Connection, sql: str, *params: object) -> int:
    return int(db.execute(f"SELECT count(*) AS n FROM {sql}", params).fetchone()["n"])


def audit(db: psycopg.Connection, name: str) -> int:
    row = db.execute("SELECT count FROM audit_counts WHERE name = %s", (name,)).fetchone()
    return int(row["count"]) if row else 0


def reply_text(res: httpx.Response) -> str | None:
    """The <Message> of a TwiML answer (None when it answers nothing)."""
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("application/xml")
    if "<Message>" not in res.text:
        return None
    return res.text.split("<Message>")[1].split("</Message>")[0]


# --- reading what people text (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("95 72", (95, 72)),
        ("spo2 95 pulse 72", (95, 72)),
        ("O2 95% puls 72", (95, 72)),
        ("SpO2: 95%, puls: 72", (95, 72)),
        ("puls 72, metning 95", (95, 72)),  # labels win over order
        ("72 bpm 95%", (95, 72)),
        ("95/72", (95, 72)),
        ("Sp02 93 HR 101", (93, 101)),  # a zero for an O
        ("sats 88 pulse 112", (88, 112)),
        ("110 95", (95, 110)),  # only pulse-then-SpO2 makes sense
        ("95", None),  # one number is not a reading
        ("95 72 80", None),
        ("95.5 72", None),
        ("o2 95 o2 96", None),
        ("jeg er dårlig", None),
        ("40 72", None),  # SpO2 40%: more likely a typo than a value to store
        ("95 12", None),
    ],
)
def test_a_texted_reading_is_read_in_free_form_or_not_at_all(
    text: str, expected: tuple[int, int] | None
) -> None:
    found = messaging.parse_reading(text)
    assert (None if found is None else (found.spo2_pct, found.pulse_bpm)) == expected


@pytest.mark.parametrize(
    ("text", "codes"),
    [("ACK 12", [12]), ("ack #12, 13", [12, 13]), ("Ack", []), ("acknowledge 12", None)],
)
def test_an_ack_reply_carries_its_codes(text: str, codes: list[int] | None) -> None:
    assert messaging.parse_ack(text) == codes


# --- the webhook's signature ----------------------------------------------------------------------


def test_a_bad_or_missing_signature_is_refused_and_only_counted(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio
) -> None:
    add_patient(db, PATIENT_NB)
    before = audit(db, "sms_inbound_bad_signature")
    params = {"From": PATIENT_NB, "Body": "95 72", "MessageSid": "SM" + "1" * 32}
    forged = client.post(INBOUND, data=params, headers={"X-Twilio-Signature": "bm90IHRoaXM="})
    unsigned = client.post(INBOUND, data=params)
    other_url = client.post(
        INBOUND, data=params, headers={"X-Twilio-Signature": twilio.sign(STATUS, params)}
    )
    assert [r.status_code for r in (forged, unsigned, other_url)] == [403, 403, 403]
    assert audit(db, "sms_inbound_bad_signature") == before + 3
    assert count(db, "sms_inbound") == 0 and count(db, "readings") == 0
    status_before = audit(db, "sms_status_bad_signature")
    res = client.post(STATUS, data={"MessageSid": "SMx", "MessageStatus": "delivered"})
    assert res.status_code == 403
    assert audit(db, "sms_status_bad_signature") == status_before + 1


# --- patients texting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("95 72", "nb", "Takk! Registrert: SpO2 95 %, puls 72."),
        ("spo2 95 pulse 72", "en", "Thank you! Recorded: SpO2 95%, pulse 72."),
        ("O2 95% puls 72", "nb", "Takk! Registrert: SpO2 95 %, puls 72."),
    ],
)
def test_a_patient_texts_a_reading_in_free_form_and_it_is_stored_as_an_sms_reading(
    client: TestClient,
    db: psycopg.Connection,
    twilio: FakeTwilio,
    ingest,  # noqa: ANN001
    text: str,
    language: str,
    expected: str,
) -> None:
    patient = add_patient(db, PATIENT_NB, language)
    res = twilio.inbound(client, INBOUND, PATIENT_NB, text)
    assert reply_text(res) == expected
    row = wait_until(lambda: db.execute("SELECT * FROM readings").fetchone(), what="the reading")
    assert (row["patient_id"], row["spo2"], row["pulse"], row["source"], row["device_id"]) == (
        patient,
        95,
        72,
        "sms",
        f"sms-{patient}",
    )
    device = db.execute("SELECT patient_id, model FROM devices WHERE id = %s", (f"sms-{patient}",))
    assert device.fetchone() == {"patient_id": patient, "model": "sms"}
    inbound = db.execute("SELECT patient_id, outcome, detail FROM sms_inbound").fetchone()
    assert (inbound["patient_id"], inbound["outcome"], inbound["detail"]["spo2"]) == (
        patient,
        "reading",
        95,
    )


def test_a_red_reading_by_sms_gets_safety_advice_at_once_and_pages_the_nurse(
    client: TestClient,
    db: psycopg.Connection,
    twilio: FakeTwilio,
    ingest,  # noqa: ANN001
) -> None:
    rota(db, now())
    patient = add_patient(db, PATIENT_EN, "en")
    reply = reply_text(twilio.inbound(client, INBOUND, PATIENT_EN, "sats 88 pulse 112"))
    assert reply is not None and "outside the limits set for you" in reply
    assert "measure again" in reply and "call 113 now" in reply
    alert = wait_until(
        lambda: db.execute("SELECT * FROM alerts WHERE patient_id = %s", (patient,)).fetchone(),
        what="the red alert",
    )
    assert (alert["kind"], alert["severity"]) == ("spo2_low", "red")
    page = db.execute("SELECT recipient FROM notifications WHERE channel = 'sms'").fetchone()
    assert page["recipient"] == NURSE


@pytest.mark.parametrize(
    ("text", "rules", "told"),
    [
        ("89 80", {}, "Thank you! Recorded: SpO2 89%, pulse 80."),  # inside the target range
        ("93 80", {}, "Thank you! Recorded: SpO2 93%, pulse 80."),  # above it, on air
        ("86 80", {}, "A nurse will look at it."),  # two points below: amber (scale 2)
        ("85 80", {}, "outside the limits set for you"),  # three below: red
        ("90 118", {"pulse_amber_alerts": True}, "A nurse will look at it."),  # her own rule
    ],
)
def test_a_texted_reading_is_answered_by_the_patients_own_bands(
    client: TestClient,
    db: psycopg.Connection,
    twilio: FakeTwilio,
    text: str,
    rules: dict[str, object],
    told: str,
) -> None:
    # A COPD patient with a prescribed target of 88–92% (NEWS2 SpO2 scale 2), as the engine
    # judges her: the reply must say what the nurses will see, not the default bands.
    patient = add_patient(db, PATIENT_EN, "en")
    db.execute(
        "UPDATE patients SET spo2_target_min_pct = 88, spo2_target_max_pct = 92,"
        " spo2_amber_max_pct = 87, spo2_red_max_pct = 85, alert_rules = %s WHERE id = %s",
        (Jsonb(rules), patient),
    )
    reply = reply_text(twilio.inbound(client, INBOUND, PATIENT_EN, text))
    assert reply is not None and told in reply
    if "limits" not in told:
        assert "outside the limits" not in reply


def test_unreadable_text_gets_an_example_and_stores_no_reading(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio
) -> None:
    add_patient(db, PATIENT_NB, "nb")
    reply = reply_text(twilio.inbound(client, INBOUND, PATIENT_NB, "føler meg sliten i dag"))
    assert reply is not None and "for eksempel: 95 72" in reply
    assert count(db, "readings") == 0
    kept = db.execute("SELECT body, outcome FROM sms_inbound").fetchone()
    assert kept == {"body": "føler meg sliten i dag", "outcome": "unreadable"}


def test_an_unknown_number_gets_a_polite_reply_and_nothing_is_stored(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio
) -> None:
    reply = reply_text(twilio.inbound(client, INBOUND, "+4790000999", "95 72"))
    assert reply is not None and "not registered" in reply and "ikke registrert" in reply
    assert count(db, "sms_inbound") == 0 and count(db, "readings") == 0
    assert count(db, "devices") == 0


def test_stop_start_and_help_do_what_people_expect(
    client: TestClient,
    db: psycopg.Connection,
    twilio: FakeTwilio,
    ingest,  # noqa: ANN001
) -> None:
    patient = add_patient(db, PATIENT_NB, "nb")
    helped = reply_text(twilio.inbound(client, INBOUND, PATIENT_NB, "HJELP"))
    assert helped is not None and "«95 72»" in helped and "STOPP" in helped
    stopped = reply_text(twilio.inbound(client, INBOUND, PATIENT_NB, "Stop"))
    assert stopped is not None and "ikke flere SMS" in stopped
    opted = db.execute("SELECT sms_opted_out FROM patients WHERE id = %s", (patient,)).fetchone()
    assert opted["sms_opted_out"] is True
    # Still a patient: the reading is taken, but no text goes back.
    assert reply_text(twilio.inbound(client, INBOUND, PATIENT_NB, "96 70")) is None
    wait_until(lambda: count(db, "readings") == 1, what="the reading of an opted-out patient")
    started = reply_text(twilio.inbound(client, INBOUND, PATIENT_NB, "START"))
    assert started is not None and "slått på igjen" in started
    opted = db.execute("SELECT sms_opted_out FROM patients WHERE id = %s", (patient,)).fetchone()
    assert opted["sms_opted_out"] is False


def test_twilio_retrying_a_webhook_is_answered_the_same_and_stored_once(
    client: TestClient,
    db: psycopg.Connection,
    twilio: FakeTwilio,
    ingest,  # noqa: ANN001
) -> None:
    add_patient(db, PATIENT_NB, "nb")
    first = twilio.inbound(client, INBOUND, PATIENT_NB, "95 72", sid="SM" + "7" * 32)
    again = twilio.inbound(client, INBOUND, PATIENT_NB, "95 72", sid="SM" + "7" * 32)
    assert reply_text(first) == reply_text(again)
    twilio.inbound(client, INBOUND, PATIENT_NB, "97 70")  # a marker after the retry
    wait_until(lambda: count(db, "readings") >= 2, what="two readings")
    assert count(db, "sms_inbound") == 2
    assert count(db, "readings WHERE spo2 = 95") == 1


# --- clinicians replying --------------------------------------------------------------------------


def test_ack_by_reply_works_only_from_a_number_on_the_rota(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio, patient: int
) -> None:
    ids = rota(db, now())
    off_duty = add_user(db, "off-duty", "nurse", "+4799000055")
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, now())], now())
    alert = applied.alert_id
    refused = reply_text(twilio.inbound(client, INBOUND, "+4799000055", f"ACK {alert}"))
    assert refused is not None and "not on the on-call rota" in refused
    stranger = reply_text(twilio.inbound(client, INBOUND, "+4790000999", f"ACK {alert}"))
    assert stranger is not None and "not registered" in stranger
    status = db.execute("SELECT status FROM alerts WHERE id = %s", (alert,)).fetchone()
    assert status["status"] == "open"

    done = reply_text(twilio.inbound(client, INBOUND, NURSE2, f"ack {alert}"))
    assert done == f"Acknowledged: #{alert}. Thank you."
    row = db.execute(
        "SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert (row["status"], row["acknowledged_by"]) == ("acknowledged", ids["nurse2"])
    event = db.execute(
        "SELECT user_id, detail FROM alert_events WHERE action = 'acknowledged'"
    ).fetchone()
    assert (event["user_id"], event["detail"]) == (ids["nurse2"], {"via": "sms"})
    late = reply_text(twilio.inbound(client, INBOUND, NURSE, f"ACK {alert} 999999"))
    assert late == f"#{alert}: already acknowledged. #999999: no such alert."
    assert off_duty  # kept: the account exists, it is just not on duty


# --- outgoing ------------------------------------------------------------------------------------


def wait_state(db: psycopg.Connection, state: str, timeout_s: float = 20) -> list[dict]:
    return wait_until(
        lambda: (
            (
                rows := db.execute(
                    "SELECT * FROM notifications WHERE channel = 'sms' ORDER BY id"
                ).fetchall()
            )
            and all(r["state"] == state for r in rows)
            and rows
        ),
        timeout_s,
        f"every SMS {state}",
    )


def test_a_page_goes_through_twilio_and_its_status_callbacks_are_recorded(
    db: psycopg.Connection,
    twilio: FakeTwilio,
    api_server: str,
    service_factory,  # noqa: ANN001
    patient: int,
) -> None:
    rota(db, now())
    service_factory(
        "alerting", ready="alerting_started", alerting_watchdog=False, public_url=api_server
    )
    with db.transaction():
        [applied] = apply_decisions(db, [red(patient, now())], now())
    [message] = twilio.wait_for(lambda ms: ms, what="the nurse's page")
    assert (message.to, message.from_) == (NURSE, "+4759440000")
    assert f"Reply ACK {applied.alert_id}" in message.body
    assert message.status_callback == f"{api_server}/api/v1/sms/status"
    [row] = wait_state(db, "delivered")
    assert (row["provider_id"], row["provider_status"], row["attempts"]) == (
        message.sid,
        "delivered",
        1,
    )
    assert [status for status, _ in message.callbacks] == ["sent", "delivered"]
    assert all(code == 204 for _, code in message.callbacks)


def test_transient_twilio_errors_are_retried_with_backoff(
    db: psycopg.Connection,
    twilio: FakeTwilio,
    service_factory,
    patient: int,  # noqa: ANN001
) -> None:
    rota(db, now())
    twilio.behave(NURSE, transient=2)
    service_factory("alerting", ready="alerting_started", alerting_watchdog=False)
    with db.transaction():
        apply_decisions(db, [red(patient, now())], now())
    [message] = twilio.wait_for(lambda ms: ms, timeout_s=30, what="the page after two 503s")
    assert message.to == NURSE
    assert twilio.refused == [(503, "20503"), (503, "20503")]
    [row] = wait_state(db, "queued")  # no public URL given: no callbacks asked for
    assert row["attempts"] == 3


def test_callbacks_never_move_a_message_backwards(
    client: TestClient, db: psycopg.Connection, twilio: FakeTwilio, patient: int
) -> None:
    with db.transaction():
        apply_decisions(db, [red(patient, now())], now())
    db.execute(
        "INSERT INTO notifications (created_at, channel, recipient, body, state, next_attempt_at,"
        " provider_id) VALUES (now(), 'sms', %s, 'x', 'queued', now(), 'SMabc')",
        (NURSE,),
    )
    for status in ("delivered", "sent"):
        params = {"MessageSid": "SMabc", "MessageStatus": status, "AccountSid": ACCOUNT_SID}
        res = client.post(
            STATUS, data=params, headers={"X-Twilio-Signature": twilio.sign(STATUS, params)}
        )
        assert res.status_code == 204
    row = db.execute("SELECT state FROM notifications WHERE provider_id = 'SMabc'").fetchone()
    assert row["state"] == "delivered"


def test_several_alerting_workers_send_each_message_once(
    db: psycopg.Connection,
    twilio: FakeTwilio,
    service_factory,  # noqa: ANN001
) -> None:
    numbers = [f"+47980000{i:02d}" for i in range(40)]
    for number in numbers:
        db.execute(
            "INSERT INTO notifications (created_at, channel, recipient, body, next_attempt_at)"
            " VALUES (now(), 'sms', %s, 'oximon test', now() - interval '1 second')",
            (number,),
        )
    for _ in range(3):
        service_factory("alerting", ready="alerting_started", alerting_watchdog=False)
    twilio.wait_for(lambda ms: len(ms) >= 40, what="40 messages")
    wait_state(db, "queued")
    assert sorted(m.to for m in twilio.messages) == numbers
