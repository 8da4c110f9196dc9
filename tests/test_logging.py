"""Logs are JSON lines that carry ids and counts, never a patient's or clinician's name or
phone number, even when an error message from outside (Twilio, the database) quotes one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from alerting.lifecycle import apply_decisions
from core import logs
from core.settings import Settings
from tests.alerting_support import NURSE, NURSE2, red, rota, twilio_settings
from tests.helpers import wait_until
from tests.twilio_fake import FakeTwilio

PATIENT_NAME = "Synthetic Test Patient"  # the `patient` fixture's display name


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio("AC" + "0123456789abcdef" * 2, "fake-twilio-auth-token-0123456789") as fake:
        yield fake


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_log_event_is_one_json_object_with_its_fields() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord(
        "oximon.ingest", logging.WARNING, __file__, 1, "dead_lettered", (), None
    )
    record.fields = {"count": 3, "device_id": "ox-00042", "late": False}
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["event"] == "dead_lettered" and parsed["level"] == "warning"
    assert (parsed["count"], parsed["device_id"], parsed["late"]) == (3, "ox-00042", False)
    assert datetime.fromisoformat(str(parsed["ts"])).tzinfo is not None


def test_a_phone_number_quoted_by_an_exception_is_redacted_and_the_line_stays_one_line() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("Key (phone)=(+4791234567) already exists; also 912 34 567")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "oximon.api", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    record.fields = {"detail": "to 0047 91234567"}
    line = formatter.format(record)
    assert "\n" not in line
    for number in ("4791234567", "912 34 567", "91234567"):
        assert number not in line
    parsed = json.loads(line)
    assert parsed["error"] == "ValueError" and "Traceback" in str(parsed["traceback"])


def test_the_alerting_service_logs_a_refused_sms_without_the_number_or_the_name(
    db: psycopg.Connection,
    settings: Settings,
    twilio: FakeTwilio,
    service_factory,  # noqa: ANN001
    patient: int,
) -> None:
    now = datetime.now(UTC)
    rota(db, now)
    # Twilio refuses the numbers, quoting them in its error message ("The 'To' number +47…
    # is not a valid phone number"): the outbox logs that error.
    for number in (NURSE, NURSE2):
        twilio.behave(number, "invalid")
    worker = service_factory(
        "alerting",
        ready="alerting_started",
        alerting_watchdog=False,
        **twilio_settings(settings, twilio.url).model_dump(
            include={
                "twilio_account_sid",
                "twilio_auth_token",
                "twilio_from_number",
                "twilio_api_url",
            }
        ),
    )
    with db.transaction():
        apply_decisions(db, [red(patient, now)], now)
    wait_until(lambda: '"sms_failed"' in worker.log(), 30, "the refused SMS to be logged")
    worker.stop()
    lines = _lines(worker.log())
    assert any(line["event"] == "sms_failed" for line in lines)
    failed = next(line for line in lines if line["event"] == "sms_failed")
    assert "[redacted]" in str(failed["error"]) and failed["notification_ids"]
    text = worker.log()
    for secret in (NURSE, NURSE.removeprefix("+47"), NURSE2, PATIENT_NAME, "Test nurse"):
        assert secret not in text, f"{secret!r} reached the log"
