"""Load test with locust (`python -m bench locust`, part of `make bench`): oximeters over MQTT
(`DeviceUser`, each its own broker account through the dynamic-security plugin) and nurses over
HTTP (`NurseUser`, when bench/locust_api.py is there) against the real platform — a private
PostgreSQL and Mosquitto, `oximon ingest` and `oximon api` — headless, writing locust's CSV and
HTML reports and a PNG of the report (Debian's Chromium through Playwright) under the output
folder, and counting what ingest stored against what the broker acknowledged.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from api.security import hash_password
from bench.stack import bench_stack, run_locust
from devices.broker import BrokerAdmin
from devices.registry import register_device
from oximon.localstack import free_port

NURSE_PASSWORD = "bench-nurse-password"  # noqa: S105 - a private bench database
CHROMIUM = "/usr/bin/chromium"


def _provision(
    database_url: str, admin_url: str, devices: int, nurses: int
) -> tuple[list[dict[str, str]], float]:
    """Patients with a streaming oximeter each (own broker account and role) and nurses."""
    started = time.perf_counter()
    creds = []
    with psycopg.connect(database_url, autocommit=True) as conn, BrokerAdmin(admin_url) as broker:
        for i in range(1, devices + 1):
            row = conn.execute(
                "INSERT INTO patients (display_name, schedule) VALUES (%s, %s) RETURNING id",
                (f"Load patient {i:05d}", Jsonb({"kind": "continuous", "max_gap_min": 30})),
            ).fetchone()
            assert row is not None
            c = register_device(conn, admin_url, row[0], device_id=f"load-{i:05d}", broker=broker)
            creds.append({"device_id": c.device_id, "password": c.password})
        provision_s = time.perf_counter() - started
        digest = hash_password(NURSE_PASSWORD)
        for i in range(1, nurses + 1):
            conn.execute(
                "INSERT INTO users (username, full_name, role, password_hash)"
                " VALUES (%s, %s, 'nurse', %s)",
                (f"nurse-{i:03d}", f"Load nurse {i}", digest),
            )
        # The nurses belong to the care team the patients are in (the default one).
        conn.execute(
            "INSERT INTO user_care_teams (user_id, care_team_id)"
            " SELECT id, oximon_default_care_team() FROM users ON CONFLICT DO NOTHING"
        )
    return creds, provision_s


def _wait_healthy(base: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer {base}/healthz")


def screenshot(html: Path, png: Path) -> None:
    """Locust's HTML report rendered by Debian's Chromium, its charts included."""
    from playwright.sync_api import sync_playwright

    from dashboards.loadtime import CHROMIUM_ARGS as args  # Debian's Chromium, closed network

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(html.resolve().as_uri())
        page.wait_for_timeout(1500)
        page.screenshot(path=str(png), full_page=True)
        # The charts alone (requests/s, response times, users), for the README.
        top = page.get_by_role("heading", name="Charts").bounding_box()
        end = page.get_by_role("heading", name="Final ratio").bounding_box()
        if top and end:
            clip: Any = {"x": 0, "y": top["y"] - 10, "width": 1400, "height": end["y"] - top["y"]}
            page.screenshot(path=str(png.with_name("locust-charts.png")), full_page=True, clip=clip)
        browser.close()


def run(
    devices: int, nurses: int, duration_s: float, interval_s: float, out: Path
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with bench_stack() as stack:
        creds, provision_s = _provision(stack.postgres.url, stack.broker.admin_url, devices, nurses)
        creds_path = stack.root / "devices.json"
        creds_path.write_text(json.dumps(creds))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ingest = stack.service("ingest", log_name="ingest")
        api = stack.service(
            "api",
            log_name="api",
            OXIMON_API_PORT=str(port),
            OXIMON_RATE_LIMIT_LOGIN="100000/minute",
        )
        try:
            _wait_healthy(base)
            env = stack.env(
                BENCH_MQTT=f"127.0.0.1:{stack.broker.port}",
                BENCH_DEVICES=str(creds_path),
                BENCH_DEVICE_INTERVAL_S=str(interval_s),
                BENCH_NURSES=",".join(f"nurse-{i:03d}" for i in range(1, nurses + 1)),
                BENCH_PASSWORD=NURSE_PASSWORD,
                BENCH_PATIENTS=str(devices),
            )
            has_nurses = (Path(__file__).parent / "locust_api.py").exists()
            users = devices + (nurses if has_nurses else 0)
            print(
                f"locust: {devices} devices (one reading each per {interval_s:g} s)"
                + (f" and {nurses} nurses" if has_nurses else "")
                + f" for {duration_s:g} s …",
                flush=True,
            )
            run_locust(
                Path(__file__).with_name("locustfile.py"),
                base,
                users,
                max(10, users // 10),
                f"{duration_s:g}s",
                out,
                env,
                "--csv-full-history",
                timeout_s=duration_s + 300,
                cwd=Path(__file__).parent.parent,
            )
            time.sleep(3)  # the last batches committed
            with psycopg.connect(stack.postgres.url) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
                stored = int(row[0]) if row else 0
        finally:
            for proc in (api, ingest):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    rows = _stats(out / "locust_stats.csv")
    publish = next((r for r in rows if r["name"] == "publish reading (QoS 1)"), None)
    acked = int(publish["requests"]) - int(publish["failures"]) if publish else 0
    result = {
        "devices": devices,
        "nurses": nurses if has_nurses else 0,
        "duration_s": duration_s,
        "interval_s": interval_s,
        "dynsec_provision_s": round(provision_s, 1),
        "published_acked": acked,
        "stored": stored,
        "endpoints": rows,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    (out / "locust.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / "locust.md").write_text(table)
    print(table)
    if (out / "locust.html").exists() and Path(CHROMIUM).exists():
        screenshot(out / "locust.html", out / "locust.png")
        print(f"report: {out / 'locust.html'}, picture: {out / 'locust.png'}")
    return result


def _stats(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [
            {
                "type": r["Type"],
                "name": r["Name"],
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "per_s": float(r["Requests/s"]),
                "p50_ms": float(r["50%"] or 0),
                "p95_ms": float(r["95%"] or 0),
                "p99_ms": float(r["99%"] or 0),
                "max_ms": float(r["Max Response Time"] or 0),
            }
            for r in csv.DictReader(f)
        ]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| type | name | requests | failures | per s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["endpoints"]:
        lines.append(
            f"| {r['type']} | {r['name']} | {r['requests']:,} | {r['failures']:,}"
            f" | {r['per_s']:,.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f}"
            f" | {r['max_ms']:.0f} |"
        )
    lines.append(
        f"\n{result['devices']} devices (a reading each per {result['interval_s']:g} s), "
        f"{result['nurses']} nurses, {result['duration_s']:g} s; readings acknowledged by the "
        f"broker {result['published_acked']:,}, stored by ingest {result['stored']:,}; "
        f"{result['devices']} device accounts provisioned through dynamic security in "
        f"{result['dynsec_provision_s']} s; load average {result['loadavg']}.\n"
    )
    return "\n".join(lines)
