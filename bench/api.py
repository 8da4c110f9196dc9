"""API load: nurses polling the patient list and latest readings and opening charts (locust),
against 1,000 patients with 30 days of readings at one a minute.

A private PostgreSQL (and Mosquitto, which the stack starts; the API does not need it) is
seeded server-side — `INSERT … SELECT generate_series` per day, one day per transaction, on
several connections at once (faster than COPY here: nothing is formatted in Python or parsed
from text) — then the real API (`oximon api`, uvicorn, as in production) is started and locust
runs headless (`bench/locust_api.py`, NurseUser), writing its CSV and HTML reports under the
output folder. Prints requests/s and latency percentiles per endpoint against the targets, and
EXPLAIN ANALYZE of the API's hot queries.

`--data-dir` keeps the seeded database there and reuses it on the next run (seeding the full
size takes minutes).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.security import hash_password
from bench.stack import SERVICE_PASSWORD, SERVICE_USER, run_locust
from oximon.localstack import LocalPostgres, free_port, start_private_stack

NURSE_PASSWORD = "bench-nurse-password"  # noqa: S105 - a private bench database
# Chart spans and their buckets, as in locust_api.py.
CHARTS = {"24h": (timedelta(hours=24), "5m"), "7d": (timedelta(days=7), "30m"),
          "30d": (timedelta(days=30), "1h")}  # fmt: skip
# Targets (issue 6): p95 per endpoint, milliseconds.
TARGETS_MS = {
    "GET /api/v1/patients": 50.0,
    "GET /api/v1/readings/latest": 50.0,
    "GET chart 30d (1h buckets)": 100.0,
}

_DAY = """
INSERT INTO readings (time, device_id, patient_id, spo2, pulse, pi, quality, source, received_at)
SELECT t, 'bench-' || lpad(p::text, 6, '0'), p,
       92 + ((p * 7 + m) %% 8), 60 + ((p * 13 + m * 3) %% 45), 2.5,
       CASE WHEN (p + m) %% 50 = 0 THEN 'motion' ELSE 'ok' END, 'mqtt',
       t + interval '200 milliseconds'
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                     interval '1 minute') t
CROSS JOIN LATERAL (SELECT (extract(epoch FROM t) / 60)::bigint AS m) mm
CROSS JOIN generate_series(1, %(patients)s) p
"""


@dataclass
class Seed:
    patients: int
    days: int
    readings: int
    seconds: float
    rows_per_s: float
    workers: int
    database_size: str
    reused: bool


@contextmanager
def _stack(data_dir: Path | None) -> Iterator[LocalPostgres]:
    root = data_dir.resolve() if data_dir else Path(tempfile.mkdtemp(prefix="oximon-bench-api-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    pg, broker = start_private_stack(root, SERVICE_USER, SERVICE_PASSWORD)
    try:
        yield pg
    finally:
        broker.stop()
        pg.stop(mode="fast")
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def seed(url: str, patients: int, days: int, nurses: int, workers: int, now: datetime) -> Seed:
    """Patients (continuous streams), one device each, nurses, readings, and alerts."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), max(time) FROM readings").fetchone()
        have = conn.execute("SELECT count(*) FROM patients").fetchone()
        if row and have and row[0] == patients * days * 1440 and have[0] == patients:
            _settle(conn)
            size = conn.execute(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()
            return Seed(patients, days, row[0], 0.0, 0.0, workers, size[0] if size else "", True)
        conn.execute("TRUNCATE readings, alert_events, alerts, devices, patients, users CASCADE")
        conn.execute(
            "INSERT INTO patients (id, display_name, schedule, enrolled_at)"
            ' SELECT g, \'Bench patient \' || g, \'{"kind": "continuous", "max_gap_min": 30}\','
            " %s FROM generate_series(1, %s) g",
            (now - timedelta(days=days + 1), patients),
        )
        conn.execute("SELECT setval('patients_id_seq', %s)", (patients,))
        conn.execute(
            "INSERT INTO devices (id, patient_id, online, last_seen_at, battery_pct)"
            " SELECT 'bench-' || lpad(g::text, 6, '0'), g, true, %s, 80"
            " FROM generate_series(1, %s) g",
            (now, patients),
        )
        digest = hash_password(NURSE_PASSWORD)
        conn.execute(
            "INSERT INTO users (username, full_name, role, password_hash)"
            " SELECT 'nurse-' || lpad(g::text, 3, '0'), 'Bench nurse ' || g, 'nurse', %s"
            " FROM generate_series(1, %s) g",
            (digest, nurses),
        )
        conn.execute(
            "INSERT INTO user_care_teams (user_id, care_team_id)"
            " SELECT id, oximon_default_care_team() FROM users"
        )
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    spans = [(start + timedelta(days=d), start + timedelta(days=d + 1)) for d in range(days)]

    def one_day(span: tuple[datetime, datetime]) -> None:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("SET synchronous_commit = off")
            c.execute(_DAY, {"start": span[0], "end": span[1], "patients": patients})

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one_day, spans))
    seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        _seed_alerts(conn, patients, start, end)
        _settle(conn)
        n = conn.execute("SELECT count(*) FROM readings").fetchone()
        size_row = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        ).fetchone()
    total = int(n[0]) if n else 0
    return Seed(
        patients,
        days,
        total,
        round(seconds, 1),
        round(total / seconds),
        workers,
        size_row[0] if size_row else "",
        False,
    )


