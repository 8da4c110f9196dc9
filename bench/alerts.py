"""Alert latency under load: a red reading's publish → its alert committed → its SMS at Twilio.

A raw-socket generator offers normal readings (no alerts) at the background rate for many
devices; meanwhile probe devices, one per probe patient, each publish one red reading, spread
evenly over the run. The real ingest worker stores and evaluates everything; the real alerting
worker pages the nurse on duty through the real twilio library, pointed at the local fake
Twilio server of the test suite (tests/twilio_fake.py), which records when each request
arrived.

* publish → alert committed: the probe's publish (wall clock, just before the socket write) to
  the NOTIFY `oximon_alerts` the lifecycle sends in the transaction that opens the alert
  (PostgreSQL delivers it at commit).
* publish → SMS at Twilio: to the arrival of the Messages API request carrying the alert's
  code ("Reply ACK 12").
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from bench.ingest import CommitListener, _generate
from bench.stack import LOADGEN_PASSWORD, LOADGEN_USER, bench_stack, create_fleet
from simulator.rawmqtt import RawPublisher
from tests.twilio_fake import FakeTwilio

ACCOUNT_SID = "AC" + "be0c4a1e47" * 3 + "00"
AUTH_TOKEN = "bench-twilio-token"  # noqa: S105 - the local fake's
NURSE_PHONE = "+4799100001"
TARGET_ALERT_P99_MS = 100.0
TARGET_SMS_P99_MS = 1000.0


@dataclass
class AlertBenchResult:
    background_offered_per_s: int
    background_achieved_per_s: float
    background_stored: int
    background_published: int
    dead_letters: dict[str, int]
    duration_s: float
    probes: int
    alerts_committed: int
    sms_at_twilio: int
    sms_requests: int
    # The same run's background readings, publish → committed: the ingest path alone.
    reading_p50_ms: float
    reading_p99_ms: float
    alert_p50_ms: float
    alert_p99_ms: float
    alert_max_ms: float
    sms_p50_ms: float
    sms_p99_ms: float
    sms_max_ms: float


class AlertListener:
    """LISTEN oximon_alerts: wall time at which each patient's alert committed."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.conn.execute("LISTEN oximon_alerts")
        self.committed: dict[int, float] = {}
        self.alert_patient: dict[int, int] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            for n in self.conn.notifies(timeout=0.2):
                at = time.time()
                payload = json.loads(n.payload)
                self.committed.setdefault(payload["patient_id"], at)
                self.alert_patient[payload["alert_id"]] = payload["patient_id"]

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.conn.close()


def _setup(url: str, devices: int, probes: int) -> list[str]:
    """Background fleet, probe patients with a device each, and a nurse on duty."""
    create_fleet(url, devices)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO patients (display_name) SELECT 'Bench probe ' || g"
            " FROM generate_series(1, %s) g RETURNING id",
            (probes,),
        ).fetchall()
        probe_ids = [f"probe-{i:04d}" for i in range(probes)]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (id, patient_id) VALUES (%s, %s)",
                [(d, r[0]) for d, r in zip(probe_ids, rows, strict=True)],
            )
        nurse = conn.execute(
            "INSERT INTO users (username, full_name, role, password_hash, phone)"
            " VALUES ('bench-nurse', 'Bench nurse', 'nurse', 'x', %s) RETURNING id",
            (NURSE_PHONE,),
        ).fetchone()
        assert nurse is not None
        # The probes' team (the first one): an alert pages only its patient's team's rota.
        conn.execute(
            "INSERT INTO user_care_teams (user_id, care_team_id)"
            " VALUES (%s, oximon_default_care_team())",
            (nurse[0],),
        )
        now = datetime.now(UTC)
        conn.execute(
            "INSERT INTO oncall_shifts (user_id, role, phone, starts_at, ends_at, created_at)"
            " VALUES (%s, 'nurse', %s, %s, %s, %s)",
            (nurse[0], NURSE_PHONE, now - timedelta(hours=1), now + timedelta(hours=12), now),
        )
    return probe_ids


