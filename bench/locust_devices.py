"""Locust: oximeters over MQTT. Each simulated user is one device — a paho-mqtt client with its
own broker account, keep-alive and last will — publishing a reading (QoS 1) every `interval`
seconds and timing publish → PUBACK (the broker has taken responsibility for it), reported to
locust as request type "MQTT".

Run by `python -m bench locust` (which starts the platform, provisions the devices and sets the
environment below); by hand:

    BENCH_MQTT=127.0.0.1:1883 BENCH_DEVICES=devices.json locust -f bench/locustfile.py

`BENCH_DEVICES` is a JSON list of {"device_id": …, "password": …}; each user takes the next one.
Readings come from the one physiology (`simulator.population`): a pool of stream readings.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from locust import User, constant_pacing, events, task
from locust.exception import StopUser

from devices.contract import readings_topic, status_topic
from simulator.population import sample_population, stream_window

HOST, _, PORT = os.environ.get("BENCH_MQTT", "127.0.0.1:1883").partition(":")
INTERVAL_S = float(os.environ.get("BENCH_DEVICE_INTERVAL_S", "1.0"))
ACK_TIMEOUT_S = 10.0


def _credentials() -> list[dict[str, str]]:
    path = os.environ.get("BENCH_DEVICES")
    return json.loads(Path(path).read_text()) if path else []


CREDENTIALS = iter(_credentials())
_LOCK = threading.Lock()


def _pool() -> list[tuple[int, int, str, float | None]]:
    out = []
    for p in sample_population(6, 0, 1, 11, continuous_share=1.0):
        rng = np.random.default_rng(p.seed)
        out += [
            (r.spo2_pct, r.pulse_bpm, r.quality, r.pi_pct)
            for r in stream_window(p, rng, 0, 900).readings
        ]
    return out


POOL = _pool()
_COUNTER = itertools.count()


class DeviceUser(User):
    """One oximeter streaming readings over its own MQTT connection."""

    weight = 20
    wait_time = constant_pacing(INTERVAL_S)

    def on_start(self) -> None:
        with _LOCK:
            creds = next(CREDENTIALS, None)
        if creds is None:
            raise StopUser("no device credentials left (BENCH_DEVICES)")
        self.device_id = creds["device_id"]
        self.seq = 0
        self.k = next(_COUNTER) * 97
        self.connected = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv311
        )
        client.username_pw_set(self.device_id, creds["password"])
        client.will_set(status_topic(self.device_id), "offline", qos=1, retain=True)

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not rc.is_failure:
                c.publish(status_topic(self.device_id), "online", qos=1, retain=True)
                self.connected.set()

        client.on_connect = on_connect
        started = time.perf_counter()
        try:
            client.connect(HOST, int(PORT), keepalive=30)
        except OSError as exc:
            self._report("connect", started, 0, exc)
            raise StopUser() from exc
        client.loop_start()
        ok = self.connected.wait(ACK_TIMEOUT_S)
        self._report("connect", started, 0, None if ok else TimeoutError("no CONNACK"))
        self.client = client

    def _report(self, name: str, started: float, length: int, exc: Exception | None) -> None:
        events.request.fire(
            request_type="MQTT",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def publish_reading(self) -> None:
        spo2, pulse, quality, pi = POOL[self.k % len(POOL)]
        self.k += 1
        self.seq += 1
        reading: dict[str, Any] = {
            "ts": int(time.time() * 1000),
            "spo2": spo2,
            "pulse": pulse,
            "seq": self.seq,
            "quality": quality,
        }
        if pi is not None:
            reading["pi"] = pi
        body = json.dumps(reading).encode()
        started = time.perf_counter()
        info = self.client.publish(readings_topic(self.device_id), body, qos=1)
        error: Exception | None = None
        try:
            info.wait_for_publish(ACK_TIMEOUT_S)
            if not info.is_published():
                error = TimeoutError("no PUBACK")
        except (RuntimeError, ValueError) as exc:
            error = exc
        self._report("publish reading (QoS 1)", started, len(body), error)

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.publish(status_topic(self.device_id), "offline", qos=1, retain=True)
            client.disconnect()
            client.loop_stop()
