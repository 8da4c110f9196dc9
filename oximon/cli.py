"""The `oximon` command: one subcommand per service, plus migrate, user, device and up."""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from core import logs
from core.clock import Clock
from core.migrate import migrate as run_migrations
from core.settings import Settings, get_settings

app = typer.Typer(
    help="oximon: remote home-care telemonitoring for pulse oximeters.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Clinician and administrator accounts.", no_args_is_help=True)
device_app = typer.Typer(help="Oximeters and their broker credentials.", no_args_is_help=True)
broker_app = typer.Typer(help="The MQTT broker's accounts.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(device_app, name="device")
app.add_typer(broker_app, name="broker")


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def _serve_metrics(settings: Settings) -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)


@app.command()
def migrate() -> None:
    """Apply pending database migrations."""
    applied = run_migrations(get_settings().database_url)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@broker_app.command("init")
def broker_init() -> None:
    """Create (or reset) the service account named in OXIMON_MQTT_URL, through the admin
    account in OXIMON_MQTT_ADMIN_URL. Run once per installation, like `oximon migrate`."""
    from devices.broker import BrokerAdmin, parse_mqtt_url

    settings = get_settings()
    service = parse_mqtt_url(settings.mqtt_url)
    if not settings.mqtt_admin_url or not service["username"] or not service["password"]:
        typer.echo("needs OXIMON_MQTT_ADMIN_URL and a user:password in OXIMON_MQTT_URL", err=True)
        raise typer.Exit(2)
    with BrokerAdmin(settings.mqtt_admin_url) as admin:
        admin.ensure_service_account(service["username"], service["password"])
    typer.echo(f"broker account {service['username']} ready")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, nurse or doctor")],
    name: Annotated[str, typer.Option(help="full name")] = "",
    phone: Annotated[str | None, typer.Option(help="E.164, e.g. +4791234567")] = None,
    on_call: Annotated[bool, typer.Option(help="doctor on call (receives red SMS)")] = False,
    password: Annotated[str | None, typer.Option(help="prompted when omitted")] = None,
) -> None:
    """Create a user."""
    from api.security import hash_password

    if role not in ("admin", "nurse", "doctor"):
        raise typer.BadParameter("role must be admin, nurse or doctor", param_hint="--role")
    password = password or getpass.getpass("Password: ")
    with psycopg.connect(get_settings().database_url) as conn:
        conn.execute(
            "INSERT INTO users (username, full_name, role, password_hash, phone, on_call)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (username, name or username, role, hash_password(password), phone, on_call),
        )
    typer.echo(f"user {username} ({role}) created")


@device_app.command("add")
def device_add(
    patient: Annotated[int, typer.Option(help="patient id")],
    serial: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
) -> None:
    """Register an oximeter for a patient; prints its id and broker credentials once."""
    from devices.registry import UnknownPatientError, register_device

    settings = get_settings()
    if not settings.mqtt_admin_url:
        typer.echo("OXIMON_MQTT_ADMIN_URL is not set: cannot create broker credentials", err=True)
        raise typer.Exit(2)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            creds = register_device(
                conn,
                settings.mqtt_admin_url,
                patient,
                serial=serial,
                model=model,
                firmware=firmware,
            )
        except UnknownPatientError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
    typer.echo(
        f"device_id: {creds.device_id}\nmqtt_username: {creds.username}\n"
        f"mqtt_password: {creds.password}\n(the password is shown only now)"
    )


@app.command()
def ingest() -> None:
    """Run an ingest worker (MQTT in, TimescaleDB out)."""
    from ingest.worker import IngestWorker

    settings = get_settings()
    logs.setup(settings.log_level)
    _serve_metrics(settings)
    worker = IngestWorker(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.request_stop())
    worker.run_forever()


@app.command()
def alerting() -> None:
    """Run an alerting worker (the notification outbox)."""
    from alerting.outbox import run_outbox, twilio_sender
    from core.db import make_pool

    settings = get_settings()
    logs.setup(settings.log_level)
    sender = None
    if settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from_number:
        sender = twilio_sender(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from_number,
        )
    else:
        logs.event(
            logs.logging.getLogger("oximon.alerting"),
            "twilio_not_configured",
            outbox="sms kept as a log",
        )
    _serve_metrics(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    pool = make_pool(settings, name="oximon-alerting")
    try:
        run_outbox(pool, Clock.from_settings(settings), sender, stop)
    finally:
        pool.close()


@app.command()
def api() -> None:
    """Run the HTTP API and the dashboard."""
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    logs.setup(settings.log_level)
    uvicorn.run(
        create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning"
    )


@app.command()
def simulate(
    patients: Annotated[int, typer.Option(min=1, help="number of simulated devices")] = 50,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between readings")] = 5.0,
    deteriorating: Annotated[float, typer.Option(min=0, max=1, help="share that worsens")] = 0.1,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    seed: int = 1,
) -> None:
    """Publish plausible readings for N simulated oximeters (synthetic patients)."""
    from simulator.fleet import Fleet, ensure_fleet

    settings = get_settings()
    logs.setup(settings.log_level)
    if not settings.mqtt_admin_url:
        typer.echo(
            "OXIMON_MQTT_ADMIN_URL is needed to give simulated devices credentials", err=True
        )
        raise typer.Exit(2)
    devices = ensure_fleet(settings.database_url, settings.mqtt_admin_url, patients)
    mqtt_url = settings.mqtt_url
    fleet = Fleet(mqtt_url, devices, Clock.from_settings(settings), interval, deteriorating, seed)
    stop = threading.Event()
    _stop_on_signals(stop)
    fleet.run(stop, duration)


@app.command()
def up(
    patients: Annotated[int, typer.Option(help="simulated patients")] = 50,
    root: Annotated[Path, typer.Option(help="folder for the private instances")] = Path(".local"),
    api_port: Annotated[int, typer.Option(help="dashboard port (0 = any free)")] = 8000,
) -> None:
    """Everything, locally: PostgreSQL, Mosquitto, ingest, alerting, API and the simulator."""
    from oximon.demo import run_demo

    sys.exit(run_demo(root.resolve(), patients, api_port))


if __name__ == "__main__":
    app()
