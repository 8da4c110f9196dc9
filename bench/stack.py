"""A private stack for a benchmark run: PostgreSQL + TimescaleDB and Mosquitto in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devices.broker import BrokerAdmin
from oximon.localstack import LocalMosquitto, LocalPostgres, start_private_stack

SERVICE_USER, SERVICE_PASSWORD = "oximon-service", "bench-service-password"
LOADGEN_USER, LOADGEN_PASSWORD = "bench-loadgen", "bench-loadgen-password"


@dataclass
class BenchStack:
    root: Path
    postgres: LocalPostgres
    broker: LocalMosquitto

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{SERVICE_USER}:{SERVICE_PASSWORD}@127.0.0.1:{self.broker.port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OXIMON_")}
        env.update(
            {
                "OXIMON_DATABASE_URL": self.postgres.url,
                "OXIMON_MQTT_URL": self.mqtt_url,
                "OXIMON_MQTT_ADMIN_URL": self.broker.admin_url,
                "OXIMON_JWT_SECRET": "bench-secret-0123456789abcdef0123456789",
                "OXIMON_LOG_LEVEL": "WARNING",
            }
        )
        env.update(extra)
        return env

    def service(self, *args: str, log_name: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{log_name}.log").open("ab")
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "oximon.cli", *args],
            env=self.env(**extra),
            stdout=log,
            stderr=log,
        )


@contextmanager
def bench_stack() -> Iterator[BenchStack]:
    root = Path(tempfile.mkdtemp(prefix="oximon-bench-"))
    root.chmod(0o755)
    pg, broker = start_private_stack(root, SERVICE_USER, SERVICE_PASSWORD)
    try:
        with BrokerAdmin(broker.admin_url) as admin:
            # The load generator publishes for many devices over a few connections; per-device
            # ACLs are tested in the suite, throughput is what is measured here.
            admin.execute(
                [
                    {
                        "command": "createClient",
                        "username": LOADGEN_USER,
                        "password": LOADGEN_PASSWORD,
                        "roles": [{"rolename": "oximon-service"}],
                    }
                ],
                ok_errors=("Client already exists",),
            )
        yield BenchStack(root, pg, broker)
    finally:
        broker.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def create_fleet(database_url: str, devices: int) -> list[str]:
    """`devices` synthetic patients, one registered device each (registry rows only)."""
    ids = [f"bench-{i:06d}" for i in range(devices)]
    with psycopg.connect(database_url) as conn:
        # Oximeters reporting many times a minute: judged as continuous streams.
        conn.execute(
            "INSERT INTO patients (display_name, schedule) SELECT 'Bench patient ' || g,"
            ' \'{"kind": "continuous", "max_gap_min": 30}\' FROM generate_series(1, %s) g',
            (devices,),
        )
        conn.execute(
            "INSERT INTO devices (id, patient_id)"
            " SELECT 'bench-' || lpad((g - 1)::text, 6, '0'), g FROM generate_series(1, %s) g",
            (devices,),
        )
    return ids


def run_locust(
    locustfile: Path,
    host: str,
    users: int,
    spawn_rate: float,
    duration: str,
    out: Path,
    env: dict[str, str],
    *extra: str,
    timeout_s: float,
    cwd: Path | None = None,
) -> None:
    """Locust headless against `host`, its CSV and HTML reports under `out`."""
    subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "--host",
            host,
            "-u",
            str(users),
            "-r",
            str(spawn_rate),
            "-t",
            duration,
            "--csv",
            str(out / "locust"),
            *extra,
            "--html",
            str(out / "locust.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],  # fmt: skip
        env=env,
        check=False,
        timeout=timeout_s,
        cwd=cwd,
    )
