"""Bulk registration from a CSV roll-out file: good rows registered, bad rows reported."""

from __future__ import annotations

import csv
import io
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from core.settings import Settings
from devices.bulk import CsvFormatError, RowError, import_devices, parse_csv
from tests.conftest import Stack, settings_env
from tests.test_broker_auth import Oximeter


def add_patients(db: psycopg.Connection, n: int) -> list[int]:
    return [
        int(
            db.execute(
                "INSERT INTO patients (display_name) VALUES (%s) RETURNING id",
                (f"Synthetic roll-out patient {i}",),
            ).fetchone()["id"]
        )
        for i in range(n)
    ]


# --- reading the file (no database) ---------------------------------------------------------


def test_a_spreadsheet_export_with_semicolons_and_a_byte_order_mark_is_read() -> None:
    data = "\ufeffSerial;Model;Firmware;Patient_ID\r\nSN-1;OxiA;1.2;7\r\nSN-2;OxiA;1.2;\r\n\r\n"
    rows, errors = parse_csv(data.encode())
    assert errors == []
    assert [(r.row, r.serial, r.model, r.firmware, r.patient_id) for r in rows] == [
        (2, "SN-1", "OxiA", "1.2", 7),
        (3, "SN-2", "OxiA", "1.2", None),
    ]


def test_each_bad_row_is_reported_with_its_spreadsheet_row_number_and_reason() -> None:
    data = (
        "serial,model,firmware,patient_id,device_id\n"
        "SN-1,OxiA,1.0,1,\n"  # row 2: good
        ",OxiA,1.0,1,\n"  # row 3
        "SN-3,OxiA,1.0,seven,\n"  # row 4
        "SN-1,OxiA,1.0,2,\n"  # row 5: repeats row 2
        "SN-1,OxiB,1.0,2,\n"  # row 6: good, another model
        "SN-7,OxiA,1.0,1,oxi-7,extra\n"  # row 7
        "SN-8,OxiA,1.0,1,no spaces allowed\n"  # row 8: caught by the registry, later
        f"{'X' * 65},OxiA,1.0,1,\n"  # row 9
        "SN-10,OxiA,1.0,1,oxi-10\n"  # row 10: good
        "SN-11,OxiA,1.0,1,oxi-10\n"  # row 11: repeats row 10's id
    )
    rows, errors = parse_csv(data)
    assert [r.row for r in rows] == [2, 6, 8, 10]
    assert errors == [
        RowError(3, "serial: is empty"),
        RowError(4, "patient_id: 'seven' is not a patient number"),
        RowError(5, "serial: SN-1 repeats row 2"),
        RowError(7, "6 cells but 5 columns"),
        RowError(9, "serial: longer than 64 characters"),
        RowError(11, "device_id: oxi-10 repeats row 10"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file: is empty"),
        (b"serial,colour\nSN-1,red\n", "file: unknown column 'colour'"),
        (b"model,firmware\nOxiA,1.0\n", "file: the header has no 'serial' column"),
        (b"serial,serial\nSN-1,SN-2\n", "file: column 'serial' appears twice"),
        (b"serial\n", "file: has a header but no devices"),
        ("serial\nSN-\u00e6\n".encode("latin-1"), "file: not UTF-8 text"),
    ],
)
def test_a_file_that_cannot_be_read_at_all_is_refused_as_a_whole(data: bytes, reason: str) -> None:
    with pytest.raises(CsvFormatError, match=reason):
        parse_csv(data)


# --- registering (database and broker) ------------------------------------------------------


