"""10,000 simulated oximeters at once, each holding its own MQTT connection with its own
credentials, keep-alive and last will, publishing a reading a second: connections reached,
readings/s the broker acknowledged, and what limited it.

Against a private Mosquitto started for the run (loopback only, stopped at the end). Per-device
credentials are provisioned either through the dynamic-security plugin, as production does
(`--provision dynsec`; it rewrites its whole JSON configuration after every command, so
provisioning grows with the square of the fleet), or — the default for this benchmark — a
Mosquitto password file (hashed with `mosquitto_passwd -U`) plus an ACL pattern that lets each
account publish only under `oximon/devices/{its username}/`: the same per-device separation,
provisioned in one step.

The devices are asyncio protocols over plain sockets (MQTT 3.1.1, QoS 1, written by hand like
`simulator/rawmqtt.py`): a paho client per device costs a thread and ~3 file descriptors and
does not reach 10,000 in one process. Readings come from `simulator.population` (a pool of
real stream readings, stamped with the time they are sent).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import secrets
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oximon.localstack import dynsec_plugin, free_port, init_dynsec, wait_for_port
from simulator.population import sample_population, stream_window
from simulator.rawmqtt import _string, _varint, publish_packet

WILL_TOPIC = "oximon/devices/{}/status"
READINGS_TOPIC = "oximon/devices/{}/readings"
KEEPALIVE_S = 60


def raise_fd_limit() -> int:
    """Open files: up to the hard limit (sockets are files); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect_packet(device_id: str, password: str) -> bytes:
    """CONNECT: clean session, keep-alive, credentials and a retained last will "offline"."""
    flags = 0x02 | 0x04 | 0x08 | 0x20 | 0x80 | 0x40  # clean, will QoS 1 retained, user, password
    payload = (
        _string(device_id)
        + _string(WILL_TOPIC.format(device_id))
        + _string(b"offline")
        + _string(device_id)
        + _string(password)
    )
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S) + payload
    return b"\x10" + _varint(len(body)) + body


def retained_publish(topic: str, payload: bytes, packet_id: int) -> bytes:
    packet = bytearray(publish_packet(topic.encode(), payload, packet_id))
    packet[0] |= 0x01  # RETAIN
    return bytes(packet)


# --- the broker ---------------------------------------------------------------------------------


