"""`python -m bench [ingest] …` — run benchmarks and write tables under results/."""

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


if __name__ == "__main__":
    app()
