"""Runs simulated oximeters: each a real MQTT client with its own credentials and last will."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import paho.mqtt.client as mqtt
import psycopg
from psycopg.types.json import Jsonb

from core.clock import Clock
from core.logs import event
from devices.broker import BrokerAdmin, new_password, parse_mqtt_url
from devices.contract import readings_topic, status_topic
from devices.registry import register_device
from simulator.physiology import SimPatient

log = logging.getLogger("oximon.simulator")

SIM_PREFIX = "sim-"


@dataclass
class SimDevice:
    device_id: str
    password: str
    patient: SimPatient
    seq: int = 0
    battery_pct: float = 100.0
    client: mqtt.Client | None = field(default=None, repr=False)


def ensure_fleet(database_url: str, admin_url: str, count: int) -> list[tuple[str, str]]:
    """Make sure `count` synthetic patients with simulated devices exist; give each device a
    fresh broker password (the platform never keeps one) and return (device_id, password)."""
    out: list[tuple[str, str]] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM devices WHERE id LIKE 'sim-%%' AND status = 'active'"
            )
        }
        with BrokerAdmin(admin_url) as broker:
            for i in range(1, count + 1):
                device_id = f"{SIM_PREFIX}{i:05d}"
                if device_id in existing:
                    password = new_password()
                    broker.set_device_password(device_id, password)
                    out.append((device_id, password))
                    continue
                # A simulated oximeter streams (a reading every few seconds): judged as a
                # continuous stream, not as spot checks.
                row = conn.execute(
                    "INSERT INTO patients (display_name, language, schedule)"
                    " VALUES (%s, %s, %s) RETURNING id",
                    (
                        f"Synthetic patient {i:03d}",
                        "nb" if i % 3 else "en",
                        Jsonb({"kind": "continuous", "max_gap_min": 30}),
                    ),
                ).fetchone()
                assert row is not None
                creds = register_device(
                    conn,
                    admin_url,
                    row[0],
                    serial=f"SIM{i:06d}",
                    model="SimOx 1",
                    firmware="1.0",
                    device_id=device_id,
                )
                out.append((creds.device_id, creds.password))
    return out


class Fleet:
    def __init__(
        self,
        mqtt_url: str,
        devices: list[tuple[str, str]],
        clock: Clock,
        interval_s: float,
        deteriorating_share: float,
        seed: int = 1,
    ) -> None:
        self.cfg = parse_mqtt_url(mqtt_url)
        self.clock = clock
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        start = clock.now()
        n_bad = round(len(devices) * deteriorating_share)
        bad = set(self.rng.sample(range(len(devices)), n_bad)) if n_bad else set()
        self.devices = [
            SimDevice(d, p, SimPatient.sample(self.rng, start, i in bad))
            for i, (d, p) in enumerate(devices)
        ]
        self.sent = 0
        self.errors = 0

    def connect(self) -> None:
        for dev in self.devices:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev.device_id)
            client.username_pw_set(dev.device_id, dev.password)
            client.will_set(status_topic(dev.device_id), "offline", qos=1, retain=True)
            client.reconnect_delay_set(1, 30)

            def on_connect(
                c: mqtt.Client, _u: object, _f: object, rc: object, _p: object, dev: SimDevice = dev
            ) -> None:
                if not getattr(rc, "is_failure", False):
                    c.publish(status_topic(dev.device_id), "online", qos=1, retain=True)

            client.on_connect = on_connect
            client.connect_async(self.cfg["host"], self.cfg["port"], keepalive=30)
            client.loop_start()
            dev.client = client

    def tick(self) -> None:
        now = self.clock.now()
        for dev in self.devices:
            dev.seq += 1
            dev.battery_pct = max(5.0, dev.battery_pct - 0.01)
            reading = dev.patient.reading(self.rng, now)
            payload = {
                "ts": now.isoformat().replace("+00:00", "Z"),
                **reading,
                "seq": dev.seq,
                "battery": int(dev.battery_pct),
            }
            assert dev.client is not None
            info = dev.client.publish(readings_topic(dev.device_id), json.dumps(payload), qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.sent += 1
            else:
                self.errors += 1

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        self.connect()
        started = time.monotonic()
        next_tick = started
        last_report = started
        while not stop.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            self.tick()
            next_tick += self.clock.wall_duration_s(timedelta(seconds=self.interval_s))
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                event(
                    log, "progress", devices=len(self.devices), sent=self.sent, errors=self.errors
                )
            stop.wait(max(0.0, next_tick - time.monotonic()))
        self.close()

    def close(self) -> None:
        for dev in self.devices:
            if dev.client is not None:
                dev.client.publish(status_topic(dev.device_id), "offline", qos=1, retain=True)
                dev.client.disconnect()
                dev.client.loop_stop()