def _settle(conn: psycopg.Connection) -> None:
    """What autovacuum does to insert-only chunks in production (PostgreSQL 13+): statistics,
    and pages marked all-visible, so that charts are index-only scans. Then the caches a
    running server holds: the readings index charts read (1.7 GB at full size) and today's
    chunk, read once into the operating system's page cache (pg_prewarm), so that a chart of a
    patient nobody opened since the benchmark started is not a cold disk read."""
    conn.execute("VACUUM (ANALYZE) readings")
    conn.execute("ANALYZE")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    conn.execute(
        "SELECT pg_prewarm(c.oid, 'read') FROM pg_class c"
        " WHERE c.relname LIKE '%readings_patient_time_cover_idx'"
    )
    conn.execute(
        "SELECT pg_prewarm(format('%I.%I', chunk_schema, chunk_name)::regclass, 'read')"
        " FROM timescaledb_information.chunks WHERE hypertable_name = 'readings'"
        " ORDER BY range_end DESC LIMIT 1"
    )


def _seed_alerts(conn: psycopg.Connection, patients: int, start: datetime, end: datetime) -> None:
    """About two resolved alerts per patient over the period, and an open one for one patient
    in ten (red for one in thirty), with their opening events."""
    conn.execute(
        "INSERT INTO alerts (patient_id, kind, severity, status, opened_at, updated_at,"
        " acknowledged_at, acknowledged_by, resolved_at, resolved_by, outcome, reason)"
        " SELECT 1 + (g %% %(p)s), CASE WHEN g %% 3 = 0 THEN 'spo2_low' ELSE 'trend' END,"
        " CASE WHEN g %% 4 = 0 THEN 'red' ELSE 'amber' END, 'resolved', o, o,"
        " o + interval '7 minutes', (SELECT min(id) FROM users), o + interval '40 minutes',"
        " (SELECT min(id) FROM users),"
        " (ARRAY['called_stable','home_visit','artefact_false_alarm','referred_hospital'])"
        "   [1 + g %% 4], 'bench alert'"
        " FROM generate_series(1, %(p)s * 2) g,"
        " LATERAL (SELECT %(start)s::timestamptz + (%(span)s::interval * (g::float / (%(p)s * 2)))"
        "   AS o) x",
        {"p": patients, "start": start, "span": end - start - timedelta(hours=2)},
    )
    conn.execute(
        "INSERT INTO alerts (patient_id, kind, severity, status, opened_at, updated_at, reason)"
        " SELECT g, 'spo2_low', CASE WHEN g %% 30 = 0 THEN 'red' ELSE 'amber' END, 'open',"
        " %(end)s - interval '20 minutes', %(end)s - interval '20 minutes', 'bench open alert'"
        " FROM generate_series(10, %(p)s, 10) g",
        {"p": patients, "end": end},
    )
    conn.execute(
        "INSERT INTO alert_events (alert_id, at, action, detail)"
        " SELECT id, opened_at, 'opened', jsonb_build_object('severity', severity) FROM alerts"
    )


