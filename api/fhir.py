"""FHIR R4 read-only export for an electronic health record: Patient, Observation (SpO2 and
pulse readings, LOINC-coded, UCUM units) and Flag (alerts, with their priority).

JSON only (`application/fhir+json`). Every error, authentication and scope included, is an
`OperationOutcome`; another care team's patient is a 404 exactly like one that does not exist.
Bad search parameters are 400 (FHIR's convention) with the parameter named in `expression` and
at the start of `diagnostics`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from api import audit
from api.deps import Conn, Zone
from api.scope import patient_visible
from api.security import Clinician, CurrentUser

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PATIENT_SYSTEM = "urn:oximon:patient"
ALERT_SYSTEM = "urn:oximon:alert"
ALERT_KIND_SYSTEM = "urn:oximon:alert-kind"
DEVICE_SYSTEM = "urn:oximon:device"
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-priority-code"
VITAL_SIGNS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}

# What one reading becomes: the FHIR vital-signs profiles' codes (oxygen saturation needs
# 2708-6 beside the pulse-oximetry code 59408-5) and UCUM units.
VITALS: dict[str, dict[str, Any]] = {
    "spo2": {
        "column": "spo2",
        "profile": "http://hl7.org/fhir/StructureDefinition/oxygensat",
        "codes": [
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            ("2708-6", "Oxygen saturation in Arterial blood"),
        ],
        "text": "SpO2",
        "unit": ("%", "%"),
    },
    "pulse": {
        "column": "pulse",
        "profile": "http://hl7.org/fhir/StructureDefinition/heartrate",
        "codes": [("8867-4", "Heart rate")],
        "text": "Pulse rate",
        "unit": ("beats/minute", "/min"),
    },
}
CODE_TO_VITAL = {code: v for v, spec in VITALS.items() for code, _ in spec["codes"]}

# Device problems are not about the patient's body: an administrative flag.
DEVICE_KINDS = {"device_offline", "low_battery", "bad_quality"}
MAX_COUNT = 1000


class FhirError(Exception):
    def __init__(self, status: int, code: str, diagnostics: str, expression: str | None = None):
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.expression = (
            status,
            code,
            diagnostics,
            expression,
        )


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def operation_outcome(
    status: int,
    code: str,
    diagnostics: str,
    expression: str | None = None,
    headers: dict[str, str] | None = None,
) -> FhirResponse:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return FhirResponse(
        {"resourceType": "OperationOutcome", "issue": [issue]}, status_code=status, headers=headers
    )


_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 422: "invalid"}


class FhirRoute(APIRoute):
    """Errors of FHIR routes, including those of their dependencies (authentication, scope,
    FastAPI's own parameter validation), become OperationOutcome resources."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except FhirError as exc:
                return operation_outcome(exc.status, exc.code, exc.diagnostics, exc.expression)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                field = str(first["loc"][-1]) if first.get("loc") else "request"
                return operation_outcome(400, "invalid", f"{field}: {first['msg']}", field)
            except HTTPException as exc:
                return operation_outcome(
                    exc.status_code,
                    _ISSUE_CODES.get(exc.status_code, "processing"),
                    str(exc.detail),
                    headers=dict(exc.headers) if exc.headers else None,
                )

        return handler


router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)


# --- parameters -------------------------------------------------------------------------------


def _patient_param(value: str | None, name: str = "patient") -> int:
    if value is None:
        raise FhirError(400, "required", f"{name}: required, e.g. {name}=12", name)
    raw = value.removeprefix("Patient/")
    if not re.fullmatch(r"[0-9]{1,18}", raw):  # ASCII digits: "²".isdigit() is true
        raise FhirError(
            400, "invalid", f"{name}: must be a patient id, e.g. 12 or Patient/12", name
        )
    return int(raw)


def _scoped_patient(conn: Any, user: CurrentUser, patient_id: int) -> None:
    if not patient_visible(conn, user, patient_id):
        raise FhirError(404, "not-found", f"Patient/{patient_id} is not known")


_DATE_RE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<value>\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?)$"
)


