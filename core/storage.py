"""Readings over years: compression, the hourly per-patient summary, and retention.

Two editions of TimescaleDB, told apart by `SHOW timescaledb.license`:

* `timescale` (the licensed image of docker-compose.yml): the database does the work in its
  own background jobs. Chunks of `readings` older than `OXIMON_COMPRESS_AFTER_DAYS` (7) are
  compressed, `readings_hourly` is a continuous aggregate refreshed every 30 minutes over the
  last three days, and a retention policy drops raw readings older than
  `OXIMON_RETENTION_DAYS`. oximon only declares the policies, idempotently.
* `apache` (Debian's build, the local set-up): no compression, no continuous aggregates, no
  background policies. oximon's own job (run by the alerting workers, at most one at a time)
  rolls complete hours up into the plain table `readings_hourly` (migration 0007) and then
  drops whole chunks past the keep date with `drop_chunks`.

Either way alerts, their history and the hourly summary stay when raw readings go, and long
chart ranges read `readings_hourly` (or `time_bucket` over what raw readings remain).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from core.clock import Clock
from core.logs import event
from core.settings import Settings

log = logging.getLogger("oximon.storage")

LICENSED = "timescale"
APACHE = "apache"
# Any constant; the same in every alerting worker, so one of them runs the job at a time.
_LOCK_KEY = 0x0C5_1307
# Re-aggregate this far back on every run: readings uploaded late (an oximeter that was offline)
# still land in their hour. The continuous aggregate's refresh window is the same.
REFRESH_WINDOW = timedelta(days=3)
# The first roll-up of a large table goes a day per transaction.
_STEP = timedelta(days=1)

# One row per patient and hour. The licensed view and the Apache table have the same columns,
# so what reads `readings_hourly` does not care which edition filled it.
_HOURLY_SELECT = """
SELECT patient_id,
       time_bucket(INTERVAL '1 hour', time) AS bucket,
       count(*)::integer AS readings,
       min(spo2) AS spo2_min,
       avg(spo2)::real AS spo2_avg,
       max(spo2) AS spo2_max,
       min(pulse) AS pulse_min,
       avg(pulse)::real AS pulse_avg,
       max(pulse) AS pulse_max
