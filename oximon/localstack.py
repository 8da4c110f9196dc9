"""Private PostgreSQL (with TimescaleDB) and Mosquitto instances on free loopback ports.

Used by `oximon up` (under `.local/` of the checkout) and by the test suite (under a temporary
folder). Both programs come from the distribution's packages (scripts/install-system.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_VERSIONS = ("17", "16", "15")
DYNSEC_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")


class LocalStackError(RuntimeError):
    """A local service could not be installed, started or reached; the message says which."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.1)
    raise LocalStackError(f"{what} did not start listening on 127.0.0.1:{port}")


def pg_bindir() -> Path:
    for version in PG_VERSIONS:
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "postgres").exists():
            return path
    raise LocalStackError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: run "
        "scripts/install-system.sh (make demo and make test do)"
    )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` system user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class LocalPostgres:
    """A private cluster in `root`, listening on 127.0.0.1 only, trust auth for loopback."""

    root: Path
    port: int = 0
    user: str = "oximon"
    database: str = "oximon"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
            _as_postgres_user(cmd), capture_output=True, text=True, check=False, cwd="/"
        )
        if result.returncode != 0:
            raise LocalStackError(
                f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def running_port(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        try:
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> LocalPostgres:
        bindir = pg_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.root)
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
            with (self.datadir / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# oximon private instance\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.root}'\n"
                    "shared_preload_libraries = 'timescaledb'\n"
                    "timescaledb.telemetry_level = off\n"
                    "max_connections = 200\n"
                    "shared_buffers = 256MB\n"
                    "synchronous_commit = on\n"
                    "fsync = on\n"
                    "logging_collector = off\n"
                )
        existing = self.running_port()
        if existing:
            self.port = existing
        else:
            self.port = self.port or free_port()
            self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.root / "server.log"),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        wait_for_port(self.port, "PostgreSQL")
        self.create_database(self.database)
        return self

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"'.encode())

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is None:
            return
        self._run([str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])


def dynsec_plugin() -> str:
    for folder in DYNSEC_PLUGIN_DIRS:
        path = Path(folder) / "mosquitto_dynamic_security.so"
        if path.exists():
            return str(path)
    raise LocalStackError("mosquitto_dynamic_security.so not found: install the mosquitto package")


LOCAL_TLS_HOSTS = ("localhost", "127.0.0.1")


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
        [shutil.which("openssl") or "/usr/bin/openssl", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )
    if result.returncode != 0:
        raise LocalStackError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_local_ca(folder: Path, hosts: tuple[str, ...] = LOCAL_TLS_HOSTS) -> None:
    """A certificate authority for this installation (`ca.crt`, `ca.key`) and a server
    certificate it signed for `hosts` (`server.crt`, `server.key`), made once with openssl.

    Devices and services trust `ca.crt`. A real deployment replaces `server.crt`/`server.key`
    (and `ca.crt`, the chain devices check) with its own: the broker reads only those paths.
    """
    if all((folder / name).exists() for name in ("ca.crt", "server.crt", "server.key")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    sans = ",".join(
        f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
    )
    (folder / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {sans}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    # RSA 2048: what the oldest device TLS stacks still accept.
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=oximon local CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", "server.key",
        "-out", "server.csr", "-subj", f"/CN={hosts[0]}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-sha256", "-days", "825", "-extfile", "server.ext",
        "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip
    for name in ("ca.key", "server.key"):
        (folder / name).chmod(0o600)
    (folder / "server.csr").unlink()


@dataclass
class LocalMosquitto:
    """A private broker in `root`: authentication by the dynamic-security plugin, no anonymous
    access, persistence on (so a restart keeps queued QoS 1 messages and sessions).

    Two listeners on 127.0.0.1: plain MQTT on `port` (services, the demo, tests) and MQTT over
    TLS on `tls_port` (as devices connect in production, port 8883 there) with a certificate
    from this installation's own authority, `ca_path`.
    """

    root: Path
    port: int = 0
    tls_port: int = 0
    admin_user: str = "oximon-admin"
    admin_password: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_path(self) -> Path:
        """The certificate authority a device (or service) trusts to connect over TLS."""
        return self.tls_dir / "ca.crt"

    def tls_url(self, username: str, password: str) -> str:
        """An mqtts:// URL for this broker's TLS listener, trusting the local authority."""
        return f"mqtts://{username}:{password}@127.0.0.1:{self.tls_port}?cafile={self.ca_path}"

    @property
    def admin_url(self) -> str:
        return f"mqtt://{self.admin_user}:{self.admin_password}@127.0.0.1:{self.port}"

    def _state(self) -> dict[str, str]:
        path = self.root / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def start(self) -> LocalMosquitto:
        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise LocalStackError("mosquitto not installed: run scripts/install-system.sh")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        state = self._state()
        self.admin_password = state.get("admin_password") or secrets.token_urlsafe(18)
        dynsec = self.root / "dynamic-security.json"
        if not dynsec.exists():
            init_dynsec(dynsec, self.admin_user, self.admin_password)
            (self.root / "state.json").write_text(
                json.dumps({"admin_password": self.admin_password})
            )
            os.chmod(self.root / "state.json", 0o600)
        make_local_ca(self.tls_dir)
        self.port = self.port or free_port()
        self.tls_port = self.tls_port or free_port()
        self.conf.write_text(self._config(dynsec))
        self.launch()
        return self

    def _config(self, dynsec: Path) -> str:
        lines = [
            "# oximon private broker (generated)",
            "per_listener_settings false",
            "allow_anonymous false",
            f"listener {self.port} 127.0.0.1",
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {self.ca_path}",
            f"certfile {self.tls_dir / 'server.crt'}",
            f"keyfile {self.tls_dir / 'server.key'}",
            "tls_version tlsv1.2",
            f"plugin {dynsec_plugin()}",
            f"plugin_opt_config_file {dynsec}",
            "persistence true",
            f"persistence_location {self.root / 'data'}/",
            "autosave_interval 60",
            # QoS 1 messages queued for a worker that is down are kept, not dropped.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto drops to `mosquitto`; keep root so it can write the
            # private folder the checkout owns.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def launch(self) -> None:
        """Start the broker process on the configured port and wait until it listens."""
        log = (self.root / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (self.root / "mosquitto.pid").write_text(str(self.process.pid))
        wait_for_port(self.port, "Mosquitto")
        wait_for_port(self.tls_port, "Mosquitto (TLS listener)")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.launch()


def start_private_stack(
    root: Path, service_user: str, service_password: str
) -> tuple[LocalPostgres, LocalMosquitto]:
    """Start (or reuse) PostgreSQL and Mosquitto under `root`, migrate the schema and make sure
    the broker has the service account ingest and the API log in with."""
    from core.migrate import migrate
    from devices.broker import BrokerAdmin

    postgres = LocalPostgres(root / "postgres")
    broker = LocalMosquitto(root / "mosquitto")
    try:
        postgres.start()
        broker.start()
        migrate(postgres.url)
        with BrokerAdmin(broker.admin_url) as admin:
            admin.ensure_service_account(service_user, service_password)
    except BaseException:
        broker.stop()
        postgres.stop(mode="immediate")
        raise
    return postgres, broker


def init_dynsec(path: Path, admin_user: str, admin_password: str) -> None:
    """A new dynamic-security configuration with one administrator (mosquitto_ctrl)."""
    subprocess.run(  # noqa: S603
        [
            shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl",
            "dynsec",
            "init",
            str(path),
            admin_user,
            admin_password,
        ],
        check=True,
        capture_output=True,
    )
