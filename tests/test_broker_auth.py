"""Each device speaks only for itself, and losing its credentials takes effect at once.

Against the real Mosquitto 2.0 with the dynamic-security plugin and anonymous access off, the
real ingest worker and the real database.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from core.settings import Settings
from devices.broker import BrokerAdmin
from devices.registry import (
    DeviceCredentials,
    register_device,
    revoke_credentials,
    rotate_credentials,
)
from tests.conftest import Stack
from tests.helpers import wait_until


def ts(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


class Oximeter:
    """A device as a manufacturer would build it: MQTT 5, its own credentials, a retained
    last will, and (optionally) TLS. Records whether the broker refused or dropped it."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None,
        *,
        ca: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.username = username or "anonymous"
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.refused: str | None = None
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code
        self._acked = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"oxi-test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.will_set(
            f"oximon/devices/{self.username}/status", "offline", qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.subscribe_reasons: list[int] = []
        self.subscribed = threading.Event()
        self.client.reconnect_delay_set(60, 120)  # no silent reconnect with the same password
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("device could not reach the broker")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            self.refused = str(reason)
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        if self.refused is None:
            self.dropped.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._acked:
            self.acks[mid] = getattr(reason, "value", 0)
            self._acked.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        self.subscribe_reasons = [getattr(r, "value", 0) for r in reasons]
        self.subscribed.set()

    def publish(self, device_id: str, payload: Any, topic: str = "readings") -> int:
        """Publish at QoS 1 and return the broker's PUBACK reason code (0: accepted)."""
        info = self.client.publish(f"oximon/devices/{device_id}/{topic}", json.dumps(payload), 1)
        with self._acked:
            if not self._acked.wait_for(lambda: info.mid in self.acks, timeout=10):
                raise AssertionError("no PUBACK from the broker")
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def count(db: psycopg.Connection, sql: str = "SELECT count(*) AS n FROM readings", *a: Any) -> int:
    return int(db.execute(sql, a).fetchone()["n"])


@pytest.fixture
def creds(db: psycopg.Connection, settings: Settings, patient: int) -> DeviceCredentials:
    return register_device(db, settings.mqtt_admin_url, patient, serial="SN-AUTH-1")


def test_a_device_publishing_with_its_own_credentials_gets_its_reading_stored(
    stack: Stack, db: psycopg.Connection, ingest, patient: int, creds: DeviceCredentials
) -> None:
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    assert device.refused is None
    assert device.publish(creds.device_id, {"ts": ts(5), "spo2": 96, "pulse": 71}) == 0
    row = wait_until(lambda: db.execute("SELECT * FROM readings").fetchone(), what="reading")
    assert (row["device_id"], row["patient_id"], row["spo2"]) == (creds.device_id, patient, 96)
    device.close()


def test_a_device_publishing_on_another_devices_topic_is_refused_and_nothing_is_stored(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    ingest,
    patient: int,
    creds: DeviceCredentials,
) -> None:
    other = register_device(db, settings.mqtt_admin_url, patient, serial="SN-AUTH-2")
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    # MQTT 5 tells the publisher 135, "not authorized"; Mosquitto 2.0 then closes the
    # connection. The message goes nowhere.
    assert device.publish(other.device_id, {"ts": ts(9), "spo2": 80, "pulse": 70}) == 135
    assert device.dropped.wait(2)
    device.close()
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    assert device.publish(other.device_id, {}, topic="status") == 135
    device.close()
    # Its own reading, published after, is stored; by then the refused one would have been too.
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    assert device.publish(creds.device_id, {"ts": ts(1), "spo2": 97, "pulse": 70}) == 0
    rows = wait_until(lambda: db.execute("SELECT * FROM readings").fetchall(), what="reading")
    assert [(r["device_id"], r["spo2"]) for r in rows] == [(creds.device_id, 97)]
    assert count(db, "SELECT count(*) AS n FROM dead_letters") == 0
    device.close()


def test_a_device_cannot_read_any_topic_not_even_its_own(
    stack: Stack, creds: DeviceCredentials, settings: Settings, db: psycopg.Connection
) -> None:
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    device.client.subscribe(
        [("oximon/devices/+/readings", 1), (f"oximon/devices/{creds.device_id}/readings", 1)]
    )
    assert device.subscribed.wait(10)
    assert device.subscribe_reasons == [135, 135]  # not authorized
    device.close()


