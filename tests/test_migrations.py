"""Migrations against a real PostgreSQL with TimescaleDB, each test in a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import dict_row

import core.migrate
from core.migrate import migrate, migration_files
from tests.conftest import Stack

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.fixture
def fresh_url(stack: Stack) -> Iterator[str]:
    """An empty database, dropped afterwards."""
    name = f"migr_{uuid.uuid4().hex[:12]}"
    stack.postgres.create_database(name)
    yield stack.postgres.url_for(name)
    with psycopg.connect(stack.postgres.url_for("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def migrated(fresh_url: str) -> Iterator[psycopg.Connection]:
    migrate(fresh_url)
    with psycopg.connect(fresh_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def applied_versions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_migrate_applies_every_file_once_and_a_second_run_applies_nothing(fresh_url: str) -> None:
    every = [version for version, _ in migration_files()]
    assert every and every == sorted(every)
    assert migrate(fresh_url) == every
    assert migrate(fresh_url) == []
    assert applied_versions(fresh_url) == every


def test_services_migrating_at_once_apply_each_file_once(fresh_url: str) -> None:
    every = [version for version, _ in migration_files()]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: migrate(fresh_url), range(3)))
    assert sorted(results, key=len) == [[], [], every]
    assert applied_versions(fresh_url) == every


def test_failed_migration_leaves_the_database_at_the_last_good_version(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = migration_files()
    broken = ("9999_broken", "CREATE TABLE half_done (id int); SELECT 1 / 0;")
    monkeypatch.setattr(core.migrate, "migration_files", lambda: [*real, broken])
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(fresh_url)
    assert applied_versions(fresh_url) == [version for version, _ in real]
    with psycopg.connect(fresh_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)

    # Once fixed, only the new file runs, and the lock was released by the failed run.
    fixed = ("9999_broken", "CREATE TABLE half_done (id int);")
    monkeypatch.setattr(core.migrate, "migration_files", lambda: [*real, fixed])
    assert migrate(fresh_url) == ["9999_broken"]


def test_readings_is_a_timescaledb_hypertable_on_time(migrated: psycopg.Connection) -> None:
    hypertables = migrated.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'public'"
    ).fetchall()
    # readings_hourly (migration 0007) is the Apache build's hourly summary.
    assert sorted(h["hypertable_name"] for h in hypertables) == ["readings", "readings_hourly"]
    dims = migrated.execute(
        "SELECT column_name, column_type::text AS type FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = 'readings'"
    ).fetchall()
    assert dims == [{"column_name": "time", "type": "timestamp with time zone"}]


INSERT_READING = (
    "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
    " VALUES (%s, %s, 1, %s, 70, %s)"
)


def test_second_reading_from_a_device_at_the_same_time_is_a_conflict(
    migrated: psycopg.Connection,
) -> None:
    migrated.execute(INSERT_READING, (T0, "oxi-a", 95, T0))
    with pytest.raises(psycopg.errors.UniqueViolation):
        migrated.execute(INSERT_READING, (T0, "oxi-a", 91, T0))
    # A retry written as an upsert stores nothing and keeps the first value.
    retried = migrated.execute(
        INSERT_READING + " ON CONFLICT (device_id, time) DO NOTHING", (T0, "oxi-a", 91, T0)
    )
    assert retried.rowcount == 0
    # Another device at the same instant, or the same device a second later, is a new reading.
    migrated.execute(INSERT_READING, (T0, "oxi-b", 96, T0))
    migrated.execute(INSERT_READING, (T0.replace(second=1), "oxi-a", 97, T0))
    rows = migrated.execute(
        "SELECT device_id, spo2 FROM readings ORDER BY time, device_id"
    ).fetchall()
    assert [(r["device_id"], r["spo2"]) for r in rows] == [
        ("oxi-a", 95),
        ("oxi-b", 96),
        ("oxi-a", 97),
    ]


def open_alert(conn: psycopg.Connection, patient_id: int, kind: str) -> int:
    row = conn.execute(
        "INSERT INTO alerts (patient_id, kind, severity, opened_at, updated_at, reason)"
        " VALUES (%s, %s, 'red', %s, %s, 'test') RETURNING id",
        (patient_id, kind, T0, T0),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def test_only_one_unresolved_alert_per_patient_and_kind_but_a_new_one_after_resolution(
    migrated: psycopg.Connection,
) -> None:
    patient_id = migrated.execute(
        "INSERT INTO patients (display_name) VALUES ('Synthetic') RETURNING id"
    ).fetchone()["id"]
    first = open_alert(migrated, patient_id, "spo2_low")
    with pytest.raises(psycopg.errors.UniqueViolation):
        open_alert(migrated, patient_id, "spo2_low")
    open_alert(migrated, patient_id, "pulse_high")  # another kind is another alert

    # Acknowledged (or escalated) is still unresolved: still only one.
    for status in ("acknowledged", "escalated"):
        migrated.execute("UPDATE alerts SET status = %s WHERE id = %s", (status, first))
        with pytest.raises(psycopg.errors.UniqueViolation):
            open_alert(migrated, patient_id, "spo2_low")

    migrated.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (first,))
    second = open_alert(migrated, patient_id, "spo2_low")
    migrated.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (second,))
    open_alert(migrated, patient_id, "spo2_low")
    counts = migrated.execute(
        "SELECT status, count(*) AS n FROM alerts WHERE kind = 'spo2_low' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(c["status"], c["n"]) for c in counts] == [("open", 1), ("resolved", 2)]