FROM readings
"""
_HOURLY_COLUMNS = "readings, spo2_min, spo2_avg, spo2_max, pulse_min, pulse_avg, pulse_max"

ROLL_UP = (
    f"INSERT INTO readings_hourly (patient_id, bucket, {_HOURLY_COLUMNS})"
    f"{_HOURLY_SELECT} WHERE time >= %(since)s AND time < %(until)s GROUP BY patient_id, bucket"
    " ON CONFLICT (patient_id, bucket) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _HOURLY_COLUMNS.split(", "))
)

# The licensed edition's declarations, in order. ENABLE_COMPRESSION runs once: TimescaleDB
# refuses to change compression settings while compressed chunks exist.
ENABLE_COMPRESSION = (
    # Segment by device: the unique key (device_id, time) keeps working on compressed chunks,
    # and a patient's chart reads one device's segments.
    "ALTER TABLE readings SET (timescaledb.compress,"
    " timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC')"
)
CREATE_HOURLY_VIEW = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly"
    " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
    f"{_HOURLY_SELECT} GROUP BY patient_id, bucket WITH NO DATA"
)
ADD_HOURLY_REFRESH = (
    "SELECT add_continuous_aggregate_policy('readings_hourly',"
    " start_offset => %(refresh_window)s, end_offset => INTERVAL '1 hour',"
    " schedule_interval => INTERVAL '30 minutes', if_not_exists => true)"
)
ADD_COMPRESSION = "SELECT add_compression_policy('readings', compress_after => %s)"
REMOVE_COMPRESSION = "SELECT remove_compression_policy('readings', if_exists => true)"
ADD_RETENTION = "SELECT add_retention_policy('readings', drop_after => %s)"
REMOVE_RETENTION = "SELECT remove_retention_policy('readings', if_exists => true)"
COMPRESSION_ENABLED = (
    "SELECT compression_enabled FROM timescaledb_information.hypertables"
    " WHERE hypertable_name = 'readings'"
)
# The interval a policy of `readings` was declared with ('7 days'), to see whether the setting
# changed since.
POLICY_SETTING = (
    "SELECT config->>%(key)s AS value FROM timescaledb_information.jobs"
    " WHERE proc_name = %(proc)s AND hypertable_name = 'readings'"
)
# Every licensed statement, for the test that each reaches Timescale's licensed code.
LICENSED_STATEMENTS = (
    ENABLE_COMPRESSION,
    CREATE_HOURLY_VIEW,
    ADD_HOURLY_REFRESH,
    ADD_COMPRESSION,
    REMOVE_COMPRESSION,
    ADD_RETENTION,
    REMOVE_RETENTION,
)


def licence(conn: psycopg.Connection[Any]) -> str:
    """`timescale` (compression, continuous aggregates, policies) or `apache` (none of them)."""
    row = conn.execute("SHOW timescaledb.license").fetchone()
    assert row is not None
    value = row["timescaledb.license"] if isinstance(row, dict) else row[0]
    return str(value)


@dataclass
class StorageReport:
    edition: str
    hours_rolled_up: int = 0
    chunks_dropped: int = 0


def declare_licensed_policies(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """Compression, the continuous aggregate and retention as database jobs (licensed only).

    Idempotent; a changed setting replaces its policy. Needs an autocommit connection: a
    continuous aggregate cannot be created inside a transaction block by every release."""
    enabled = conn.execute(COMPRESSION_ENABLED).fetchone()
    if not (enabled and _value(enabled)):
        conn.execute(ENABLE_COMPRESSION)
    conn.execute(CREATE_HOURLY_VIEW)
    conn.execute(ADD_HOURLY_REFRESH, {"refresh_window": REFRESH_WINDOW})
    _replace_policy(
        conn,
        "policy_compression",
        "compress_after",
        settings.compress_after_days,
        ADD_COMPRESSION,
        REMOVE_COMPRESSION,
    )
    _replace_policy(
        conn,
        "policy_retention",
        "drop_after",
        settings.retention_days,
        ADD_RETENTION,
        REMOVE_RETENTION,
    )


def _value(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _replace_policy(
    conn: psycopg.Connection[Any], proc: str, key: str, days: int | None, add: str, remove: str
) -> None:
    row = conn.execute(POLICY_SETTING, {"key": key, "proc": proc}).fetchone()
    current = _value(row) if row else None
    wanted = f"{days} days" if days else None
    if current != wanted:
        conn.execute(remove)
        if days:
            conn.execute(add, (timedelta(days=days),))


def roll_up(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Fill `readings_hourly` for every complete hour not yet summarised, and re-summarise the
    last `REFRESH_WINDOW` (late uploads). Returns the number of hour rows written."""
    until = now.replace(minute=0, second=0, microsecond=0)
    row = conn.execute("SELECT max(bucket) AS b FROM readings_hourly").fetchone()
    last = row["b"] if isinstance(row, dict) else row[0] if row else None
    if last is None:
        row = conn.execute("SELECT min(time) AS t FROM readings").fetchone()
        first = row["t"] if isinstance(row, dict) else row[0] if row else None
        if first is None:
            return 0
        since = first
    else:
        since = min(last, until) - REFRESH_WINDOW
    written = 0
    while since < until:
        step_end = min(since + _STEP, until)
        with conn.transaction():
            written += conn.execute(ROLL_UP, {"since": since, "until": step_end}).rowcount
        # Skip over days without readings (a long quiet spell costs one query, not one a day).
        row = conn.execute("SELECT min(time) AS t FROM readings WHERE time >= %s", (step_end,))
        found = row.fetchone()
        following = (found["t"] if isinstance(found, dict) else found[0]) if found else None
        if following is None:
            break
        since = max(step_end, following.replace(minute=0, second=0, microsecond=0))
    return written


def drop_old_chunks(conn: psycopg.Connection[Any], older_than: datetime) -> int:
    """Drop every `readings` chunk that lies wholly before `older_than`; returns how many."""
    with conn.transaction():
        rows = conn.execute("SELECT drop_chunks('readings', older_than => %s)", (older_than,))
        return len(rows.fetchall())


def run_storage(conn: psycopg.Connection[Any], settings: Settings, now: datetime) -> StorageReport:
    """One pass of the storage job on an autocommit connection."""
    edition = licence(conn)
    report = StorageReport(edition)
    if edition == LICENSED:
        declare_licensed_policies(conn, settings)
        return report
    # Summarise first: an hour is never dropped before it is in readings_hourly.
    report.hours_rolled_up = roll_up(conn, now)
    if settings.retention_days:
        report.chunks_dropped = drop_old_chunks(conn, now - timedelta(days=settings.retention_days))
    return report


class StorageJob:
    """The alerting workers' periodic storage job: at start, then once an hour (wall time).

    Several workers: a session advisory lock lets one run it; the others skip that turn."""

    def __init__(self, settings: Settings, interval_s: float = 3600.0) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._next_run = 0.0

    def __call__(self, pool: ConnectionPool, clock: Clock) -> StorageReport | None:
        if time.monotonic() < self._next_run:
            return None
        self._next_run = time.monotonic() + self.interval_s
        try:
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
                if not (locked and locked[0]):
                    return None
                report = run_storage(conn, self.settings, clock.now())
        except psycopg.Error as exc:
            # Not urgent: try again at the next turn; the alerting loop goes on.
            event(log, "storage_job_failed", logging.WARNING, error=type(exc).__name__)
            return None
        event(
            log,
            "storage_job",
            edition=report.edition,
            hours_rolled_up=report.hours_rolled_up,
            chunks_dropped=report.chunks_dropped,
        )
        return report
