"""Test helpers: waiting on conditions with a deadline, publishing as a device."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float = 15.0, what: str = "condition") -> T:
    """Poll until `condition()` is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last value: {last!r})")


class Device:
    """A test oximeter: a real MQTT client with its own credentials."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.connected = threading.Event()
        self.refused: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{username}")
        self.client.username_pw_set(username, password)

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if getattr(rc, "is_failure", False):
                self.refused = str(rc)
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("device could not reach the broker")

    def publish(self, device_id: str, payload: Any, raw: bool = False) -> None:
        body = payload if raw else json.dumps(payload)
        info = self.client.publish(f"oximon/devices/{device_id}/readings", body, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
