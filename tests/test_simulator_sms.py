"""Simulated SMS patients against the real API: texts signed exactly as Twilio signs are
accepted by the inbound webhook and answered in TwiML; and `oximon simulate` runs devices and
texting patients together on an accelerated platform clock and writes the run's ground truth."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from simulator.sms import SmsPhone, reading_text
from tests.alerting_support import AUTH_TOKEN, twilio_settings
from tests.helpers import wait_until

PHONE = "+4791000001"  # the `patient` fixture's (synthetic) number


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Twilio's auth token signs the webhook; nothing is sent to Twilio in these tests. The
    # platform clock runs an hour per wall second from now, for every process of the test.
    return twilio_settings(
        settings,
        "http://127.0.0.1:9",
        clock_origin=datetime.now(UTC),
        clock_speed=3600.0,
    )


def test_a_simulated_phone_texts_a_reading_that_the_api_accepts_and_stores(
    api_server: str, patient: int, ingest, db: psycopg.Connection
) -> None:
    phone = SmsPhone(f"{api_server}/api/v1/sms/inbound", AUTH_TOKEN, PHONE)
    reply = phone.text("O2 95% puls 72")
    assert reply.status_code == 200
    assert reply.message and "95" in reply.message  # the confirmation repeats the reading
    row = wait_until(
        lambda: db.execute("SELECT spo2, pulse, source FROM readings").fetchone(),
        20,
        "the texted reading stored",
    )
    assert (row["spo2"], row["pulse"], row["source"]) == (95, 72, "sms")


def test_a_text_not_signed_with_the_accounts_token_is_refused(
    api_server: str, patient: int, db: psycopg.Connection
) -> None:
    phone = SmsPhone(f"{api_server}/api/v1/sms/inbound", "some-other-token", PHONE)
    assert phone.text("95 72").status_code == 403
    assert db.execute("SELECT count(*) AS n FROM sms_inbound").fetchone()["n"] == 0


def test_patients_text_their_readings_in_free_form_the_api_can_read() -> None:
    import numpy as np

    from alerting.messaging import parse_reading

    rng = np.random.default_rng(3)
    texts = [reading_text(rng, 94, 71) for _ in range(300)]
    read = [parse_reading(t) for t in texts]
    understood = [(r.spo2_pct, r.pulse_bpm) for r in read if r is not None]
    assert len(set(texts)) >= 6  # many ways of writing it
    assert set(understood) == {(94, 71)}  # never misread
    assert 0.9 <= len(understood) / len(texts) < 1  # and now and then not a reading at all


def test_simulate_runs_devices_and_texting_patients_and_writes_the_ground_truth(
    api_server: str, service_factory, db: psycopg.Connection, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    sim = service_factory(
        "simulate",
        "--patients",
        "3",
        "--spot-share",
        "1",
        "--deteriorating",
        "0.34",
        "--patterns",
        "fast_fall",
        "--sms",
        "2",
        "--sms-url",
        api_server,
        "--duration",
        "15",
        "--truth",
        str(truth),
    )
    assert sim.process is not None
    sim.process.wait(timeout=60)
    out = sim.log()
    assert sim.process.returncode == 0, out
    assert "devices connected 3/3" in out  # live progress
    # A platform day passes in 24 s: the texting patients' spot checks reached the webhook,
    # signed as Twilio signs (nothing refused), and were understood.
    texts = db.execute(
        "SELECT outcome FROM sms_inbound WHERE patient_id IS NOT NULL ORDER BY id"
    ).fetchall()
    assert texts, out
    assert "refused 0" in out
    assert sum(t["outcome"] == "reading" for t in texts) >= 1, texts
    document = json.loads(truth.read_text())
    rows = document["patients"]
    assert len(rows) == 5
    assert {r["device_id"][:4] for r in rows} == {"sim-", "sms-"}
    fallen = [r for r in rows if r["pattern"] == "fast_fall"]
    assert fallen and all(r["onset_at"] and r["red_cross_at"] for r in fallen)
    assert document["run"]["clock_speed"] == 3600.0


def test_the_ground_truth_can_be_written_as_csv(
    stack, service_factory, db: psycopg.Connection, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.csv"
    sim = service_factory(
        "simulate",
        "--patients",
        "4",
        "--spot-share",
        "1",
        "--deteriorating",
        "0.5",
        "--patterns",
        "sudden,recovery",
        "--duration",
        "3",
        "--truth",
        str(truth),
    )
    assert sim.process is not None
    sim.process.wait(timeout=60)
    assert sim.process.returncode == 0, sim.log()
    with truth.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["pattern"] for r in rows].count("stable") == 2
    assert {r["pattern"] for r in rows} == {"stable", "sudden", "recovery"}
    recovery = next(r for r in rows if r["pattern"] == "recovery")
    assert recovery["onset_at"] < recovery["red_cross_at"] < recovery["recovered_at"]


def test_a_scenario_file_that_names_an_unknown_setting_is_refused_by_name(
    service_factory, tmp_path: Path
) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("patients: 2\nfaults:\n  duplicate_rate: 0.01\n  lag_storm: 3\n")
    sim = service_factory("simulate", "--scenario", str(scenario))
    assert sim.process is not None
    sim.process.wait(timeout=30)
    assert sim.process.returncode == 2
    assert "faults: unknown ['lag_storm']" in sim.log()
