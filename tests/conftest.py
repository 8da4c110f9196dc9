"""Real services for the suite: a private PostgreSQL with TimescaleDB and a Mosquitto with
authentication, started once per test session on free ports. No mocks; a missing service is
an error that says what is missing, never a skip."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, sync_playwright
from psycopg.rows import dict_row

from api.app import create_app
from api.security import CurrentUser, hash_password, issue_token
from core.settings import Settings
from oximon.localstack import LocalMosquitto, LocalPostgres, free_port, start_private_stack
from tests.helpers import wait_until

SERVICE_USER = "oximon-service"
SERVICE_PASSWORD = "service-test-password"  # noqa: S105 - a private test broker
TABLES = "readings, alert_events, notifications, alerts, dead_letters, devices, patients, users"


@dataclass
class Stack:
    root: Path
    postgres: LocalPostgres
    broker: LocalMosquitto

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{SERVICE_USER}:{SERVICE_PASSWORD}@127.0.0.1:{self.broker.port}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="oximon-test-"))
    root.chmod(0o755)
    postgres, broker = start_private_stack(root, SERVICE_USER, SERVICE_PASSWORD)
    try:
        yield Stack(root, postgres, broker)
    finally:
        broker.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(stack: Stack) -> Iterator[psycopg.Connection]:
    """A connection to a database with empty tables (each test starts clean)."""
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        # The migration's first care team stays (patients join it by default); others go.
        conn.execute("DELETE FROM care_teams WHERE id > (SELECT min(id) FROM care_teams)")
        yield conn


@pytest.fixture
def settings(stack: Stack, db: psycopg.Connection) -> Settings:
    # A client id of its own per test: each test's worker has a fresh broker session. Plain
    # subscription (no share group), as in a single-worker deployment.
    tag = uuid.uuid4().hex[:8]
    return Settings(
        database_url=stack.database_url,
        mqtt_url=stack.mqtt_url,
        mqtt_admin_url=stack.broker.admin_url,
        mqtt_share_group="",
        mqtt_client_id=f"ingest-{tag}",
        jwt_secret="test-jwt-secret-that-is-long-enough-0123456789",  # noqa: S106
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXIMON_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"OXIMON_{name.upper()}"] = (
            value.isoformat() if hasattr(value, "isoformat") else str(value)
        )
    return env


class Service:
    """An oximon service run as a real subprocess (`python -m oximon.cli …`)."""

    def __init__(self, args: list[str], settings: Settings, log_path: Path) -> None:
        self.args = args
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, timeout_s: float = 20) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "oximon.cli", *self.args],
            env=settings_env(self.settings),
            stdout=log,
            stderr=log,
        )
        if ready:
            offset = 0
            wait_until(
                lambda: ready in self.log()[offset:] or self._died(),
                timeout_s,
                f"{self.args[0]} to log {ready!r}",
            )
            if self._died():
                raise AssertionError(f"{self.args[0]} exited:\n{self.log()}")
        return self

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def service_factory(settings: Settings, tmp_path: Path) -> Iterator:
    started: list[Service] = []

    def make(*args: str, ready: str | None = None, **overrides: object) -> Service:
        """Start `oximon <args>`; keyword arguments override settings for this service."""
        svc = Service(
            list(args),
            settings.model_copy(update=overrides),
            tmp_path / f"{args[0]}-{len(started)}.log",
        )
        started.append(svc)
        return svc.start(ready=ready)

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def ingest(service_factory) -> Service:  # noqa: ANN001
    return service_factory("ingest", ready='"event": "mqtt_subscribed"')


@functools.cache
def _hash(password: str) -> str:
    return hash_password(password)  # argon2 is slow on purpose: hash each test password once


@pytest.fixture
def care_team(db: psycopg.Connection) -> dict[str, dict[str, object]]:
    """An admin, a nurse and an on-call doctor of the default care team (which the `patient`
    fixture's patient belongs to), with their passwords."""
    team = {
        "admin": ("admin", None, False),
        "nurse": ("nurse", "+4799000001", False),
        "doctor": ("doctor", "+4799000009", True),
    }
    out: dict[str, dict[str, object]] = {}
    for username, (role, phone, on_call) in team.items():
        password = f"{username}-password"
        row = db.execute(
            "INSERT INTO users (username, full_name, role, password_hash, phone, on_call)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (username, f"Test {username}", role, _hash(password), phone, on_call),
        ).fetchone()
        db.execute(
            "INSERT INTO user_care_teams (user_id, care_team_id)"
            " VALUES (%s, oximon_default_care_team())",
            (row["id"],),
        )
        out[username] = {"id": row["id"], "username": username, "password": password}
    return out


@pytest.fixture
def patient(db: psycopg.Connection) -> int:
    row = db.execute(
        "INSERT INTO patients (display_name, phone)"
        " VALUES ('Synthetic Test Patient', '+4791000001') RETURNING id"
    ).fetchone()
    return int(row["id"])


def _answers_healthz(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def api_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The API (`oximon api`) as a real HTTP server on a free port; yields its base URL."""
    api_settings = settings.model_copy(update={"api_port": free_port()})
    base_url = f"http://{api_settings.api_host}:{api_settings.api_port}"
    server = Service(["api"], api_settings, tmp_path / "api-server.log")
    try:
        server.start()
        wait_until(
            lambda: _answers_healthz(base_url) or server._died(),
            20,
            f"the API to answer {base_url}/healthz",
        )
        if server._died():
            raise AssertionError(f"api exited:\n{server.log()}")
        yield base_url
    finally:
        server.stop()


# Debian's Chromium, never a downloaded one. As root it needs --no-sandbox; on a closed network
# the background services must be off or it stalls on refused connections.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the session (Playwright gives it a fresh temporary profile)."""
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Page]:
    """A page in a context of its own: no cookies or session storage shared between tests."""
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="Europe/Oslo"
    )
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API in-process (real database), its lifespan opened."""
    with TestClient(create_app(settings)) as c:
        yield c


def login(client: TestClient, user: dict[str, object]) -> dict[str, str]:
    """Log in through the real token endpoint; the Authorization header to send."""
    res = client.post(
        "/api/v1/auth/token", data={"username": user["username"], "password": user["password"]}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


Team = dict[str, dict[str, object]]


def bearer(settings: Settings, care_team: Team, role: str) -> dict[str, str]:
    """The header a login would give (login itself is tested in test_api; argon2 is slow on
    purpose, so most tests sign the token directly)."""
    user = CurrentUser(int(care_team[role]["id"]), str(care_team[role]["username"]), role)
    token = issue_token(settings.jwt_secret.get_secret_value(), user, settings.token_ttl_s)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def nurse(settings: Settings, care_team: Team) -> dict[str, str]:
    return bearer(settings, care_team, "nurse")


@pytest.fixture
def doctor(settings: Settings, care_team: Team) -> dict[str, str]:
    return bearer(settings, care_team, "doctor")


@pytest.fixture
def admin(settings: Settings, care_team: Team) -> dict[str, str]:
    return bearer(settings, care_team, "admin")
