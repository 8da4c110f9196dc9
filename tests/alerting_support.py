"""Helpers shared by the lifecycle, escalation and SMS tests: people on the rota, a clock a test
can move, and settings that point the twilio library at the local fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerting.rules import Decision
from core.clock import Clock
from core.db import make_pool
from core.settings import Settings
from tests.twilio_fake import FakeTwilio

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"  # noqa: S105 - a local fake's token
FROM_NUMBER = "+4759440000"
NURSE, NURSE2, DOCTOR, DOCTOR2 = "+4799000001", "+4799000002", "+4799000009", "+4799000008"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class ManualClock(Clock):
    """Platform time that moves only when the test says so."""

    def __init__(self, at: datetime = T0) -> None:
        super().__init__()
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    """A local server speaking Twilio's Messages API (import the fixture to use it)."""
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    """A pool for running escalation steps as the alerting worker does (import to use it)."""
    p = make_pool(settings, name="test-alerting")
    try:
        yield p
    finally:
        p.close()


def twilio_settings(base: Settings, api_url: str, **extra: Any) -> Settings:
    """The session's settings plus Twilio credentials for the local fake at `api_url`."""
    values = base.model_dump()
    values.update(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER,
        twilio_api_url=api_url,
        **extra,
    )
    return Settings(**values)


def add_user(
    db: psycopg.Connection[Any],
    username: str,
    role: str,
    phone: str | None,
    on_call: bool = False,
) -> int:
    row = db.execute(
        "INSERT INTO users (username, full_name, role, password_hash, phone, on_call)"
        " VALUES (%s, %s, %s, 'x', %s, %s) RETURNING id",
        (username, f"Test {username}", role, phone, on_call),
    ).fetchone()
    assert row is not None
    db.execute(
        "INSERT INTO user_care_teams (user_id, care_team_id)"
        " VALUES (%s, oximon_default_care_team())",
        (row["id"],),
    )
    return int(row["id"])


def add_shift(
    db: psycopg.Connection[Any],
    user_id: int,
    role: str,
    phone: str,
    starts_at: datetime,
    ends_at: datetime,
    priority: int = 1,
) -> int:
    row = db.execute(
        "INSERT INTO oncall_shifts (user_id, role, phone, starts_at, ends_at, priority,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (user_id, role, phone, starts_at, ends_at, priority, starts_at),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def rota(
    db: psycopg.Connection[Any], at: datetime, existing: dict[str, int] | None = None
) -> dict[str, int]:
    """A day's rota around `at`: a nurse and a doctor on duty, a backup nurse (priority 2), and
    a second doctor whose shift starts in 12 hours. `existing` reuses accounts (the care team's
    nurse and doctor). Returns user ids by name."""
    phones = {"nurse": NURSE, "nurse2": NURSE2, "doctor": DOCTOR, "doctor2": DOCTOR2}
    ids = dict(existing or {})
    for name, phone in phones.items():
        if name not in ids:
            ids[name] = add_user(db, f"rota-{name}", name.rstrip("2"), phone)
    day = timedelta(hours=12)
    add_shift(db, ids["nurse"], "nurse", NURSE, at - day, at + day)
    add_shift(db, ids["nurse2"], "nurse", NURSE2, at - day, at + day, priority=2)
    add_shift(db, ids["doctor"], "doctor", DOCTOR, at - day, at + day)
    add_shift(db, ids["doctor2"], "doctor", DOCTOR2, at + day, at + 2 * day)
    return ids


def red(patient_id: int, at: datetime, spo2: int = 88, kind: str = "spo2_low") -> Decision:
    return Decision(patient_id, kind, "red", spo2, at, f"SpO2 {spo2}% is at or below red")


def amber(patient_id: int, at: datetime, spo2: int = 93, kind: str = "spo2_low") -> Decision:
    return Decision(patient_id, kind, "amber", spo2, at, f"SpO2 {spo2}% is in the amber band")


def sms_to(db: psycopg.Connection[Any], alert_id: int | None = None) -> list[str]:
    """Recipients of alert SMS in the outbox, in order queued."""
    rows = db.execute(
        "SELECT recipient FROM notifications WHERE channel = 'sms'"
        " AND (%s::bigint IS NULL OR alert_id = %s) ORDER BY id",
        (alert_id, alert_id),
    ).fetchall()
    return [r["recipient"] for r in rows]


def add_patient(db: psycopg.Connection[Any], phone: str | None, language: str = "nb") -> int:
    row = db.execute(
        "INSERT INTO patients (display_name, phone, language) VALUES ('Synthetic', %s, %s)"
        " RETURNING id",
        (phone, language),
    ).fetchone()
    assert row is not None
    return int(row["id"])
