"""Bulk registration from a CSV file: a municipality's roll-out of a hundred oximeters at once.

The file has a header row; `serial` is required, `model`, `firmware`, `patient_id` (empty: the
device goes on the shelf) and `device_id` (empty: one is made up) are optional. Commas,
semicolons (a spreadsheet in Norwegian) or tabs, UTF-8 with or without a byte-order mark.

Every good row is registered and gets broker credentials; every bad one is reported with its
row number as a spreadsheet shows it (the header is row 1) and the reason, and registers
nothing. One bad row never stops the others.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from devices.broker import BrokerAdmin, BrokerError
from devices.contract import readings_topic
from devices.registry import (
    DeviceCredentials,
    RegistryError,
    check_new_device,
    new_device_id,
    register_device,
)

COLUMNS = ("serial", "model", "firmware", "patient_id", "device_id")
REQUIRED = ("serial",)
MAX_ROWS = 5000
MAX_FIELD = 64


class CsvFormatError(ValueError):
    """The file as a whole cannot be read; the message says why, for the person uploading it."""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    row: int
    serial: str
    model: str | None
    firmware: str | None
    patient_id: int | None
    device_id: str | None


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    reason: str


@dataclass
class ImportReport:
    registered: list[tuple[DeviceRow, DeviceCredentials]] = field(default_factory=list)
    failed: list[RowError] = field(default_factory=list)
    dry_run: bool = False
    # dry run only: the rows that would have been registered
    valid: list[DeviceRow] = field(default_factory=list)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(
            f"file: not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8'"
        ) from exc


def parse_csv(data: bytes | str) -> tuple[list[DeviceRow], list[RowError]]:
    """The rows that look right on their own, and the rows that do not (with reasons).
    Checks that need the database (the patient exists, the serial is free) come later."""
    text = _text(data)
    if not text.strip():
        raise CsvFormatError("file: is empty")
    first_line = text.lstrip().splitlines()[0]
    try:
        dialect: Any = csv.Sniffer().sniff(first_line, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text.lstrip()), dialect)
    header = [h.strip().lower() for h in next(reader)]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CsvFormatError(
            f"file: unknown column {unknown[0]!r} in the header (columns: {', '.join(COLUMNS)})"
        )
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise CsvFormatError(f"file: the header has no {missing[0]!r} column")
    repeated = {h for h in header if header.count(h) > 1}
    if repeated:
        raise CsvFormatError(f"file: column {sorted(repeated)[0]!r} appears twice in the header")

    rows: list[DeviceRow] = []
    errors: list[RowError] = []
    seen_serial: dict[tuple[str, str], int] = {}
    seen_id: dict[str, int] = {}
    for line in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in line):
            continue  # blank line, e.g. at the end of the file
        if len(rows) + len(errors) >= MAX_ROWS:
            raise CsvFormatError(f"file: more than {MAX_ROWS} devices; split it")
        if len(line) > len(header):
            errors.append(RowError(number, f"{len(line)} cells but {len(header)} columns"))
            continue
        cells = {h: (line[i].strip() if i < len(line) else "") for i, h in enumerate(header)}
        try:
            row = _row(number, cells)
        except ValueError as exc:
            errors.append(RowError(number, str(exc)))
            continue
        key = (row.model or "", row.serial)
        if key in seen_serial:
            errors.append(RowError(number, f"serial: {row.serial} repeats row {seen_serial[key]}"))
            continue
        if row.device_id and row.device_id in seen_id:
            errors.append(
                RowError(number, f"device_id: {row.device_id} repeats row {seen_id[row.device_id]}")
            )
            continue
        seen_serial[key] = number
        if row.device_id:
            seen_id[row.device_id] = number
        rows.append(row)
    if not rows and not errors:
        raise CsvFormatError("file: has a header but no devices")
    return rows, errors


def _row(number: int, cells: dict[str, str]) -> DeviceRow:
    for name, value in cells.items():
        if len(value) > MAX_FIELD:
            raise ValueError(f"{name}: longer than {MAX_FIELD} characters")
        if any(ord(ch) < 32 for ch in value):
            raise ValueError(f"{name}: contains control characters")
    serial = cells.get("serial", "")
    if not serial:
        raise ValueError("serial: is empty")
    patient_id: int | None = None
    raw_patient = cells.get("patient_id", "")
    if raw_patient:
        if not raw_patient.isdigit() or int(raw_patient) == 0:
            raise ValueError(f"patient_id: {raw_patient!r} is not a patient number")
        patient_id = int(raw_patient)
    return DeviceRow(
        row=number,
        serial=serial,
        model=cells.get("model") or None,
        firmware=cells.get("firmware") or None,
        patient_id=patient_id,
        device_id=cells.get("device_id") or None,
    )


def import_devices(
    conn: psycopg.Connection[Any],
    admin_url: str,
    data: bytes | str,
    *,
    by: int | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    patient_allowed: Callable[[int], bool] | None = None,
) -> ImportReport:
    """Register every good row of the file (each in its own transaction, all through one broker
    session) and report the others. With `dry_run`, check every row against the registry and
    register nothing. Rows naming a patient `patient_allowed` refuses (another care team's) fail
    as an unknown patient would. Raises CsvFormatError when the file as a whole is unreadable."""
    rows, errors = parse_csv(data)
    if patient_allowed is not None:
        refused = [
            r for r in rows if r.patient_id is not None and not patient_allowed(r.patient_id)
        ]
        errors = [
            *errors,
            *(RowError(r.row, f"patient_id: no patient with id {r.patient_id}") for r in refused),
        ]
        rows = [r for r in rows if r not in refused]
    report = ImportReport(failed=list(errors), dry_run=dry_run)
    if dry_run:
        for row in rows:
            try:
                check_new_device(
                    conn,
                    device_id=row.device_id or new_device_id(),
                    serial=row.serial,
                    model=row.model,
                    patient_id=row.patient_id,
                )
            except RegistryError as exc:
                report.failed.append(RowError(row.row, exc.detail()))
            else:
                report.valid.append(row)
    else:
        with BrokerAdmin(admin_url) as broker:
            for row in rows:
                try:
                    creds = register_device(
                        conn,
                        admin_url,
                        row.patient_id,
                        serial=row.serial,
                        model=row.model,
                        firmware=row.firmware,
                        device_id=row.device_id,
                        by=by,
                        now=now,
                        broker=broker,
                    )
                except RegistryError as exc:
                    report.failed.append(RowError(row.row, exc.detail()))
                except BrokerError as exc:
                    report.failed.append(RowError(row.row, f"broker: {exc}"))
                else:
                    report.registered.append((row, creds))
    report.failed.sort(key=lambda e: e.row)
    return report


CREDENTIAL_COLUMNS = ("row", "device_id", "serial", "model", "patient_id", "mqtt_username")


def credentials_csv(report: ImportReport) -> str:
    """The new devices' credentials as CSV, for the people who set the oximeters up. Holds
    passwords: write it where only they can read it, and delete it once the devices are set."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CREDENTIAL_COLUMNS, "mqtt_password", "readings_topic"])
    for row, creds in report.registered:
        writer.writerow(
            [
                row.row,
                creds.device_id,
                row.serial,
                row.model or "",
                row.patient_id or "",
                creds.username,
                creds.password,
                readings_topic(creds.device_id),
            ]
        )
    return out.getvalue()