def _probe(port: int, probe_ids: list[str], duration_s: float, sent: dict[str, float]) -> None:
    pub = RawPublisher(
        "127.0.0.1", port, f"bench-probe-{time.time_ns()}", LOADGEN_USER, LOADGEN_PASSWORD
    )
    gap = duration_s / (len(probe_ids) + 1)
    start = time.time()
    try:
        for i, device in enumerate(probe_ids):
            time.sleep(max(0.0, start + gap * (i + 1) - time.time()))
            t0 = time.time()
            payload = b'{"ts":%d,"spo2":86,"pulse":104,"quality":"ok"}' % int(t0 * 1000)
            pub.publish_many([(f"oximon/devices/{device}/readings".encode(), payload)])
            sent[device] = t0
    finally:
        pub.close()


def _drain(conn: psycopg.Connection, published: int, quiet_s: float = 5.0) -> int:
    """Background readings stored, once all are in or nothing has moved for `quiet_s`."""
    last, changed = -1, time.time()
    while True:
        row = conn.execute("SELECT count(*) FROM readings WHERE device_id LIKE 'bench-%%'")
        stored = int(row.fetchone()[0])  # type: ignore[index]
        if stored >= published or time.time() - changed > quiet_s:
            return stored
        if stored != last:
            last, changed = stored, time.time()
        time.sleep(0.2)


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def markdown(r: AlertBenchResult, note: str) -> str:
    ok_alert = "✅" if r.alert_p99_ms <= TARGET_ALERT_P99_MS else "❌"
    ok_sms = "✅" if r.sms_p99_ms <= TARGET_SMS_P99_MS else "❌"
    return (
        "| from a red reading's publish to | n | p50 ms | p99 ms | max ms | target p99 |\n"
        "|---|---|---|---|---|---|\n"
        f"| its alert committed | {r.alerts_committed}/{r.probes} | {r.alert_p50_ms} "
        f"| {r.alert_p99_ms} | {r.alert_max_ms} | ≤ {TARGET_ALERT_P99_MS:.0f} {ok_alert} |\n"
        f"| its SMS at the Twilio endpoint | {r.sms_at_twilio}/{r.probes} | {r.sms_p50_ms} "
        f"| {r.sms_p99_ms} | {r.sms_max_ms} | ≤ {TARGET_SMS_P99_MS:.0f} {ok_sms} |\n"
        f"| (background readings: committed) | {r.background_stored:,} | {r.reading_p50_ms} "
        f"| {r.reading_p99_ms} | | |\n"
        f"\nBackground load: {r.background_offered_per_s:,} readings/s offered, "
        f"{r.background_achieved_per_s:,.0f}/s reached by the generator, "
        f"{r.background_published:,} published, {r.background_stored:,} stored"
        f" ({sum(r.dead_letters.values())} dead-lettered), over {r.duration_s:.0f} s. {note}\n"
    )


