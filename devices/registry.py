"""The device registry: register, assign, move and retire oximeters, and issue or revoke their
broker credentials.

Each change is one database transaction; a broker command that belongs to it runs inside that
transaction, so when the broker refuses the registry is left unchanged. Every change that
alters which patient a device's readings belong to, or whether it may send at all, is announced
on the PostgreSQL channel `oximon_devices` at commit (see `DEVICE_CHANGES_CHANNEL`): the ingest
worker drops its cached view of that device.

`now` is the platform's time (DESIGN.md, "Time"), passed in by the caller; None falls back to
the database's clock.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from devices import queries
from devices.broker import BrokerAdmin, new_password
from devices.contract import DEVICE_ID_PATTERN

# NOTIFY channel; payload `{"device_id": "oxi-…", "change": "…", "patient_id": 12 | null}`
# with change one of registered, assigned, moved, unassigned, rotated, revoked, retired.
DEVICE_CHANGES_CHANNEL = "oximon_devices"


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    username: str
    password: str


class RegistryError(Exception):
    """A registry change that cannot be made. `field` names the input at fault (for a 422), or
    is None when the device's state forbids the change (a 409)."""

    field: str | None = None

    def detail(self) -> str:
        """The message with the field it is about, as an API error or a report line shows it."""
        return f"{self.field}: {self}" if self.field else str(self)


class UnknownPatientError(RegistryError, LookupError):
    field = "patient_id"


class UnknownDeviceError(RegistryError, LookupError):
    field = None


