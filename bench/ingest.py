"""Ingest throughput and publish-to-commit latency at a series of offered rates.

For each offered rate the raw-socket generator publishes single-reading QoS 1 messages for
many devices for a fixed time; the real ingest worker stores them. Commit times come from the
worker's NOTIFY (delivered at commit, naming the batch), so latency is publish → committed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg

from bench.stack import LOADGEN_PASSWORD, LOADGEN_USER, BenchStack, bench_stack, create_fleet
from simulator.rawmqtt import RawPublisher


@dataclass
class RateResult:
    offered_per_s: int
    achieved_offer_per_s: float
    published: int
    broker_acked: int
    stored: int
    lost: int
    duplicate_rows: int
    stored_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float


def _generate(
    port: int, devices: list[str], rate: float, duration_s: float, worker: int, out: mp.Queue
) -> None:
    pub = RawPublisher(
        "127.0.0.1", port, f"bench-gen-{worker}-{time.time_ns()}", LOADGEN_USER, LOADGEN_PASSWORD
    )
    topics = [f"oximon/devices/{d}/readings".encode() for d in devices]
    last_ts = [0] * len(devices)
    sent = 0
    i = 0
    start = time.time()
    end = start + duration_s
    while True:
        now = time.time()
        if now >= end:
            break
        due = int(rate * (now - start)) - sent
        if due > 0:
            now_ms = int(now * 1000)
            batch = []
            for _ in range(min(due, 5000)):
                k = i % len(devices)
                i += 1
                ts = max(now_ms, last_ts[k] + 1)
                last_ts[k] = ts
                payload = b'{"ts":%d,"spo2":%d,"pulse":%d,"seq":%d,"quality":"ok"}' % (
                    ts,
                    95 + (i % 4),
                    60 + (i % 30),
                    i,
                )
                batch.append((topics[k], payload))
            pub.publish_many(batch)
            sent += len(batch)
        else:
            time.sleep(0.001)
    finished = time.time()
    deadline = time.time() + 30
    while pub.acked < sent and time.time() < deadline:
        time.sleep(0.01)
    pub.close()
    out.put({"sent": sent, "acked": pub.acked, "start": start, "finished": finished})


class CommitListener:
    """LISTEN oximon_readings: wall time at which each batch (by received_at) committed."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.conn.execute("LISTEN oximon_readings")
        self.commits: dict[datetime, float] = {}
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            for n in self.conn.notifies(timeout=0.5):
                payload = json.loads(n.payload)
                self.commits[datetime.fromisoformat(payload["received_at"])] = time.time()

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.conn.close()


def run_rate(
    stack: BenchStack,
    devices: list[str],
    rate: int,
    duration_s: float,
    generators: int,
    listener: CommitListener,
) -> RateResult:
    url = stack.postgres.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
    listener.commits.clear()
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    per = [devices[g::generators] for g in range(generators)]
    procs = [
        ctx.Process(
            target=_generate,
            args=(stack.broker.port, per[g], rate / generators, duration_s, g, out),
        )
        for g in range(generators)
    ]
    for p in procs:
        p.start()
    reports = [out.get(timeout=duration_s + 120) for _ in procs]
    for p in procs:
        p.join()
    published = sum(r["sent"] for r in reports)
    acked = sum(r["acked"] for r in reports)
    start = min(r["start"] for r in reports)
    offer_s = max(r["finished"] for r in reports) - start
    # Drain: wait until everything is stored, or nothing has moved for 15 s.
    stored, last_change, previous = 0, time.time(), -1
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
            if stored >= published:
                break
            if stored != previous:
                previous, last_change = stored, time.time()
            elif time.time() - last_change > 15:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # let the last NOTIFY arrive
        rows = conn.execute("SELECT extract(epoch FROM time), received_at FROM readings").fetchall()
        distinct = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT device_id, time FROM readings) d"
        ).fetchone()[0]  # type: ignore[index]
    commits = listener.commits
    lat = np.array([commits[r[1]] - float(r[0]) for r in rows if r[1] in commits]) * 1000
    last_commit = max(commits.values()) if commits else time.time()
    return RateResult(
        offered_per_s=rate,
        achieved_offer_per_s=round(published / offer_s, 1),
        published=published,
        broker_acked=acked,
        stored=len(rows),
        lost=published - len(rows),
        duplicate_rows=len(rows) - distinct,
        stored_per_s=round(len(rows) / (last_commit - start), 1),
        latency_p50_ms=round(float(np.percentile(lat, 50)), 1) if len(lat) else float("nan"),
        latency_p99_ms=round(float(np.percentile(lat, 99)), 1) if len(lat) else float("nan"),
        latency_max_ms=round(float(lat.max()), 1) if len(lat) else float("nan"),
    )


def generator_ceiling(stack: BenchStack, devices: list[str], seconds: float = 5) -> float:
    """What the load generator alone can offer here (broker acks, nobody subscribed)."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_generate, args=(stack.broker.port, devices, 1e9, seconds, 99, out))
    proc.start()
    report = out.get(timeout=seconds + 60)
    proc.join()
    return float(report["acked"] / (report["finished"] - report["start"]))


def markdown(results: list[RateResult], note: str) -> str:
    head = (
        "| offered/s | generator reached/s | published | stored | lost | duplicate rows "
        "| stored/s | p50 ms | p99 ms | max ms |\n|" + "---|" * 10 + "\n"
    )
    rows = "".join(
        f"| {r.offered_per_s:,} | {r.achieved_offer_per_s:,.0f} | {r.published:,} | {r.stored:,} "
        f"| {r.lost} | {r.duplicate_rows} | {r.stored_per_s:,.0f} | {r.latency_p50_ms} "
        f"| {r.latency_p99_ms} | {r.latency_max_ms} |\n"
        for r in results
    )
    return head + rows + "\n" + note + "\n"


def main(
    rates: list[int],
    duration_s: float,
    devices: int,
    workers: int,
    generators: int,
    out_dir: Path,
    protocol: int = 3,
) -> list[RateResult]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with bench_stack() as stack:
        ids = create_fleet(stack.postgres.url, devices)
        ceiling = generator_ceiling(stack, ids)
        procs = [
            stack.service(
                "ingest",
                log_name=f"ingest-{w}",
                OXIMON_MQTT_CLIENT_ID=f"bench-ingest-{w}",
                OXIMON_MQTT_PROTOCOL=str(protocol),
                OXIMON_MQTT_SHARE_GROUP="bench" if workers > 1 else "",
            )
            for w in range(workers)
        ]
        time.sleep(2)  # workers subscribe
        listener = CommitListener(stack.postgres.url)
        try:
            for rate in rates:
                result = run_rate(stack, ids, rate, duration_s, generators, listener)
                print(json.dumps(asdict(result)), flush=True)
                results.append(result)
        finally:
            listener.close()
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    note = (
        f"{devices:,} devices, one reading per QoS 1 message, {duration_s:.0f} s per rate, "
        f"{workers} ingest worker(s) on MQTT {protocol if protocol == 5 else '3.1.1'}, "
        f"{generators} generator process(es); PostgreSQL, "
        "Mosquitto, the worker(s) and the generator share the machine's 2 cores. "
        "Latency: the reading's timestamp (publish time) to the commit of its batch. "
        f"The generator alone reaches {ceiling:,.0f} QoS 1 publishes/s here."
    )
    (out_dir / "ingest.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (out_dir / "ingest.md").write_text(markdown(results, note))
    print(markdown(results, note))
    return results
