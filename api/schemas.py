"""Pydantic models at the edge of the API (each with an example for /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerting.schedule import ScheduleError, parse_schedule

E164 = r"^\+[1-9][0-9]{6,14}$"
Role = Literal["admin", "nurse", "doctor"]
Outcome = Literal[
    "called_stable", "home_visit", "referred_hospital", "admitted", "artefact_false_alarm", "other"
]


# --- auth -------------------------------------------------------------------------------------


class TokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9…",
                    "token_type": "bearer",
                    "expires_in": 900,
                    "refresh_token": "q0v3m2…",
                    "role": "nurse",
                    "username": "nurse1",
                }
            ]
        }
    )
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds until the access token expires")
    refresh_token: str = Field(description="spent by POST /api/v1/auth/refresh; shown once")
    role: str
    username: str


class RefreshIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refresh_token": "q0v3m2…"}]})
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutIn(RefreshIn):
    pass


class AuthConfigOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "password": True,
                    "oidc": True,
                    "oidc_login_url": "/api/v1/auth/oidc/login",
                    "access_token_ttl_s": 900,
                }
            ]
        }
    )
    password: bool
    oidc: bool
    oidc_login_url: str | None
    access_token_ttl_s: int


# --- patients ---------------------------------------------------------------------------------


class Schedule(BaseModel):
    """The expected readings (`patients.schedule`): spot checks at local times, or a stream."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60},
                {"kind": "continuous", "max_gap_min": 30},
            ]
        },
    )
    kind: Literal["spot", "continuous"]
    times: list[str] | None = Field(
        default=None, max_length=24, description="spot: local times of day, HH:MM"
    )
    grace_min: int | None = Field(default=None, ge=0, le=24 * 60)
    early_min: int | None = Field(default=None, ge=0, le=24 * 60)
    alert_after_min: int | None = Field(default=None, ge=0, le=24 * 60)
    max_gap_min: int | None = Field(default=None, ge=1, le=24 * 60)

    @model_validator(mode="after")
    def _understood(self) -> Schedule:
        try:
            parse_schedule(self.document())
        except ScheduleError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def document(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


_PATIENT_EXAMPLE: dict[str, Any] = {
    "display_name": "Synthetic Patient 17",
    "phone": "+4791234567",
    "language": "nb",
    "care_team_id": 1,
    "spo2_target_min_pct": 88,
    "spo2_target_max_pct": 92,
    "spo2_amber_max_pct": 87,
    "spo2_red_max_pct": 85,
    "pulse_red_min_bpm": 40,
    "pulse_red_max_bpm": 131,
    "schedule": {"kind": "spot", "times": ["08:00", "20:00"], "grace_min": 60},
}


class PatientFields(BaseModel):
    """Fields a nurse sets at enrolment and may change later. Omitted bands keep their
    defaults (NHS @home / NEWS2: target 95–100%, amber ≤94%, red ≤92%; pulse red ≤40 or ≥131)."""

    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, min_length=1, max_length=120)
    phone: str | None = Field(default=None, pattern=E164, description="E.164, e.g. +4791234567")
    language: Literal["nb", "en"] | None = None
    care_team_id: int | None = Field(default=None, ge=1, le=2**62)
    spo2_target_min_pct: int | None = Field(default=None, ge=50, le=100)
    spo2_target_max_pct: int | None = Field(default=None, ge=50, le=100)
    spo2_amber_max_pct: int | None = Field(default=None, ge=50, le=100)
    spo2_red_max_pct: int | None = Field(default=None, ge=50, le=100)
    pulse_red_min_bpm: int | None = Field(default=None, ge=20, le=250)
    pulse_red_max_bpm: int | None = Field(default=None, ge=20, le=250)
    schedule: Schedule | None = None

    @field_validator("display_name")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value.strip() if value else value


class PatientIn(PatientFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_PATIENT_EXAMPLE]})
    display_name: str = Field(min_length=1, max_length=120)  # type: ignore[assignment]
    language: Literal["nb", "en"] = "nb"  # type: ignore[assignment]