def _date_range(value: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants [start, end) a FHIR date value covers at its precision. A date without a
    time is a day (month, year) in the site's time zone; a time must carry its offset."""
    if "T" in value:
        if not (value.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", value)):
            raise ValueError("a time needs an offset, e.g. 2026-11-01T08:00:00+01:00")
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
        clock = value.split("T", 1)[1]
        if "." in clock:
            step = timedelta(microseconds=1)
        elif clock.count(":") >= 2 + (1 if re.search(r"[+-]\d{2}:\d{2}$", clock) else 0):
            step = timedelta(seconds=1)
        else:
            step = timedelta(minutes=1)
        return start.astimezone(UTC), (start + step).astimezone(UTC)
    parts = [int(p) for p in value.split("-")]
    if len(parts) == 1:
        first, after = date(parts[0], 1, 1), date(parts[0] + 1, 1, 1)
    elif len(parts) == 2:
        first = date(parts[0], parts[1], 1)
        after = date(parts[0] + parts[1] // 12, parts[1] % 12 + 1, 1)
    else:
        first = date(parts[0], parts[1], parts[2])
        after = first + timedelta(days=1)

    def local(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)

    return local(first), local(after)


def date_bounds(values: list[str], zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """[since, until) from repeated `date` parameters (all must hold: their intersection)."""
    since: datetime | None = None
    until: datetime | None = None
    for raw in values:
        match = _DATE_RE.match(raw)
        if not match:
            raise FhirError(
                400,
                "invalid",
                f"date: {raw!r} is not a FHIR date search value, e.g. ge2026-11-01",
                "date",
            )
        prefix = match.group("prefix") or "eq"
        if prefix not in ("eq", "gt", "ge", "lt", "le"):
            raise FhirError(
                400, "not-supported", f"date: prefix {prefix!r} is not supported here", "date"
            )
        try:
            lo, hi = _date_range(match.group("value"), zone)
        except (ValueError, OverflowError) as exc:
            raise FhirError(400, "invalid", f"date: {raw!r}: {exc}", "date") from exc
        low = {"eq": lo, "ge": lo, "gt": hi}.get(prefix)
        high = {"eq": hi, "lt": lo, "le": hi}.get(prefix)
        if low is not None:
            since = low if since is None else max(since, low)
        if high is not None:
            until = high if until is None else min(until, high)
    return since, until


def _vitals_param(code: str | None) -> list[str]:
    if code is None:
        return list(VITALS)
    out: list[str] = []
    for token in code.split(","):
        system, _, value = token.rpartition("|")
        if system not in ("", LOINC) or value not in CODE_TO_VITAL:
            raise FhirError(
                400,
                "invalid",
                "code: supported codes are 59408-5 (or 2708-6) and 8867-4, e.g. "
                "code=http://loinc.org|59408-5",
                "code",
            )
        if CODE_TO_VITAL[value] not in out:
            out.append(CODE_TO_VITAL[value])
    return out


# --- resources --------------------------------------------------------------------------------


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _device_tag(device_id: str) -> str:
    return f"{zlib.crc32(device_id.encode()):08x}"


def observation_id(vital: str, patient_id: int, at: datetime, device_id: str) -> str:
    """Stable and unique per reading and vital sign (a reading is one per device and time);
    FHIR ids allow only letters, digits, '-' and '.', so the device is a checksum."""
    micros = int(at.timestamp() * 1_000_000)
    return f"{vital}-{patient_id}-{micros}-{_device_tag(device_id)}"


def observation(vital: str, row: dict[str, Any]) -> dict[str, Any]:
    spec = VITALS[vital]
    unit, ucum = spec["unit"]
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(vital, row["patient_id"], row["time"], row["device_id"]),
        "meta": {
            "profile": [spec["profile"], "http://hl7.org/fhir/StructureDefinition/vitalsigns"]
        },
        "status": "final",
        "category": [VITAL_SIGNS],
        "code": {
            "coding": [{"system": LOINC, "code": c, "display": d} for c, d in spec["codes"]],
            "text": spec["text"],
        },
        "subject": {"reference": f"Patient/{row['patient_id']}"},
        "effectiveDateTime": _instant(row["time"]),
        "issued": _instant(row["received_at"]),
        "valueQuantity": {
            "value": row[spec["column"]],
            "unit": unit,
            "system": UCUM,
            "code": ucum,
        },
        "device": {
            "identifier": {"system": DEVICE_SYSTEM, "value": row["device_id"]},
            "display": "patient's text message" if row["source"] == "sms" else "pulse oximeter",
        },
    }
    notes = []
    if row["quality"] != "ok":
        notes.append(f"Flagged by the oximeter as unreliable: {row['quality']}")
    if row["late"]:
        notes.append("Uploaded late from the oximeter's memory")
    if notes:
        obs["note"] = [{"text": n} for n in notes]
    return obs


def patient_resource(row: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(row["id"]),
        "identifier": [{"system": PATIENT_SYSTEM, "value": str(row["id"])}],
        "active": row["status"] == "active",
        "name": [{"text": row["display_name"]}],
        "communication": [
            {
                "language": {
                    "coding": [
                        {
                            "system": "urn:ietf:bcp:47",
                            "code": row["language"],
                            "display": {"nb": "Norwegian Bokmål", "en": "English"}.get(
                                row["language"], row["language"]
                            ),
                        }
                    ]
                },
                "preferred": True,
            }
        ],
        "managingOrganization": {"display": row["care_team"]},
    }
    if row["phone"]:
        res["telecom"] = [{"system": "phone", "value": row["phone"], "use": "mobile"}]
    return res


def flag_resource(row: dict[str, Any]) -> dict[str, Any]:
    red = row["severity"] == "red"
    period = {"start": _instant(row["opened_at"])}
    if row["resolved_at"] is not None:
        period["end"] = _instant(row["resolved_at"])
    category = "admin" if row["kind"] in DEVICE_KINDS else "clinical"
    return {
        "resourceType": "Flag",
        "id": str(row["id"]),
        "meta": {"lastUpdated": _instant(row["updated_at"])},
        "extension": [
            {
                "url": FLAG_PRIORITY_URL,
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": FLAG_PRIORITY_SYSTEM,
                            "code": "PH" if red else "PM",
                            "display": "High priority" if red else "Medium priority",
                        }
                    ],
                    "text": row["severity"],
                },
            }
        ],
        "identifier": [{"system": ALERT_SYSTEM, "value": str(row["id"])}],
        "status": "inactive" if row["status"] == "resolved" else "active",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": category,
                        "display": category.capitalize(),
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": ALERT_KIND_SYSTEM, "code": row["kind"]}],
            "text": f"{row['severity'].upper()} {row['kind']}: {row['reason']}",
        },
        "subject": {"reference": f"Patient/{row['patient_id']}"},
        "period": period,
    }


