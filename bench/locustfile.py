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

from pathlib import Path

from bench.locust_devices import DeviceUser

__all__ = ["DeviceUser"]

if (Path(__file__).parent / "locust_api.py").exists():
    from bench.locust_api import NurseUser

    __all__ += ["NurseUser"]
