"""Text messages that arrive: who sent them, what they mean, what to answer.

* Someone on the rota replies "ACK 12" → alert 12 is acknowledged in their name. A number not
  on the rota now (and not paged about that alert) acknowledges nothing.
* A registered patient texts a reading ("95 72") → it becomes a reading of the patient's
  virtual device `sms-<patient id>` (the caller publishes it to the broker, like any device),
  and the patient gets a confirmation in their language; a red value gets safety advice at
  once. Unreadable text gets an example. STOP, START and HELP do what people expect.
* A number we do not know gets a short polite answer and leaves no trace.

Replies go back in the webhook's answer (TwiML): they reach the sender even while the alerting
worker is down, cost no second API call, and Twilio threads them to the conversation. They are
kept with the inbound message (`sms_inbound.reply`), not in the outbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerting import messaging, rota
from alerting.engine import band
from alerting.lifecycle import AlertNotFoundError, AlertStateError, acknowledge
from alerting.profile import DEFAULT_PROFILE, Profile

SMS_DEVICE_PREFIX = "sms-"
DEVICE_CHANGES_CHANNEL = "oximon_devices"  # devices.registry: the ingest worker's cache drops it


def sms_device_id(patient_id: int) -> str:
    return f"{SMS_DEVICE_PREFIX}{patient_id}"


@dataclass
class Inbound:
    """What to do about one message: the reply, and a reading to publish (if any)."""

    reply: str | None
    outcome: str
    patient_id: int | None = None
    user_id: int | None = None
    reading: messaging.TextedReading | None = None
    device_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    duplicate: bool = False


def ensure_sms_device(conn: psycopg.Connection[Any], patient_id: int, now: datetime) -> str:
    """The patient's virtual device, registered (and assigned) on first use; no broker account:
    the API publishes for it with the service account."""
    device_id = sms_device_id(patient_id)
    created = conn.execute(
        "INSERT INTO devices (id, patient_id, model, credentials_issued_at)"
        " VALUES (%s, %s, 'sms', NULL) ON CONFLICT (id) DO NOTHING",
        (device_id, patient_id),
    ).rowcount
    if created:
        conn.execute(
            "INSERT INTO device_assignments (device_id, patient_id, assigned_at)"
            " VALUES (%s, %s, %s)",
            (device_id, patient_id, now),
        )
        payload = {"device_id": device_id, "change": "registered", "patient_id": patient_id}
        conn.execute("SELECT pg_notify(%s, %s)", (DEVICE_CHANGES_CHANNEL, json.dumps(payload)))
    return device_id


def _patient(conn: psycopg.Connection[Any], phone: str) -> dict[str, Any] | None:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, language, sms_opted_out, spo2_target_min_pct, spo2_target_max_pct,"
            " spo2_amber_max_pct, spo2_red_max_pct, pulse_red_min_bpm, pulse_red_max_bpm,"
            " alert_rules FROM patients"
            " WHERE phone = %s AND status = 'active'",
            (phone,),
        )
        .fetchone()
    )


def _clinician(conn: psycopg.Connection[Any], phone: str, now: datetime) -> int | None:
    """A user this number belongs to: on a shift now, or any active user with that phone."""
    on_rota = rota.rota_user_for_number(conn, phone, now)
    if on_rota is not None:
        return on_rota
    row = conn.execute(
        "SELECT id FROM users WHERE phone = %s AND active ORDER BY id LIMIT 1", (phone,)
    ).fetchone()
    return None if row is None else int(row["id"] if isinstance(row, dict) else row[0])


def _paged_user(conn: psycopg.Connection[Any], phone: str, alert_id: int) -> int | None:
    """The user this number was paged as about this alert (a shift may have ended since)."""
    row = conn.execute(
        "SELECT recipient_user_id FROM notifications WHERE alert_id = %s AND recipient = %s"
        " AND channel = 'sms' AND recipient_user_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        (alert_id, phone),
    ).fetchone()
    return (
        None if row is None else int(row["recipient_user_id"] if isinstance(row, dict) else row[0])
    )


def _acknowledge_by_sms(
    conn: psycopg.Connection[Any], phone: str, codes: list[int], now: datetime
) -> Inbound:
    on_rota = rota.rota_user_for_number(conn, phone, now)
    done: list[int] = []
    refused: dict[int, str] = {}
    acted_as: int | None = on_rota
    for code in codes:
        # Acting for the alert's care team: this number's shift on that team's rota, else its
        # shift on any rota, else the person it was paged as about this alert.
        team = rota.alert_care_team(conn, code)
        user_id = (
            (rota.rota_user_for_number(conn, phone, now, team) if team is not None else None)
            or on_rota
            or _paged_user(conn, phone, code)
        )
        if user_id is None:
            refused[code] = "this number is not on the on-call rota for it"
            continue
        acted_as = user_id
        if team is not None and not rota.is_member(conn, user_id, team):
            # Another team's alert: the same answer as an alert that does not exist.
            refused[code] = "no such alert"
            continue
        try:
            if acknowledge(conn, code, user_id, now, via="sms"):
                done.append(code)
            else:
                refused[code] = "already acknowledged"
        except AlertNotFoundError:
            refused[code] = "no such alert"
        except AlertStateError:
            refused[code] = "already resolved"
    if not done and codes and all(why.startswith("this number") for why in refused.values()):
        return Inbound(
            messaging.NOT_ON_ROTA,
            "ack_refused",
            user_id=acted_as or _clinician(conn, phone, now),
            detail={"codes": codes},
        )
    return Inbound(
        messaging.ack_reply(done, refused),
        "ack" if done else "ack_refused",
        user_id=acted_as or _clinician(conn, phone, now),
        detail={"codes": codes, "acknowledged": done},
    )


def _from_clinician(conn: psycopg.Connection[Any], user_id: int, text: str) -> Inbound:
    word = messaging.keyword(text)
    if word in ("stop", "start"):
        # Someone who opts out is skipped by the escalation (the next person is called).
        conn.execute("UPDATE users SET sms_opted_out = %s WHERE id = %s", (word == "stop", user_id))
        reply = messaging.CLINICIAN_STOP if word == "stop" else messaging.CLINICIAN_START
        return Inbound(reply, word, user_id=user_id)
    return Inbound(messaging.CLINICIAN_HELP, "help", user_id=user_id)


def _severity(
    patient: dict[str, Any], texted: messaging.TextedReading, now: datetime | None = None
) -> str:
    """Where the texted reading sits in the patient's own bands, judged as the engine judges
    it (alerting.profile, alerting.engine): a COPD patient texting 89% inside a target of
    88–92% is told it is recorded, not that it is outside their limits. `patient` is their
    `patients` row (bands, target range, alert_rules; missing columns take the defaults)."""
    try:
        profile = Profile.from_row(patient)
    except (ValueError, TypeError):
        profile = DEFAULT_PROFILE  # a row the ingest worker would also judge on the defaults
    return band(profile, texted.spo2_pct, texted.pulse_bpm)


def _from_patient(
    conn: psycopg.Connection[Any], patient: dict[str, Any], text: str, now: datetime
) -> Inbound:
    pid, language = patient["id"], patient["language"]
    word = messaging.keyword(text)
    if word == "stop":
        conn.execute(
            "UPDATE patients SET sms_opted_out = true, sms_opted_out_at = %s WHERE id = %s",
            (now, pid),
        )
        return Inbound(messaging.patient_text("stop", language), "stop", patient_id=pid)
    if word == "start":
        conn.execute(
            "UPDATE patients SET sms_opted_out = false, sms_opted_out_at = NULL WHERE id = %s",
            (pid,),
        )
        return Inbound(messaging.patient_text("start", language), "start", patient_id=pid)
    if word == "help":
        return Inbound(messaging.patient_text("help", language), "help", patient_id=pid)
    # An opted-out patient's readings are still taken; only the answer is held back.
    quiet = bool(patient["sms_opted_out"])
    texted = messaging.parse_reading(text)
    if texted is None:
        reply = None if quiet else messaging.patient_text("unreadable", language)
        return Inbound(reply, "unreadable", patient_id=pid)
    severity = _severity(patient, texted)
    device_id = ensure_sms_device(conn, pid, now)
    return Inbound(
        None if quiet else messaging.patient_text(severity, language, texted),
        "reading",
        patient_id=pid,
        reading=texted,
        device_id=device_id,
        detail={"spo2": texted.spo2_pct, "pulse": texted.pulse_bpm, "severity": severity},
    )


def handle(
    conn: psycopg.Connection[Any],
    phone: str,
    text: str,
    message_sid: str | None,
    now: datetime,
) -> Inbound:
    """Decide what one inbound message means, inside the caller's transaction, and record it
    (known senders only). A retry of a message already handled returns its first answer."""
    if message_sid:
        seen = conn.execute(
            "SELECT reply, outcome FROM sms_inbound WHERE provider_id = %s", (message_sid,)
        ).fetchone()
        if seen is not None:
            reply = seen["reply"] if isinstance(seen, dict) else seen[0]
            outcome = seen["outcome"] if isinstance(seen, dict) else seen[1]
            return Inbound(reply, outcome, duplicate=True)
    codes = messaging.parse_ack(text)
    patient = _patient(conn, phone)
    clinician = _clinician(conn, phone, now)
    result: Inbound | None
    if codes and (clinician is not None or patient is None):
        result = _acknowledge_by_sms(conn, phone, codes, now)
    elif patient is not None and not (codes is not None and clinician is not None):
        result = _from_patient(conn, patient, text, now)
    elif clinician is not None:
        result = _from_clinician(conn, clinician, text)
    else:
        result = None
    if result is None or (result.patient_id is None and result.user_id is None):
        return Inbound(messaging.UNKNOWN_NUMBER, "unknown_number")
    conn.execute(
        "INSERT INTO sms_inbound (received_at, provider_id, patient_id, user_id, body, outcome,"
        " reply, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            now,
            message_sid,
            result.patient_id,
            result.user_id,
            text,
            result.outcome,
            result.reply,
            Jsonb(result.detail),
        ),
    )
    return result