@dataclass
class Broker:
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    admin_user: str = "bench-admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def admin_url(self) -> str:
        return f"mqtt://{self.admin_user}:{self.admin_password}@127.0.0.1:{self.port}"

    def start(self, provision: str) -> None:
        lines = [
            "# oximon connections benchmark: a private broker, loopback only (generated)",
            "per_listener_settings false",
            "allow_anonymous false",
            f"listener {self.port} 127.0.0.1",
            "max_connections -1",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_inflight_messages 0",
            "max_queued_messages 1000",
        ]
        if provision == "dynsec":
            dynsec = self.root / "dynamic-security.json"
            init_dynsec(dynsec, self.admin_user, self.admin_password)
            lines += [f"plugin {dynsec_plugin()}", f"plugin_opt_config_file {dynsec}"]
        else:
            lines += [
                f"password_file {self.root / 'passwd'}",
                f"acl_file {self.root / 'acl'}",
            ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf = self.root / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = (self.root / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, inherits our fd limit
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_for_port(self.port, "Mosquitto (bench)")

    def cpu_s(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def provision_password_file(root: Path, creds: list[tuple[str, str]]) -> float:
    """Every device's account in a password file, hashed by mosquitto_passwd; seconds taken."""
    started = time.perf_counter()
    passwd = root / "passwd"
    passwd.write_text("".join(f"{d}:{p}\n" for d, p in creds))
    passwd.chmod(0o600)
    subprocess.run(  # noqa: S603
        [shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-U", str(passwd)],
        check=True,
        capture_output=True,
    )
    # Each account publishes under its own id only; nobody subscribes (the ingest account of
    # production is not part of this benchmark).
    (root / "acl").write_text("pattern write oximon/devices/%u/#\n")
    return time.perf_counter() - started


def provision_dynsec(admin_url: str, creds: list[tuple[str, str]], batch: int = 100) -> float:
    """Every device's account and role through the dynamic-security plugin, as production's
    registry does (devices.broker), in batches of commands; seconds taken."""
    from devices.broker import BrokerAdmin, device_acls, device_role

    started = time.perf_counter()
    with BrokerAdmin(admin_url, timeout_s=600) as admin:
        for i in range(0, len(creds), batch):
            commands: list[dict[str, Any]] = []
            for device_id, password in creds[i : i + batch]:
                role = device_role(device_id)
                commands += [
                    {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                    {
                        "command": "createClient",
                        "username": device_id,
                        "password": password,
                        "roles": [{"rolename": role}],
                    },
                ]
            admin.execute(commands)
    return time.perf_counter() - started


# --- the devices --------------------------------------------------------------------------------


def reading_pool(n: int = 2000, seed: int = 9) -> list[tuple[int, int, str]]:
    """(spo2, pulse, quality) of real stream readings from the one physiology."""
    out: list[tuple[int, int, str]] = []
    for p in sample_population(8, 0, 1, seed, continuous_share=1.0):
        rng = np.random.default_rng(p.seed)
        out += [
            (r.spo2_pct, r.pulse_bpm, r.quality) for r in stream_window(p, rng, 0, 3600).readings
        ]
    return out[:n] if len(out) >= n else out


class DeviceProtocol(asyncio.Protocol):
    def __init__(self, worker: Worker, device_id: str, password: str) -> None:
        self.worker = worker
        self.device_id = device_id
        self.password = password
        self.topic = READINGS_TOPIC.format(device_id).encode()
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.next_id = 1
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(connect_packet(self.device_id, self.password))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        i = 0
        acks = 0
        while i + 2 <= len(buf):
            kind, size = buf[i], buf[i + 1]
            if i + 2 + size > len(buf):
                break
            if kind == 0x40:
                acks += 1
            elif kind == 0x20:
                if buf[i + 3] == 0 and not self.connected.done():
                    self.connected.set_result(True)
                    self.write(retained_publish(WILL_TOPIC.format(self.device_id), b"online", 1))
                elif not self.connected.done():
                    self.connected.set_exception(ConnectionError(f"CONNACK {buf[i + 3]}"))
            i += 2 + size
        self.buffer = buf[i:]
        self.worker.acked += acks

    def write(self, packet: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(packet)

    def publish(self, payload: bytes) -> None:
        self.next_id = self.next_id % 65535 + 1
        self.write(publish_packet(self.topic, payload, self.next_id))

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.lost += 1
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before CONNACK"))


@dataclass
class WorkerResult:
    worker: int
    devices: int
    connected: int
    refused: int
    connect_s: float
    sent: int
    acked: int
    lost: int
    steady_sent: int
    steady_acked: int
    steady_s: float
    cpu_s: float
    errors: list[str]


class Worker:
    def __init__(self, index: int, port: int, creds: list[tuple[str, str]]) -> None:
        self.index = index
        self.port = port
        self.creds = creds
        self.acked = 0
        self.lost = 0
        self.sent = 0
        self.pool = reading_pool()

    async def connect_all(self, concurrency: int) -> tuple[list[DeviceProtocol], list[str]]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(device_id: str, password: str) -> DeviceProtocol | None:
            async with gate:
                for attempt in range(5):
                    try:
                        _t, proto = await loop.create_connection(
                            lambda: DeviceProtocol(self, device_id, password),
                            "127.0.0.1",
                            self.port,
                        )
                        await asyncio.wait_for(proto.connected, 30)
                        return proto
                    except (TimeoutError, OSError) as exc:
                        if attempt == 4:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.2 * (attempt + 1))
                return None

        got = await asyncio.gather(*(one(d, p) for d, p in self.creds))
        return [p for p in got if p is not None], errors

    async def run(
        self, start_at: float, duration_s: float, interval_s: float, concurrency: int
    ) -> WorkerResult:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        devices, errors = await self.connect_all(concurrency)
        connect_s = time.monotonic() - t0
        # Everyone starts publishing together at `start_at` (wall clock shared by the workers).
        await asyncio.sleep(max(0.0, start_at - time.time()))
        tick_s = 0.02
        per_tick = max(1, round(len(devices) * tick_s / interval_s))
        k = 0
        pool = self.pool
        end = time.monotonic() + duration_s
        steady_from = time.monotonic() + min(5.0, duration_s / 4)
        steady_sent0 = steady_acked0 = 0
        steady_marked = False
        steady_t0 = time.monotonic()
        next_tick = time.monotonic()
        while time.monotonic() < end:
            now_ms = int(time.time() * 1000)
            for _ in range(per_tick):
                if not devices:
                    break
                dev = devices[k % len(devices)]
                spo2, pulse, quality = pool[k % len(pool)]
                k += 1
                dev.seq += 1
                dev.publish(
                    b'{"ts":%d,"spo2":%d,"pulse":%d,"seq":%d,"quality":"%s"}'
                    % (now_ms, spo2, pulse, dev.seq, quality.encode())
                )
                self.sent += 1
            if not steady_marked and time.monotonic() >= steady_from:
                steady_marked = True
                steady_sent0, steady_acked0 = self.sent, self.acked
                steady_t0 = time.monotonic()
                cpu0 = time.process_time()
            next_tick += tick_s
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        steady_s = time.monotonic() - steady_t0 if steady_marked else 0.0
        steady_cpu_s = time.process_time() - cpu0
        steady_sent, steady_acked = self.sent - steady_sent0, self.acked - steady_acked0
        deadline = time.monotonic() + 10
        while self.acked < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for dev in devices:
            dev.write(b"\xe0\x00")  # DISCONNECT: a clean goodbye, no will
            if dev.transport is not None:
                dev.transport.close()
        await asyncio.sleep(0.2)
        return WorkerResult(
            self.index,
            len(self.creds),
            len(devices),
            len(self.creds) - len(devices),
            round(connect_s, 2),
            self.sent,
            self.acked,
            self.lost,
            steady_sent,
            steady_acked,
            round(steady_s, 2),
            round(steady_cpu_s, 2),
            errors[:5],
        )


def _worker_main(
    index: int,
    port: int,
    creds: list[tuple[str, str]],
    start_at: float,
    duration_s: float,
    interval_s: float,
    concurrency: int,
    out: mp.Queue,
) -> None:
    raise_fd_limit()
    worker = Worker(index, port, creds)
    out.put(asdict(asyncio.run(worker.run(start_at, duration_s, interval_s, concurrency))))


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Result:
    devices: int
    processes: int
    provision: str
    provision_s: float
    connected: int
    refused: int
    connect_s: float
    broker_fds: int
    fd_limit: int
    target_per_s: float
    offered_per_s: float
    acked_per_s: float
    steady_s: float
    broker_cpu_pct: float
    generator_cpu_pct: float
    loadavg: str
    errors: list[str]


def run(
    devices: int,
    processes: int,
    duration_s: float,
    interval_s: float,
    provision: str,
    concurrency: int,
    out_dir: Path,
) -> Result:
    fd_limit = raise_fd_limit()
    root = Path(tempfile.mkdtemp(prefix="oximon-conn-"))
    root.chmod(0o755)
    creds = [(f"conn-{i:06d}", secrets.token_urlsafe(12)) for i in range(devices)]
    broker = Broker(root, free_port())
    try:
        if provision == "password_file":
            provision_s = provision_password_file(root, creds)
            broker.start(provision)
        else:
            broker.start(provision)
            provision_s = provision_dynsec(broker.admin_url, creds)
        print(f"provisioned {devices} device accounts ({provision}) in {provision_s:.1f} s")
        ctx = mp.get_context("spawn")
        queue: mp.Queue = ctx.Queue()
        # Connecting 10,000 takes a while; everyone publishes from the same moment on.
        start_at = time.time() + 20 + devices / 500
        procs = [
            ctx.Process(
                target=_worker_main,
                args=(
                    i,
                    broker.port,
                    creds[i::processes],
                    start_at,
                    duration_s,
                    interval_s,
                    concurrency,
                    queue,
                ),
            )
            for i in range(processes)
        ]
        for p in procs:
            p.start()
        wait = max(0.0, start_at - time.time()) + min(5.0, duration_s / 4)
        time.sleep(wait)
        fds = broker.open_fds()
        cpu0, t0 = broker.cpu_s(), time.monotonic()
        time.sleep(max(1.0, duration_s - min(5.0, duration_s / 4)))
        broker_cpu = (broker.cpu_s() - cpu0) / (time.monotonic() - t0) * 100
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        results = [queue.get(timeout=duration_s + devices / 50 + 120) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    steady = max(r["steady_s"] for r in results) or 1.0
    gen_cpu = sum(r["cpu_s"] for r in results)
    result = Result(
        devices=devices,
        processes=processes,
        provision=provision,
        provision_s=round(provision_s, 1),
        connected=sum(r["connected"] for r in results),
        refused=sum(r["refused"] for r in results),
        connect_s=max(r["connect_s"] for r in results),
        broker_fds=fds,
        fd_limit=fd_limit,
        target_per_s=round(devices / interval_s, 1),
        offered_per_s=round(sum(r["steady_sent"] for r in results) / steady, 1),
        acked_per_s=round(sum(r["steady_acked"] for r in results) / steady, 1),
        steady_s=round(steady, 1),
        broker_cpu_pct=round(broker_cpu, 1),
        generator_cpu_pct=round(gen_cpu / steady * 100, 1),
        loadavg=load,
        errors=[e for r in results for e in r["errors"]][:5],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "connections.json").write_text(json.dumps(asdict(result), indent=2))
    (out_dir / "connections.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: Result) -> str:
    return (
        "| devices (own connection and account) | provisioning | connected | connect time s"
        " | broker fds | readings/s asked | readings/s sent | readings/s acknowledged (QoS 1)"
        " | broker CPU | generator CPU (all processes) | load average |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {r.devices:,} | {r.provision} {r.provision_s:.1f} s | {r.connected:,}"
        f" | {r.connect_s:.1f} | {r.broker_fds:,} | {r.target_per_s:,.0f} | {r.offered_per_s:,.0f}"
        f" | {r.acked_per_s:,.0f} | {r.broker_cpu_pct:.0f}% | {r.generator_cpu_pct:.0f}%"
        f" | {r.loadavg} |\n"
        + (f"\nErrors (first few): {'; '.join(r.errors)}\n" if r.errors else "")
    )
