"""Every published reading is stored exactly once, whatever fails in the middle of a stream."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest

from core.settings import Settings
from devices.registry import DeviceCredentials, register_device
from tests.conftest import Stack
from tests.helpers import wait_until

STREAM = 1500  # readings per fault test
RATE_PER_S = 300


class Stream:
    """A device publishing STREAM distinct readings at QoS 1 from a background thread. Its
    persistent session (clean_session=False) lets paho resend what the broker had not
    acknowledged when a connection drops."""

    def __init__(self, port: int, creds: DeviceCredentials) -> None:
        self.creds = creds
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"stream-{creds.device_id}",
            clean_session=False,
        )
        self.client.username_pw_set(creds.username, creds.password)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        base = datetime.now(UTC) - timedelta(minutes=5)
        self.times = [base + timedelta(milliseconds=100 * i) for i in range(STREAM)]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self.acked += 1

    def _run(self) -> None:
        topic = f"oximon/devices/{self.creds.device_id}/readings"
        started = time.monotonic()
        for i, ts in enumerate(self.times):
            payload = {"ts": ts.isoformat(), "spo2": 94 + i % 6, "pulse": 60 + i % 20, "seq": i}
            self.client.publish(topic, json.dumps(payload), qos=1)
            delay = started + (i + 1) / RATE_PER_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the stream, not waiting on a result

    def start(self) -> Stream:
        self.thread.start()
        return self

    def published_index(self) -> int:
        return self.acked

    def finish(self) -> None:
        self.thread.join(timeout=60)
        wait_until(lambda: self.acked >= STREAM, 60, "the broker to acknowledge every reading")
        self.client.disconnect()
        self.client.loop_stop()


def count_rows(url: str) -> tuple[int, int]:
    """(rows, distinct (device, time)) — reconnecting each time: the database may have restarted."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT (device_id, time)) FROM readings"
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
    except psycopg.OperationalError:
        return -1, -1


def assert_stored_exactly_once(stack: Stack, stream: Stream) -> None:
    wait_until(lambda: count_rows(stack.database_url)[0] >= STREAM, 90, f"{STREAM} readings")
    rows, distinct = count_rows(stack.database_url)
    assert (rows, distinct) == (STREAM, STREAM)
    with psycopg.connect(stack.database_url) as conn:
        stored = [r[0] for r in conn.execute("SELECT time FROM readings ORDER BY time")]
    assert stored == stream.times


@pytest.fixture
def creds(db: psycopg.Connection, settings: Settings, patient: int) -> DeviceCredentials:
    return register_device(db, settings.mqtt_admin_url, patient)


def test_worker_killed_mid_stream_loses_and_doubles_nothing(
    stack: Stack, settings: Settings, service_factory, creds: DeviceCredentials
) -> None:
    worker = service_factory("ingest", ready='"event": "mqtt_subscribed"')
    stream = Stream(stack.broker.port, creds).start()
    wait_until(lambda: count_rows(stack.database_url)[0] > STREAM // 4, 30, "a quarter stored")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)  # no chance to finish its batch or ack
    worker.process.wait()
    # The same client id: the broker kept its session and redelivers what was not acknowledged.
    service_factory("ingest", ready='"event": "mqtt_subscribed"')
    stream.finish()
    assert_stored_exactly_once(stack, stream)


def test_database_down_for_ten_seconds_loses_and_doubles_nothing(
    stack: Stack, settings: Settings, service_factory, creds: DeviceCredentials
) -> None:
    worker = service_factory("ingest", ready='"event": "mqtt_subscribed"')
    stream = Stream(stack.broker.port, creds).start()
    wait_until(lambda: count_rows(stack.database_url)[0] > STREAM // 4, 30, "a quarter stored")
    stack.postgres.stop(mode="fast")
    try:
        time.sleep(10)  # the outage itself
    finally:
        stack.postgres.start()
    stream.finish()
    assert_stored_exactly_once(stack, stream)
    assert '"event": "store_failed"' in worker.log()  # it noticed, retried and resumed by itself


def test_broker_restart_loses_and_doubles_nothing(
    stack: Stack, settings: Settings, service_factory, creds: DeviceCredentials
) -> None:
    service_factory("ingest", ready='"event": "mqtt_subscribed"')
    stream = Stream(stack.broker.port, creds).start()
    wait_until(lambda: count_rows(stack.database_url)[0] > STREAM // 4, 30, "a quarter stored")
    stack.broker.restart()  # persistence on: sessions and queued messages survive
    stream.finish()
    assert_stored_exactly_once(stack, stream)
