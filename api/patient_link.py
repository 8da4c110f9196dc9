"""Personal reading links: a nurse sends a patient without a connected oximeter a link by SMS;
the link opens a phone-sized page where the patient enters SpO2 and pulse.

The token in the link is short enough for one SMS: a `patient_links` row id and its expiry,
signed with an HMAC of the API's secret. No password: whoever holds the link can submit
readings for that one patient and see that patient's last readings (nothing else: no name, no
alerts), until it expires or a nurse revokes it.

A submitted reading takes the path of a texted one (`api.sms`): the same parsing limits, the
same reply text and safety advice (`alerting.messaging`), and it is published to the broker as a
reading of the patient's virtual device `sms-<patient id>`, so the ingest worker stores and
evaluates it like every other reading.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import struct
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from alerting import escalation, inbound, messaging
from alerting.config import public_url
from api.deps import Conn, Now
from api.scope import ScopedPatientId
from api.security import Clinician
from api.sms import _publish as publish_reading
from core.logs import event
from core.settings import Settings

log = logging.getLogger("oximon.api")
router = APIRouter()

DEFAULT_DAYS = 30
MAX_DAYS = 180
LAST_READINGS = 10
MIN_INTERVAL_S = 30
_SIG_BYTES = 16  # 128 bits of HMAC-SHA256: forging one is out of reach
_LINK_SHAPE = r"^[A-Za-z0-9_-]{8,40}\.[A-Za-z0-9_-]{22}$"

# The reply when the link is no longer good, in both languages (we do not know whose it was).
LINK_GONE = {
    "nb": "Lenken er utløpt eller trukket tilbake. Be hjemmesykepleien om en ny.",
    "en": "This link has expired or was withdrawn. Ask your home-care nurses for a new one.",
}
TOO_SOON = {
    "nb": "Målingen din er allerede sendt. Vent et halvt minutt før du sender en ny.",
    "en": "Your reading was just sent. Please wait half a minute before sending another.",
}
_LINK_SMS = {
    "nb": "Hjemmesykepleien: registrer oksygenmetning og puls her: {url} (gjelder til {until}).",
    "en": "Your home-care nurses: enter your oxygen level and pulse here: {url} (valid until "
    "{until}).",
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Settings) -> bytes:
    # A key of its own, derived from the API secret: a link signature is never a valid token
    # signature of anything else.
    secret = settings.jwt_secret.get_secret_value().encode()
    return hmac.new(secret, b"oximon patient link v1", hashlib.sha256).digest()


def make_token(settings: Settings, link_id: int, expires_at: datetime) -> str:
    body = struct.pack(">QI", link_id, int(expires_at.timestamp()))
    sig = hmac.new(_key(settings), body, hashlib.sha256).digest()[:_SIG_BYTES]
    return f"{_b64(body)}.{_b64(sig)}"


def read_token(settings: Settings, token: str) -> tuple[int, datetime] | None:
    """(link id, expiry) if the token is ours and intact; None otherwise."""
    try:
        body_text, sig_text = token.split(".")
        body, sig = _unb64(body_text), _unb64(sig_text)
        link_id, expires = struct.unpack(">QI", body)
    except (ValueError, struct.error):
        return None
    want = hmac.new(_key(settings), body, hashlib.sha256).digest()[:_SIG_BYTES]
    if not hmac.compare_digest(want, sig):
        return None
    return link_id, datetime.fromtimestamp(expires, UTC)


def _link_url(request: Request, token: str) -> str:
    base = public_url(request.app.state.settings) or str(request.base_url).rstrip("/")
    return f"{base}/p/{token}"


# --- the nurse's side -------------------------------------------------------------------------


class LinkIn(BaseModel):
    days: int = Field(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="valid this long")
    send_sms: bool = Field(default=True, description="text the link to the patient's phone")


@router.post("/api/v1/patients/{patient_id}/link", tags=["patients"], status_code=201)
def create_link(
    patient_id: ScopedPatientId,
    body: LinkIn,
    request: Request,
    user: Clinician,
    conn: Conn,
    clock: Now,
) -> dict[str, Any]:
    """A personal reading link for the patient; by default also texted to them (through the
    outbox, so it shows in the SMS log). Earlier links keep working until they expire."""
    now = clock.now()
    patient = conn.execute(
        "SELECT phone, language, status, sms_opted_out FROM patients WHERE id = %s",
        (patient_id,),
    ).fetchone()
    if patient is None or patient["status"] != "active":
        raise HTTPException(status.HTTP_409_CONFLICT, "patient: discharged, monitoring has ended")
    if body.send_sms and not patient["phone"]:
        raise HTTPException(422, "send_sms: the patient has no phone number")
    if body.send_sms and patient["sms_opted_out"]:
        raise HTTPException(422, "send_sms: the patient has turned texts off (STOP)")
    # Wall-clock expiry for a security fact, like bearer tokens; shown in the site's zone.
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=body.days)
    with conn.transaction():
        link = conn.execute(
            "INSERT INTO patient_links (patient_id, created_at, created_by, expires_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (patient_id, now, user.id, expires_at),
        ).fetchone()
        assert link is not None
        token = make_token(request.app.state.settings, link["id"], expires_at)
        url = _link_url(request, token)
        notification_id = None
        if body.send_sms:
            language = patient["language"] if patient["language"] in _LINK_SMS else "nb"
            until = expires_at.astimezone(
                ZoneInfo(str(request.app.state.settings.timezone))
            ).strftime("%d.%m.%Y")
            row = conn.execute(
                "INSERT INTO notifications (created_at, channel, recipient, patient_id, body,"
                " next_attempt_at) VALUES (%s, 'sms', %s, %s, %s, %s) RETURNING id",
                (
                    now,
                    patient["phone"],
                    patient_id,
                    _LINK_SMS[language].format(url=url, until=until),
                    now,
                ),
            ).fetchone()
            assert row is not None
            notification_id = row["id"]
            conn.execute("SELECT pg_notify(%s, '')", (escalation.OUTBOX_CHANNEL,))
    event(log, "patient_link_created", patient_id=patient_id, user_id=user.id, link_id=link["id"])
    return {
        "link_id": link["id"],
        "url": url,
        "expires_at": expires_at,
        "notification_id": notification_id,
    }


@router.get("/api/v1/patients/{patient_id}/links", tags=["patients"])
def list_links(patient_id: ScopedPatientId, user: Clinician, conn: Conn) -> list[dict[str, Any]]:
    """The patient's reading links: who made each, when it expires, when it was last used."""
    return conn.execute(
        "SELECT l.id, l.created_at, u.username AS created_by, l.expires_at, l.revoked_at,"
        " l.last_used_at FROM patient_links l LEFT JOIN users u ON u.id = l.created_by"
        " WHERE l.patient_id = %s ORDER BY l.created_at DESC, l.id DESC LIMIT 50",
        (patient_id,),
    ).fetchall()


