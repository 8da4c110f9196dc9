"""Broker credentials and ACLs through Mosquitto's dynamic-security plugin, over MQTT.

Each device gets its own client (username = device id) and its own role that may publish only
under `oximon/devices/{id}/`. Debian's Mosquitto 2.0 does not substitute %u in dynamic-security
ACLs, hence one role per device. Changes take effect at once, without a broker restart.

Measured with Mosquitto 2.0.11 (tests/test_broker_auth.py): `deleteClient`, `disableClient` and
`setClientPassword` each drop the client's open connection within milliseconds, and the old
password is refused from then on. Revoking deletes the client and its role, so nothing of the
device's secret stays in the broker.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import paho.mqtt.client as mqtt

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
SERVICE_ROLE = "oximon-service"


class BrokerError(RuntimeError):
    """The broker refused or did not answer a credentials command."""


def parse_mqtt_url(url: str) -> dict[str, Any]:
    """`mqtt://user:password@host:port` or `mqtts://…:8883?cafile=/path/ca.crt`.

    `cafile` names the certificate authority to trust for mqtts (a private installation's own
    CA); without it the system's trusted authorities are used.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts:// (got {parsed.scheme!r})")
    query = parse_qs(parsed.query)
    return {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or (8883 if parsed.scheme == "mqtts" else 1883),
        "username": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
        "tls": parsed.scheme == "mqtts",
        "cafile": query["cafile"][0] if "cafile" in query else None,
    }


def new_password() -> str:
    """144 random bits: the broker's fast password hash cannot be brute-forced at this size."""
    return secrets.token_urlsafe(18)


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """Publish under its own id only. Nothing else is granted, and the plugin's defaults deny
    subscribing, so a device reads nothing of anyone else."""
    return [
        {"acltype": "publishClientSend", "topic": f"oximon/devices/{device_id}/#", "allow": True}
    ]


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
            self._client.tls_set(ca_certs=self._cfg["cafile"])
        self._client.on_message = self._on_message

    def __enter__(self) -> BrokerAdmin:
        connected = threading.Event()
        refused: list[str] = []

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if getattr(reason, "is_failure", False):
                refused.append(str(reason))
            connected.set()

        self._client.on_connect = on_connect
        try:
            self._client.connect(self._cfg["host"], self._cfg["port"])
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker: {exc}") from exc
        self._client.loop_start()
        if not connected.wait(self._timeout_s) or refused:
            self._client.loop_stop()
            raise BrokerError(
                "broker did not accept the admin connection"
                + (f" ({refused[0]})" if refused else "")
            )
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

    def execute(
        self, commands: list[dict[str, Any]], ok_errors: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Run commands in order and return their responses; an error not listed in ok_errors
        raises BrokerError."""
        self._reply.clear()
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        info.wait_for_publish(self._timeout_s)
        if not self._reply.wait(self._timeout_s):
            raise BrokerError("no reply from the dynamic-security plugin (is it loaded?)")
        responses: list[dict[str, Any]] = self._response.get("responses", [])
        for response in responses:
            error = response.get("error")
            if error and error not in ok_errors:
                raise BrokerError(f"{response.get('command')}: {error}")
        return responses

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
        """A new device account; fails if the broker already has one under that name."""
        role = device_role(device_id)
        self.execute(
            [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                },
            ]
        )

    def issue_device_password(self, device_id: str, password: str) -> None:
        """Give the device this password, creating its account and role again if they were
        revoked. An open connection made with the old password is dropped by the broker."""
        role = device_role(device_id)
        responses = self.execute(
            [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {
                    "command": "createClient",
                    "username": device_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                },
            ],
            ok_errors=("Role already exists", "Client already exists"),
        )
        if any(r.get("error") == "Client already exists" for r in responses):
            self.execute(
                [
                    {"command": "setClientPassword", "username": device_id, "password": password},
                    # An account left disabled by hand is usable again once re-issued.
                    {"command": "enableClient", "username": device_id},
                ]
            )

    def set_device_password(self, device_id: str, password: str) -> None:
        self.execute(
            [{"command": "setClientPassword", "username": device_id, "password": password}]
        )

    def revoke_device(self, device_id: str) -> None:
        """Delete the client (its open connection is dropped at once) and its role."""
        self.execute(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": device_role(device_id)},
            ],
            ok_errors=("Client not found", "Role not found"),
        )

    def device_account(self, device_id: str) -> dict[str, Any] | None:
        """The broker's record of a device account (no password), or None if there is none."""
        [response] = self.execute(
            [{"command": "getClient", "username": device_id}], ok_errors=("Client not found",)
        )
        if response.get("error"):
            return None
        client: dict[str, Any] = response.get("data", {}).get("client", {})
        return client
