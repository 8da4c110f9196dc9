"""Broker credentials and ACLs through Mosquitto's dynamic-security plugin, over MQTT.

Each device gets its own client (username = device id) and its own role that may publish only
under `oximon/devices/{id}/`. Debian's Mosquitto 2.0 does not substitute %u in dynamic-security
ACLs, hence one role per device. Changes take effect at once, without a broker restart.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
SERVICE_ROLE = "oximon-service"


class BrokerError(RuntimeError):
    """The broker refused or did not answer a credentials command."""


def parse_mqtt_url(url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts:// (got {parsed.scheme!r})")
    return {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or (8883 if parsed.scheme == "mqtts" else 1883),
        "username": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
        "tls": parsed.scheme == "mqtts",
    }


def new_password() -> str:
    return secrets.token_urlsafe(18)


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


class BrokerAdmin:
    """A short-lived admin connection that sends dynamic-security commands and awaits replies."""

    def __init__(self, admin_url: str, timeout_s: float = 10.0) -> None:
        self._cfg = parse_mqtt_url(admin_url)
        self._timeout_s = timeout_s
        self._reply = threading.Event()
        self._response: dict[str, Any] = {}
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"oximon-admin-{uuid.uuid4().hex[:8]}"
        )
        self._client.username_pw_set(self._cfg["username"], self._cfg["password"])
        if self._cfg["tls"]:
            self._client.tls_set()
        self._client.on_message = self._on_message

    def __enter__(self) -> BrokerAdmin:
        connected = threading.Event()
        self._client.on_connect = lambda *_a, **_k: connected.set()
        self._client.connect(self._cfg["host"], self._cfg["port"])
        self._client.loop_start()
        if not connected.wait(self._timeout_s):
            self._client.loop_stop()
            raise BrokerError("broker did not accept the admin connection")
        result, _ = self._client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerError("could not subscribe to dynamic-security responses")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._response = json.loads(msg.payload)
        self._reply.set()

    def execute(self, commands: list[dict[str, Any]], ok_errors: tuple[str, ...] = ()) -> None:
        """Run commands in order; an error not listed in ok_errors raises BrokerError."""
        self._reply.clear()
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        info.wait_for_publish(self._timeout_s)
        if not self._reply.wait(self._timeout_s):
            raise BrokerError("no reply from the dynamic-security plugin (is it loaded?)")
        for response in self._response.get("responses", []):
            error = response.get("error")
            if error and error not in ok_errors:
                raise BrokerError(f"{response.get('command')}: {error}")

    def ensure_service_account(self, username: str, password: str) -> None:
        """The account ingest and the API use: read every device topic, publish SMS readings."""
        acls = [
            {"acltype": "subscribePattern", "topic": "oximon/devices/#", "allow": True},
            {"acltype": "subscribePattern", "topic": "$share/+/oximon/devices/#", "allow": True},
            {"acltype": "publishClientSend", "topic": "oximon/devices/+/readings", "allow": True},
        ]
        self.execute(
            [{"command": "createRole", "rolename": SERVICE_ROLE, "acls": acls}],
            ok_errors=("Role already exists",),
        )
        self.execute(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "roles": [{"rolename": SERVICE_ROLE}],
                }
            ],
            ok_errors=("Client already exists",),
        )
        self.execute([{"command": "setClientPassword", "username": username, "password": password}])

    def create_device(self, device_id: str, password: str) -> None:
        role = device_role(device_id)
        acls = [
            {
                "acltype": "publishClientSend",
                "topic": f"oximon/devices/{device_id}/#",
                "allow": True,
            },
        ]
        self.execute(
            [
                {"command": "createRole", "rolename": role, "acls": acls},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                },
            ]
        )

    def set_device_password(self, device_id: str, password: str) -> None:
        self.execute(
            [{"command": "setClientPassword", "username": device_id, "password": password}]
        )

    def revoke_device(self, device_id: str) -> None:
        """Delete the client (its open connection is dropped) and its role."""
        self.execute(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": device_role(device_id)},
            ],
            ok_errors=("Client not found", "Role not found"),
        )
