"""The `oximon` command: one subcommand per service, plus migrate, user, device and up."""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from datetime import timedelta
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
    team: Annotated[
        list[str] | None,
        typer.Option(help="care team (repeat for several; created if new); default: the first"),
    ] = None,
) -> None:
    """Create a user, a member of one or more care teams."""
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
        teams: list[str | None] = list(team) if team else [None]
        for team_name in teams:
            if team_name is None:
                conn.execute(
                    "INSERT INTO user_care_teams (user_id, care_team_id) SELECT u.id,"
                    " oximon_default_care_team() FROM users u WHERE u.username = %s",
                    (username,),
                )
                continue
            conn.execute(
                "INSERT INTO care_teams (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (team_name,),
            )
            conn.execute(
                "INSERT INTO user_care_teams (user_id, care_team_id) SELECT u.id, t.id"
                " FROM users u, care_teams t WHERE u.username = %s AND t.name = %s",
                (username, team_name),
            )
    typer.echo(f"user {username} ({role}) created, care team(s): {', '.join(team or ['first'])}")


def _device_settings() -> tuple[Settings, str]:
    """The settings and the broker administrator's URL that changing credentials needs."""
    settings = get_settings()
    if not settings.mqtt_admin_url:
        typer.echo("OXIMON_MQTT_ADMIN_URL is not set: cannot manage broker credentials", err=True)
        raise typer.Exit(2)
    return settings, settings.mqtt_admin_url


def _print_credentials(device_id: str, username: str, password: str) -> None:
    from devices.contract import readings_topic

    typer.echo(
        f"device_id: {device_id}\nmqtt_username: {username}\n"
        f"mqtt_password: {password}\nreadings_topic: {readings_topic(device_id)}\n"
        "(the password is shown only now)"
    )


def _registry_failed(exc: Exception) -> typer.Exit:
    detail = getattr(exc, "detail", None)
    typer.echo(detail() if callable(detail) else str(exc), err=True)
    return typer.Exit(1)


@device_app.command("add")
def device_add(
    patient: Annotated[
        int | None, typer.Option(help="patient id (omit to register it on the shelf)")
    ] = None,
    serial: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    device_id: Annotated[str | None, typer.Option(help="made up when omitted")] = None,
) -> None:
    """Register an oximeter; prints its id and broker credentials once."""
    from devices.broker import BrokerError
    from devices.registry import RegistryError, register_device

    settings, admin_url = _device_settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            creds = register_device(
                conn,
                admin_url,
                patient,
                serial=serial,
                model=model,
                firmware=firmware,
                device_id=device_id,
                now=Clock.from_settings(settings).now(),
            )
        except (RegistryError, BrokerError) as exc:
            raise _registry_failed(exc) from exc
    _print_credentials(creds.device_id, creds.username, creds.password)


@device_app.command("import")
def device_import(
    csv_file: Annotated[Path, typer.Argument(help="CSV: serial, model, firmware, patient_id")],
    credentials: Annotated[
        Path | None,
        typer.Option(help="write the new devices' credentials here (mode 600); default: stdout"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="check every row, register nothing")] = False,
) -> None:
    """Register every good row of a roll-out file; report each bad row with its reason.

    Exit status: 0 all rows registered, 1 some rows failed (the others are registered),
    2 the file could not be read at all."""
    import os

    from devices.broker import BrokerError
    from devices.bulk import CsvFormatError, credentials_csv, import_devices

    settings, admin_url = _device_settings()
    if credentials is not None and credentials.exists():
        typer.echo(f"{credentials} exists (may hold other passwords): choose a new name", err=True)
        raise typer.Exit(2)
    try:
        data = csv_file.read_bytes()
    except OSError as exc:
        typer.echo(f"cannot read {csv_file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            report = import_devices(
                conn,
                admin_url,
                data,
                now=Clock.from_settings(settings).now(),
                dry_run=dry_run,
            )
        except (CsvFormatError, BrokerError) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
    for failure in report.failed:
        typer.echo(f"row {failure.row}: {failure.reason}", err=True)
    if dry_run:
        typer.echo(
            f"dry run: {len(report.valid)} rows would be registered, {len(report.failed)} failed",
            err=True,
        )
    else:
        table = credentials_csv(report)
        if credentials is None:
            typer.echo(table, nl=False)
        else:
            fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(table)
        where = f" (credentials in {credentials})" if credentials else ""
        typer.echo(
            f"registered {len(report.registered)}, failed {len(report.failed)}{where}", err=True
        )
    if report.failed:
        raise typer.Exit(1)