def _bundle(
    request: Request, entries: list[dict[str, Any]], total: int, next_url: str | None
) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    links = [{"relation": "self", "url": str(request.url)}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": _instant(datetime.now(UTC)),
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/fhir/{e['resourceType']}/{e['id']}",
                "resource": e,
                "search": {"mode": "match"},
            }
            for e in entries
        ],
    }


def _next(request: Request, offset: int, count: int, total: int) -> str | None:
    if offset + count >= total:
        return None
    return str(request.url.include_query_params(_offset=offset + count))


# --- routes -----------------------------------------------------------------------------------

_PATIENT = """
SELECT p.id, p.display_name, p.phone, p.language, p.status, t.name AS care_team
FROM patients p JOIN care_teams t ON t.id = p.care_team_id WHERE p.id = %s
"""

_READINGS = """
SELECT time, device_id, patient_id, spo2, pulse, quality, source, late, received_at
FROM readings
WHERE patient_id = %(patient_id)s
  AND (%(since)s::timestamptz IS NULL OR time >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR time < %(until)s)
ORDER BY time, device_id LIMIT %(limit)s OFFSET %(offset)s
"""

_READINGS_COUNT = """
SELECT count(*) AS n FROM readings
WHERE patient_id = %(patient_id)s
  AND (%(since)s::timestamptz IS NULL OR time >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR time < %(until)s)
"""

