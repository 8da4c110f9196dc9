"""Runs simulated oximeters on the platform clock: each a real MQTT client with its own
credentials, keep-alive and last will, playing out `simulator.population`'s physiology, with the
device faults a real fleet has when asked for them.

One thread does everything (paho's external-loop API over one selector): a tick publishes what
is due, the selector reads CONNACKs and PUBACKs, and `loop_misc` keeps each connection alive:
no thread per device. Made for the demo's and the tests' fleets (tens to hundreds of devices,
each registered and given a broker password through dynamic security, which is slow in bulk);
the 10,000-connection benchmark (`bench/connections.py`) uses a raw-socket client instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from psycopg.types.json import Jsonb

from core.clock import Clock
from core.logs import event
from devices.broker import BrokerAdmin, new_password, parse_mqtt_url
from devices.contract import readings_topic, status_topic
from devices.registry import register_device
from simulator import population as pop
from simulator.population import CONTINUOUS, DAY_S, SPOT, Patient, SimReading

log = logging.getLogger("oximon.simulator")

SIM_PREFIX = "sim-"
KEEPALIVE_S = 30
WINDOW_S = 600.0  # a stream is generated ten platform minutes at a time
UPLOAD_MAX = 5000  # a stored backlog longer than this is uploaded as several arrays
SPOT_SCHEDULE = {"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60}
STREAM_SCHEDULE = {"kind": "continuous", "max_gap_min": 30}

# Malformed payloads a device sends when asked (`Faults.malformed_rate`), each stated exactly:
MALFORMED_KINDS = (
    "truncated_json",  # the JSON object cut off half-way (a lost packet in the firmware)
    "missing_spo2",  # a valid object without its `spo2` field
    "spo2_out_of_range",  # `spo2` 127, a sensor error code passed on as a value
    "ts_without_offset",  # an RFC 3339 time with no offset (a device clock set to local time)
)


@dataclass
class Faults:
    """Device faults on request. Every fault a device commits is recorded in `Fleet.events`."""

    duplicate_rate: float = 0.0  # share of readings published twice, byte for byte
    malformed_rate: float = 0.0  # share of readings replaced by a malformed payload
    clock_skew_share: float = 0.0  # share of devices whose clock is wrong …
    clock_skew_min: float = 7.0  # … by this many minutes, ahead or behind at random
    battery_drain_pct_per_h: float = 0.0  # >0: batteries drain this fast, nobody charges them,
    # and a device whose battery is flat drops off (no DISCONNECT: its last will says offline)
    offline_share: float = 0.0  # share of devices that lose the network once …
    offline_after_min: float = 5.0  # … this many platform minutes into the run …
    offline_for_min: float = 20.0  # … for this long, then upload what they stored as one array
    storm_at_min: tuple[float, ...] = ()  # wall minutes: every connection dropped at once and
    # every device reconnecting together (what a broker restart does)


@dataclass
class FleetConfig:
    patients: int = 50
    spot_share: float = 0.0  # the rest stream
    interval_s: float | None = None  # stream period; None: each device 1–5 s
    deteriorating: float = 0.1
    patterns: tuple[str, ...] = (pop.SUDDEN,)
    onset_within_min: float = 1.0  # deteriorations start within this many platform minutes
    seed: int = 1
    faults: Faults = field(default_factory=Faults)


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plan_patients(
    config: FleetConfig, start: datetime, horizon_days: float = 30.0
) -> list[Patient]:
    """The run's patients from the one physiology, on a model timeline that starts at the
    local midnight before `start` (whole days after population.START, so local times of day
    are right). Deteriorations start within `onset_within_min` of `start`."""
    n_bad = round(config.patients * config.deteriorating)
    sampled = pop.sample_population(
        config.patients - n_bad,
        n_bad,
        horizon_days,
        config.seed,
        continuous_share=1.0 - config.spot_share,
        patterns=config.patterns,
    )
    t0 = _model_t(start, _shift_s(start))
    rng = np.random.default_rng(config.seed + 101)
    out: list[Patient] = []
    for p in sampled:
        period = config.interval_s or float(rng.integers(1, 6))
        changes: dict[str, Any] = {"period_s": period, "days": t0 / DAY_S + horizon_days}
        if p.onset_s is not None:
            onset = t0 + float(rng.uniform(0.1, 1.0)) * config.onset_within_min * 60.0
            changes["onset_s"] = onset
            # The population alternates deteriorations between modes; here the share decides.
            changes["mode"] = SPOT if rng.random() < config.spot_share else CONTINUOUS
            if p.recover_s is not None:
                changes["recover_s"] = p.recover_s - p.onset_s + onset
        out.append(dataclasses.replace(p, **changes))
    # Interleave so a small fleet still has its deteriorating patients among the first ones.
    bad = [p for p in out if p.onset_s is not None]
    good = [p for p in out if p.onset_s is None]
    mixed: list[Patient] = []
    step = max(1, round(len(out) / max(1, len(bad))))
    while good or bad:
        take = good[: step - 1] if bad else good
        good = good[len(take) :]
        mixed += take
        if bad:
            mixed.append(bad.pop(0))
    return mixed


def _shift_s(start: datetime) -> float:
    """Whole days between population.START and the local midnight before `start`."""
    return math.floor(pop.t_of(start) / DAY_S) * DAY_S


def _model_t(instant: datetime, shift_s: float) -> float:
    return pop.t_of(instant) - shift_s


# --- registration -----------------------------------------------------------------------------


def ensure_fleet(
    database_url: str, admin_url: str, patients: list[Patient]
) -> list[tuple[str, str, int]]:
    """Make sure each planned patient exists with a simulated device (`sim-00001` …), set the
    patient's schedule and (COPD) prescribed target range to match the physiology, give each
    device a fresh broker password (the platform never keeps one) and return
    (device_id, password, patient_id)."""
    out: list[tuple[str, str, int]] = []
    with psycopg.connect(database_url, autocommit=True) as conn, BrokerAdmin(admin_url) as broker:
        existing = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT id, patient_id FROM devices WHERE id LIKE 'sim-%%' AND status = 'active'"
            )
        }
        for i, p in enumerate(patients, start=1):
            device_id = f"{SIM_PREFIX}{i:05d}"
            schedule = SPOT_SCHEDULE if p.mode == SPOT else STREAM_SCHEDULE
            target = (88, 92) if p.copd else (95, 100)
            profile = p.profile()
            values = (
                Jsonb(schedule),
                target[0],
                target[1],
                profile.spo2_amber_max_pct,
                profile.spo2_red_max_pct,
            )
            if device_id in existing and existing[device_id] is not None:
                patient_id = int(existing[device_id])
                conn.execute(
                    "UPDATE patients SET schedule = %s, spo2_target_min_pct = %s,"
                    " spo2_target_max_pct = %s, spo2_amber_max_pct = %s,"
                    " spo2_red_max_pct = %s WHERE id = %s",
                    (*values, patient_id),
                )
                password = new_password()
                broker.issue_device_password(device_id, password)
                out.append((device_id, password, patient_id))
                continue
            row = conn.execute(
                "INSERT INTO patients (display_name, language, schedule, spo2_target_min_pct,"
                " spo2_target_max_pct, spo2_amber_max_pct, spo2_red_max_pct)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (f"Synthetic patient {i:03d}", "nb" if i % 3 else "en", *values),
            ).fetchone()
            assert row is not None
            # A broker account left from a database since wiped belongs to nobody: start anew.
            broker.revoke_device(device_id)
            creds = register_device(
                conn,
                admin_url,
                row[0],
                serial=f"SIM{i:06d}",
                model="SimOx 1",
                firmware="1.0",
                device_id=device_id,
            )
            out.append((creds.device_id, creds.password, int(row[0])))
    return out


# --- one device -------------------------------------------------------------------------------


@dataclass
class SimDevice:
    device_id: str
    password: str
    patient_id: int
    patient: Patient
    rng: np.random.Generator
    skew_s: float = 0.0
    battery_pct: float = 100.0
    seq: int = 0
    client: mqtt.Client | None = field(default=None, repr=False)
    sock: socket.socket | None = field(default=None, repr=False)
    connected: bool = False
    wanted: bool = True  # should be connected (False while offline, flat or stopping)
    retry_at: float = 0.0  # wall time of the next connection attempt
    backoff_s: float = 1.0
    offline_until_t: float | None = None  # model time the network comes back
    stored: list[dict[str, Any]] = field(default_factory=list)
    queue: deque[SimReading] = field(default_factory=deque)
    window_end_t: float = 0.0
    spot_iter: Iterator[float] | None = None
    next_spot_t: float | None = None
    dead: bool = False
    was_offline: bool = False


@dataclass
class Stats:
    readings: int = 0  # readings published (an array counts each reading)
    messages: int = 0
    acked: int = 0
    errors: int = 0
    connects: int = 0
    faults: Counter[str] = field(default_factory=Counter)


class Fleet:
    """Simulated oximeters publishing on the platform clock until stopped."""

    def __init__(
        self,
        mqtt_url: str,
        devices: list[tuple[str, str, int]],
        patients: list[Patient],
        clock: Clock,
        start: datetime,
        faults: Faults | None = None,
        seed: int = 1,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = parse_mqtt_url(mqtt_url)
        self.clock = clock
        self.faults = faults or Faults()
        self.start = start
        self.shift_s = _shift_s(start)
        self.t0 = _model_t(start, self.shift_s)
        self.rng = np.random.default_rng(seed + 202)
        self.on_progress = on_progress
        self.stats = Stats()
        self.events: list[dict[str, Any]] = []
        self.selector = selectors.DefaultSelector()
        self.devices: list[SimDevice] = []
        f = self.faults
        n = len(devices)
        skewed = set(self.rng.choice(n, round(n * f.clock_skew_share), replace=False).tolist())
        offline = set(self.rng.choice(n, round(n * f.offline_share), replace=False).tolist())
        self.offline_planned: set[int] = offline
        for i, ((device_id, password, patient_id), p) in enumerate(
            zip(devices, patients, strict=True)
        ):
            dev = SimDevice(
                device_id,
                password,
                patient_id,
                p,
                np.random.default_rng(p.seed + 17),
                battery_pct=float(self.rng.uniform(60.0, 100.0)),
                window_end_t=self.t0,
            )
            if i in skewed:
                dev.skew_s = float(self.rng.choice([-1.0, 1.0])) * f.clock_skew_min * 60.0
                self._event(dev, "clock_skew", skew_s=dev.skew_s)
            if p.mode == SPOT:
                dev.spot_iter = pop.spot_times(p, dev.rng, from_s=self.t0)
                dev.next_spot_t = next(dev.spot_iter, None)
            self.devices.append(dev)
        self._offline_done = False
        self._tick_h = 0.0
        self._storms = sorted(f.storm_at_min)

    # --- bookkeeping ----------------------------------------------------------------------

    def instant(self, t: float) -> datetime:
        """Model time as a platform instant."""
        return pop.at(t + self.shift_s)

    def _event(self, dev: SimDevice, fault: str, **detail: Any) -> None:
        self.stats.faults[fault] += 1
        self.events.append(
            {"device_id": dev.device_id, "fault": fault, "at": _iso(self.clock.now()), **detail}
        )

    @property
    def connected(self) -> int:
        return sum(1 for d in self.devices if d.connected)

    def ground_truth(self) -> list[dict[str, Any]]:
        """One row per simulated patient: who, which device, what truly happened and when."""
        rows = []
        for dev in self.devices:
            truth = dev.patient.ground_truth()
            row: dict[str, Any] = {"patient_id": dev.patient_id, "device_id": dev.device_id}
            row.update(truth_times(self.instant, truth))
            row["period_s"] = dev.patient.period_s if dev.patient.mode == CONTINUOUS else None
            row["clock_skew_s"] = dev.skew_s
            rows.append(row)
        return rows

    # --- connections ----------------------------------------------------------------------

    def _client(self, dev: SimDevice) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=dev.device_id,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(dev.device_id, dev.password)
        client.will_set(status_topic(dev.device_id), "offline", qos=1, retain=True)
        if self.cfg["tls"]:
            client.tls_set(ca_certs=self.cfg["cafile"])

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
            if rc.is_failure:
                self.stats.errors += 1
                event(log, "device_refused", logging.WARNING, device_id=dev.device_id, rc=str(rc))
                return
            dev.connected = True
            dev.backoff_s = 1.0
            self.stats.connects += 1
            c.publish(status_topic(dev.device_id), "online", qos=1, retain=True)

        def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _rc: Any, _p: object) -> None:
            dev.connected = False
            self._unregister(dev)
            if dev.wanted:
                dev.retry_at = time.monotonic() + dev.backoff_s
                dev.backoff_s = min(30.0, dev.backoff_s * 2)

        def on_publish(_c: mqtt.Client, _u: object, _mid: int, _rc: Any, _p: object) -> None:
            self.stats.acked += 1

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        return client

    def _unregister(self, dev: SimDevice) -> None:
        if dev.sock is not None:
            try:
                self.selector.unregister(dev.sock)
            except (KeyError, ValueError):
                pass
            dev.sock = None

    def _connect(self, dev: SimDevice) -> None:
        if dev.client is None:
            dev.client = self._client(dev)
            dev.client.connect_async(self.cfg["host"], self.cfg["port"], keepalive=KEEPALIVE_S)
        try:
            dev.client.reconnect()
        except OSError:
            self.stats.errors += 1
            dev.retry_at = time.monotonic() + dev.backoff_s
            dev.backoff_s = min(30.0, dev.backoff_s * 2)
            return
        dev.retry_at = math.inf
        sock = dev.client.socket()
        if isinstance(sock, socket.socket):
            self._unregister(dev)
            dev.sock = sock
            self.selector.register(sock, selectors.EVENT_READ, dev)

    def _drop(self, dev: SimDevice) -> None:
        """Lose the connection without a DISCONNECT (Wi-Fi gone, battery flat): the broker
        publishes the device's last will."""
        if dev.sock is not None:
            try:
                dev.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- publishing -----------------------------------------------------------------------

    def _payload(self, dev: SimDevice, r: SimReading) -> dict[str, Any]:
        dev.seq += 1
        out: dict[str, Any] = {
            "ts": _iso(self.instant(r.t_s) + timedelta(seconds=dev.skew_s)),
            "spo2": r.spo2_pct,
            "pulse": r.pulse_bpm,
            "seq": dev.seq,
            "quality": r.quality,
            "battery": max(0, int(dev.battery_pct)),
        }
        if r.pi_pct is not None:
            out["pi"] = r.pi_pct
        return out

    def _malformed(self, dev: SimDevice, payload: dict[str, Any]) -> bytes:
        kind = MALFORMED_KINDS[int(self.rng.integers(len(MALFORMED_KINDS)))]
        self._event(dev, "malformed", kind=kind, seq=payload["seq"])
        if kind == "truncated_json":
            text = json.dumps(payload)
            return text[: len(text) // 2].encode()
        bad = dict(payload)
        if kind == "missing_spo2":
            del bad["spo2"]
        elif kind == "spo2_out_of_range":
            bad["spo2"] = 127
        else:
            bad["ts"] = bad["ts"].rstrip("Z").split(".")[0]
        return json.dumps(bad).encode()

    def _send(self, dev: SimDevice, body: bytes, readings: int) -> None:
        assert dev.client is not None
        info = dev.client.publish(readings_topic(dev.device_id), body, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.stats.messages += 1
            self.stats.readings += readings
        else:
            self.stats.errors += 1

    def _publish(self, dev: SimDevice, r: SimReading) -> None:
        payload = self._payload(dev, r)
        offline = dev.offline_until_t is not None
        if offline or not dev.connected:
            dev.stored.append(payload)  # kept on the device until it is back
            return
        f = self.faults
        if f.malformed_rate and self.rng.random() < f.malformed_rate:
            self._send(dev, self._malformed(dev, payload), 0)
            return
        body = json.dumps(payload).encode()
        self._send(dev, body, 1)
        if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
            self._event(dev, "duplicate", seq=payload["seq"], ts=payload["ts"])
            self._send(dev, body, 0)

    def _upload(self, dev: SimDevice) -> None:
        """Back online: what was stored goes up as one JSON array, original timestamps kept."""
        if not dev.was_offline:
            # Queued while the connection was still being set up: sent one by one, as usual.
            for payload in dev.stored:
                self._send(dev, json.dumps(payload).encode(), 1)
            dev.stored = []
        while dev.stored:
            batch, dev.stored = dev.stored[:UPLOAD_MAX], dev.stored[UPLOAD_MAX:]
            self._send(dev, json.dumps(batch).encode(), len(batch))
            first, last = batch[0]["ts"], batch[-1]["ts"]
            self._event(dev, "offline_upload", readings=len(batch), first=first, last=last)
        dev.was_offline = False

    def _go_offline(self, dev: SimDevice, until_t: float, why: str) -> None:
        dev.offline_until_t = until_t
        dev.wanted = False
        dev.was_offline = True
        self._event(dev, "offline", reason=why, until=_iso(self.instant(until_t)))
        self._drop(dev)

    def _due(self, dev: SimDevice, t: float) -> None:
        """Publish (or store) every reading of this device measured by model time `t`."""
        p = dev.patient
        if dev.offline_until_t is not None and t >= dev.offline_until_t:
            dev.offline_until_t = None
            dev.wanted = True
            dev.retry_at = 0.0
        if p.mode == SPOT:
            while dev.next_spot_t is not None and dev.next_spot_t <= t:
                self._publish(dev, pop.spot_reading(p, dev.rng, dev.next_spot_t))
                assert dev.spot_iter is not None
                dev.next_spot_t = next(dev.spot_iter, None)
            return
        while dev.window_end_t < t + 60.0:
            chunk = pop.stream_window(p, dev.rng, dev.window_end_t, dev.window_end_t + WINDOW_S)
            dev.queue.extend(chunk.readings)
            dev.window_end_t += WINDOW_S
        while dev.queue and dev.queue[0].t_s <= t:
            r = dev.queue.popleft()
            if r.received_s > r.t_s and dev.offline_until_t is None and dev.connected:
                # The model's own offline spell (home Wi-Fi down): store until it ends.
                self._go_offline(dev, r.received_s, "network")
            self._publish(dev, r)

    def tick(self) -> None:
        now = self.clock.now()
        t = _model_t(now, self.shift_s)
        elapsed_min = (t - self.t0) / 60.0
        f = self.faults
        if not self._offline_done and self.offline_planned and elapsed_min >= f.offline_after_min:
            self._offline_done = True
            for i in sorted(self.offline_planned):
                dev = self.devices[i]
                self._go_offline(dev, t + f.offline_for_min * 60.0, "requested")
        drain = f.battery_drain_pct_per_h
        for dev in self.devices:
            if dev.dead:
                continue
            if drain:
                dev.battery_pct = max(0.0, dev.battery_pct - drain * self._tick_h)
                if dev.battery_pct <= 0.0:
                    dev.dead = True
                    dev.wanted = False
                    self._event(dev, "battery_flat")
                    self._drop(dev)
                    continue
            if dev.connected and dev.stored and dev.offline_until_t is None:
                self._upload(dev)  # what it stored first, then what is new
            self._due(dev, t)

    def storm(self) -> None:
        """Every connection dropped at once; every device reconnects at the same moment."""
        for dev in self.devices:
            if dev.connected:
                self._event(dev, "reconnect_storm")
                dev.backoff_s = 0.0
                self._drop(dev)

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        started = time.monotonic()
        tick_wall_s = 0.2
        self._tick_h = self.clock.speed * tick_wall_s / 3600.0
        next_tick = started
        next_misc = started
        last_report = started
        last_readings = 0
        for dev in self.devices:
            self._connect(dev)
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - started >= duration_s:
                break
            for key, _mask in self.selector.select(
                timeout=max(0.0, min(next_tick, 0.05 + now) - now)
            ):
                dev = key.data
                if dev.client is not None:
                    dev.client.loop_read()
            now = time.monotonic()
            for dev in self.devices:
                if not dev.connected and dev.wanted and not dev.dead and now >= dev.retry_at:
                    self._connect(dev)
            if self._storms and (now - started) / 60.0 >= self._storms[0]:
                self._storms.pop(0)
                self.storm()
            if now >= next_tick:
                next_tick += tick_wall_s
                if next_tick < now:
                    next_tick = now + tick_wall_s
                self.tick()
            for dev in self.devices:
                if dev.client is not None and dev.sock is not None and dev.client.want_write():
                    dev.client.loop_write()
            if now >= next_misc:
                next_misc = now + 1.0
                for dev in self.devices:
                    if dev.client is not None and dev.sock is not None:
                        dev.client.loop_misc()
            if now - last_report >= 5.0:
                rate = (self.stats.readings - last_readings) / (now - last_report)
                last_report, last_readings = now, self.stats.readings
                self._progress(rate)
        self.close()

    def _progress(self, rate: float) -> None:
        s = self.stats
        faults = " ".join(f"{k}={v}" for k, v in sorted(s.faults.items()))
        line = (
            f"devices connected {self.connected}/{len(self.devices)}, readings sent {s.readings}"
            f" ({rate:.1f}/s), acked {s.acked}, errors {s.errors}"
            + (f", faults: {faults}" if faults else "")
        )
        event(
            log,
            "progress",
            logging.DEBUG,
            connected=self.connected,
            devices=len(self.devices),
            readings=s.readings,
            per_s=round(rate, 1),
            errors=s.errors,
        )
        if self.on_progress:
            self.on_progress(line)

    def close(self) -> None:
        """A clean goodbye: status offline (retained), DISCONNECT, so no last will is sent."""
        for dev in self.devices:
            dev.wanted = False
            if dev.client is not None and dev.connected:
                dev.client.publish(status_topic(dev.device_id), "offline", qos=1, retain=True)
                dev.client.loop_write()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            d.client is not None and d.connected and d.client.want_write() for d in self.devices
        ):
            for dev in self.devices:
                if dev.client is not None and dev.connected:
                    dev.client.loop_write()
            time.sleep(0.01)
        for dev in self.devices:
            if dev.client is not None and dev.connected:
                dev.client.disconnect()
                dev.client.loop_write()
            self._unregister(dev)
        self.selector.close()


# --- ground truth -----------------------------------------------------------------------------


def truth_times(instant: Callable[[float], datetime], truth: dict[str, Any]) -> dict[str, Any]:
    """A patient's ground truth with model times (`…_s`) as RFC 3339 platform instants."""
    out: dict[str, Any] = {}
    for key, value in truth.items():
        if key == "fall_s":
            out["fall_h"] = round(float(value) / 3600, 3)
        elif key.endswith("_s"):
            out[key[:-2] + "_at"] = None if value is None else _iso(instant(float(value)))
        else:
            out[key] = value
    return out


TRUTH_COLUMNS = (
    "patient_id",
    "device_id",
    "pattern",
    "mode",
    "copd",
    "onset_at",
    "red_cross_at",
    "fall_pct",
    "fall_h",
    "nadir_true_spo2_pct",
    "recover_at",
    "recovered_at",
    "baseline_spo2_pct",
    "baseline_pulse_bpm",
    "red_max_pct",
    "period_s",
    "clock_skew_s",
)


def write_truth(
    path: Path, rows: list[dict[str, Any]], run: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    """The ground truth of a run: `.csv` one row per patient; anything else JSON with the run's
    settings, the patients and every fault a device committed."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(TRUTH_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return
    path.write_text(
        json.dumps({"run": run, "patients": rows, "faults": events}, indent=1, default=str)
    )