@device_app.command("rotate")
def device_rotate(device_id: str) -> None:
    """New broker credentials for a device (also after a revoke); the old password stops
    working at once. Prints them once."""
    from devices.broker import BrokerError
    from devices.registry import RegistryError, rotate_credentials

    settings, admin_url = _device_settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            creds = rotate_credentials(
                conn, admin_url, device_id, now=Clock.from_settings(settings).now()
            )
        except (RegistryError, BrokerError) as exc:
            raise _registry_failed(exc) from exc
    _print_credentials(creds.device_id, creds.username, creds.password)


@device_app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Delete a device's broker credentials (lost or stolen): it is disconnected at once and
    cannot reconnect until `oximon device rotate` issues new ones."""
    from devices.broker import BrokerError
    from devices.registry import RegistryError, revoke_credentials

    settings, admin_url = _device_settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            revoke_credentials(conn, admin_url, device_id, now=Clock.from_settings(settings).now())
        except (RegistryError, BrokerError) as exc:
            raise _registry_failed(exc) from exc
    typer.echo(f"device {device_id}: credentials revoked, connection dropped")


@device_app.command("move")
def device_move(
    device_id: str,
    patient: Annotated[int | None, typer.Option(help="the patient who gets the device")] = None,
    shelf: Annotated[bool, typer.Option(help="take it back to the shelf instead")] = False,
) -> None:
    """Give a device to another patient, or take it back to the shelf. Readings already stored
    stay with the patient who wore it."""
    from devices.registry import RegistryError, move_device

    if (patient is None) == (not shelf):
        typer.echo("give either --patient ID or --shelf", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            change = move_device(conn, device_id, patient, now=Clock.from_settings(settings).now())
        except RegistryError as exc:
            raise _registry_failed(exc) from exc
    where = f"patient {patient}" if patient is not None else "the shelf"
    typer.echo(f"device {device_id}: {change}, now with {where}")


@device_app.command("retire")
def device_retire(device_id: str) -> None:
    """Take a device out of service for good; its broker credentials are deleted."""
    from devices.broker import BrokerError
    from devices.registry import RegistryError, retire_device

    settings, admin_url = _device_settings()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            retire_device(conn, admin_url, device_id, now=Clock.from_settings(settings).now())
        except (RegistryError, BrokerError) as exc:
            raise _registry_failed(exc) from exc
    typer.echo(f"device {device_id}: retired, credentials deleted")


@device_app.command("list")
def device_list(
    problem: Annotated[str | None, typer.Option(help="only devices with this problem")] = None,
    retired: Annotated[bool, typer.Option(help="list retired devices instead")] = False,
) -> None:
    """The fleet, most urgent problem first: one line per device."""
    from devices.fleet import fleet

    settings = get_settings()
    with psycopg.connect(settings.database_url) as conn:
        rows = fleet(
            conn,
            Clock.from_settings(settings).now(),
            status="retired" if retired else "active",
            problem=problem,
        )
    for d in rows:
        seen = d["last_seen_at"].strftime("%Y-%m-%d %H:%M") if d["last_seen_at"] else "never"
        battery = f"{d['battery_pct']}%" if d["battery_pct"] is not None else "-"
        online = {True: "online", False: "offline", None: "-"}[d["online"]]
        kinds = ",".join(p["kind"] for p in d["problems"]) or "ok"
        typer.echo(
            f"{d['device_id']:<16} patient={d['patient_id'] or '-':<6} {online:<7} "
            f"seen={seen:<16} battery={battery:<4} fw={d['firmware'] or '-':<8} {kinds}"
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
    """Run an alerting worker (escalation timers and the SMS outbox)."""
    from alerting.watchdog import Watchdog
    from alerting.worker import AlertingWorker, sender_from_settings
    from core.db import make_pool

    settings = get_settings()
    logs.setup(settings.log_level)
    sender = sender_from_settings(settings)
    if sender is None:
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
        # The watchdog: missed readings (reminder, then an alert) and device health.
        watchdog = Watchdog(
            settings.timezone,
            offline_after=timedelta(minutes=settings.device_offline_after_min),
            low_battery_pct=settings.device_low_battery_pct,
        )
        jobs = [watchdog] if settings.alerting_watchdog else []
        clock = Clock.from_settings(settings)
        AlertingWorker(settings, pool, clock, sender, jobs=jobs).run(stop)
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
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        # uvicorn's own logging config would print tracebacks as plain, unredacted text: its
        # loggers go through ours (JSON lines, phone numbers redacted) instead.
        log_config=None,
    )


@app.command()
def simulate(
    scenario: Annotated[
        Path | None, typer.Option(help="a scenario file (YAML); options given here win")
    ] = None,
    patients: Annotated[int | None, typer.Option(min=0, help="simulated oximeters [50]")] = None,
    spot_share: Annotated[
        float | None, typer.Option(min=0, max=1, help="share doing spot checks, not streams [0]")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(min=0.05, help="seconds between stream readings [1–5 each]")
    ] = None,
    deteriorating: Annotated[
        float | None, typer.Option(min=0, max=1, help="share that deteriorates [0.1]")
    ] = None,
    patterns: Annotated[
        str | None,
        typer.Option(
            help="deteriorations, comma-separated: slow_decline, fast_fall, sudden,"
            " silent_hypoxia, recovery [sudden]"
        ),
    ] = None,
    onset_within: Annotated[
        float | None, typer.Option(help="deteriorations start within these platform minutes [1]")
    ] = None,
    sms: Annotated[int | None, typer.Option(min=0, help="patients texting spot checks [0]")] = None,
    sms_url: Annotated[
        str | None, typer.Option(help="the API's address for the SMS webhook [public URL]")
    ] = None,
    duplicate_rate: Annotated[float | None, typer.Option(help="fault: readings sent twice")] = None,
    malformed_rate: Annotated[float | None, typer.Option(help="fault: malformed payloads")] = None,
    clock_skew_share: Annotated[
        float | None, typer.Option(help="fault: share of devices with a wrong clock")
    ] = None,
    clock_skew_min: Annotated[float | None, typer.Option(help="… wrong by minutes [7]")] = None,
    battery_drain_pct_per_h: Annotated[
        float | None, typer.Option(help="fault: batteries drain, never charged")
    ] = None,
    offline_share: Annotated[
        float | None, typer.Option(help="fault: share of devices losing the network once")
    ] = None,
    offline_after_min: Annotated[float | None, typer.Option(help="… after minutes [5]")] = None,
    offline_for_min: Annotated[float | None, typer.Option(help="… for minutes [20]")] = None,
    storm_at_min: Annotated[
        str | None, typer.Option(help="fault: every device reconnects at once at wall minutes")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed [1]")] = None,
    truth: Annotated[
        Path | None, typer.Option(help="write the run's ground truth here (.json or .csv)")
    ] = None,
) -> None:
    """Simulated oximeters (MQTT) and SMS patients on the platform clock, with faults on request.

    Prints progress every 5 s; with --truth writes who deteriorated, how and when."""
    overrides = {k: v for k, v in locals().items() if k != "scenario"}
    overrides["truth"] = str(truth) if truth else None
    from simulator.run import ScenarioError, load_scenario
    from simulator.run import run as run_simulation

    settings = get_settings()
    logs.setup(settings.log_level)
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        plan = load_scenario(scenario, overrides)  # type: ignore[arg-type]
        run_simulation(settings, plan, stop, echo=lambda line: typer.echo(line))
    except ScenarioError as exc:
        typer.echo(f"simulate: {exc}", err=True)
        raise typer.Exit(2) from exc


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
