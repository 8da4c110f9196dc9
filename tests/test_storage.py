"""Storage over years on the local (Apache-2) TimescaleDB: the storage job summarises every hour
into readings_hourly, then drops raw readings past their keep date; alerts and the summary stay.

The licensed path (compression, continuous aggregate, retention policy) cannot run here: the
Debian source package is repackaged without Timescale's tsl/ directory. What can be checked
here is: the edition is detected, the licensed declarations reach the licensed functions (and
are refused by this build for exactly that reason), and the continuous aggregate's query gives
the same rows as the Apache job's roll-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from core import storage
from core.clock import Clock
from core.settings import Settings
from core.storage import StorageJob, licence, run_storage


@pytest.fixture
def clean(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("TRUNCATE readings_hourly")
    return db


NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)


def _reading(db: psycopg.Connection, patient: int, at: datetime, spo2: int, pulse: int) -> None:
    db.execute(
        "INSERT INTO readings (time, device_id, patient_id, spo2, pulse, received_at)"
        " VALUES (%s, 'ox-storage-1', %s, %s, %s, %s)",
        (at, patient, spo2, pulse, at),
    )


def _alert(db: psycopg.Connection, patient: int, at: datetime) -> int:
    row = db.execute(
        "INSERT INTO alerts (patient_id, kind, severity, status, opened_at, updated_at, reason)"
        " VALUES (%s, 'spo2_low', 'red', 'resolved', %s, %s, 'SpO2 88%%') RETURNING id",
        (patient, at, at),
    ).fetchone()
    return int(row["id"])


def _chunks_before(db: psycopg.Connection, at: datetime) -> int:
    row = db.execute(
        "SELECT count(*) AS n FROM show_chunks('readings', older_than => %s)", (at,)
    ).fetchone()
    return int(row["n"])


def test_this_build_is_the_apache_edition_and_the_job_takes_that_path(
    clean: psycopg.Connection,
) -> None:
    assert licence(clean) == storage.APACHE
    report = run_storage(clean, Settings(retention_days=None), NOW)
    assert report.edition == storage.APACHE and report.chunks_dropped == 0


def test_old_readings_are_dropped_while_alerts_and_the_hourly_summary_stay(
    clean: psycopg.Connection, patient: int
) -> None:
    old_hour = NOW - timedelta(days=400)
    old_hour = old_hour.replace(minute=0, second=0)
    for minute, (spo2, pulse) in enumerate([(97, 70), (88, 110), (91, 80)]):
        _reading(clean, patient, old_hour + timedelta(minutes=minute * 10), spo2, pulse)
    _reading(clean, patient, NOW - timedelta(days=20), 95, 72)
    _reading(clean, patient, NOW - timedelta(minutes=10), 96, 71)  # hour not complete yet
    alert_id = _alert(clean, patient, old_hour)

    report = run_storage(clean, Settings(retention_days=30), NOW)

    cutoff = NOW - timedelta(days=30)
    assert report.chunks_dropped >= 1
    assert _chunks_before(clean, cutoff) == 0
    times = [r["time"] for r in clean.execute("SELECT time FROM readings ORDER BY time")]
    assert times == [NOW - timedelta(days=20), NOW - timedelta(minutes=10)]
    assert clean.execute("SELECT id FROM alerts").fetchone()["id"] == alert_id
    hours = clean.execute(
        "SELECT bucket, readings, spo2_min, spo2_max, spo2_avg, pulse_max"
        " FROM readings_hourly ORDER BY bucket"
    ).fetchall()
    assert [h["bucket"] for h in hours] == [
        old_hour,
        (NOW - timedelta(days=20)).replace(minute=0),
    ], "the incomplete current hour is not summarised yet"
    first = hours[0]
    assert (first["readings"], first["spo2_min"], first["spo2_max"], first["pulse_max"]) == (
        3,
        88,
        97,
        110,
    )
    assert first["spo2_avg"] == pytest.approx(92.0)


def test_the_job_keeps_everything_without_a_retention_setting_and_is_idempotent(
    clean: psycopg.Connection, patient: int
) -> None:
    _reading(clean, patient, NOW - timedelta(days=900), 94, 70)
    settings = Settings(retention_days=None)
    run_storage(clean, settings, NOW)
    run_storage(clean, settings, NOW)
    assert clean.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 1
    assert clean.execute("SELECT count(*) AS n FROM readings_hourly").fetchone()["n"] == 1


def test_a_late_upload_within_three_days_updates_its_hour(
    clean: psycopg.Connection, patient: int
) -> None:
    hour = (NOW - timedelta(days=2)).replace(minute=0)
    _reading(clean, patient, hour, 95, 70)
    run_storage(clean, Settings(), NOW)
    _reading(clean, patient, hour + timedelta(minutes=5), 89, 70)  # uploaded after the roll-up
    run_storage(clean, Settings(), NOW + timedelta(hours=1))
    row = clean.execute(
        "SELECT readings, spo2_min FROM readings_hourly WHERE bucket = %s", (hour,)
    ).fetchone()
    assert (row["readings"], row["spo2_min"]) == (2, 89)


def test_the_alerting_workers_job_runs_once_per_interval(
    stack, clean: psycopg.Connection, patient: int
) -> None:  # noqa: ANN001
    _reading(clean, patient, NOW - timedelta(days=400), 94, 70)
    job = StorageJob(Settings(database_url=stack.database_url, retention_days=30))
    clock = Clock(origin=NOW, speed=1.0)
    first = job(None, clock)  # type: ignore[arg-type] - the job opens its own connection
    assert first is not None and first.chunks_dropped >= 1
    assert job(None, clock) is None  # not again before the hour is out  # type: ignore[arg-type]


@pytest.mark.parametrize("statement", storage.LICENSED_STATEMENTS)
def test_each_licensed_declaration_reaches_timescales_licensed_code(
    clean: psycopg.Connection, statement: str
) -> None:
    # This build refuses each one because of the licence, which shows the statement parses and
    # names real licensed functions and options (a typo would fail differently).
    params: object = None
    if "%(refresh_window)s" in statement:
        params = {"refresh_window": storage.REFRESH_WINDOW}
    elif "%s" in statement:
        params = (timedelta(days=30),)
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="license"):
        with clean.transaction():
            clean.execute(statement, params)  # type: ignore[arg-type]


def test_the_licensed_paths_queries_of_what_is_declared_run_on_either_edition(
    clean: psycopg.Connection,
) -> None:
    assert clean.execute(storage.COMPRESSION_ENABLED).fetchone()["compression_enabled"] is False
    for proc, key in (("policy_retention", "drop_after"), ("policy_compression", "compress_after")):
        assert clean.execute(storage.POLICY_SETTING, {"key": key, "proc": proc}).fetchall() == []


def test_the_alerting_service_runs_the_storage_job_at_start(
    clean: psycopg.Connection, patient: int, service_factory
) -> None:  # noqa: ANN001
    _reading(clean, patient, datetime.now(UTC) - timedelta(days=400), 94, 70)
    _reading(clean, patient, datetime.now(UTC) - timedelta(days=1), 95, 70)
    worker = service_factory(
        "alerting", ready='"event": "storage_job"', alerting_watchdog=False, retention_days=30
    )
    assert '"chunks_dropped": 1' in worker.log()
    assert clean.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 1


def test_the_continuous_aggregates_query_equals_the_apache_roll_up(
    clean: psycopg.Connection, patient: int
) -> None:
    base = (NOW - timedelta(days=1)).replace(minute=0)
    for i, spo2 in enumerate([96, 92, 90, 97, 95]):
        _reading(clean, patient, base + timedelta(minutes=17 * i), spo2, 60 + i)
    run_storage(clean, Settings(), NOW)
    view_query = storage.CREATE_HOURLY_VIEW.split(" AS", 1)[1].removesuffix(" WITH NO DATA")
    cols = "patient_id, bucket, " + storage._HOURLY_COLUMNS
    from_view = clean.execute(f"SELECT {cols} FROM ({view_query}) v ORDER BY bucket").fetchall()
    from_table = clean.execute(f"SELECT {cols} FROM readings_hourly ORDER BY bucket").fetchall()
    assert from_view == from_table and len(from_table) == 2
