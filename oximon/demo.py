"""`oximon up`: the whole system on this machine, for a demo, under one folder."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from pathlib import Path

import psycopg
from honcho.manager import Manager
from honcho.printer import Printer

from api.security import hash_password
from oximon.localstack import free_port, port_open, start_private_stack

SERVICE_USER = "oximon-service"

DEMO_TEAM = [
    # username, full name, role, phone (synthetic, Norwegian mobile range), on call
    ("admin", "Demo Administrator", "admin", None, False),
    ("nurse1", "Demo Nurse One", "nurse", "+4799000001", False),
    ("nurse2", "Demo Nurse Two", "nurse", "+4799000002", False),
    ("doctor", "Demo On-call Doctor", "doctor", "+4799000009", True),
]


def _secrets(root: Path) -> dict[str, object]:
    path = root / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data: dict[str, object] = {
        "jwt_secret": secrets.token_urlsafe(32),
        "service_password": secrets.token_urlsafe(18),
        "users": {u[0]: secrets.token_urlsafe(9) for u in DEMO_TEAM},
    }
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)
    return data


def _cmd(*args: str) -> str:
    # honcho runs commands through a shell: exec, so SIGTERM reaches the service itself and
    # it stops gracefully (finishes its batch, acknowledges, closes).
    return "exec " + " ".join(shlex.quote(a) for a in args)


def seed_team(database_url: str, passwords: dict[str, str]) -> None:
    with psycopg.connect(database_url) as conn:
        for username, name, role, phone, on_call in DEMO_TEAM:
            conn.execute(
                "INSERT INTO users (username, full_name, role, password_hash, phone, on_call)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username) DO NOTHING",
                (username, name, role, hash_password(passwords[username]), phone, on_call),
            )
            # The demo site has one care team, the migration's first.
            conn.execute(
                "INSERT INTO user_care_teams (user_id, care_team_id)"
                " SELECT id, oximon_default_care_team() FROM users WHERE username = %s"
                " ON CONFLICT DO NOTHING",
                (username,),
            )


def run_demo(root: Path, patients: int, api_port: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    secret = _secrets(root)
    pg, broker = start_private_stack(root, SERVICE_USER, str(secret["service_password"]))
    try:
        passwords: dict[str, str] = secret["users"]  # type: ignore[assignment]
        seed_team(pg.url, passwords)
        if api_port == 0 or port_open(api_port):
            api_port = free_port()
        env = {
            **os.environ,
            "OXIMON_DATABASE_URL": pg.url,
            "OXIMON_MQTT_URL": f"mqtt://{SERVICE_USER}:{secret['service_password']}@127.0.0.1:{broker.port}",
            "OXIMON_MQTT_ADMIN_URL": broker.admin_url,
            "OXIMON_JWT_SECRET": str(secret["jwt_secret"]),
            "OXIMON_API_PORT": str(api_port),
        }
        exe = [sys.executable, "-m", "oximon.cli"]
        manager = Manager(Printer(sys.stdout))
        manager.add_process("ingest", _cmd(*exe, "ingest"), env=env)
        manager.add_process("alerting", _cmd(*exe, "alerting"), env=env)
        manager.add_process("api", _cmd(*exe, "api"), env=env)
        manager.add_process(
            "simulator", _cmd(*exe, "simulate", "--patients", str(patients)), env=env
        )
        print(
            "\n  oximon demo is starting.\n"
            f"  Dashboard:  http://127.0.0.1:{api_port}/dashboard\n"
            f"  API docs:   http://127.0.0.1:{api_port}/docs\n"
            f"  MQTT:       mqtt://127.0.0.1:{broker.port} (plain, demo only)\n"
            f"              mqtts://localhost:{broker.tls_port}  CA {broker.ca_path}\n"
            "  Device contract and mosquitto_pub examples: devices/README.md\n"
            "  Demo care team (username / password):\n"
            + "".join(f"    {u[0]:<8} {passwords[u[0]]:<14} {u[2]}\n" for u in DEMO_TEAM)
            + f"  {patients} synthetic patients; about one in ten deteriorates, so alerts appear"
            " within a couple of minutes.\n  Ctrl-C stops everything.\n",
            flush=True,
        )
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        broker.stop()
        pg.stop()