def test_a_wrong_password_and_an_anonymous_client_are_refused(
    stack: Stack, creds: DeviceCredentials
) -> None:
    assert Oximeter(stack.broker.port, creds.username, "not-the-password").refused
    assert Oximeter(stack.broker.port, None, None).refused
    assert Oximeter(stack.broker.port, "oxi-nobody", "whatever").refused


def test_a_revoked_device_is_dropped_at_once_and_cannot_reconnect(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    ingest,
    patient: int,
    creds: DeviceCredentials,
) -> None:
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    assert device.publish(creds.device_id, {"ts": ts(10), "spo2": 95, "pulse": 70}) == 0
    wait_until(lambda: count(db) == 1, what="the reading before revocation")

    revoke_credentials(db, settings.mqtt_admin_url, creds.device_id)
    # The broker drops the open connection itself, within the command's round trip.
    assert device.dropped.wait(2), "the revoked device's connection stayed open"
    again = Oximeter(stack.broker.port, creds.username, creds.password)
    assert again.refused is not None and "authori" in again.refused.lower()
    with BrokerAdmin(settings.mqtt_admin_url) as admin:
        assert admin.device_account(creds.device_id) is None  # nothing of it left in the broker
    row = db.execute(
        "SELECT credentials_revoked_at FROM devices WHERE id = %s", (creds.device_id,)
    ).fetchone()
    assert row["credentials_revoked_at"] is not None
    device.close()


def test_a_rotated_password_works_at_once_and_the_old_one_does_not(
    stack: Stack,
    db: psycopg.Connection,
    settings: Settings,
    ingest,
    patient: int,
    creds: DeviceCredentials,
) -> None:
    device = Oximeter(stack.broker.port, creds.username, creds.password)
    new = rotate_credentials(db, settings.mqtt_admin_url, creds.device_id)
    assert new.password != creds.password and new.username == creds.username
    # A session opened with the old secret does not outlive it.
    assert device.dropped.wait(2), "the connection made with the old password stayed open"
    assert Oximeter(stack.broker.port, creds.username, creds.password).refused is not None
    renewed = Oximeter(stack.broker.port, new.username, new.password)
    assert renewed.refused is None
    assert renewed.publish(creds.device_id, {"ts": ts(2), "spo2": 98, "pulse": 64}) == 0
    wait_until(lambda: count(db) == 1, what="the reading sent with the new password")
    renewed.close()
    device.close()


def test_revoked_credentials_come_back_only_through_rotation(
    stack: Stack, db: psycopg.Connection, settings: Settings, creds: DeviceCredentials
) -> None:
    revoke_credentials(db, settings.mqtt_admin_url, creds.device_id)
    new = rotate_credentials(db, settings.mqtt_admin_url, creds.device_id)
    assert Oximeter(stack.broker.port, new.username, new.password).refused is None
    assert Oximeter(stack.broker.port, creds.username, creds.password).refused is not None
    with BrokerAdmin(settings.mqtt_admin_url) as admin:
        account = admin.device_account(creds.device_id)
    assert account is not None
    assert [r["rolename"] for r in account["roles"]] == [f"device-{creds.device_id}"]
    row = db.execute(
        "SELECT credentials_revoked_at FROM devices WHERE id = %s", (creds.device_id,)
    ).fetchone()
    assert row["credentials_revoked_at"] is None


def test_a_reading_sent_over_tls_is_stored(
    stack: Stack, db: psycopg.Connection, ingest, patient: int, creds: DeviceCredentials
) -> None:
    assert stack.broker.ca_path.exists()
    for host in ("127.0.0.1", "localhost"):  # the certificate names both
        device = Oximeter(
            stack.broker.tls_port,
            creds.username,
            creds.password,
            ca=stack.broker.ca_path,
            host=host,
        )
        assert device.refused is None
        device.close()
    device = Oximeter(
        stack.broker.tls_port, creds.username, creds.password, ca=stack.broker.ca_path
    )
    assert device.publish(creds.device_id, {"ts": ts(3), "spo2": 94, "pulse": 77}) == 0
    row = wait_until(lambda: db.execute("SELECT * FROM readings").fetchone(), what="TLS reading")
    assert (row["device_id"], row["patient_id"], row["spo2"]) == (creds.device_id, patient, 94)
    device.close()


def test_the_tls_listener_refuses_a_client_that_does_not_trust_its_authority(
    stack: Stack, creds: DeviceCredentials
) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(creds.username, creds.password)
    client.tls_set()  # the system's authorities only: the local CA is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", stack.broker.tls_port)