def rollout_file(patients: list[int], n_good: int) -> tuple[str, dict[int, str], dict[str, int]]:
    """A roll-out of `n_good` good rows with bad rows among them: the file, the bad rows'
    expected reasons, and the row of each good serial."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["serial", "model", "firmware", "patient_id"])
    bad: dict[int, str] = {}
    rows: dict[str, int] = {}
    row = 1
    for i in range(n_good):
        row += 1
        rows[f"OX{i:05d}"] = row
        writer.writerow([f"OX{i:05d}", "OxiA 200", "2.1.0", patients[i % len(patients)]])
        if i == 10:
            row += 1
            writer.writerow(["OX00003", "OxiA 200", "2.1.0", patients[0]])
            bad[row] = "serial: OX00003 repeats row 5"
        if i == 50:
            row += 1
            writer.writerow(["OX99999", "OxiA 200", "2.1.0", 999_999])
            bad[row] = "patient_id: no patient with id 999999"
        if i == 90:
            row += 1
            writer.writerow(["", "OxiA 200", "2.1.0", patients[0]])
            bad[row] = "serial: is empty"
    return out.getvalue(), bad, rows


def test_a_roll_out_of_140_devices_registers_every_good_row_and_reports_the_bad_ones(
    stack: Stack, db: psycopg.Connection, settings: Settings
) -> None:
    patients = add_patients(db, 20)
    data, bad, rows = rollout_file(patients, 140)
    # One serial is already in use before the roll-out.
    db.execute("INSERT INTO devices (id, serial, model) VALUES ('oxi-old', 'OX00077', 'OxiA 200')")
    report = import_devices(db, settings.mqtt_admin_url, data)

    expected = {**bad, rows["OX00077"]: "serial: OX00077 is already registered as device oxi-old"}
    assert {(e.row, e.reason) for e in report.failed} == set(expected.items())
    assert len(report.registered) == 139
    stored = db.execute(
        "SELECT count(*) AS n, count(DISTINCT patient_id) AS patients FROM devices"
        " WHERE id <> 'oxi-old'"
    ).fetchone()
    assert (stored["n"], stored["patients"]) == (139, 20)
    assignments = db.execute("SELECT count(*) AS n FROM device_assignments").fetchone()["n"]
    assert assignments == 139
    # The credentials given back work, each for its own device.
    for _, creds in (report.registered[0], report.registered[-1]):
        device = Oximeter(stack.broker.port, creds.username, creds.password)
        assert device.refused is None
        device.close()


def test_a_dry_run_checks_every_row_against_the_registry_and_registers_nothing(
    db: psycopg.Connection, settings: Settings
) -> None:
    [patient] = add_patients(db, 1)
    db.execute("INSERT INTO devices (id, serial) VALUES ('oxi-old', 'SN-2')")
    data = f"serial,patient_id\nSN-1,{patient}\nSN-2,{patient}\nSN-3,{patient + 1}\nSN-4,\n"
    report = import_devices(db, settings.mqtt_admin_url, data, dry_run=True)
    assert [r.row for r in report.valid] == [2, 5]
    assert [(e.row, e.reason) for e in report.failed] == [
        (3, "serial: SN-2 is already registered as device oxi-old"),
        (4, f"patient_id: no patient with id {patient + 1}"),
    ]
    assert report.registered == []
    assert db.execute("SELECT count(*) AS n FROM devices").fetchone()["n"] == 1


def test_the_command_line_writes_the_credentials_to_a_private_file_and_reports_bad_rows(
    db: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    [patient] = add_patients(db, 1)
    source = tmp_path / "rollout.csv"
    source.write_text(f"serial,model,patient_id\nSN-1,OxiA,{patient}\nSN-2,OxiA,x\nSN-3,OxiA,\n")
    out = tmp_path / "credentials.csv"
    cmd = [sys.executable, "-m", "oximon.cli", "device", "import", str(source)]
    result = subprocess.run(
        [*cmd, "--credentials", str(out)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr  # some rows failed; the others are registered
    assert "row 3: patient_id: 'x' is not a patient number" in result.stderr
    assert "registered 2, failed 1" in result.stderr
    assert result.stdout == ""  # no password on the terminal
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = list(csv.DictReader(out.open()))
    assert [(r["row"], r["serial"], r["patient_id"]) for r in rows] == [
        ("2", "SN-1", str(patient)),
        ("4", "SN-3", ""),
    ]
    assert all(len(r["mqtt_password"]) >= 16 and r["mqtt_username"] == r["device_id"] for r in rows)

    # Never over an existing file (it may hold the passwords of an earlier roll-out).
    again = subprocess.run(
        [*cmd, "--credentials", str(out)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "exists" in again.stderr
