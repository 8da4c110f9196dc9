"""`python -m bench [ingest|clinical|score|alerts|api] …` — benchmarks; tables under results/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, help="oximon benchmarks (results under results/)")


@app.callback()
def main() -> None:
    """Run one benchmark; `make bench` runs them all."""


@app.command()
def ingest(
    rates: Annotated[
        str, typer.Option(help="offered readings/s, comma-separated")
    ] = "1000,5000,10000,20000,30000",
    duration: Annotated[float, typer.Option(help="seconds per rate")] = 15,
    devices: int = 2000,
    workers: Annotated[int, typer.Option(help="ingest worker processes")] = 1,
    generators: Annotated[int, typer.Option(help="load generator processes")] = 1,
    protocol: Annotated[int, typer.Option(help="MQTT protocol of the workers: 3 or 5")] = 3,
    out: Path = Path("results"),
) -> None:
    """Ingest throughput, loss, duplicates and publish-to-commit latency."""
    from bench.ingest import main

    main([int(r) for r in rates.split(",")], duration, devices, workers, generators, out, protocol)


@app.command()
def clinical(
    stable: Annotated[int, typer.Option(help="stable patients")] = 400,
    deteriorating: Annotated[int, typer.Option(help="deteriorating patients")] = 64,
    days: Annotated[float, typer.Option(help="simulated days per stable patient")] = 14,
    seed: int = 20261124,
    continuous_share: Annotated[
        float, typer.Option(help="share of stable patients on a continuous stream")
    ] = 0.15,
    out: Path = Path("results"),
) -> None:
    """Alerts per patient-day, deteriorations detected and delays, engine readings/s."""
    from bench.clinical import main

    main(stable, deteriorating, days, seed, continuous_share, out)


@app.command()
def score(
    truth: Annotated[
        Path, typer.Argument(help="the ground truth `oximon simulate --truth FILE.json` wrote")
    ],
    database_url: Annotated[
        str | None,
        typer.Option(help="the database the run fed [OXIMON_DATABASE_URL]", show_default=False),
    ] = None,
    out: Path = Path("results"),
) -> None:
    """Score a live run: its alerts in the database against its ground truth (the clinical
    benchmark's measures), to score.json and score.md under --out."""
    from bench.score import TruthError, markdown, run

    if database_url is None:
        from core.settings import Settings

        database_url = Settings().database_url
    try:
        report = run(truth, database_url, out)
    except TruthError as exc:
        typer.echo(f"score: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(markdown(report))


@app.command()
def alerts(
    rate: Annotated[int, typer.Option(help="background readings/s")] = 5000,
    duration: Annotated[float, typer.Option(help="seconds of load")] = 30,
    probes: Annotated[int, typer.Option(help="red readings, one per probe patient")] = 300,
    devices: int = 2000,
    out: Path = Path("results"),
) -> None:
    """Red reading → alert committed → SMS at the Twilio endpoint, under background load."""
    from bench.alerts import run

    run(out, rate, duration, probes, devices)


@app.command()
def api(
    patients: int = 1000,
    days: Annotated[int, typer.Option(help="days of readings at one a minute")] = 30,
    users: Annotated[int, typer.Option(help="locust nurses")] = 20,
    spawn_rate: Annotated[float, typer.Option(help="nurses started per second")] = 5,
    duration: Annotated[int, typer.Option(help="seconds of load")] = 60,
    seed_workers: Annotated[int, typer.Option(help="connections seeding readings")] = 2,
    data_dir: Annotated[
        Path | None, typer.Option(help="keep the seeded database here and reuse it next time")
    ] = None,
    out: Path = Path("results/api"),
) -> None:
    """API p95 per endpoint under locust nurses, 1,000 patients × 30 days of readings."""
    from bench.api import run

    run(out, patients, days, users, spawn_rate, duration, seed_workers=seed_workers,
        data_dir=data_dir)  # fmt: skip


@app.command()
def connections(
    devices: Annotated[int, typer.Option(help="simulated oximeters, one connection each")] = 10000,
    processes: Annotated[int, typer.Option(help="simulator processes sharing them")] = 2,
    duration: Annotated[float, typer.Option(help="seconds of publishing once connected")] = 30,
    interval: Annotated[float, typer.Option(help="seconds between a device's readings")] = 1.0,
    provision: Annotated[
        str, typer.Option(help="per-device accounts: password_file or dynsec")
    ] = "password_file",
    concurrency: Annotated[int, typer.Option(help="connections opened at once per process")] = 200,
    out: Path = Path("results"),
) -> None:
    """10,000 devices each on its own MQTT connection with its own credentials, a reading a
    second each: connections reached, readings/s acknowledged, broker and generator CPU."""
    from bench.connections import run

    if provision not in ("password_file", "dynsec"):
        raise typer.BadParameter("password_file or dynsec", param_hint="--provision")
    run(devices, processes, duration, interval, provision, concurrency, out)


@app.command()
def locust(
    devices: Annotated[int, typer.Option(help="MQTT device users (paho), one account each")] = 200,
    nurses: Annotated[int, typer.Option(help="HTTP nurse users (bench/locust_api.py)")] = 10,
    duration: Annotated[float, typer.Option(help="seconds")] = 60,
    interval: Annotated[float, typer.Option(help="seconds between a device's readings")] = 1.0,
    out: Path = Path("results/locust"),
) -> None:
    """Locust, headless: oximeters over MQTT and nurses over HTTP against the real platform;
    CSV, HTML and a PNG of the report under --out."""
    from bench.loadtest import run

    run(devices, nurses, duration, interval, out)


if __name__ == "__main__":
    app()
