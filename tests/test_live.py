"""The live stream, end to end: a reading published over MQTT, stored by the real ingest
worker, reaches a nurse's open event stream on the real API server; an alert opened by the
engine and acknowledged by a nurse reaches it too; a nurse of another care team sees neither."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests import test_care_teams, test_latest
from tests.conftest import Stack
from tests.helpers import Device, wait_until
from tests.test_api import open_alert

other_team, neighbour = test_care_teams.other_team, test_latest.neighbour  # fixtures


class EventStream:
    """A client of GET /api/v1/stream, reading server-sent events in a thread."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, **params: Any):
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status: int | None = None
        self.content_type = ""
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(5, read=60))
        self._request = self._client.build_request(
            "GET", "/api/v1/stream", headers=headers or {}, params=params
        )
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_until(lambda: self.status is not None, 10, "the stream to answer")
        if self.status == 200:
            self.wait_for("ready")

    def _read(self) -> None:
        try:
            self._response = self._client.send(self._request, stream=True)
            self.status = self._response.status_code
            self.content_type = self._response.headers.get("content-type", "")
            if self.status != 200:
                self._response.read()
                return
            kind, data = "message", ""
            for line in self._response.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data += line.split(":", 1)[1].strip()
                elif line == "" and data:
                    self.events.append((kind, json.loads(data)))
                    kind, data = "message", ""
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def wait_for(self, kind: str, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for k, data in list(self.events):
                if k == kind and all(data.get(f) == v for f, v in match.items()):
                    return data
            return None

        return wait_until(found, 20, f"a {kind!r} event with {match}")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in list(self.events) if k == kind]

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def streams() -> Any:
    opened: list[EventStream] = []

    def open_stream(base_url: str, headers: dict[str, str] | None = None, **params: Any):
        s = EventStream(base_url, headers, **params)
        opened.append(s)
        return s

    yield open_stream
    for s in opened:
        s.close()


def _device(client: TestClient, admin: dict[str, str], stack: Stack, patient: int) -> Any:
    res = client.post("/api/v1/devices", json={"patient_id": patient}, headers=admin)
    assert res.status_code == 201, res.text
    creds = res.json()
    return creds["device_id"], Device(
        stack.broker.port, creds["mqtt_username"], creds["mqtt_password"]
    )


def test_a_published_reading_and_an_alert_reach_my_stream_and_not_another_teams(
    stack: Stack,
    db: psycopg.Connection,
    client: TestClient,
    api_server: str,
    ingest: Any,
    admin: dict[str, str],
    nurse: dict[str, str],
    patient: int,
    neighbour: dict[str, Any],
    streams: Any,
    tmp_path: Path,
) -> None:
    mine = streams(api_server, nurse)
    theirs = streams(api_server, neighbour["headers"])
    assert mine.content_type.startswith("text/event-stream")
    device_id, device = _device(client, admin, stack, patient)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        device.publish(device_id, {"ts": now.isoformat(), "spo2": 96, "pulse": 71, "seq": 1})
        reading = mine.wait_for("reading", patient_id=patient)
        assert (reading["spo2"], reading["pulse"], reading["quality"]) == (96, 71, "ok")
        assert datetime.fromisoformat(reading["time"]) == now

        # A red spot check: the engine opens a red alert at once.
        later = (now + timedelta(seconds=5)).isoformat()
        device.publish(device_id, {"ts": later, "spo2": 85, "pulse": 88, "seq": 2})
        opened = mine.wait_for("alert", patient_id=patient, status="open")
        assert (opened["kind"], opened["severity"]) == ("spo2_low", "red")
        assert opened["reason"]
    finally:
        device.close()

    res = client.post(f"/api/v1/alerts/{opened['id']}/acknowledge", headers=nurse)
    assert res.status_code == 200, res.text
    taken = mine.wait_for("alert", id=opened["id"], status="acknowledged")
    assert taken["acknowledged_by"] is not None

    # The neighbour's stream works (it hears its own patient's alert) ...
    neighbours_alert = open_alert(db, neighbour["patient"], kind="pulse_high")
    theirs.wait_for("alert", id=neighbours_alert)
    # ... and heard nothing of ours; ours heard nothing of theirs.
    assert all(e.get("patient_id") == neighbour["patient"] for _, e in theirs.events[1:])
    mine.wait_for("alert", id=opened["id"], status="acknowledged")
    assert neighbours_alert not in [a["id"] for a in mine.of("alert")]

    # A closed client is forgotten by the server.
    mine.close()
    log = tmp_path / "api-server.log"
    wait_until(lambda: '"live_stream_closed"' in log.read_text(), 10, "the server to close it")


