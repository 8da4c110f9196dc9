"""The device contract (topics, payloads), the registry, broker credentials and fleet health."""

from devices.contract import (
    READINGS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    ContractError,
    DecodedPayload,
    ReadingPayload,
    decode_readings,
    device_id_from_topic,
    readings_topic,
    status_topic,
)
from devices.registry import (
    DEVICE_CHANGES_CHANNEL,
    Assignment,
    DeviceCredentials,
    load_assignments,
    patient_at,
)

__all__ = [
    "DEVICE_CHANGES_CHANNEL",
    "READINGS_SUBSCRIPTION",
    "STATUS_SUBSCRIPTION",
    "Assignment",
    "ContractError",
    "DecodedPayload",
    "DeviceCredentials",
    "ReadingPayload",
    "decode_readings",
    "device_id_from_topic",
    "load_assignments",
    "patient_at",
    "readings_topic",
    "status_topic",
]