def explain(url: str, now: datetime) -> str:
    """EXPLAIN ANALYZE of the hot queries, as the first nurse (all patients in scope)."""
    from api import queries
    from api.readings_routes import LATEST

    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        user = conn.execute("SELECT min(id) FROM users").fetchone()
        uid = user[0] if user else 0
        cases = [
            ("latest readings", LATEST, {"status": "active", "patient_ids": None, "user_id": uid}),
            (
                "month chart (1h buckets)",
                queries.READINGS_BUCKETED,
                {
                    "patient_id": 500,
                    "since": now - timedelta(days=30),
                    "until": now,
                    "bucket": timedelta(hours=1),
                },
            ),
        ]
        for name, sql, params in cases:
            for _ in range(2):  # the second run is the warm one reported
                rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()
            out.append(f"-- {name}\n" + "\n".join(r[0] for r in rows))
    return "\n\n".join(out)


def sequential(base: str, now: datetime, patients: int, n: int = 30) -> list[dict[str, object]]:
    """One nurse, one request at a time: each endpoint's latency without our own concurrency
    (the machine's other load still counts)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        res = client.post(
            "/api/v1/auth/token", data={"username": "nurse-001", "password": NURSE_PASSWORD}
        )
        res.raise_for_status()
        client.headers["Authorization"] = f"Bearer {res.json()['access_token']}"

        def chart(i: int, length: timedelta, bucket: str) -> tuple[str, dict[str, Any]]:
            patient = 1 + (i * 37) % patients
            span = {"since": (now - length).isoformat(), "until": now.isoformat()}
            return f"/api/v1/patients/{patient}/readings", {**span, "bucket": bucket}

        calls: dict[str, Any] = {
            "GET /api/v1/patients": lambda i: ("/api/v1/patients", {"limit": 200}),
            "GET /api/v1/readings/latest": lambda i: ("/api/v1/readings/latest", {}),
        }
        for span, (length, bucket) in CHARTS.items():
            calls[f"GET chart {span} ({bucket} buckets)"] = partial(
                chart, length=length, bucket=bucket
            )
        out: list[dict[str, object]] = []
        for name, call in calls.items():
            times = []
            for i in range(n + 3):
                path, params = call(i)
                started = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                if i >= 3:  # the first calls warm caches and prepared statements
                    times.append((time.perf_counter() - started) * 1000)
            times.sort()
            out.append(
                {
                    "name": name,
                    "requests": n,
                    "p50_ms": round(times[n // 2], 1),
                    "p95_ms": round(times[int(n * 0.95)], 1),
                }
            )
    return out


def _wait_healthy(base: str, api: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not answer /healthz within 60 s")


def run(
    out: Path,
    patients: int = 1000,
    days: int = 30,
    users: int = 20,
    spawn_rate: float = 5,
    duration_s: int = 60,
    nurses: int = 20,
    seed_workers: int = 2,
    data_dir: Path | None = None,
) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with _stack(data_dir) as pg:
        print(f"seeding {patients} patients × {days} days at one reading a minute …", flush=True)
        seeded = seed(pg.url, patients, days, nurses, seed_workers, now)
        print(f"seeded: {seeded}", flush=True)
        with psycopg.connect(pg.url) as conn:
            last = conn.execute("SELECT max(time) FROM readings").fetchone()
        data_now = (last[0] if last and last[0] else now) + timedelta(minutes=1)
        plans = explain(pg.url, data_now)
        (out / "explain.txt").write_text(plans + "\n")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env_overrides = {
            "OXIMON_DATABASE_URL": pg.url,
            "OXIMON_API_PORT": str(port),
            "OXIMON_JWT_SECRET": "bench-secret-0123456789abcdef0123456789",
            "OXIMON_LOG_LEVEL": "WARNING",
            # Every locust user logs in from 127.0.0.1 at start.
            "OXIMON_RATE_LIMIT_LOGIN": "100000/minute",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXIMON_")}
        env.update(env_overrides)
        api_log = out / "api-server.log"
        with api_log.open("wb") as log:
            api = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "oximon.cli", "api"], env=env, stdout=log, stderr=log
            )
        try:
            _wait_healthy(base, api, api_log)
            alone = sequential(base, data_now, patients)
            locust_env = dict(
                env,
                BENCH_NURSES=",".join(f"nurse-{i:03d}" for i in range(1, nurses + 1)),
                BENCH_PASSWORD=NURSE_PASSWORD,
                BENCH_PATIENTS=str(patients),
                BENCH_NOW=data_now.isoformat(),
                BENCH_LOGIN_FILE=str(out / "logins.json"),
            )
            print(f"locust: {users} nurses for {duration_s} s against {base} …", flush=True)
            run_locust(
                Path(__file__).with_name("locust_api.py"),
                base,
                users,
                spawn_rate,
                f"{duration_s}s",
                out,
                locust_env,
                "--reset-stats",
                timeout_s=duration_s + 180,
            )
        finally:
            api.terminate()
            try:
                api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                api.kill()
    rows = _stats(out / "locust_stats.csv")
    logins = sorted(json.loads((out / "logins.json").read_text()))
    if logins:
        rows.insert(
            len(rows) - 1,
            {
                "name": "POST /api/v1/auth/token (each nurse once, before measuring)",
                "requests": len(logins),
                "failures": 0,
                "rps": 0.0,
                "p50_ms": logins[len(logins) // 2],
                "p95_ms": logins[min(len(logins) - 1, int(len(logins) * 0.95))],
                "p99_ms": logins[min(len(logins) - 1, int(len(logins) * 0.99))],
                "max_ms": logins[-1],
            },
        )
    result = {
        "seed": asdict(seeded),
        "users": users,
        "duration_s": duration_s,
        "endpoints": rows,
        "sequential": alone,
        "measured_at": now.isoformat(),
    }
    (out / "api.json").write_text(json.dumps(result, indent=2) + "\n")
    table = _table(rows, seeded, users, duration_s) + "\n\n" + _sequential_table(alone)
    (out / "api.md").write_text(table + "\n")
    print(table)
    print(f"\nEXPLAIN ANALYZE: {out / 'explain.txt'}; locust report: {out / 'locust.html'}")
    return result


def _stats(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            if int(r["Request Count"]) == 0:
                continue
            rows.append(
                {
                    "name": r["Name"],
                    "requests": int(r["Request Count"]),
                    "failures": int(r["Failure Count"]),
                    "rps": float(r["Requests/s"]),
                    "p50_ms": float(r["50%"] or 0),
                    "p95_ms": float(r["95%"] or 0),
                    "p99_ms": float(r["99%"] or 0),
                    "max_ms": float(r["Max Response Time"] or 0),
                }
            )
    return rows


def _sequential_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "One nurse, one request at a time (no concurrency of ours):",
        "",
        "| endpoint | requests | p50 ms | p95 ms |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['name']} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} |" for r in rows]
    return "\n".join(lines)


def _table(rows: list[dict[str, object]], seeded: Seed, users: int, duration_s: int) -> str:
    lines = [
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | max ms "
        "| target p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = TARGETS_MS.get(str(r["name"]))
        mark = ""
        if target is not None:
            mark = f"≤ {target:.0f} " + ("✅" if float(str(r["p95_ms"])) <= target else "❌")
        lines.append(
            f"| {r['name']} | {r['requests']:,} | {r['failures']} | {float(str(r['rps'])):.1f} "
            f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} "
            f"| {mark} |"
        )
    seed_note = (
        "reused from --data-dir"
        if seeded.reused
        else f"seeded in {seeded.seconds:.0f} s ({seeded.rows_per_s:,.0f} rows/s, "
        f"{seeded.workers} connections)"
    )
    lines.append("")
    lines.append(
        f"{seeded.patients:,} patients × {seeded.days} days, {seeded.readings:,} readings "
        f"({seeded.database_size}), {seed_note}; {users} locust nurses for {duration_s} s; one "
        "`oximon api` process (uvicorn)."
    )
    return "\n".join(lines)