class InvalidFieldError(RegistryError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class DuplicateDeviceError(InvalidFieldError):
    """The serial or device id is already in use by a live device."""


class DeviceStateError(RegistryError):
    """The device is retired, or already where it is asked to go."""


def new_device_id() -> str:
    return "oxi-" + secrets.token_hex(5)


def _notify(
    conn: psycopg.Connection[Any], device_id: str, change: str, patient_id: int | None
) -> None:
    payload = json.dumps({"device_id": device_id, "change": change, "patient_id": patient_id})
    conn.execute(queries.NOTIFY, (DEVICE_CHANGES_CHANNEL, payload))


def _one(conn: psycopg.Connection[Any], sql: str, params: Any) -> tuple[Any, ...] | None:
    """The first row as a tuple, whatever row factory the caller's connection has."""
    return conn.cursor(row_factory=tuple_row).execute(sql, params).fetchone()


def _check_patient(conn: psycopg.Connection[Any], patient_id: int) -> None:
    row = _one(conn, queries.PATIENT_IS_ACTIVE, (patient_id,))
    if row is None:
        raise UnknownPatientError(f"no patient with id {patient_id}")
    if row[0] != "active":
        raise UnknownPatientError(f"patient {patient_id} is discharged")


def check_new_device(
    conn: psycopg.Connection[Any],
    *,
    device_id: str,
    serial: str | None,
    model: str | None,
    patient_id: int | None,
) -> None:
    """Raise the reason a device with these fields cannot be registered now, if any."""
    if not re.fullmatch(DEVICE_ID_PATTERN, device_id):
        raise InvalidFieldError(
            "3 to 64 letters, digits, '-' or '_' (it becomes the MQTT username and"
            " part of the topic)",
            "device_id",
        )
    if _one(conn, queries.DEVICE_EXISTS, (device_id,)):
        raise DuplicateDeviceError(f"{device_id} is already registered", "device_id")
    if serial is not None:
        taken = _one(conn, queries.SERIAL_IN_USE, {"serial": serial, "model": model})
        if taken:
            raise DuplicateDeviceError(
                f"{serial} is already registered as device {taken[0]}", "serial"
            )
    if patient_id is not None:
        _check_patient(conn, patient_id)


def register_device(
    conn: psycopg.Connection[Any],
    admin_url: str,
    patient_id: int | None = None,
    *,
    serial: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    device_id: str | None = None,
    by: int | None = None,
    now: datetime | None = None,
    broker: BrokerAdmin | None = None,
) -> DeviceCredentials:
    """Store the device (for a patient, or on the shelf when `patient_id` is None), then create
    its broker client. The password is returned once and stored only inside the broker (hashed
    by the dynamic-security plugin). Pass an open `broker` to register many in one session."""
    device_id = device_id or new_device_id()
    password = new_password()
    with conn.transaction():
        check_new_device(
            conn, device_id=device_id, serial=serial, model=model, patient_id=patient_id
        )
        try:
            conn.execute(
                queries.INSERT_DEVICE,
                {
                    "id": device_id,
                    "patient_id": patient_id,
                    "serial": serial,
                    "model": model,
                    "firmware": firmware,
                    "now": now,
                },
            )
        except psycopg.errors.UniqueViolation as exc:  # registered meanwhile by someone else
            raise DuplicateDeviceError(
                f"{serial or device_id} was registered meanwhile by someone else",
                "serial" if serial else "device_id",
            ) from exc
        if patient_id is not None:
            conn.execute(
                queries.OPEN_ASSIGNMENT,
                {"device_id": device_id, "patient_id": patient_id, "now": now, "by": by},
            )
        _notify(conn, device_id, "registered", patient_id)
        # Inside the transaction: if the broker refuses, the device is not registered either.
        if broker is not None:
            broker.create_device(device_id, password)
        else:
            with BrokerAdmin(admin_url) as admin:
                admin.create_device(device_id, password)
    return DeviceCredentials(device_id=device_id, username=device_id, password=password)


def _lock(conn: psycopg.Connection[Any], device_id: str) -> dict[str, Any]:
    row = conn.cursor(row_factory=dict_row).execute(queries.LOCK_DEVICE, (device_id,)).fetchone()
    if row is None:
        raise UnknownDeviceError(f"no device with id {device_id}")
    return row


def move_device(
    conn: psycopg.Connection[Any],
    device_id: str,
    patient_id: int | None,
    *,
    by: int | None = None,
    now: datetime | None = None,
) -> str:
    """Give the device to `patient_id` (from the shelf, or from another patient), or take it
    back to the shelf with None. Readings already stored keep the patient who wore the device
    when they were measured; the assignment history records who moved it and when. Returns
    the change: assigned, moved or unassigned."""
    with conn.transaction():
        device = _lock(conn, device_id)
        if device["status"] != "active":
            raise DeviceStateError(f"device {device_id} is retired")
        current = device["patient_id"]
        if current == patient_id:
            where = f"patient {patient_id}" if patient_id is not None else "the shelf"
            raise DeviceStateError(f"device {device_id} is already with {where}")
        if patient_id is not None:
            _check_patient(conn, patient_id)
        if current is not None:
            conn.execute(
                queries.CLOSE_ASSIGNMENT,
                {
                    "device_id": device_id,
                    "now": now,
                    "by": by,
                    "reason": "moved" if patient_id is not None else "unassigned",
                },
            )
        if patient_id is not None:
            conn.execute(
                queries.OPEN_ASSIGNMENT,
                {"device_id": device_id, "patient_id": patient_id, "now": now, "by": by},
            )
        conn.execute(queries.SET_PATIENT, (patient_id, device_id))
        change = "unassigned" if patient_id is None else "moved" if current else "assigned"
        _notify(conn, device_id, change, patient_id)
    return change


def retire_device(
    conn: psycopg.Connection[Any],
    admin_url: str,
    device_id: str,
    *,
    by: int | None = None,
    now: datetime | None = None,
) -> None:
    """Take the device out of service for good: its assignment ends, its broker account is
    deleted (an open connection is dropped at once) and it is kept only as history."""
    with conn.transaction():
        device = _lock(conn, device_id)
        if device["status"] != "active":
            raise DeviceStateError(f"device {device_id} is already retired")
        conn.execute(
            queries.CLOSE_ASSIGNMENT,
            {"device_id": device_id, "now": now, "by": by, "reason": "retired"},
        )
        conn.execute(queries.RETIRE, {"device_id": device_id, "now": now, "by": by})
        _notify(conn, device_id, "retired", None)
        with BrokerAdmin(admin_url) as broker:
            broker.revoke_device(device_id)


def rotate_credentials(
    conn: psycopg.Connection[Any],
    admin_url: str,
    device_id: str,
    *,
    now: datetime | None = None,
) -> DeviceCredentials:
    """A new password, working at once; the old one is refused from now on and a connection
    made with it is dropped. Also re-issues credentials to a device whose were revoked."""
    password = new_password()
    with conn.transaction():
        device = _lock(conn, device_id)
        if device["status"] != "active":
            raise DeviceStateError(f"device {device_id} is retired: register a new one instead")
        conn.execute(queries.CREDENTIALS_ISSUED, (now, device_id))
        _notify(conn, device_id, "rotated", device["patient_id"])
        with BrokerAdmin(admin_url) as broker:
            broker.issue_device_password(device_id, password)
    return DeviceCredentials(device_id=device_id, username=device_id, password=password)


def revoke_credentials(
    conn: psycopg.Connection[Any],
    admin_url: str,
    device_id: str,
    *,
    now: datetime | None = None,
) -> None:
    """Delete the device's broker account: its open connection is dropped and it cannot connect
    again until `rotate_credentials` issues new ones (a lost or stolen oximeter)."""
    with conn.transaction():
        device = _lock(conn, device_id)
        if device["status"] != "active":
            raise DeviceStateError(f"device {device_id} is retired (its credentials are gone)")
        conn.execute(queries.CREDENTIALS_REVOKED, (now, device_id))
        _notify(conn, device_id, "revoked", device["patient_id"])
        with BrokerAdmin(admin_url) as broker:
            broker.revoke_device(device_id)


def get_device(conn: psycopg.Connection[Any], device_id: str) -> dict[str, Any]:
    """The device's registry record with its assignment history, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    row = cur.execute(queries.DEVICE, (device_id,)).fetchone()
    if row is None:
        raise UnknownDeviceError(f"no device with id {device_id}")
    row["assignments"] = cur.execute(queries.HISTORY, (device_id,)).fetchall()
    return row


@dataclass(frozen=True, slots=True)
class Assignment:
    patient_id: int
    assigned_at: datetime
    unassigned_at: datetime | None


def load_assignments(
    conn: psycopg.Connection[Any], device_ids: Iterable[str]
) -> dict[str, list[Assignment]]:
    """Every assignment of these devices, oldest first (for the ingest worker's cache)."""
    out: dict[str, list[Assignment]] = {}
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute(queries.ASSIGNMENTS_OF, (list(device_ids),)).fetchall()
    for device_id, patient_id, assigned_at, unassigned_at in rows:
        out.setdefault(device_id, []).append(Assignment(patient_id, assigned_at, unassigned_at))
    return out


def patient_at(assignments: Iterable[Assignment], measured_at: datetime) -> int | None:
    """The patient who wore the device at `measured_at`, or None if nobody did (on the shelf).
    An assignment covers [assigned_at, unassigned_at)."""
    for a in assignments:
        ended = a.unassigned_at is not None and measured_at >= a.unassigned_at
        if a.assigned_at <= measured_at and not ended:
            return a.patient_id
    return None
