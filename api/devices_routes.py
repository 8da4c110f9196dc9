"""Devices over HTTP: the fleet view, registration (one or a CSV roll-out), moves, credentials.

Thin: the registry (devices.registry, devices.bulk) does the work, devices.fleet the view.
Reading the fleet is for every clinician; changing it is for administrators.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile, status
from psycopg.rows import DictRow
from pydantic import BaseModel, Field

from api.deps import Conn
from api.scope import DEVICE_PATIENT, PATIENT_ID_IN_SCOPE, InScopeDevice, patient_visible
from api.security import Admin, Clinician
from devices import health
from devices.broker import BrokerError
from devices.bulk import CsvFormatError, import_devices
from devices.contract import readings_topic
from devices.fleet import SORTS, fleet
from devices.registry import (
    DeviceStateError,
    DuplicateDeviceError,
    RegistryError,
    UnknownDeviceError,
    get_device,
    move_device,
    register_device,
    retire_device,
    revoke_credentials,
    rotate_credentials,
)

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

MAX_UPLOAD_BYTES = 1_000_000


def _admin_url(request: Request) -> str:
    url: str | None = request.app.state.settings.mqtt_admin_url
    if not url:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "device provisioning needs OXIMON_MQTT_ADMIN_URL"
        )
    return url


AdminUrl = Annotated[str, Depends(_admin_url)]


def _now(request: Request) -> Any:
    return request.app.state.clock.now()


def _http_error(exc: Exception) -> HTTPException:
    """Registry and broker failures as the HTTP answer an administrator can act on."""
    if isinstance(exc, UnknownDeviceError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, DuplicateDeviceError):
        return HTTPException(status.HTTP_409_CONFLICT, exc.detail())
    if isinstance(exc, DeviceStateError):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, RegistryError) and exc.field:
        return HTTPException(422, exc.detail())
    if isinstance(exc, BrokerError):
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"broker: {exc}")
    # Any other refusal of the registry: the request conflicts with the fleet as it is.
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


class DeviceIn(BaseModel):
    patient_id: int | None = Field(
        default=None, gt=0, description="the patient who gets it; omit to register it on the shelf"
    )
    serial: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    firmware: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{3,64}$",
        description="made up when omitted; becomes the MQTT username",
    )


class DeviceCredentialsOut(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="shown once; the platform keeps no copy")
    readings_topic: str


class MoveIn(BaseModel):
    patient_id: int | None = Field(
        gt=0, description="the patient who gets the device; null takes it back to the shelf"
    )


class ImportedDevice(DeviceCredentialsOut):
    row: int
    serial: str
    patient_id: int | None


class ImportFailure(BaseModel):
    row: int = Field(description="row number as a spreadsheet shows it (the header is row 1)")
    reason: str


class ImportReportOut(BaseModel):
    dry_run: bool
    registered: list[ImportedDevice] = Field(description="passwords shown once")
    valid_rows: list[int] = Field(description="dry run: rows that would be registered")
    failed: list[ImportFailure]


def _credentials(device_id: str, username: str, password: str) -> DeviceCredentialsOut:
    return DeviceCredentialsOut(
        device_id=device_id,
        mqtt_username=username,
        mqtt_password=password,
        readings_topic=readings_topic(device_id),
    )


@router.get("")
def list_devices(
    request: Request,
    user: Clinician,
    conn: Conn,
    device_status: Annotated[Literal["active", "retired", "all"], Query(alias="status")] = "active",
    problem: Annotated[
        Literal[health.PROBLEM_ORDER] | None,  # type: ignore[valid-type]
        Query(description="only devices with this problem"),
    ] = None,
    sort: Annotated[
        Literal[SORTS],  # type: ignore[valid-type]
        Query(description="problem: most urgent first; last_seen: longest silent first"),
    ] = "problem",
    offline_after_min: Annotated[
        int, Query(ge=1, le=7 * 24 * 60, description="continuous oximeters: silent this long")
    ] = int(health.OFFLINE_AFTER.total_seconds() // 60),
    low_battery_pct: Annotated[int, Query(ge=0, le=100)] = health.LOW_BATTERY_PCT,
    bad_share: Annotated[float, Query(gt=0, le=1)] = health.BAD_SHARE,
    clock_skew_max_s: Annotated[int, Query(ge=1)] = int(health.CLOCK_SKEW_MAX.total_seconds()),
    window_h: Annotated[int, Query(ge=1, le=24 * 14)] = int(health.WINDOW.total_seconds() // 3600),
) -> list[dict[str, Any]]:
    """The fleet: every device with its patient, presence, battery, firmware, readings in the
    window against the schedule, share of bad readings, clock skew and problems. Sorted by
    problem (most urgent first) unless asked otherwise."""
    limits = health.Limits(
        offline_after=timedelta(minutes=offline_after_min),
        low_battery_pct=low_battery_pct,
        bad_share=bad_share,
        clock_skew_max=timedelta(seconds=clock_skew_max_s),
        window=timedelta(hours=window_h),
    )
    rows = fleet(
        conn,
        _now(request),
        limits,
        status=None if device_status == "all" else device_status,
        problem=problem,
        sort=sort,
    )
    mine = {r["id"] for r in conn.execute(PATIENT_ID_IN_SCOPE, {"user_id": user.id})}
    owner = {
        r["id"]: r["patient_id"]
        for r in conn.execute(f"SELECT d.id, {DEVICE_PATIENT} AS patient_id FROM devices d")
    }
    return [
        r
        for r in rows
        if owner.get(r["device_id"]) in mine
        or (owner.get(r["device_id"]) is None and user.role == "admin")
    ]


def _check_patient(conn: Conn, user: Admin, patient_id: int | None) -> None:
    """A device can only be given to a patient of the administrator's own care teams."""
    if patient_id is not None and not patient_visible(conn, user, patient_id):
        raise HTTPException(422, f"patient_id: no patient with id {patient_id}")