def test_a_browser_opens_the_stream_with_a_short_lived_stream_token(
    client: TestClient,
    db: psycopg.Connection,
    api_server: str,
    nurse: dict[str, str],
    patient: int,
    streams: Any,
) -> None:
    res = client.post("/api/v1/stream/token", headers=nurse)
    assert res.status_code == 200, res.text
    token = res.json()
    assert token["expires_in"] <= 60
    live = streams(api_server, None, access_token=token["access_token"], patient_id=patient)
    assert live.status == 200
    alert = open_alert(db, patient)
    assert live.wait_for("alert", id=alert)["patient_id"] == patient
    # The stream token opens the stream and nothing else.
    other = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.get("/api/v1/alerts", headers=other).status_code == 401


def test_the_stream_filters_by_patient_and_type(
    db: psycopg.Connection,
    api_server: str,
    nurse: dict[str, str],
    patient: int,
    streams: Any,
) -> None:
    second = db.execute(
        "INSERT INTO patients (display_name) VALUES ('Synthetic Second') RETURNING id"
    ).fetchone()["id"]
    chart = streams(api_server, nurse, patient_id=second, types="alert")
    everything = streams(api_server, nurse)
    first_alert = open_alert(db, patient)
    second_alert = open_alert(db, second)
    chart.wait_for("alert", id=second_alert)
    everything.wait_for("alert", id=second_alert)
    assert first_alert in [a["id"] for a in everything.of("alert")]
    assert [a["id"] for a in chart.of("alert")] == [second_alert]


def test_the_stream_refuses_missing_forged_and_long_lived_query_tokens(
    api_server: str, nurse: dict[str, str], streams: Any, settings: Settings
) -> None:
    assert streams(api_server).status == 401
    assert streams(api_server, {"Authorization": "Bearer forged"}).status == 401
    assert streams(api_server, None, access_token="forged").status == 401
    # A normal bearer token is not accepted in the URL (it would sit in access logs).
    bearer_token = nurse["Authorization"].split(" ", 1)[1]
    assert streams(api_server, None, access_token=bearer_token).status == 401


@pytest.mark.parametrize(
    ("params", "field"), [({"types": "gossip"}, "types"), ({"patient_id": "x"}, "patient_id")]
)
def test_bad_stream_filters_are_422_naming_the_field(
    client: TestClient, nurse: dict[str, str], params: dict[str, str], field: str
) -> None:
    res = client.get("/api/v1/stream", params=params, headers=nurse)
    assert res.status_code == 422
    assert field in res.json()["detail"][0]["loc"]


def test_the_latest_readings_of_a_batch_fit_in_notify_payloads() -> None:
    """Thousands of patients in one batch: split into payloads under PostgreSQL's 8000-byte
    NOTIFY limit, every patient's newest reading in exactly one of them."""
    from ingest.worker import Row, readings_notices

    t0 = datetime(2026, 11, 24, 8, tzinfo=UTC)
    rows = [
        Row(t0 + timedelta(seconds=s), f"oxi-{p}", p, 90 + s, 70, None, "ok", None, None, False)
        for s in range(2)
        for p in range(3000)
    ]
    payloads = readings_notices(rows, len(rows), t0)
    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    latest = [item for p in payloads for item in json.loads(p)["latest"]]
    assert len(latest) == 3000
    assert {tuple(i[2:4]) for i in latest} == {(91, 70)}
    assert {i[1] for i in latest} == {int((t0 + timedelta(seconds=1)).timestamp() * 1_000_000)}
    assert all(json.loads(p)["n"] == 6000 for p in payloads)


def test_the_api_stops_promptly_with_streams_open(
    settings: Settings, nurse: dict[str, str], streams: Any, tmp_path: Path
) -> None:
    """A deploy's SIGTERM ends open streams instead of waiting for them forever (uvicorn waits
    for open responses before it exits)."""
    import signal

    from oximon.localstack import free_port
    from tests.conftest import Service, _answers_healthz

    api_settings = settings.model_copy(update={"api_port": free_port()})
    base_url = f"http://{api_settings.api_host}:{api_settings.api_port}"
    server = Service(["api"], api_settings, tmp_path / "api.log").start()
    try:
        wait_until(lambda: _answers_healthz(base_url), 20, "the API to answer")
        live = streams(base_url, nurse)
        assert live.status == 200
        assert server.process is not None
        server.process.terminate()
        assert server.process.wait(timeout=15) in (0, -signal.SIGTERM)
        wait_until(lambda: live.status is not None and not live._thread.is_alive(), 10, "the end")
    finally:
        server.stop()