def run(
    out: Path = Path("results"),
    rate: int = 5000,
    duration_s: float = 30.0,
    probes: int = 300,
    devices: int = 2000,
) -> AlertBenchResult:
    """Run the benchmark; write results/alerts.json and results/alerts.md; return the result."""
    out.mkdir(parents=True, exist_ok=True)
    with bench_stack() as stack, FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        url = stack.postgres.url
        probe_ids = _setup(url, devices, probes)
        fleet = [f"bench-{i:06d}" for i in range(devices)]
        ingest = stack.service("ingest", log_name="ingest", OXIMON_MQTT_CLIENT_ID="bench-ingest")
        alerting = stack.service(
            "alerting",
            log_name="alerting",
            OXIMON_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            OXIMON_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            OXIMON_TWILIO_FROM_NUMBER="+4759440000",
            OXIMON_TWILIO_API_URL=twilio.url,
        )
        listener = AlertListener(url)
        commits = CommitListener(url)
        try:
            time.sleep(2)  # the workers connect and subscribe
            ctx = mp.get_context("fork")
            reports: mp.Queue = ctx.Queue()
            gen = ctx.Process(
                target=_generate,
                args=(stack.broker.port, fleet, float(rate), duration_s, 0, reports),
            )
            sent: dict[str, float] = {}
            gen.start()
            _probe(stack.broker.port, probe_ids, duration_s * 0.9, sent)
            report = reports.get(timeout=duration_s + 120)
            gen.join()
            # Let the last alerts and pages arrive.
            deadline = time.time() + 30
            while time.time() < deadline:
                codes = {c for m in twilio.messages for c in m.codes()}
                if len(listener.committed) >= probes and len(codes) >= probes:
                    break
                time.sleep(0.1)
            with psycopg.connect(url) as conn:
                probe_patient: dict[str, int] = dict(
                    conn.execute(
                        "SELECT id, patient_id FROM devices WHERE id LIKE 'probe-%%'"
                    ).fetchall()
                )
                stored = _drain(conn, report["sent"])
                time.sleep(0.5)  # the last NOTIFY
                dead = conn.execute(
                    "SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC"
                ).fetchall()
                rows = conn.execute(
                    "SELECT extract(epoch FROM time), received_at FROM readings"
                    " WHERE device_id LIKE 'bench-%%'"
                ).fetchall()
        finally:
            listener.close()
            commits.close()
            for proc in (ingest, alerting):
                proc.terminate()
                proc.wait(timeout=30)
        sms_at: dict[int, float] = {}
        for m in twilio.messages:
            for code in m.codes():
                patient = listener.alert_patient.get(code)
                if patient is not None:
                    sms_at.setdefault(patient, m.received_wall_s)
        alert_ms, sms_ms = [], []
        for device, t0 in sent.items():
            patient = probe_patient[device]
            if patient in listener.committed:
                alert_ms.append((listener.committed[patient] - t0) * 1000)
            if patient in sms_at:
                sms_ms.append((sms_at[patient] - t0) * 1000)
        reading_ms = [
            (commits.commits[r[1]] - float(r[0])) * 1000 for r in rows if r[1] in commits.commits
        ]
        offered_s = report["finished"] - report["start"]
        result = AlertBenchResult(
            background_offered_per_s=rate,
            background_achieved_per_s=round(report["sent"] / offered_s, 1),
            background_stored=stored,
            background_published=int(report["sent"]),
            dead_letters={str(reason): int(n) for reason, n in dead},
            duration_s=round(offered_s, 1),
            probes=probes,
            alerts_committed=len(alert_ms),
            sms_at_twilio=len(sms_ms),
            sms_requests=len(twilio.messages),
            reading_p50_ms=_ms(reading_ms, 50),
            reading_p99_ms=_ms(reading_ms, 99),
            alert_p50_ms=_ms(alert_ms, 50),
            alert_p99_ms=_ms(alert_ms, 99),
            alert_max_ms=round(max(alert_ms), 1) if alert_ms else float("nan"),
            sms_p50_ms=_ms(sms_ms, 50),
            sms_p99_ms=_ms(sms_ms, 99),
            sms_max_ms=round(max(sms_ms), 1) if sms_ms else float("nan"),
        )
    note = (
        f"{probes} probe patients, one red reading each (SpO2 86%), spread over the run; "
        f"{devices:,} background devices, one reading per QoS 1 message. One ingest worker, "
        "one alerting worker, PostgreSQL, Mosquitto, the generator and the fake Twilio share "
        "the machine. Pages that left grouped count each alert at the grouped message's "
        f"arrival ({result.sms_requests} Messages API requests for {result.sms_at_twilio} "
        "alerts)."
    )
    (out / "alerts.json").write_text(json.dumps(asdict(result), indent=2))
    (out / "alerts.md").write_text(markdown(result, note))
    print(markdown(result, note))
    return result