@router.post("", status_code=201, response_model=DeviceCredentialsOut)
def add_device(
    request: Request, body: DeviceIn, user: Admin, conn: Conn, admin_url: AdminUrl
) -> DeviceCredentialsOut:
    """Register an oximeter, for a patient or on the shelf; its broker password is returned
    this once."""
    _check_patient(conn, user, body.patient_id)
    try:
        creds = register_device(
            conn,
            admin_url,
            body.patient_id,
            serial=body.serial,
            model=body.model,
            firmware=body.firmware,
            device_id=body.device_id,
            by=user.id,
            now=_now(request),
        )
    except (RegistryError, BrokerError) as exc:
        raise _http_error(exc) from exc
    return _credentials(creds.device_id, creds.username, creds.password)


@router.post("/import", response_model=ImportReportOut)
def import_csv(
    request: Request,
    user: Admin,
    conn: Conn,
    admin_url: AdminUrl,
    file: Annotated[UploadFile, File(description="CSV: serial, model, firmware, patient_id")],
    dry_run: Annotated[bool, Query(description="check every row, register nothing")] = False,
) -> ImportReportOut:
    """Register every good row of a CSV file and report each bad one with its row number and
    reason. Columns: `serial` (required), `model`, `firmware`, `patient_id` (empty: on the
    shelf), `device_id` (empty: made up). The new devices' passwords are in the answer, once."""
    data = file.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"file: larger than {MAX_UPLOAD_BYTES} bytes; split it")
    try:
        report = import_devices(
            conn,
            admin_url,
            data,
            by=user.id,
            now=_now(request),
            dry_run=dry_run,
            patient_allowed=lambda pid: patient_visible(conn, user, pid),
        )
    except CsvFormatError as exc:
        raise HTTPException(422, str(exc)) from exc
    except BrokerError as exc:
        raise _http_error(exc) from exc
    return ImportReportOut(
        dry_run=report.dry_run,
        registered=[
            ImportedDevice(
                row=row.row,
                serial=row.serial,
                patient_id=row.patient_id,
                **_credentials(creds.device_id, creds.username, creds.password).model_dump(),
            )
            for row, creds in report.registered
        ],
        valid_rows=[row.row for row in report.valid],
        failed=[ImportFailure(row=e.row, reason=e.reason) for e in report.failed],
    )


