"""The device contract: what an oximeter may publish, and the reason it is told when it may not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from devices.contract import (
    ContractError,
    decode_readings,
    device_id_from_topic,
    readings_topic,
    status_topic,
)

GOOD = {"ts": "2026-11-24T08:00:00Z", "spo2": 95, "pulse": 72}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def only_reject_reason(document: object) -> str:
    decoded = decode_readings(encode(document))
    assert decoded.readings == []
    assert len(decoded.rejects) == 1, decoded.rejects
    return decoded.rejects[0][1]


# --- shapes -------------------------------------------------------------------------------------


def test_single_object_decodes_to_one_reading_with_all_fields() -> None:
    payload = {**GOOD, "seq": 1812, "pi": 2.4, "quality": "low_perfusion", "battery": 81}
    decoded = decode_readings(encode(payload))
    assert decoded.rejects == []
    [reading] = decoded.readings
    assert reading.ts == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert (reading.spo2, reading.pulse, reading.seq) == (95, 72, 1812)
    assert (reading.pi, reading.quality, reading.battery) == (2.4, "low_perfusion", 81)


def test_optional_fields_default_to_ok_quality_and_none() -> None:
    [reading] = decode_readings(encode(GOOD)).readings
    assert (reading.quality, reading.seq, reading.pi, reading.battery) == ("ok", None, None, None)


def test_array_upload_decodes_every_reading_in_order() -> None:
    upload = [{**GOOD, "ts": f"2026-11-24T08:0{i}:00Z", "spo2": 90 + i} for i in range(3)]
    decoded = decode_readings(encode(upload))
    assert decoded.rejects == []
    assert [r.spo2 for r in decoded.readings] == [90, 91, 92]
    assert [r.ts.minute for r in decoded.readings] == [0, 1, 2]


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-24T08:00:00Z",
        "2026-11-24T08:00:00+00:00",
        "2026-11-24T09:00:00+01:00",
        "2026-11-24T03:00:00-05:00",
        1795507200000,  # integer Unix milliseconds
    ],
)
def test_timestamp_with_offset_or_unix_ms_is_returned_in_utc(ts: object) -> None:
    [reading] = decode_readings(encode({**GOOD, "ts": ts})).readings
    assert reading.ts == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    assert reading.ts.utcoffset() == timedelta(0)
    assert reading.ts.tzinfo == UTC


def test_unix_milliseconds_keep_their_milliseconds() -> None:
    [reading] = decode_readings(encode({**GOOD, "ts": 1795507200123})).readings
    assert reading.ts == datetime(2026, 11, 24, 8, 0, 0, 123000, tzinfo=UTC)


def test_fractional_seconds_with_offset_are_kept() -> None:
    [reading] = decode_readings(encode({**GOOD, "ts": "2026-11-24T09:00:00.250+01:00"})).readings
    assert reading.ts == datetime(2026, 11, 24, 8, 0, 0, 250000, tzinfo=UTC)
    assert reading.ts.tzinfo == UTC


@pytest.mark.parametrize("ts", ["2026-11-24T08:00:00", "2026-11-24 08:00:00"])
def test_naive_timestamp_is_refused_with_a_reason_asking_for_the_offset(ts: str) -> None:
    reason = only_reject_reason({**GOOD, "ts": ts})
    assert reason.startswith("ts:")
    assert "offset" in reason


def test_unix_milliseconds_out_of_range_are_refused_with_a_reason() -> None:
    reason = only_reject_reason({**GOOD, "ts": 10**20})
    assert reason.startswith("ts: Unix milliseconds out of range")


@pytest.mark.parametrize("ts", ["yesterday", 1795507200.5, True, None, [2026, 11, 24]])
def test_timestamp_that_is_neither_rfc3339_nor_integer_ms_is_refused(ts: object) -> None:
    reason = only_reject_reason({**GOOD, "ts": ts})
    assert reason.startswith("ts:")


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spo2", 101),
        ("spo2", -1),
        ("spo2", 95.0),  # a float, even a whole one: the contract says integer percent
        ("spo2", 94.5),
        ("spo2", "95"),
        ("pulse", 19),
        ("pulse", 301),
        ("pulse", 72.0),
        ("quality", "great"),
        ("quality", None),
        ("battery", 101),
        ("pi", -0.1),
    ],
)
def test_out_of_range_or_wrongly_typed_value_is_refused_naming_the_field(
    field: str, value: object
) -> None:
    reason = only_reject_reason({**GOOD, field: value})
    assert reason.startswith(f"{field}:"), reason


@pytest.mark.parametrize(
    ("field", "value"), [("spo2", 0), ("spo2", 100), ("pulse", 20), ("pulse", 300)]
)
def test_physical_limits_themselves_are_accepted(field: str, value: int) -> None:
    decoded = decode_readings(encode({**GOOD, field: value}))
    assert decoded.rejects == []
    assert getattr(decoded.readings[0], field) == value


@pytest.mark.parametrize("missing", ["ts", "spo2", "pulse"])
def test_missing_required_field_is_refused_naming_the_field(missing: str) -> None:
    payload = {k: v for k, v in GOOD.items() if k != missing}
    reason = only_reject_reason(payload)
    assert reason.startswith(f"{missing}:")
    assert "required" in reason.lower()


def test_every_broken_field_is_named_in_one_reason() -> None:
    reason = only_reject_reason({"ts": "2026-11-24T08:00:00Z", "spo2": 130})
    assert "spo2:" in reason and "pulse:" in reason


def test_single_bad_object_is_kept_exactly_as_received() -> None:
    raw = b'{"ts": "2026-11-24T08:00:00Z",  "spo2": 130, "pulse": 70}'
    decoded = decode_readings(raw)
    assert decoded.rejects[0][0] == raw


def test_unknown_extra_fields_are_ignored() -> None:
    decoded = decode_readings(encode({**GOOD, "firmware": "1.2.3"}))
    assert decoded.rejects == []
    assert len(decoded.readings) == 1


# --- whole messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b'{"ts": "2026-11-24T08:00:00Z", "spo2": 95', b"", b"\xff\xfe", b"spo2=95"]
)
def test_payload_that_is_not_json_is_refused_as_a_whole(payload: bytes) -> None:
    with pytest.raises(ContractError, match="not valid JSON"):
        decode_readings(payload)


def test_empty_array_is_refused() -> None:
    with pytest.raises(ContractError, match="empty array"):
        decode_readings(b"[]")


def test_array_with_one_bad_element_keeps_the_good_ones_and_reports_the_bad_one() -> None:
    bad = {**GOOD, "ts": "2026-11-24T08:01:00Z", "pulse": 400}
    upload = [GOOD, bad, {**GOOD, "ts": "2026-11-24T08:02:00Z"}]
    decoded = decode_readings(encode(upload))
    assert [r.ts.minute for r in decoded.readings] == [0, 2]
    [(raw, reason)] = decoded.rejects
    assert json.loads(raw) == bad  # the bad element alone, not the whole upload
    assert reason.startswith("pulse:")
    assert "400" in reason


def test_array_element_that_is_not_an_object_is_reported() -> None:
    decoded = decode_readings(encode([GOOD, 42]))
    assert len(decoded.readings) == 1
    [(raw, reason)] = decoded.rejects
    assert raw == b"42"
    assert "not a JSON object" in reason


@pytest.mark.parametrize("document", [42, "spo2 95", None])
def test_json_that_is_not_an_object_or_array_is_refused(document: object) -> None:
    decoded = decode_readings(encode(document))
    assert decoded.readings == []
    assert len(decoded.rejects) == 1


# --- topics ---------------------------------------------------------------------------------


def test_device_id_is_read_from_its_readings_topic() -> None:
    assert device_id_from_topic("oximon/devices/oxi-0a1b2c3d4e/readings") == "oxi-0a1b2c3d4e"
    assert device_id_from_topic(readings_topic("OX_17")) == "OX_17"
    assert device_id_from_topic(status_topic("OX_17"), kind="status") == "OX_17"


@pytest.mark.parametrize(
    "topic",
    [
        "oximon/devices/oxi-1/status",  # the status topic is not a readings topic
        "oximon/devices/oxi-1/readings/extra",
        "oximon/devices/oxi-1",
        "oximon/devices//readings",
        "oximon/devices/a/readings",  # device ids are 3 to 64 characters
        f"oximon/devices/{'x' * 65}/readings",
        "oximon/devices/oxi 1/readings",
        "oximon/devices/oxi+1/readings",
        "oximon/devices/oxi-1/x/readings",
        "other/devices/oxi-1/readings",
        "/oximon/devices/oxi-1/readings",
    ],
)
def test_topic_not_matching_the_readings_pattern_is_refused(topic: str) -> None:
    with pytest.raises(ContractError, match=r"oximon/devices/\{device_id\}/readings"):
        device_id_from_topic(topic)


def test_topic_with_a_trailing_newline_is_refused() -> None:
    # `$` in a Python regex also matches before a final newline; the topic has one more
    # character than the pattern allows and must not be taken as a readings topic.
    with pytest.raises(ContractError):
        device_id_from_topic("oximon/devices/oxi-1/readings\n")
