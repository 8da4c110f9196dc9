"""The device contract (topics, payloads), the registry, and broker credentials."""

from devices.contract import (
    READINGS_SUBSCRIPTION,
    ContractError,
    DecodedPayload,
    ReadingPayload,
    decode_readings,
    device_id_from_topic,
    readings_topic,
    status_topic,
)

__all__ = [
    "READINGS_SUBSCRIPTION",
    "ContractError",
    "DecodedPayload",
    "ReadingPayload",
    "decode_readings",
    "device_id_from_topic",
    "readings_topic",
    "status_topic",
]
