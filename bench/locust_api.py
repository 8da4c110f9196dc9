"""Locust: nurses at the dashboard. Run by `python -m bench api` (which seeds the database and
sets the environment below); by hand:

    BENCH_NURSES=nurse-001,nurse-002 BENCH_PASSWORD=… BENCH_PATIENTS=1000 \\
    BENCH_NOW=2026-11-25T12:00:00+00:00 locust -f bench/locust_api.py --host http://127.0.0.1:8000

Each simulated nurse logs in once, then mostly polls the patient list and the latest readings
(as the dashboard does every few seconds) and now and then opens a patient's chart over 24 h,
7 days or 30 days through the bucketed readings endpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from datetime import datetime, timedelta
from typing import Any

from locust import HttpUser, between, events, task

NURSES = itertools.cycle(os.environ.get("BENCH_NURSES", "nurse1").split(","))
PASSWORD = os.environ.get("BENCH_PASSWORD", "nurse1-password")
PATIENTS = int(os.environ.get("BENCH_PATIENTS", "1000"))
NOW = datetime.fromisoformat(os.environ["BENCH_NOW"]) if "BENCH_NOW" in os.environ else None
PAGE = int(os.environ.get("BENCH_PAGE", "200"))

# Chart spans and their buckets (bench/api.py's one-at-a-time pass has the same; this file is
# loaded by locust with bench/ on sys.path, where `api` would be bench/api.py, so it imports
# nothing of ours): about 300–700 points per chart, what a screen can show.
CHARTS = {"24h": (timedelta(hours=24), "5m"), "7d": (timedelta(days=7), "30m"),
          "30d": (timedelta(days=30), "1h")}  # fmt: skip

# Logins (argon2, slow on purpose) are measured apart: statistics restart once every nurse has
# logged in, so the table shows the steady polling load.
LOGIN_MS: list[float] = []


class NurseUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        started = time.perf_counter()
        res = self.client.post(
            "/api/v1/auth/token",
            data={"username": next(NURSES), "password": PASSWORD},
            name="POST /api/v1/auth/token",
        )
        res.raise_for_status()
        LOGIN_MS.append((time.perf_counter() - started) * 1000)
        self.client.headers["Authorization"] = f"Bearer {res.json()['access_token']}"
        runner = self.environment.runner
        if runner is not None and len(LOGIN_MS) == runner.target_user_count:
            self.environment.stats.reset_all()

    @task(6)
    def patient_list(self) -> None:
        self.client.get("/api/v1/patients", params={"limit": PAGE}, name="GET /api/v1/patients")

    @task(6)
    def latest_readings(self) -> None:
        self.client.get("/api/v1/readings/latest", name="GET /api/v1/readings/latest")

    def _chart(self, span: str) -> None:
        length, bucket = CHARTS[span]
        until = NOW or datetime.now().astimezone()
        patient = random.randint(1, PATIENTS)  # noqa: S311 - load, not security
        self.client.get(
            f"/api/v1/patients/{patient}/readings",
            params={
                "since": (until - length).isoformat(),
                "until": until.isoformat(),
                "bucket": bucket,
            },
            name=f"GET chart {span} ({bucket} buckets)",
        )

    @task(2)
    def chart_day(self) -> None:
        self._chart("24h")

    @task(1)
    def chart_week(self) -> None:
        self._chart("7d")

    @task(1)
    def chart_month(self) -> None:
        self._chart("30d")


@events.test_stop.add_listener
def _write_logins(**_: Any) -> None:
    path = os.environ.get("BENCH_LOGIN_FILE")
    if path:
        with open(path, "w") as f:
            json.dump(LOGIN_MS, f)
