"""Twilio's webhooks: inbound SMS and message status callbacks, signature checked.

A request whose `X-Twilio-Signature` is missing or wrong (or that arrives while no Twilio auth
token is configured, so nothing can be checked) is refused with 403, and nothing of it is kept
but a count (`audit_counts`, and the Prometheus counter `oximon_sms_webhook_refused_total`).

Replies to inbound messages are TwiML in the webhook's answer (see `alerting.inbound`). A
texted reading is published to the broker as a reading of the patient's virtual device
`sms-<patient id>`, after the transaction that registers that device has committed, so the
ingest worker always finds it.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

import paho.mqtt.client as mqtt
import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from prometheus_client import Counter
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from alerting import inbound, messaging
from alerting.config import public_url
from alerting.outbox import record_status
from api import audit
from api.deps import Conn
from api.scope import PATIENT_ID_IN_SCOPE
from api.security import Clinician
from core.logs import event
from core.settings import Settings
from devices.broker import parse_mqtt_url
from devices.contract import readings_topic

log = logging.getLogger("oximon.api")
router = APIRouter()

REFUSED = Counter(
    "oximon_sms_webhook_refused_total",
    "Twilio webhook requests refused (bad or missing signature)",
    ["webhook"],
)
PUBLISH_TIMEOUT_S = 5.0


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.multi_items()}


Form = Annotated[dict[str, str], Depends(_form)]


def _audit(conn: psycopg.Connection[Any], name: str, now: datetime) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO audit_counts (name, count, last_at) VALUES (%s, 1, %s)"
            " ON CONFLICT (name) DO UPDATE SET count = audit_counts.count + 1,"
            " last_at = EXCLUDED.last_at",
            (name, now),
        )


def _verify(
    request: Request, form: dict[str, str], conn: psycopg.Connection[Any], hook: str
) -> None:
    """403 unless Twilio signed this request with our auth token."""
    settings: Settings = request.app.state.settings
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    signature = request.headers.get("X-Twilio-Signature", "")
    base = public_url(settings)
    # The URL Twilio signed: the public one when we sit behind a proxy, else as it arrived.
    url = str(request.url)
    if base:
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if token and signature and RequestValidator(token).validate(url, form, signature):
        return
    REFUSED.labels(webhook=hook).inc()
    _audit(conn, f"sms_{hook}_bad_signature", request.app.state.clock.now())
    event(log, "sms_webhook_refused", logging.WARNING, webhook=hook, signed=bool(signature))
    raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid or missing Twilio signature")


def _twiml(reply: str | None) -> Response:
    response = MessagingResponse()
    if reply:
        response.message(reply)
    return Response(str(response), media_type="application/xml")


def _publish(
    settings: Settings, device_id: str, now: datetime, reading: messaging.TextedReading
) -> None:
    """Publish one texted reading as its virtual device, QoS 1, and wait for the broker's ack."""
    cfg = parse_mqtt_url(settings.mqtt_url)
    payload = {
        "ts": now.isoformat(),
        "spo2": reading.spo2_pct,
        "pulse": reading.pulse_bpm,
        "quality": "ok",
    }
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"oximon-api-sms-{uuid.uuid4().hex[:12]}"
    )
    if cfg["username"]:
        client.username_pw_set(cfg["username"], cfg["password"])
    if cfg["tls"]:
        client.tls_set()
    client.connect(cfg["host"], cfg["port"], keepalive=30)
    client.loop_start()
    try:
        info = client.publish(readings_topic(device_id), json.dumps(payload), qos=1)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise TimeoutError("the broker did not acknowledge the reading")
    finally:
        client.disconnect()
        client.loop_stop()


@router.post("/api/v1/sms/inbound", tags=["messaging"], response_class=Response)
def sms_inbound(request: Request, form: Form, conn: Conn) -> Response:
    """Twilio's inbound-message webhook. Answers in TwiML."""
    _verify(request, form, conn, "inbound")
    now = request.app.state.clock.now()
    phone, text, sid = form.get("From", ""), form.get("Body", ""), form.get("MessageSid")
    with conn.transaction():
        result = inbound.handle(conn, phone, text, sid, now)
    if result.reading is not None and result.device_id and not result.duplicate:
        try:
            _publish(request.app.state.settings, result.device_id, now, result.reading)
        except Exception as exc:  # noqa: BLE001 - the patient must hear that it did not work
            row = conn.execute(
                "SELECT language FROM patients WHERE id = %s", (result.patient_id,)
            ).fetchone()
            result.reply = messaging.patient_text("not_saved", row["language"] if row else None)
            with conn.transaction():
                conn.execute(
                    "UPDATE sms_inbound SET outcome = 'publish_failed', reply = %s"
                    " WHERE provider_id = %s",
                    (result.reply, sid),
                )
            event(log, "sms_reading_publish_failed", logging.ERROR, error=type(exc).__name__)
    event(
        log,
        "sms_inbound",
        outcome=result.outcome,
        patient_id=result.patient_id,
        user_id=result.user_id,
        duplicate=result.duplicate,
    )
    return _twiml(result.reply)


@router.post("/api/v1/sms/status", tags=["messaging"], status_code=204)
def sms_status(request: Request, form: Form, conn: Conn) -> Response:
    """Twilio's status callback for a message we sent: queued, sent, delivered, failed …"""
    _verify(request, form, conn, "status")
    sid = form.get("MessageSid") or form.get("SmsSid")
    state = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not state:
        raise HTTPException(422, "MessageSid and MessageStatus: both are needed")
    changed = record_status(
        conn, sid, state, form.get("ErrorCode") or None, request.app.state.clock.now()
    )
    event(log, "sms_status", provider_id=sid, status=state, changed=changed)
    return Response(status_code=204)


@router.get("/api/v1/sms/inbound", tags=["messaging"])
def list_inbound(
    user: Clinician, conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Text messages received from patients and clinicians, newest first."""
    rows = conn.execute(
        "SELECT id, received_at, patient_id, user_id, body, outcome, reply, detail"
        f" FROM sms_inbound WHERE patient_id IN ({PATIENT_ID_IN_SCOPE}) OR user_id = %(user_id)s"
        " ORDER BY received_at DESC, id DESC LIMIT %(limit)s",
        {"limit": limit, "user_id": user.id},
    ).fetchall()
    audit.record(
        conn,
        user,
        "sms_inbound.read",
        patients=sorted({r["patient_id"] for r in rows if r["patient_id"] is not None}),
    )
    return rows