class PatientPatch(PatientFields):
    """Only the fields sent change; `phone: null` removes the number."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"spo2_target_min_pct": 92, "spo2_amber_max_pct": 91, "language": "en"}]
        },
    )


class DischargeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "Recovered; monitoring no longer needed"}]},
    )
    reason: str | None = Field(default=None, max_length=500)
    alert_outcome: Outcome = Field(
        default="other",
        description="the outcome given to the patient's unresolved alerts",
    )
    alert_outcome_text: str = Field(
        default="Patient discharged from monitoring", min_length=1, max_length=500
    )


class NoteIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"body": "Called the patient: feels better, SpO2 95%."}]},
    )
    body: str = Field(min_length=1, max_length=10_000)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class NoteOut(BaseModel):
    id: int
    patient_id: int
    author_id: int
    author_username: str
    author_name: str
    at: datetime
    body: str


# --- users and care teams ---------------------------------------------------------------------

USERNAME = r"^[a-z0-9][a-z0-9._-]{1,63}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class UserFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_name: str | None = Field(default=None, min_length=1, max_length=120)
    role: Role | None = None
    phone: str | None = Field(default=None, pattern=E164)
    on_call: bool | None = None
    email: str | None = Field(default=None, pattern=EMAIL, max_length=254)
    oidc_subject: str | None = Field(default=None, min_length=1, max_length=255)
    care_team_ids: list[int] | None = Field(
        default=None, min_length=1, max_length=100, description="teams of yours the user is in"
    )
    password: str | None = Field(
        default=None, min_length=10, max_length=200, description="at least 10 characters"
    )

    @field_validator("care_team_ids")
    @classmethod
    def _ids(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 1 <= v <= 2**62 for v in value):
            raise ValueError("care team ids are positive integers")
        return sorted(set(value)) if value is not None else None


class UserIn(UserFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "nurse7",
                    "full_name": "Test Nurse Seven",
                    "role": "nurse",
                    "password": "a-long-password-1",
                    "phone": "+4799000007",
                    "care_team_ids": [1],
                }
            ]
        },
    )
    username: str = Field(pattern=USERNAME, description="lower case letters, digits, . _ -")
    full_name: str = Field(min_length=1, max_length=120)  # type: ignore[assignment]
    role: Role  # type: ignore[assignment]


class UserPatch(UserFields):
    """Only the fields sent change. `password` resets it (and ends the user's logins);
    `unlock: true` lifts a lock-out; `active: false` disables the account."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"on_call": True}, {"active": False}, {"unlock": True}]},
    )
    active: bool | None = None
    unlock: bool | None = None


class CareTeamIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Hjemmesykepleien Nord"}]}
    )
    name: str = Field(min_length=1, max_length=120)

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


# --- devices ----------------------------------------------------------------------------------


class DeviceIn(BaseModel):
    patient_id: int = Field(gt=0)
    serial: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=64)
    firmware: str | None = Field(default=None, max_length=64)


class DeviceCredentialsOut(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_password: str = Field(description="shown once; the platform keeps no copy")
    readings_topic: str


# --- response examples for /docs --------------------------------------------------------------


def example(value: Any, description: str = "OK", **extra: Any) -> dict[int | str, Any]:
    """A `responses=` entry showing `value` as the 200 answer's example."""
    return {
        200: {
            "description": description,
            "content": {"application/json": {"example": value}},
            **extra,
        }
    }


TOTAL_HEADER = {
    "X-Total-Count": {"description": "rows matching the filters", "schema": {"type": "integer"}}
}

PATIENT_ROW_EXAMPLE = {
    "id": 17,
    "display_name": "Synthetic Patient 17",
    "status": "active",
    "language": "nb",
    "care_team_id": 1,
    "spo2_amber_max_pct": 94,
    "spo2_red_max_pct": 92,
    "last_time": "2026-11-24T08:02:00Z",
    "last_spo2": 91,
    "last_pulse": 98,
    "last_quality": "ok",
    "alert_id": 311,
    "alert_kind": "spo2_low",
    "alert_severity": "red",
    "alert_status": "open",
    "alert_opened_at": "2026-11-24T08:02:00Z",
    "alert_reason": "SpO2 91% at or below the red band (92%)",
    "device_online": True,
    "device_battery_pct": 81,
    "missed_reading": False,
}

PATIENT_DETAIL_EXAMPLE = {
    **{k: v for k, v in _PATIENT_EXAMPLE.items()},
    "id": 17,
    "care_team_name": "Hjemmesykepleien",
    "status": "active",
    "enrolled_at": "2026-11-20T10:00:00Z",
    "discharged_at": None,
    "discharged_by": None,
    "discharge_reason": None,
    "updated_at": None,
    "devices": [
        {
            "id": "oxi-3f9a2c1d7e",
            "model": "PO-60",
            "serial": "SN-1",
            "online": True,
            "battery_pct": 81,
            "last_seen_at": "2026-11-24T08:02:00Z",
        }
    ],
}

USER_EXAMPLE = {
    "id": 7,
    "username": "nurse7",
    "full_name": "Test Nurse Seven",
    "role": "nurse",
    "phone": "+4799000007",
    "email": None,
    "on_call": False,
    "active": True,
    "oidc_linked": False,
    "locked_until": None,
    "created_at": "2026-11-24T08:00:00Z",
    "care_team_ids": [1],
}

CARE_TEAM_EXAMPLE = {
    "id": 1,
    "name": "Hjemmesykepleien",
    "created_at": "2026-11-01T00:00:00Z",
    "members": 4,
    "active_patients": 50,
}

AUDIT_EXAMPLE = {
    "id": 9041,
    "at": "2026-11-24T08:05:12Z",
    "user_id": 3,
    "username": "nurse1",
    "action": "patient.read",
    "object_kind": "patient",
    "object_id": "17",
    "patient_id": 17,
    "detail": {},
    "ip": "10.0.0.12",
}

NOTE_EXAMPLE = {
    "id": 5,
    "patient_id": 17,
    "author_id": 3,
    "author_username": "nurse1",
    "author_name": "Test Nurse One",
    "at": "2026-11-24T09:10:00Z",
    "body": "Called the patient: feels better, SpO2 95%.",
}
