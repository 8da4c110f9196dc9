"""Simulated oximeters against the real Mosquitto: each device a real MQTT client with its own
credentials and last will, and each fault doing exactly what it says, as a subscriber on the
broker sees it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from core.clock import Clock
from core.settings import Settings
from devices.broker import parse_mqtt_url
from devices.contract import ContractError, decode_readings
from simulator.fleet import Faults, Fleet, FleetConfig, ensure_fleet, plan_patients
from tests.conftest import Stack
from tests.helpers import wait_until


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: datetime


@dataclass
class Subscriber:
    """The service account subscribed to every device topic, keeping what arrives in order."""

    url: str
    messages: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = parse_mqtt_url(self.url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-test-watch")
        self.client.username_pw_set(cfg["username"], cfg["password"])
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            Seen(m.topic, bytes(m.payload), bool(m.retain), datetime.now(UTC))
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe("oximon/devices/#", qos=1)
        self.client.connect(cfg["host"], cfg["port"])
        self.client.loop_start()
        assert subscribed.wait(10), "subscriber not subscribed"

    def of(self, device_id: str, kind: str = "readings") -> list[Seen]:
        topic = f"oximon/devices/{device_id}/{kind}"
        return [m for m in self.messages if m.topic == topic]

    def statuses(self, device_id: str) -> list[str]:
        """Status changes as they happened (not the retained one from an earlier test)."""
        return [m.payload.decode() for m in self.of(device_id, "status") if not m.retain]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watch(stack: Stack) -> Iterator[Subscriber]:
    sub = Subscriber(stack.mqtt_url)
    yield sub
    sub.close()


class Running:
    """A fleet run in a thread on an accelerated platform clock, stopped at the end."""

    def __init__(
        self, settings: Settings, n: int, faults: Faults, speed: float, interval_s: float = 2.0
    ) -> None:
        self.clock = Clock(datetime.now(UTC), speed)
        start = self.clock.now()
        config = FleetConfig(patients=n, interval_s=interval_s, deteriorating=0.0, seed=7)
        patients = plan_patients(config, start, horizon_days=2)
        assert settings.mqtt_admin_url
        devices = ensure_fleet(settings.database_url, settings.mqtt_admin_url, patients)
        self.fleet = Fleet(settings.mqtt_url, devices, patients, self.clock, start, faults, seed=7)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.fleet.run, args=(self.stop,), daemon=True)
        self.thread.start()
        wait_until(lambda: self.fleet.connected == n, 15, "every simulated device connected")

    @property
    def ids(self) -> list[str]:
        return [d.device_id for d in self.fleet.devices]

    def events(self, fault: str) -> list[dict[str, Any]]:
        return [e for e in self.fleet.events if e["fault"] == fault]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def run_fleet(settings: Settings) -> Iterator:
    runs: list[Running] = []

    def start(n: int, faults: Faults, speed: float = 1.0, interval_s: float = 2.0) -> Running:
        run = Running(settings, n, faults, speed, interval_s)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def ts(reading: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(reading["ts"])


def test_every_simulated_device_logs_in_with_its_own_credentials_and_says_online(
    run_fleet, watch: Subscriber, db: psycopg.Connection
) -> None:
    run = run_fleet(3, Faults())
    for device_id in run.ids:
        wait_until(lambda d=device_id: "online" in watch.statuses(d), 10, f"{device_id} online")
        first = wait_until(lambda d=device_id: watch.of(d), 10, f"a reading from {device_id}")
        reading = json.loads(first[0].payload)
        assert {"ts", "spo2", "pulse", "seq", "quality", "battery"} <= set(reading)
    online = [m for m in watch.messages if m.topic.endswith("/status") and m.payload == b"online"]
    assert len({m.topic for m in online}) == 3
    # Each device is its own broker account: the registry row exists for each.
    rows = db.execute("SELECT id FROM devices WHERE id LIKE 'sim-%%' ORDER BY id").fetchall()
    assert [r["id"] for r in rows] == run.ids
    run.close()
    for device_id in run.ids:  # a clean goodbye says offline too
        wait_until(lambda d=device_id: watch.statuses(d)[-1:] == ["offline"], 10, "offline")


def test_an_offline_device_uploads_what_it_stored_as_one_array_with_the_original_timestamps(
    run_fleet, watch: Subscriber
) -> None:
    # Platform clock at 30x: one device loses the network 0.5 platform minutes in (1 s wall)
    # for 3 platform minutes (6 s wall), one reading every 2 platform seconds.
    run = run_fleet(
        2, Faults(offline_share=0.5, offline_after_min=0.5, offline_for_min=3.0), speed=30
    )
    [went] = wait_until(lambda: run.events("offline"), 10, "the device to go offline")
    gone = went["device_id"]
    [upload] = wait_until(lambda: run.events("offline_upload"), 20, "the stored upload")
    arrays = wait_until(
        lambda: [m for m in watch.of(gone) if m.payload.startswith(b"[")], 10, "the array"
    )
    assert len(arrays) == 1, "the stored readings arrive as one message"
    stored = json.loads(arrays[0].payload)
    assert len(stored) == upload["readings"] > 60  # 3 platform minutes at one per 2 s
    times = [ts(r) for r in stored]
    # Original timestamps: every 2 platform seconds, spanning the time away, not the upload time.
    steps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
    assert steps <= {2.0}, steps
    # The 3 minutes away, plus what it measured while reconnecting (at 30x, a second or so).
    assert timedelta(minutes=3) <= times[-1] - times[0] <= timedelta(minutes=4)
    assert times[-1] < run.clock.at_wall(arrays[0].at.timestamp())  # measured before sent
    assert [r["seq"] for r in stored] == list(range(stored[0]["seq"], stored[-1]["seq"] + 1))
    # Before the array: single readings up to the moment it dropped off, without a hole.
    before = [json.loads(m.payload) for m in watch.of(gone) if m.payload.startswith(b"{")]
    last_live = max(ts(r) for r in before if r["seq"] < stored[0]["seq"])
    assert (times[0] - last_live).total_seconds() == 2.0
    # It went away without a goodbye: the broker published its last will, then it came back.
    statuses = watch.statuses(gone)
    assert statuses[:3] == ["online", "offline", "online"], statuses
    stayed = next(d for d in run.ids if d != gone)
    assert not [m for m in watch.of(stayed) if m.payload.startswith(b"[")]
    assert watch.statuses(stayed) == ["online"]


def test_a_duplicate_is_published_twice_byte_for_byte(run_fleet, watch: Subscriber) -> None:
    run = run_fleet(2, Faults(duplicate_rate=0.2), speed=10)
    wait_until(lambda: len(run.events("duplicate")) >= 5, 20, "five duplicates")
    run.close()
    for dup in run.events("duplicate"):
        sent = [
            m.payload
            for m in watch.of(dup["device_id"])
            if json.loads(m.payload)["seq"] == dup["seq"]
        ]
        assert len(sent) == 2 and sent[0] == sent[1]
    duplicated = {(e["device_id"], e["seq"]) for e in run.events("duplicate")}
    for device_id in run.ids:
        seqs = [json.loads(m.payload)["seq"] for m in watch.of(device_id)]
        once = [s for s in seqs if (device_id, s) not in duplicated]
        assert len(once) == len(set(once)), "readings not chosen as duplicates are sent once"


def _reason(payload: bytes) -> str:
    try:
        decoded = decode_readings(payload)
    except ContractError as exc:
        return str(exc)
    return "; ".join(reason for _, reason in decoded.rejects)


def test_malformed_payloads_are_malformed_in_the_way_stated(run_fleet, watch: Subscriber) -> None:
    run = run_fleet(2, Faults(malformed_rate=0.25), speed=10)
    wait_until(
        lambda: (
            {e["kind"] for e in run.events("malformed")}
            >= {
                "truncated_json",
                "missing_spo2",
                "spo2_out_of_range",
                "ts_without_offset",
            }
        ),
        30,
        "every kind of malformed payload",
    )
    run.close()
    expected = {
        "truncated_json": "not valid JSON",
        "missing_spo2": "spo2: Field required",
        "spo2_out_of_range": "spo2: Input should be less than or equal to 100",
        "ts_without_offset": "needs a UTC offset",
    }
    for device_id in run.ids:
        stated = [e["kind"] for e in run.events("malformed") if e["device_id"] == device_id]
        bad = [_reason(m.payload) for m in watch.of(device_id) if _reason(m.payload)]
        # Every malformed payload arrived, in order, refused for exactly the stated reason; and
        # nothing else this device sent was malformed.
        assert len(bad) == len(stated)
        for kind, reason in zip(stated, bad, strict=True):
            assert expected[kind] in reason, (kind, reason)


def test_a_wrong_device_clock_stamps_readings_minutes_off(run_fleet, watch: Subscriber) -> None:
    run = run_fleet(2, Faults(clock_skew_share=0.5, clock_skew_min=7))
    [skew] = run.events("clock_skew")
    wait_until(lambda: len(watch.of(skew["device_id"])) >= 3, 15, "readings from the device")
    for m in watch.of(skew["device_id"])[:3]:
        off_s = (ts(json.loads(m.payload)) - m.at).total_seconds()
        assert abs(off_s - skew["skew_s"]) < 5, (off_s, skew)
    honest = next(d for d in run.ids if d != skew["device_id"])
    for m in watch.of(honest)[:3]:
        assert abs((ts(json.loads(m.payload)) - m.at).total_seconds()) < 5


def test_a_draining_battery_is_reported_until_the_device_dies_with_its_last_will(
    run_fleet, watch: Subscriber
) -> None:
    # 1,000 %/h at 60x: empty within a few wall seconds.
    run = run_fleet(2, Faults(battery_drain_pct_per_h=1000.0), speed=60)
    flat = wait_until(lambda: run.events("battery_flat"), 20, "flat batteries")
    for event in flat:
        device_id = event["device_id"]
        levels = [json.loads(m.payload)["battery"] for m in watch.of(device_id)]
        assert levels == sorted(levels, reverse=True) and levels[-1] <= 5, levels
        wait_until(lambda d=device_id: watch.statuses(d)[-1:] == ["offline"], 10, "last will")


def test_every_device_reconnects_after_a_broker_restart(
    run_fleet, watch: Subscriber, stack: Stack
) -> None:
    run = run_fleet(5, Faults())
    stack.broker.restart()
    watch.messages.clear()
    wait_until(lambda: run.fleet.connected == 5, 30, "every device reconnected")
    # All of them back within seconds of each other (the storm), and readings flowing again.
    for device_id in run.ids:
        wait_until(lambda d=device_id: watch.of(d), 15, f"readings from {device_id} again")
    assert run.fleet.stats.connects >= 10


def test_a_requested_reconnect_storm_drops_and_reconnects_every_device(
    run_fleet, watch: Subscriber
) -> None:
    run = run_fleet(4, Faults(storm_at_min=(0.05,)))
    wait_until(lambda: len(run.events("reconnect_storm")) == 4, 15, "the storm")
    wait_until(lambda: run.fleet.stats.connects >= 8, 15, "every device reconnected")
    for device_id in run.ids:
        # Dropped without a goodbye: the will, then online again.
        wait_until(
            lambda d=device_id: watch.statuses(d)[:3] == ["online", "offline", "online"],
            10,
            f"{device_id}: online, last will, online",
        )
