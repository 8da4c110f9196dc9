"""Locust: the platform under a fleet of oximeters and the nurses watching it.

`DeviceUser` (bench/locust_devices.py) publishes readings over MQTT, each user its own device.
`NurseUser` (bench/locust_api.py, the API's load test) polls the dashboard's endpoints over
HTTP (`--host` is the API). The nurse user is imported when that file exists — the only
condition checked, at import, so this locustfile works with or without it; anything else
wrong in it (a failed import inside) is an error, not silently skipped.

Run by `python -m bench locust` (`make bench`), which starts everything and sets the
environment both users read.
"""

from __future__ import annotations

import sys
from pathlib import Path

# locust puts this file's folder first on sys.path, where bench/api.py would shadow the top-level
# `api` package; the benchmarks import everything as `bench.…` from the checkout instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

from bench.locust_devices import DeviceUser  # noqa: E402

__all__ = ["DeviceUser"]

if (Path(__file__).parent / "locust_api.py").exists():
    from bench.locust_api import NurseUser  # noqa: E402

    __all__ += ["NurseUser"]
