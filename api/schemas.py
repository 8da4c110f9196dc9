"""Pydantic models at the edge of the API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    role: str
    username: str


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
