"""The device registry: register an oximeter for a patient and give it broker credentials."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from devices.broker import BrokerAdmin, new_password


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    username: str
    password: str


class UnknownPatientError(LookupError):
    pass


def new_device_id() -> str:
    return "oxi-" + secrets.token_hex(5)


def register_device(
    conn: psycopg.Connection[Any],
    admin_url: str,
    patient_id: int,
    *,
    serial: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    device_id: str | None = None,
) -> DeviceCredentials:
    """Store the device, then create its broker client. The password is returned once and
    stored only inside the broker (hashed by the dynamic-security plugin)."""
    device_id = device_id or new_device_id()
    with conn.transaction():
        found = conn.execute(
            "SELECT 1 FROM patients WHERE id = %s AND status = 'active'", (patient_id,)
        ).fetchone()
        if not found:
            raise UnknownPatientError(f"no active patient with id {patient_id}")
        conn.execute(
            "INSERT INTO devices (id, patient_id, serial, model, firmware)"
            " VALUES (%s, %s, %s, %s, %s)",
            (device_id, patient_id, serial, model, firmware),
        )
        password = new_password()
        # Inside the transaction: if the broker refuses, the device is not registered either.
        with BrokerAdmin(admin_url) as broker:
            broker.create_device(device_id, password)
    return DeviceCredentials(device_id=device_id, username=device_id, password=password)


def rotate_password(admin_url: str, device_id: str) -> DeviceCredentials:
    password = new_password()
    with BrokerAdmin(admin_url) as broker:
        broker.set_device_password(device_id, password)
    return DeviceCredentials(device_id=device_id, username=device_id, password=password)
