"""`python -m bench score`: a live `oximon simulate` run, fed through a real ingest worker on an
accelerated platform clock, scored against the ground truth it wrote — the deteriorating
patient found with a red alert in time, the stable patients' alerts as the alerts table has
them."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from bench.__main__ import app
from core.settings import Settings
from tests.helpers import wait_until

SPEED = 120.0  # two platform minutes a wall second
RUN_S = 20  # wall seconds of simulation: 40 platform minutes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The same platform clock for ingest and the simulator: from now, at SPEED.
    return settings.model_copy(update={"clock_origin": datetime.now(UTC), "clock_speed": SPEED})


def test_a_live_run_is_scored_against_its_ground_truth(
    ingest, service_factory, db: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    # The alerting worker beside ingest: its watchdog raises device and missed-reading alerts.
    service_factory("alerting", ready="alerting_started")
    # Five streaming oximeters, one of them a sudden desaturation starting within two platform
    # minutes (falling 7–12 points over 2–10 minutes): its red alert opens a few wall seconds in.
    # One stable patient's oximeter loses the network a minute in, for 36 minutes: a
    # device_offline alert after 30 minutes of silence, and a reminder.
    sim = service_factory(
        "simulate",
        "--patients", "5",
        "--deteriorating", "0.2",
        "--patterns", "sudden",
        "--onset-within", "2",
        "--interval", "5",
        "--offline-share", "0.2",
        "--offline-after-min", "1",
        "--offline-for-min", "36",
        "--seed", "3",
        "--duration", str(RUN_S),
        "--truth", str(truth),
    )  # fmt: skip
    assert sim.process is not None
    sim.process.wait(timeout=RUN_S + 40)
    out = sim.log()
    assert sim.process.returncode == 0, out
    done = re.search(r"done: readings \d+, messages \d+, acked (\d+)", out)
    assert done, out
    # The broker acknowledged these (less each device's online and offline status): all stored
    # before scoring. A publish still unacknowledged when the run stopped may be lost.
    acked = int(done.group(1)) - 2 * 5

    def stored() -> bool:
        row = db.execute(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM dead_letters) AS n"
        ).fetchone()
        return row is not None and row["n"] >= acked

    wait_until(stored, 30, f"ingest to store the {acked} readings the broker acknowledged")

    result = CliRunner().invoke(
        app, ["score", str(truth), "--database-url", settings.database_url, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Deteriorating patients" in result.output  # the printed table
    report = json.loads((tmp_path / "score.json").read_text())
    document = json.loads(truth.read_text())
    truth_rows = {r["patient_id"]: r for r in document["patients"]}
    bad = [r for r in truth_rows.values() if r["pattern"] == "sudden"]
    assert len(bad) == 1 and bad[0]["red_cross_at"], bad  # the seed's patient reaches red

    # The deteriorating patient: detected with a red alert, measured within the time its fall
    # takes plus five platform minutes of onset (the stream's 60 s sustained-red rule and a
    # reading every 5 s), and within five minutes either side of the true SpO2 reaching red.
    scored = {p["patient_id"]: p for p in report["patients"]}
    patient = scored[bad[0]["patient_id"]]
    assert patient["first_red_at"] is not None, report
    fall_min = bad[0]["fall_h"] * 60
    assert 0 <= patient["onset_to_red_min"] <= fall_min + 5, patient
    assert -5 <= patient["red_band_to_red_min"] <= 5, patient
    row = next(r for r in report["summary"]["deteriorating"] if r["group"] == "all deteriorating")
    assert row["patients"] == 1 and row["detected"] == 1
    assert row["onset_to_red_worst_h"] == round(patient["onset_to_red_min"] / 60, 2)
    red = db.execute(
        "SELECT severity FROM alerts WHERE patient_id = %s AND kind = 'spo2_low'",
        (bad[0]["patient_id"],),
    ).fetchall()
    assert [r["severity"] for r in red] == ["red"]

    # Every patient's alerts as the alerts table holds them (a clean database: all are the
    # run's), and the stable patients' rate per patient-day from those counts.
    in_table: dict[int, Counter[str]] = {pid: Counter() for pid in truth_rows}
    for r in db.execute("SELECT patient_id, kind FROM alerts").fetchall():
        in_table[r["patient_id"]][r["kind"]] += 1
    for pid, p in scored.items():
        kinds: Counter[str] = Counter()
        for key, n in p["alerts"].items():
            kinds[key.split("/")[0]] += n
        assert kinds == in_table[pid], (pid, p["alerts"], in_table[pid])
    stable = [pid for pid, r in truth_rows.items() if r["pattern"] == "stable"]
    assert len(stable) == 4
    all_stable = next(r for r in report["summary"]["stable"] if r["group"] == "all stable")
    clinical = sum(
        n
        for pid in stable
        for kind, n in in_table[pid].items()
        if kind in ("spo2_low", "pulse_high", "pulse_low", "trend")
    )
    days = report["params"]["platform_days"]
    assert 0.02 < days < 0.05  # about 40 platform minutes
    assert all_stable["patients"] == 4
    assert all_stable["clinical_alerts_per_patient_day"] == pytest.approx(
        clinical / (4 * days), abs=1e-3 + 0.01 * clinical / (4 * days)
    )
    assert all_stable["readings"] > 0
    # The oximeter that went offline is a stable patient's (the seed's): its device alert is
    # in the table and in the stable patients' rate.
    offline = [f["device_id"] for f in document["faults"] if f["fault"] == "offline"]
    assert [r["pattern"] for r in truth_rows.values() if r["device_id"] in offline] == ["stable"]
    device = sum(in_table[pid]["device_offline"] + in_table[pid]["bad_quality"] for pid in stable)
    assert device == 1
    assert all_stable["device_alerts_per_patient_day"] == pytest.approx(
        device / (4 * days), rel=0.01
    )
    assert report["alerts_by_kind"]["stable"]["device_offline/amber"] == 1
    assert report["params"]["alerts_open_at_start"] == 0

    # A run that starts with the red alert still open (as if it were a second run on the same
    # patients, nobody having resolved it) is scored with a warning: its readings only update it.
    after = datetime.fromisoformat(patient["first_red_opened_at"]) + timedelta(seconds=1)
    later = {**document, "run": {**document["run"], "started_at": after.isoformat()}}
    again = tmp_path / "again.json"
    again.write_text(json.dumps(later))
    result = CliRunner().invoke(
        app, ["score", str(again), "--database-url", settings.database_url, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "were already open when the run started" in result.output


def test_a_truth_file_without_the_run_is_refused_naming_why(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("patient_id,device_id,pattern\n1,sim-00001,stable\n")
    result = CliRunner().invoke(
        app, ["score", str(truth), "--database-url", "postgresql://nobody@127.0.0.1:9/none"]
    )
    assert result.exit_code == 2
    assert "a .csv truth has no run times: write it as .json" in result.output