def _device_view(conn: psycopg.Connection[DictRow], request: Request, device_id: str) -> Any:
    try:
        record = get_device(conn, device_id)
    except UnknownDeviceError as exc:
        raise _http_error(exc) from exc
    [view] = fleet(conn, _now(request), status=None, device_id=device_id) or [{}]
    record["problems"] = view.get("problems", [])
    record["readings_in_window"] = view.get("readings_in_window")
    record["bad_share"] = view.get("bad_share")
    record["expected_per_day"] = view.get("expected_per_day")
    return record


@router.get("/{device_id}", dependencies=[InScopeDevice])
def show_device(request: Request, device_id: str, user: Clinician, conn: Conn) -> dict[str, Any]:
    """One device: its record, health, problems and who wore it when."""
    view: dict[str, Any] = _device_view(conn, request, device_id)
    return view


@router.post("/{device_id}/move", dependencies=[InScopeDevice])
def move(request: Request, device_id: str, body: MoveIn, user: Admin, conn: Conn) -> dict[str, Any]:
    """Give the device to another patient (or from the shelf), or back to the shelf with
    `patient_id: null`. Readings already stored stay with the patient who wore it then."""
    _check_patient(conn, user, body.patient_id)
    try:
        move_device(conn, device_id, body.patient_id, by=user.id, now=_now(request))
    except RegistryError as exc:
        raise _http_error(exc) from exc
    view: dict[str, Any] = _device_view(conn, request, device_id)
    return view


@router.post(
    "/{device_id}/rotate", response_model=DeviceCredentialsOut, dependencies=[InScopeDevice]
)
def rotate(
    request: Request, device_id: str, user: Admin, conn: Conn, admin_url: AdminUrl
) -> DeviceCredentialsOut:
    """A new broker password, shown once. It works at once; the old one is refused from now
    on and a connection made with it is dropped. Also re-issues revoked credentials."""
    try:
        creds = rotate_credentials(conn, admin_url, device_id, now=_now(request))
    except (RegistryError, BrokerError) as exc:
        raise _http_error(exc) from exc
    return _credentials(creds.device_id, creds.username, creds.password)


@router.post("/{device_id}/revoke", dependencies=[InScopeDevice])
def revoke(
    request: Request, device_id: str, user: Admin, conn: Conn, admin_url: AdminUrl
) -> dict[str, Any]:
    """Delete the device's broker credentials (a lost or stolen oximeter): its connection is
    dropped at once and it cannot reconnect until new ones are issued (rotate)."""
    try:
        revoke_credentials(conn, admin_url, device_id, now=_now(request))
    except (RegistryError, BrokerError) as exc:
        raise _http_error(exc) from exc
    view: dict[str, Any] = _device_view(conn, request, device_id)
    return view


@router.post("/{device_id}/retire", dependencies=[InScopeDevice])
def retire(
    request: Request, device_id: str, user: Admin, conn: Conn, admin_url: AdminUrl
) -> dict[str, Any]:
    """Take the device out of service for good: its patient's assignment ends and its broker
    credentials are deleted (an open connection is dropped). Its history is kept."""
    try:
        retire_device(conn, admin_url, device_id, by=user.id, now=_now(request))
    except (RegistryError, BrokerError) as exc:
        raise _http_error(exc) from exc
    view: dict[str, Any] = _device_view(conn, request, device_id)
    return view
