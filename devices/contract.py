"""The MQTT contract between oximeters and the platform: topics and payload schemas.

Topics (DESIGN.md, "Public contract"):
    oximon/devices/{device_id}/readings   QoS 1, one JSON object or a JSON array of them
    oximon/devices/{device_id}/status     retained "online" / "offline" (the last will)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

TOPIC_PREFIX = "oximon/devices"
READINGS_SUBSCRIPTION = f"{TOPIC_PREFIX}/+/readings"
STATUS_SUBSCRIPTION = f"{TOPIC_PREFIX}/+/status"
DEVICE_ID_PATTERN = r"[A-Za-z0-9_-]{3,64}"
_TOPIC_RE = re.compile(rf"{TOPIC_PREFIX}/({DEVICE_ID_PATTERN})/(readings|status)")

Quality = Literal["ok", "low_perfusion", "motion", "no_finger"]


class ContractError(ValueError):
    """A message that breaks the contract; the text is the reason an operator reads."""


def readings_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/{device_id}/readings"


def status_topic(device_id: str) -> str:
    return f"{TOPIC_PREFIX}/{device_id}/status"


def device_id_from_topic(topic: str, kind: str = "readings") -> str:
    match = _TOPIC_RE.fullmatch(topic)
    if not match or match.group(2) != kind:
        raise ContractError(f"topic does not match oximon/devices/{{device_id}}/{kind}")
    return match.group(1)


def _parse_ts(value: Any) -> datetime:
    """RFC 3339 with an offset, or integer Unix milliseconds; always returned in UTC."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time with offset or integer Unix milliseconds")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("Unix milliseconds out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("is not an RFC 3339 time") from exc
        if parsed.tzinfo is None:
            raise ValueError("needs a UTC offset (for example 2026-11-24T08:00:00Z)")
        return parsed.astimezone(UTC)
    raise ValueError("must be an RFC 3339 time with offset or integer Unix milliseconds")


class ReadingPayload(BaseModel):
    """One reading as a device sends it. Ranges are physical limits, not clinical bands."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ts: Annotated[datetime, BeforeValidator(_parse_ts)]
    spo2: int = Field(ge=0, le=100, strict=True, description="oxygen saturation, percent")
    pulse: int = Field(ge=20, le=300, strict=True, description="pulse rate, beats per minute")
    seq: int | None = Field(default=None, ge=0)
    pi: float | None = Field(default=None, ge=0, le=100, description="perfusion index, percent")
    quality: Quality = "ok"
    battery: int | None = Field(default=None, ge=0, le=100, description="battery, percent")


@dataclass
class DecodedPayload:
    """What one MQTT message held: the valid readings, and the rejects with their reasons."""

    readings: list[ReadingPayload] = field(default_factory=list)
    # (raw bytes of the rejected element, reason)
    rejects: list[tuple[bytes, str]] = field(default_factory=list)


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], dict | list):
            msg += f" (got {json.dumps(err['input'], default=str)[:40]})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


_READING_LIST = TypeAdapter(list[ReadingPayload])


def decode_readings(payload: bytes) -> DecodedPayload:
    """Decode a readings message. Raises ContractError when nothing in it is usable as JSON;
    an array keeps its good elements and reports each bad one separately."""
    # Fast path, the hot one: a well-formed message, parsed and validated in one pass by
    # pydantic's own JSON parser. Anything it refuses takes the slow path below for reasons.
    try:
        head = payload.lstrip()[:1]
        if head == b"{":
            return DecodedPayload(readings=[ReadingPayload.model_validate_json(payload)])
        if head == b"[":
            readings = _READING_LIST.validate_json(payload)
            if readings:
                return DecodedPayload(readings=readings)
    except ValidationError:
        pass
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"payload is not valid JSON: {exc}") from exc
    elements = document if isinstance(document, list) else [document]
    if isinstance(document, list) and not document:
        raise ContractError("payload is an empty array")
    out = DecodedPayload()
    for element in elements:
        if not isinstance(element, dict):
            out.rejects.append((json.dumps(element).encode(), "reading is not a JSON object"))
            continue
        try:
            out.readings.append(ReadingPayload.model_validate(element))
        except ValidationError as exc:
            raw = payload if len(elements) == 1 else json.dumps(element).encode()
            out.rejects.append((raw, _reason(exc)))
    return out
