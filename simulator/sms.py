"""Simulated patients' phones: readings texted in free form to the inbound SMS webhook, signed
exactly as Twilio signs (the twilio library's RequestValidator), and the TwiML replies read.

A phone posts what Twilio would post for an incoming message to `POST /api/v1/sms/inbound`;
`url` must be the address the API believes it is reached at (`OXIMON_PUBLIC_URL` when set),
because the signature covers it.
"""

from __future__ import annotations

import secrets
import threading
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own API's TwiML answer
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from twilio.request_validator import RequestValidator

from simulator import population as pop
from simulator.population import Patient

# How people write a reading in a text (bokmål and English), and now and then something else.
FORMATS = (
    "{spo2} {pulse}",
    "spo2 {spo2} pulse {pulse}",
    "O2 {spo2}% puls {pulse}",
    "SpO2: {spo2}%, puls: {pulse}",
    "puls {pulse}, metning {spo2}",
    "{spo2}/{pulse}",
    "Sp02 {spo2} HR {pulse}",
)
UNREADABLE = ("føler meg litt sliten i dag", "ok", "jeg har målt")


@dataclass
class SmsReply:
    status_code: int
    message: str | None  # the text of TwiML's <Message>, None when the API answers nothing


class SmsPhone:
    """One patient's phone texting one service number."""

    def __init__(
        self,
        webhook_url: str,
        auth_token: str,
        phone: str,
        service_number: str = "+4759440000",
        account_sid: str = "AC" + "0" * 32,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = webhook_url
        self.validator = RequestValidator(auth_token)
        self.phone = phone
        self.service_number = service_number
        self.account_sid = account_sid
        self.http = http or httpx.Client(timeout=15)

    def text(self, body: str, sid: str | None = None) -> SmsReply:
        """Send `body` as an SMS to the service and return what the platform replied."""
        sid = sid or "SM" + secrets.token_hex(16)
        params = {
            "ToCountry": "NO",
            "FromCountry": "NO",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "Body": body,
            "To": self.service_number,
            "From": self.phone,
            "ApiVersion": "2010-04-01",
            "AccountSid": self.account_sid,
        }
        signature = self.validator.compute_signature(self.url, params)
        response = self.http.post(self.url, data=params, headers={"X-Twilio-Signature": signature})
        return SmsReply(response.status_code, twiml_message(response.text))


def twiml_message(text: str) -> str | None:
    """The first <Message> of a TwiML answer, or None."""
    try:
        root = ET.fromstring(text)  # noqa: S314 - our own API's answer
    except ET.ParseError:
        return None
    found = root.find("Message")
    return None if found is None else (found.text or "")


def reading_text(rng: np.random.Generator, spo2_pct: int, pulse_bpm: int) -> str:
    """A reading as a patient would type it; about one text in thirty is not a reading."""
    if rng.random() < 1 / 30:
        return str(UNREADABLE[int(rng.integers(len(UNREADABLE)))])
    fmt = FORMATS[int(rng.integers(len(FORMATS)))]
    return fmt.format(spo2=spo2_pct, pulse=pulse_bpm)


# --- SMS patients in a simulation run ---------------------------------------------------------

SMS_PREFIX = "+4798"  # synthetic numbers, 98xxxxxx (one range, easy to tell apart in a log)


def sms_phone_number(i: int) -> str:
    return f"{SMS_PREFIX}{i:06d}"


def ensure_sms_patients(database_url: str, patients: list[Patient]) -> list[tuple[int, str]]:
    """Synthetic patients who text their spot checks: (patient_id, phone), created once."""
    out: list[tuple[int, str]] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i, p in enumerate(patients, start=1):
            phone = sms_phone_number(i)
            target = (88, 92) if p.copd else (95, 100)
            profile = p.profile()
            row = conn.execute("SELECT id FROM patients WHERE phone = %s", (phone,)).fetchone()
            values = (
                Jsonb({"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60}),
                target[0],
                target[1],
                profile.spo2_amber_max_pct,
                profile.spo2_red_max_pct,
            )
            if row is None:
                row = conn.execute(
                    "INSERT INTO patients (display_name, phone, language, schedule,"
                    " spo2_target_min_pct, spo2_target_max_pct, spo2_amber_max_pct,"
                    " spo2_red_max_pct) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (f"Synthetic SMS patient {i:03d}", phone, "nb" if i % 2 else "en", *values),
                ).fetchone()
            else:
                conn.execute(
                    "UPDATE patients SET schedule = %s, spo2_target_min_pct = %s,"
                    " spo2_target_max_pct = %s, spo2_amber_max_pct = %s, spo2_red_max_pct = %s"
                    " WHERE id = %s",
                    (*values, row[0]),
                )
            assert row is not None
            out.append((int(row[0]), phone))
    return out


@dataclass
class SmsStats:
    sent: int = 0
    replied: int = 0
    refused: int = 0  # 403: the API did not accept the signature
    errors: int = 0


class SmsPatients:
    """Spot-check patients texting each measurement when it is due on the platform clock."""

    def __init__(
        self,
        phones: list[SmsPhone],
        patients: list[Patient],
        model_t: Callable[[], float],
        seed: int = 1,
    ) -> None:
        self.phones = phones
        self.patients = patients
        self.model_t = model_t
        self.rng = np.random.default_rng(seed + 303)
        self.stats = SmsStats()
        t0 = model_t()
        self._times = [pop.spot_times(p, self.rng, from_s=t0) for p in patients]
        self._next = [next(it, None) for it in self._times]
        self.replies: list[str | None] = []

    def due(self) -> None:
        """Text every spot check measured by now."""
        t = self.model_t()
        for i, p in enumerate(self.patients):
            while (when := self._next[i]) is not None and when <= t:
                reading = pop.spot_reading(p, self.rng, when)
                self.send(
                    self.phones[i], reading_text(self.rng, reading.spo2_pct, reading.pulse_bpm)
                )
                self._next[i] = next(self._times[i], None)

    def send(self, phone: SmsPhone, body: str) -> SmsReply | None:
        try:
            reply = phone.text(body)
        except httpx.HTTPError:
            self.stats.errors += 1
            return None
        self.stats.sent += 1
        if reply.status_code == 403:
            self.stats.refused += 1
        elif reply.status_code != 200:
            self.stats.errors += 1
        else:
            self.stats.replied += 1
        self.replies.append(reply.message)
        return reply

    def run(self, stop: threading.Event, period_s: float = 0.5) -> None:
        while not stop.wait(period_s):
            self.due()
