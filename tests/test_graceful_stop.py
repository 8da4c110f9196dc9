"""`docker compose stop` (SIGTERM) stops each oximon service cleanly: the ingest worker stores and
acknowledges what it holds before it disconnects, so nothing is lost or stored twice; the
alerting worker exits with status 0 and the API (uvicorn) shuts down by itself."""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg

from core.settings import Settings
from devices.registry import register_device
from oximon.localstack import free_port
from tests.conftest import Service, Stack
from tests.helpers import wait_until

READINGS = 2000


def _publish_all(port: int, username: str, password: str, device_id: str) -> list[datetime]:
    """Publish READINGS distinct readings at QoS 1; return once the broker holds every one."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{device_id}")
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    times = [base + timedelta(milliseconds=250 * i) for i in range(READINGS)]
    infos = []
    for i, ts in enumerate(times):
        payload = {"ts": ts.isoformat(), "spo2": 94 + i % 6, "pulse": 60 + i % 20, "seq": i}
        infos.append(
            client.publish(f"oximon/devices/{device_id}/readings", json.dumps(payload), qos=1)
        )
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()
    return times


def _metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not on /metrics"
    return float(match[1])


def test_an_ingest_worker_stopped_mid_stream_stores_every_reading_once_and_exits_0(
    stack: Stack, db: psycopg.Connection, settings: Settings, patient: int, service_factory
) -> None:  # noqa: ANN001
    creds = register_device(db, settings.mqtt_admin_url, patient)
    # Small batches: the stop lands while the worker still has messages in hand.
    worker = service_factory("ingest", ready='"event": "mqtt_subscribed"', ingest_batch_max=20)
    times = _publish_all(stack.broker.port, creds.username, creds.password, creds.device_id)
    stored = lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"]  # noqa: E731
    wait_until(lambda: stored() > 0, 20, "the first readings to be stored")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0, worker.log()

    # A new worker with the same session gets whatever the first did not acknowledge. Had the
    # first stored a batch without acknowledging it, the broker would resend it now and the
    # duplicate counter would show it.
    port = free_port()
    service_factory("ingest", ready='"event": "mqtt_subscribed"', metrics_port=port)
    wait_until(lambda: stored() >= READINGS, 30, f"all {READINGS} readings stored")
    rows = db.execute("SELECT time FROM readings ORDER BY time").fetchall()
    assert [r["time"] for r in rows] == times
    assert _metric(port, "oximon_ingest_readings_duplicate_total") == 0


def test_the_alerting_worker_exits_0_and_the_api_shuts_down_on_sigterm(
    settings: Settings, tmp_path: Path, service_factory
) -> None:  # noqa: ANN001
    alerting = service_factory("alerting", ready='"event": "alerting_started"')
    api_settings = settings.model_copy(update={"api_port": free_port()})
    api = Service(["api"], api_settings, tmp_path / "api.log").start()
    try:
        base = f"http://127.0.0.1:{api_settings.api_port}"

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 20, "the API to answer /healthz")
        assert alerting.process is not None and api.process is not None
        alerting.process.send_signal(signal.SIGTERM)
        assert alerting.process.wait(timeout=20) == 0, alerting.log()
        # uvicorn finishes the requests in flight, shuts the application down, and then
        # re-raises the signal it caught (uvicorn/server.py, capture_signals), so the API's
        # status is "terminated by SIGTERM" once it is done, not 0; Docker counts either as a
        # clean stop. It must not need a SIGKILL.
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=20) in (0, -signal.SIGTERM), api.log()
    finally:
        api.stop()
