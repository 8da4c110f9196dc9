"""Measure what docs/scaling.md needs and cannot guess: bytes per stored reading (table, indexes)
in the readings hypertable, bytes per row of the hourly summary, the storage job's roll-up
rate, and a Mosquitto's memory per idle authenticated connection.

    .venv/bin/python scripts/measure_storage.py [--readings 1000000] [--connections 2000]

Starts its own private PostgreSQL (TimescaleDB) and Mosquitto in a temporary folder, as the
tests do, and writes results/storage.md and results/storage.json. Synthetic data only.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from core.migrate import migrate
from core.settings import Settings
from core.storage import roll_up, run_storage
from oximon.localstack import LocalMosquitto, LocalPostgres
from simulator.rawmqtt import connect_packet

ROOT = Path(__file__).resolve().parent.parent
INTERVAL_S = 4  # a streaming oximeter's reading interval in the clinical benchmark


def _fill(conn: psycopg.Connection, readings: int, devices: int) -> datetime:
    """`readings` rows from `devices` streaming oximeters, one every INTERVAL_S, as ingest
    writes them (all columns of the contract filled)."""
    rng = random.Random(20261125)  # noqa: S311 - synthetic data, not secrets
    per_device = readings // devices
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with conn.cursor().copy(
        "COPY readings (time, device_id, patient_id, spo2, pulse, pi, quality, source,"
        " received_at, seq, battery_pct, late) FROM STDIN"
    ) as copy:
        for d in range(devices):
            device_id = f"ox-{d:06d}"
            offset = rng.uniform(0, INTERVAL_S)
            for i in range(per_device):
                at = start + timedelta(seconds=offset + INTERVAL_S * i)
                quality = "ok" if rng.random() > 0.02 else "motion"
                copy.write_row(
                    (
                        at,
                        device_id,
                        d + 1,
                        rng.randint(90, 99),
                        rng.randint(55, 110),
                        round(rng.uniform(0.5, 8.0), 1),
                        quality,
                        "mqtt",
                        at + timedelta(milliseconds=rng.randint(20, 400)),
                        i,
                        max(5, 100 - i // 500),
                        False,
                    )
                )
    return start + timedelta(seconds=INTERVAL_S * per_device)


def measure_database(root: Path, readings: int, devices: int) -> dict[str, float]:
    postgres = LocalPostgres(root / "postgres").start()
    try:
        migrate(postgres.url)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            started = time.perf_counter()
            with conn.transaction():
                end = _fill(conn, readings, devices)
            copy_s = time.perf_counter() - started
            conn.execute("VACUUM ANALYZE readings")
            detail = conn.execute(
                "SELECT sum(table_bytes), sum(index_bytes), sum(toast_bytes), sum(total_bytes)"
                " FROM hypertable_detailed_size('readings')"
            ).fetchone()
            chunks = conn.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
            count = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert detail and chunks and count and count[0] == readings - readings % devices
            started = time.perf_counter()
            hours = roll_up(conn, end + timedelta(hours=1))
            roll_up_s = time.perf_counter() - started
            run_storage(conn, Settings(), end + timedelta(hours=1))
            # The roll-up above makes too few rows to size a row (page overhead dominates):
            # a year of hours for 100 patients, the shape the storage job writes.
            conn.execute("TRUNCATE readings_hourly")
            conn.execute(
                "INSERT INTO readings_hourly (patient_id, bucket, readings, spo2_min, spo2_avg,"
                " spo2_max, pulse_min, pulse_avg, pulse_max)"
                " SELECT p, h, 900, 90 + p %% 5, 95.3, 99, 55, 71.2, 110"
                " FROM generate_series(1, 100) p,"
                " generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour',"
                " interval '1 hour') h",
                (end - timedelta(days=365), end),
            )
            conn.execute("VACUUM ANALYZE readings_hourly")
            hourly = conn.execute(
                "SELECT hypertable_size('readings_hourly'), count(*) FROM readings_hourly"
            ).fetchone()
            assert hourly
        n = count[0]
        return {
            "readings": n,
            "devices": devices,
            "chunks": chunks[0],
            "copy_readings_per_s": n / copy_s,
            "table_bytes": int(detail[0]),
            "index_bytes": int(detail[1]),
            "toast_bytes": int(detail[2]),
            "total_bytes": int(detail[3]),
            "bytes_per_reading": int(detail[3]) / n,
            "table_bytes_per_reading": int(detail[0]) / n,
            "index_bytes_per_reading": int(detail[1]) / n,
            "hourly_rows_rolled_up": hours,
            "hourly_rows_sized": int(hourly[1]),
            "hourly_bytes_per_row": int(hourly[0]) / int(hourly[1]),
            "roll_up_readings_per_s": n / roll_up_s,
        }
    finally:
        postgres.stop(mode="immediate")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_broker(root: Path, connections: int) -> dict[str, float]:
    """Memory of one Mosquitto (dynamic security on, as in production) per idle, authenticated
    MQTT 3.1.1 connection: what a fleet of connected oximeters costs the broker."""
    broker = LocalMosquitto(root / "mosquitto").start()
    socks: list[socket.socket] = []
    try:
        assert broker.process is not None
        pid = broker.process.pid
        time.sleep(0.5)
        before = _rss_kib(pid)
        for i in range(connections):
            s = socket.create_connection(("127.0.0.1", broker.port))
            s.sendall(connect_packet(f"idle-{i}", broker.admin_user, broker.admin_password))
            ack = s.recv(4)
            assert ack[:1] == b"\x20" and ack[3:4] == b"\x00", f"refused: {ack!r}"
            socks.append(s)
        time.sleep(1.0)
        after = _rss_kib(pid)
        return {
            "connections": connections,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_connection": (after - before) * 1024 / connections,
        }
    finally:
        for s in socks:
            s.close()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=250)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="oximon-measure-"))
    root.chmod(0o755)
    try:
        results = {
            "database": measure_database(root, args.readings, args.devices),
            "broker": measure_broker(root, args.connections),
            "command": "python scripts/measure_storage.py "
            f"--readings {args.readings} --devices {args.devices} "
            f"--connections {args.connections}",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "storage.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    db, mq = results["database"], results["broker"]
    lines = [
        f"`{results['command']}`",
        "",
        "| measured | value |",
        "|---|---|",
        f"| readings stored (synthetic, {db['devices']} oximeters, one every {INTERVAL_S} s) "
        f"| {db['readings']:,} in {db['chunks']} daily chunks |",
        f"| hypertable size, total | {db['total_bytes'] / 2**20:,.1f} MiB |",
        f"| bytes per reading: total | {db['bytes_per_reading']:.1f} |",
        f"| bytes per reading: heap | {db['table_bytes_per_reading']:.1f} |",
        f"| bytes per reading: indexes | {db['index_bytes_per_reading']:.1f} |",
        f"| readings_hourly: bytes per row ({db['hourly_rows_sized']:,} rows) "
        f"| {db['hourly_bytes_per_row']:.0f} |",
        f"| storage job roll-up rate | {db['roll_up_readings_per_s']:,.0f} readings/s |",
        f"| COPY rate (one transaction) | {db['copy_readings_per_s']:,.0f} readings/s |",
        f"| Mosquitto RSS per idle authenticated connection ({mq['connections']:,}) "
        f"| {mq['bytes_per_connection']:,.0f} bytes |",
    ]
    (out / "storage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