@router.post("/api/v1/patients/{patient_id}/links/revoke", tags=["patients"])
def revoke_links(
    patient_id: ScopedPatientId, user: Clinician, conn: Conn, clock: Now
) -> dict[str, int]:
    """Withdraw every link of the patient that still works (a lost phone, a wrong number)."""
    revoked = conn.execute(
        "UPDATE patient_links SET revoked_at = %s, revoked_by = %s"
        " WHERE patient_id = %s AND revoked_at IS NULL AND expires_at > now()",
        (clock.now(), user.id, patient_id),
    ).rowcount
    event(log, "patient_links_revoked", patient_id=patient_id, user_id=user.id, count=revoked)
    return {"revoked": revoked}


# --- the patient's side -----------------------------------------------------------------------

Token = Annotated[str, Path(pattern=_LINK_SHAPE)]


def _patient_of(request: Request, conn: psycopg.Connection[Any], token: str) -> dict[str, Any]:
    """The patient a good link belongs to; 404 for a token that is not ours, 410 for one that
    expired, was revoked, or whose patient was discharged."""
    found = read_token(request.app.state.settings, token)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such link")
    link_id, expires_at = found
    row = conn.execute(
        "SELECT l.id AS link_id, l.expires_at, l.revoked_at, p.id, p.language, p.status,"
        " p.spo2_target_min_pct, p.spo2_target_max_pct, p.spo2_amber_max_pct,"
        " p.spo2_red_max_pct, p.pulse_red_min_bpm, p.pulse_red_max_bpm, p.alert_rules"
        " FROM patient_links l JOIN patients p ON p.id = l.patient_id WHERE l.id = %s",
        (link_id,),
    ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such link")
    if (
        row["revoked_at"] is not None
        or row["status"] != "active"
        or min(expires_at, row["expires_at"]) <= datetime.now(UTC)
    ):
        raise HTTPException(status.HTTP_410_GONE, LINK_GONE)
    return dict(row)


def _last_readings(conn: psycopg.Connection[Any], patient_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT time, spo2, pulse, source FROM readings WHERE patient_id = %s"
        " ORDER BY time DESC LIMIT %s",
        (patient_id, LAST_READINGS),
    ).fetchall()


@router.get("/p/{token}", include_in_schema=False)
def patient_page(token: str) -> FileResponse:
    """The phone-sized page; it reads the token from its own address."""
    page = resources.files("dashboards") / "static" / "patient.html"
    return FileResponse(
        str(page),
        headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
    )


@router.get("/api/v1/patient-link/{token}", tags=["patient link"])
def link_view(token: Token, request: Request, conn: Conn, response: Response) -> dict[str, Any]:
    """What the page shows: the patient's language and last readings (no name)."""
    patient = _patient_of(request, conn, token)
    response.headers["Cache-Control"] = "no-store"
    return {
        "language": patient["language"],
        "expires_at": patient["expires_at"],
        "readings": _last_readings(conn, patient["id"]),
    }


class LinkReadingIn(BaseModel):
    spo2: int = Field(
        ge=messaging.SPO2_MIN_PCT, le=messaging.SPO2_MAX_PCT, description="oxygen saturation, %"
    )
    pulse: int = Field(
        ge=messaging.PULSE_MIN_BPM, le=messaging.PULSE_MAX_BPM, description="beats per minute"
    )


@router.post("/api/v1/patient-link/{token}/readings", tags=["patient link"], status_code=202)
def link_reading(
    token: Token, body: LinkReadingIn, request: Request, conn: Conn, clock: Now
) -> dict[str, Any]:
    """Enter one reading. Answers with the text an SMS would have got (confirmation, or safety
    advice for a red value); 202 because the ingest worker stores it a moment later."""
    patient = _patient_of(request, conn, token)
    now = clock.now()
    reading = messaging.TextedReading(body.spo2, body.pulse)
    severity = inbound._severity(patient, reading, now)  # noqa: SLF001 - the SMS path's own check
    with conn.transaction():
        # One reading per link per MIN_INTERVAL_S: a re-check comes minutes later, a flood of
        # posts from a leaked link does not reach the broker.
        taken = conn.execute(
            "UPDATE patient_links SET last_used_at = %s WHERE id = %s"
            " AND (last_used_at IS NULL OR last_used_at <= %s) RETURNING id",
            (now, patient["link_id"], now - timedelta(seconds=MIN_INTERVAL_S)),
        ).fetchone()
        if taken is None:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_SOON)
        device_id = inbound.ensure_sms_device(conn, patient["id"], now)
    try:
        publish_reading(request.app.state.settings, device_id, now, reading)
    except Exception as exc:  # noqa: BLE001 - the patient must hear that it did not work
        event(log, "patient_link_publish_failed", logging.ERROR, error=type(exc).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            messaging.patient_text("not_saved", patient["language"]),
        ) from exc
    event(log, "patient_link_reading", patient_id=patient["id"], severity=severity)
    return {
        "severity": severity,
        "reply": messaging.patient_text(severity, patient["language"], reading),
        "time": now,
        "spo2": body.spo2,
        "pulse": body.pulse,
    }