_FLAGS = """
SELECT id, patient_id, kind, severity, status, reason, opened_at, updated_at, resolved_at
FROM alerts
WHERE patient_id = %(patient_id)s
  AND (%(status)s::text IS NULL OR (%(status)s = 'active') = (status <> 'resolved'))
ORDER BY opened_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""

_FLAGS_COUNT = """
SELECT count(*) AS n FROM alerts
WHERE patient_id = %(patient_id)s
  AND (%(status)s::text IS NULL OR (%(status)s = 'active') = (status <> 'resolved'))
"""

_CountParam = Annotated[
    int, Query(alias="_count", ge=1, le=MAX_COUNT, description="resources per page")
]
_OffsetParam = Annotated[int, Query(alias="_offset", ge=0, description="paging (next link)")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "OperationOutcome: a bad search parameter, named"},
    401: {"description": "OperationOutcome: no or expired bearer token"},
    404: {"description": "OperationOutcome: unknown patient (or another care team's)"},
}


def _example(resource: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {FHIR_JSON: {"example": resource}}}, **_ERRORS}


_OBS_EXAMPLE = {
    "resourceType": "Bundle",
    "type": "searchset",
    "total": 2,
    "entry": [
        {
            "fullUrl": "http://127.0.0.1:8000/fhir/Observation/spo2-12-1793865600000000-1a2b3c4d",
            "resource": observation(
                "spo2",
                {
                    "patient_id": 12,
                    "time": datetime(2026, 11, 1, 8, tzinfo=UTC),
                    "received_at": datetime(2026, 11, 1, 8, 0, 1, tzinfo=UTC),
                    "device_id": "oxi-0012",
                    "spo2": 95,
                    "pulse": 72,
                    "quality": "ok",
                    "source": "mqtt",
                    "late": False,
                },
            ),
            "search": {"mode": "match"},
        }
    ],
}


@router.get("/metadata", response_class=FhirResponse)
def capability_statement() -> dict[str, Any]:
    """What this FHIR endpoint serves (no authentication needed to ask)."""
    search = [{"name": "patient", "type": "reference"}, {"name": "_count", "type": "number"}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {"description": "OAuth2 bearer token from /api/v1/auth/token"},
                "resource": [
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {
                        "type": "Observation",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            *search,
                            {"name": "date", "type": "date"},
                            {"name": "code", "type": "token"},
                        ],
                    },
                    {
                        "type": "Flag",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [*search, {"name": "status", "type": "token"}],
                    },
                ],
            }
        ],
    }


@router.get(
    "/Patient/{patient_id}",
    response_class=FhirResponse,
    responses=_example(
        patient_resource(
            {
                "id": 12,
                "display_name": "Synthetic Patient",
                "phone": "+4791000001",
                "language": "nb",
                "status": "active",
                "care_team": "Hjemmesykepleien",
            }
        )
    ),
)
def read_patient(patient_id: str, user: Clinician, conn: Conn) -> dict[str, Any]:
    """The patient as a FHIR Patient (name, phone, language, care team as organisation)."""
    pid = _patient_param(patient_id, "id")
    _scoped_patient(conn, user, pid)
    row = conn.execute(_PATIENT, (pid,)).fetchone()
    if row is None:
        raise FhirError(404, "not-found", f"Patient/{pid} is not known")
    audit.record(conn, user, "fhir.patient.read", patient_id=pid)
    return patient_resource(row)


@router.get("/Observation", response_class=FhirResponse, responses=_example(_OBS_EXAMPLE))
def search_observations(
    request: Request,
    user: Clinician,
    conn: Conn,
    zone: Zone,
    patient: Annotated[str | None, Query(description="12 or Patient/12 (required)")] = None,
    subject: Annotated[str | None, Query(description="same as patient")] = None,
    date_: Annotated[
        list[str] | None,
        Query(alias="date", description="repeatable: ge2026-11-01, lt2026-11-02, eq2026-11-01"),
    ] = None,
    code: Annotated[
        str | None, Query(description="59408-5 (SpO2) and/or 8867-4 (pulse), comma-separated")
    ] = None,
    count: _CountParam = 200,
    offset: _OffsetParam = 0,
) -> dict[str, Any]:
    """Readings as Observations, oldest first: SpO2 (LOINC 59408-5 and 2708-6, `%`) and pulse
    (LOINC 8867-4, `/min`), category vital-signs, effectiveDateTime when measured, the
    oximeter as device. A date without a time is a day in the site's time zone
    (Europe/Oslo). `_count` counts Observations: each reading gives one per code asked."""
    pid = _patient_param(patient if patient is not None else subject)
    vitals = _vitals_param(code)
    since, until = date_bounds(date_ or [], ZoneInfo(zone))
    _scoped_patient(conn, user, pid)
    per = len(vitals)
    readings_per_page = max(1, count // per)
    params = {
        "patient_id": pid,
        "since": since,
        "until": until,
        "limit": readings_per_page,
        "offset": offset,
    }
    if since is not None and until is not None and since >= until:
        rows: list[dict[str, Any]] = []
        total = 0
    else:
        rows = conn.execute(_READINGS, params).fetchall()
        total_row = conn.execute(_READINGS_COUNT, params).fetchone()
        total = int(total_row["n"]) if total_row else 0
    audit.record(
        conn,
        user,
        "fhir.observation.search",
        patient_id=pid,
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
    )
    entries = [observation(v, r) for r in rows for v in vitals]
    return _bundle(request, entries, total * per, _next(request, offset, readings_per_page, total))


@router.get("/Observation/{observation_id}", response_class=FhirResponse)
def read_observation(observation_id: str, user: Clinician, conn: Conn) -> dict[str, Any]:
    """One Observation by the id a search gave."""
    match = re.fullmatch(r"(spo2|pulse)-(\d{1,18})-(-?\d{1,20})-([0-9a-f]{8})", observation_id)
    if not match:
        raise FhirError(404, "not-found", f"Observation/{observation_id} is not known")
    vital, pid, micros, tag = match.group(1), int(match.group(2)), int(match.group(3)), match[4]
    _scoped_patient(conn, user, pid)
    try:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    except OverflowError as exc:
        raise FhirError(404, "not-found", f"Observation/{observation_id} is not known") from exc
    rows = conn.execute(
        "SELECT time, device_id, patient_id, spo2, pulse, quality, source, late, received_at"
        " FROM readings WHERE patient_id = %s AND time = %s",
        (pid, at),
    ).fetchall()
    for row in rows:
        if _device_tag(row["device_id"]) == tag:
            audit.record(conn, user, "fhir.observation.read", patient_id=pid)
            return observation(vital, row)
    raise FhirError(404, "not-found", f"Observation/{observation_id} is not known")


@router.get(
    "/Flag",
    response_class=FhirResponse,
    responses=_example(
        flag_resource(
            {
                "id": 7,
                "patient_id": 12,
                "kind": "spo2_low",
                "severity": "red",
                "status": "open",
                "reason": "SpO2 90% for 60 s (red at 92% or below)",
                "opened_at": datetime(2026, 11, 1, 8, tzinfo=UTC),
                "updated_at": datetime(2026, 11, 1, 8, tzinfo=UTC),
                "resolved_at": None,
            }
        )
    ),
)
def search_flags(
    request: Request,
    user: Clinician,
    conn: Conn,
    patient: Annotated[str | None, Query(description="12 or Patient/12 (required)")] = None,
    subject: Annotated[str | None, Query(description="same as patient")] = None,
    status: Annotated[
        str | None, Query(description="active (unresolved alerts) or inactive (resolved)")
    ] = None,
    count: _CountParam = 100,
    offset: _OffsetParam = 0,
) -> dict[str, Any]:
    """Alerts as Flags, newest first: priority PH (red) or PM (amber) in the flag-priority
    extension, the alert kind and reason as code, period from opened to resolved."""
    pid = _patient_param(patient if patient is not None else subject)
    if status is not None and status not in ("active", "inactive"):
        raise FhirError(400, "invalid", "status: must be active or inactive", "status")
    _scoped_patient(conn, user, pid)
    params = {"patient_id": pid, "status": status, "limit": count, "offset": offset}
    rows = conn.execute(_FLAGS, params).fetchall()
    total_row = conn.execute(_FLAGS_COUNT, params).fetchone()
    total = int(total_row["n"]) if total_row else 0
    audit.record(conn, user, "fhir.flag.search", patient_id=pid, status=status)
    return _bundle(
        request, [flag_resource(r) for r in rows], total, _next(request, offset, count, total)
    )
