"""Backup and restore as docs/operations.md tells an operator to do it: `pg_dump -Fc`, then into
a fresh database `timescaledb_pre_restore()`, `pg_restore`, `timescaledb_post_restore()`. Run
with the test cluster's own PostgreSQL tools; afterwards everything is there and readings is
still a hypertable that takes new readings."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from alerting.lifecycle import acknowledge
from core.settings import Settings
from core.storage import run_storage
from oximon.localstack import pg_bindir

TABLES = (
    "patients",
    "users",
    "devices",
    "readings",
    "readings_hourly",
    "alerts",
    "alert_events",
    "dead_letters",
    "notifications",
)
# Every reading, in a stable order, as one checksum.
READINGS_CHECKSUM = (
    "SELECT md5(string_agg(concat_ws(',', time, device_id, patient_id, spo2, pulse, pi, quality,"
    " source, received_at, late), ';' ORDER BY device_id, time)) AS sum FROM readings"
)


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    assert result.returncode == 0, f"{Path(args[0]).name} failed: {result.stderr}"


def _fill(db: psycopg.Connection, patient: int, nurse_id: int) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    db.execute("INSERT INTO devices (id, patient_id) VALUES ('ox-backup-1', %s)", (patient,))
    with db.cursor().copy(
        "COPY readings (time, device_id, patient_id, spo2, pulse, pi, quality, received_at)"
        " FROM STDIN"
    ) as copy:
        for i in range(3 * 24 * 60):  # three days, one a minute: several daily chunks
            at = start + timedelta(minutes=i)
            copy.write_row((at, "ox-backup-1", patient, 90 + i % 9, 60 + i % 30, 2.5, "ok", at))
    alert = db.execute(
        "INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason)"
        " VALUES (%s, 'spo2_low', 'red', %s, %s, 'SpO2 88%% is at or below red') RETURNING id",
        (patient, start, start),
    ).fetchone()
    acknowledge(db, alert["id"], nurse_id, start + timedelta(minutes=4))
    db.execute(
        "INSERT INTO dead_letters (received_at, topic, payload, reason)"
        " VALUES (now(), 'oximon/devices/x/readings', '\\x7b7d'::bytea, 'spo2 is missing')"
    )
    db.execute("TRUNCATE readings_hourly")
    run_storage(db, Settings(), datetime.now(UTC))


def _snapshot(conn: psycopg.Connection) -> dict[str, object]:
    counts = {
        t: conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"]  # noqa: S608
        for t in TABLES
    }
    return {
        **counts,
        "readings_checksum": conn.execute(READINGS_CHECKSUM).fetchone()["sum"],
        "alert": conn.execute(
            "SELECT id, patient_id, kind, severity, status, opened_at, acknowledged_at,"
            " acknowledged_by, reason FROM alerts"
        ).fetchall(),
        "events": conn.execute(
            "SELECT alert_id, at, user_id, action FROM alert_events ORDER BY id"
        ).fetchall(),
        "hourly_sample": conn.execute(
            "SELECT * FROM readings_hourly ORDER BY bucket LIMIT 3"
        ).fetchall(),
    }


def test_a_dump_restored_into_a_fresh_database_holds_everything(
    stack,  # noqa: ANN001
    db: psycopg.Connection,
    patient: int,
    care_team: dict[str, dict[str, object]],
    tmp_path: Path,
) -> None:
    _fill(db, patient, int(care_team["nurse"]["id"]))
    before = _snapshot(db)
    assert before["readings"] == 3 * 24 * 60 and before["alert_events"]

    dump = tmp_path / "oximon.dump"
    bindir = pg_bindir()
    _run(str(bindir / "pg_dump"), "-Fc", "-f", str(dump), "-d", stack.database_url)

    fresh = f"restored_{uuid.uuid4().hex[:8]}"
    stack.postgres.create_database(fresh)
    url = stack.postgres.url_for(fresh)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT timescaledb_pre_restore()")
        _run(str(bindir / "pg_restore"), "--no-owner", "-d", url, str(dump))
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute("SELECT timescaledb_post_restore()")
            assert _snapshot(conn) == before
            hypertables = {
                r["hypertable_name"]: r["num_chunks"]
                for r in conn.execute(
                    "SELECT hypertable_name, num_chunks FROM timescaledb_information.hypertables"
                )
            }
            assert hypertables["readings"] >= 3
            # Still the same database to the services: new readings go in, repeats do not.
            at = datetime.now(UTC)
            for _ in range(2):
                conn.execute(
                    "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
                    " VALUES (%s, 'ox-backup-1', %s, 95, 70, %s)"
                    " ON CONFLICT (device_id, time) DO NOTHING",
                    (at, patient, at),
                )
            assert conn.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == (
                before["readings"] + 1
            )
    finally:
        with psycopg.connect(stack.postgres.url_for("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)'.encode())
