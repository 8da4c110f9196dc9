"""Every clinical scenario in tests/scenarios/ through the real pipeline: each reading published
to Mosquitto as the patient's oximeter on its own topic, stored and evaluated by the real
`oximon ingest` worker, alerts read back from the database, the watchdog asked about missed
readings at the scenario's instants; then the same expectations as the pure run.

Time is the platform clock (DESIGN.md, "Time"): the worker runs with `OXIMON_CLOCK_ORIGIN` and
`OXIMON_CLOCK_SPEED` set so that the scenario's first reading falls just after it has started,
and each reading is published when that clock reaches the moment it reaches the platform (its
`received` time), so the worker judges it as it would judge a live one. How each scenario is
paced, and the settings that go with the pace (`pace`):

* The speed makes a scenario take a few wall seconds (a week of spot checks, eight hours of a
  stream), capped so a stream's readings arrive no faster than about 1,000 a wall second.
* `ingest_late_after_s` is the delivery delay the platform still treats as live. At speed S
  a wall second of delay on a busy machine is S platform seconds (hours, at a week in a few
  seconds), where at real speed the same delay is milliseconds. So a scenario in which every
  reading arrives when measured runs with no delay counted as late (a year: however far a busy
  machine makes the replay fall behind), and the test checks the worker stored every reading as
  live; a scenario with delayed readings (an upload) keeps the default 600 s and a speed at
  which 600 platform seconds are still 1.5 wall seconds, so "late" means exactly what it
  means in production (the test checks that each delayed reading was stored as late and each
  other one as live: on a machine too busy to keep up, that check fails and says so).
* `ingest_batch_wait_ms` is 0: a reading is not held back to batch it with the next (at real
  speed, readings seconds apart never share a batch; accelerated, a 5 ms wait would merge
  them). Before a reading that comes five minutes or more after the one before (the next spot
  check, a re-check), the replay waits until the earlier ones are stored, as those minutes of
  real time would; and it never runs more than a few readings ahead of the worker.
* The watchdog (`alerting.watchdog.Watchdog`, what the alerting workers run once a platform
  minute) is run at each `checks` instant of a scenario, once the clock has reached it and
  every reading that had arrived by then is stored.

What the database shows of an alert: its `opened`, `upgraded` and `confirmed` events (severity,
reason, flags and the measured time of the reading behind each), the SMS asking the patient to
measure again, and for later updates only the newest reading's time (`Observed.update`).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerting.messaging import patient_text
from alerting.profile import Profile
from alerting.schedule import due_checks
from alerting.watchdog import Watchdog
from core.clock import Clock
from core.settings import Settings
from devices.registry import register_device
from tests.conftest import Stack
from tests.helpers import Device
from tests.scenarios import (
    LATE_AFTER,
    Check,
    Observed,
    Scenario,
    ScenarioReading,
    check,
    has_delayed_readings,
    load_scenarios,
)

SCENARIOS = load_scenarios()
TZ = "Europe/Oslo"
PHONE = "+4791000042"
LANGUAGE = "en"
TARGET_WALL_S = 2.0  # a scenario's readings take about this long to replay
MAX_ARRIVALS_PER_WALL_S = 1000.0
NOTHING_LATE_S = 365 * 86400  # ingest_late_after_s of a replay without delayed readings
LATE_MARGIN_WALL_S = 1.5  # replays with delayed readings: 600 platform s are at least this
BARRIER_GAP = timedelta(minutes=5)
# Readings published and not yet stored span at most this much platform time (or this many
# readings, whichever allows more): the replay waits for a worker that falls behind (a busy
# machine) rather than hand it readings that real time would have spread over many batches.
BACKLOG = timedelta(seconds=20)
BACKLOG_READINGS = 3
_startup_wall_s = 2.0  # how long a worker takes to start here; learnt from each start


def pace(scenario: Scenario) -> tuple[float, int]:
    """(clock speed, ingest_late_after_s) for replaying `scenario`; see the module docstring."""
    arrivals = sorted(r.received for r in scenario.readings)
    span_s = (arrivals[-1] - arrivals[0]).total_seconds()
    if scenario.checks:
        span_s = max(span_s, max(c.at for c in scenario.checks).total_seconds())
    gaps = [(b - a).total_seconds() for a, b in zip(arrivals, arrivals[1:], strict=False)]
    typical_gap_s = min((g for g in gaps if g > 0), default=60.0)
    speed = max(1.0, span_s / TARGET_WALL_S)
    speed = min(speed, typical_gap_s * MAX_ARRIVALS_PER_WALL_S)
    default_late_s = int(LATE_AFTER.total_seconds())
    if has_delayed_readings(scenario):
        speed = min(speed, default_late_s / LATE_MARGIN_WALL_S)
        return speed, default_late_s
    return speed, NOTHING_LATE_S


def _origin(first: datetime, speed: float, startup_wall_s: float) -> datetime:
    """The clock origin at which platform time reaches `first` `startup_wall_s` from now:
    platform(w) = O + S (w - O) = first at w1 gives O = w1 + (w1 - first) / (S - 1)."""
    w1 = time.time() + startup_wall_s
    offset_s = (w1 - first.timestamp()) / (speed - 1.0) if speed != 1.0 else 0.0
    return datetime.fromtimestamp(w1 + offset_s, UTC)


def _add_patient(db: psycopg.Connection, scenario: Scenario) -> int:
    columns: dict[str, Any] = {}
    rules: dict[str, Any] = dict(scenario.patient.get("alert_rules") or {})
    profile_fields = set(Profile.__dataclass_fields__)
    table = {
        r["column_name"]
        for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'patients'"
        ).fetchall()
    }
    for name, value in scenario.patient.items():
        if name in table and name in profile_fields:
            columns[name] = value
        elif name in ("schedule", "alert_rules"):
            continue
        elif name in profile_fields:
            rules[name] = value
        else:
            raise AssertionError(f"{scenario.path.name}: patient.{name} is not a patient setting")
    columns.update(
        display_name="Synthetic Scenario Patient",
        phone=PHONE,
        language=LANGUAGE,
        schedule=Jsonb(scenario.schedule),
        alert_rules=Jsonb(rules),
        enrolled_at=scenario.start,
    )
    names = ", ".join(columns)
    marks = ", ".join(f"%({n})s" for n in columns)
    row = db.execute(
        f"INSERT INTO patients ({names}) VALUES ({marks}) RETURNING id", columns
    ).fetchone()
    return int(row["id"])


def _payload(r: ScenarioReading, seq: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": r.at.isoformat(),
        "spo2": r.spo2_pct,
        "pulse": r.pulse_bpm,
        "quality": r.quality,
        "seq": seq,
    }
    if r.pi_pct is not None:
        body["pi"] = r.pi_pct
    return body


def _messages(scenario: Scenario) -> list[tuple[datetime, list[ScenarioReading]]]:
    """What the oximeter sends, in order: each live reading on its own, and the readings that
    reach the platform together after being measured (an upload) as one JSON array."""
    out: list[tuple[datetime, list[ScenarioReading], bool]] = []
    for r in scenario.in_arrival_order():
        delayed = r.received > r.at
        if delayed and out and out[-1][0] == r.received and out[-1][2]:
            out[-1][1].append(r)
        else:
            out.append((r.received, [r], delayed))
    return [(received, readings) for received, readings, _ in out]


def _stored(db: psycopg.Connection, patient: int) -> int:
    return int(
        db.execute(
            "SELECT count(*) AS n FROM readings WHERE patient_id = %s", (patient,)
        ).fetchone()["n"]
    )


def _wait_stored(db: psycopg.Connection, patient: int, n: int, what: str) -> None:
    """Until `n` readings of the patient are stored (polled every 5 ms: at high clock speed a
    coarse poll would cost platform hours)."""
    deadline = time.monotonic() + 20.0
    while _stored(db, patient) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {_stored(db, patient)} of {n} readings stored in 20 s")
        time.sleep(0.005)


def _sleep_until(clock: Clock, at: datetime) -> None:
    wait_s = clock.to_wall_s(at) - time.time()
    if wait_s > 0:
        time.sleep(wait_s)


def _watchdog_check(
    db: psycopg.Connection, patient: int, scenario: Scenario, at: datetime, c: Check
) -> tuple[Check, frozenset[str]]:
    """The watchdog at `at`, as an alerting worker runs it; what was due then, from what the
    pipeline stored; and that the watchdog acted on exactly what was due and not yet done."""
    before = _actions(db, patient)
    with db.transaction():
        Watchdog(TZ).check(db, at)
    after = _actions(db, patient)
    row = db.execute(
        "SELECT enrolled_at, (SELECT max(time) FROM readings WHERE patient_id = p.id) AS last"
        " FROM patients p WHERE id = %s",
        (patient,),
    ).fetchone()
    due = due_checks(scenario.schedule, row["last"], at, TZ, enrolled_at=row["enrolled_at"])
    wanted = {(a.slot_at, a.action) for a in due}
    assert after - before == wanted - before, (
        f"at +{c.at} the watchdog did {sorted(after - before)}, expected {sorted(wanted - before)}"
    )
    return c, frozenset(a.action for a in due)


def _actions(db: psycopg.Connection, patient: int) -> set[tuple[datetime, str]]:
    return {
        (r["slot_at"], r["action"])
        for r in db.execute(
            "SELECT slot_at, action FROM missed_reading_actions WHERE patient_id = %s",
            (patient,),
        ).fetchall()
    }


def observed(db: psycopg.Connection, patient: int) -> list[Observed]:
    """The alerts of the patient as the database holds them (see the module docstring)."""
    recheck_texts = (patient_text("recheck", "en"), patient_text("recheck", "nb"))
    asked_at = {
        r["created_at"]
        for r in db.execute(
            "SELECT created_at FROM notifications WHERE channel = 'sms' AND patient_id = %s"
            " AND recipient = %s AND body = ANY(%s)",
            (patient, PHONE, list(recheck_texts)),
        ).fetchall()
    }
    out: list[Observed] = []
    newest: dict[int, datetime] = {}
    rows = db.execute(
        "SELECT a.id, a.kind, a.severity AS alert_severity, a.last_reading_at, e.action, e.at,"
        " e.detail FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        " WHERE a.patient_id = %s AND e.action IN ('opened', 'upgraded', 'confirmed')"
        " ORDER BY e.id",
        (patient,),
    ).fetchall()
    for r in rows:
        d = r["detail"]
        at = datetime.fromisoformat(d["measured_at"])
        history = bool(d.get("history"))
        if history:
            paged = db.execute(
                "SELECT count(*) AS n FROM notifications WHERE alert_id = %s AND channel = 'sms'"
                " AND created_at = %s",
                (r["id"], r["at"]),
            ).fetchone()["n"]
            assert not paged, f"a late upload's alert ({r['kind']}) paged someone"
        out.append(
            Observed(
                r["kind"],
                d["severity"],
                at,
                d["reason"],
                recheck=bool(d.get("recheck")) and r["at"] in asked_at,
                confirmed=bool(d.get("confirmed")),
                history=history,
            )
        )
        newest[r["id"]] = max(newest.get(r["id"], at), at)
    for a in db.execute(
        "SELECT id, kind, severity, last_reading_at FROM alerts WHERE patient_id = %s",
        (patient,),
    ).fetchall():
        if a["last_reading_at"] is not None and a["last_reading_at"] > newest.get(
            a["id"], a["last_reading_at"]
        ):
            out.append(Observed(a["kind"], a["severity"], a["last_reading_at"], update=True))
    return out


def _start_ingest(service_factory: Any, first: datetime, speed: float, late_after_s: int) -> Clock:
    """`oximon ingest` on a platform clock that reaches `first` just after the worker is ready
    (started again on a later origin if it was slower to start than this machine usually is)."""
    global _startup_wall_s
    for _ in range(3):
        origin = _origin(first - timedelta(seconds=1), speed, _startup_wall_s)
        clock = Clock(origin, speed)
        launched = time.monotonic()
        worker = service_factory(
            "ingest",
            ready="mqtt_subscribed",
            clock_origin=origin,
            clock_speed=speed,
            ingest_late_after_s=late_after_s,
            ingest_batch_wait_ms=0,
        )
        took = time.monotonic() - launched
        # Follows how long starts take now (other work on the machine comes and goes).
        _startup_wall_s = 0.5 * _startup_wall_s + 0.5 * min(10.0, 1.3 * took + 0.3)
        if clock.now() < first:
            return clock
        worker.stop()  # nothing was published yet: start again with more room
    raise AssertionError(f"the ingest worker took {took:.1f} s to start, three times")


@pytest.fixture
def device_for(stack: Stack, db: psycopg.Connection, settings: Settings) -> Iterator[Any]:
    devices: list[Device] = []

    def make(patient: int, registered_at: datetime) -> tuple[str, Device]:
        creds = register_device(db, settings.mqtt_admin_url or "", patient, now=registered_at)
        device = Device(stack.broker.port, creds.username, creds.password)
        devices.append(device)
        return creds.device_id, device

    yield make
    for device in devices:
        device.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_through_mqtt_ingest_and_database(
    scenario: Scenario, db: psycopg.Connection, service_factory: Any, device_for: Any
) -> None:
    patient = _add_patient(db, scenario)
    device_id, device = device_for(patient, scenario.start - timedelta(hours=1))
    speed, late_after_s = pace(scenario)
    messages = _messages(scenario)
    clock = _start_ingest(service_factory, messages[0][0], speed, late_after_s)

    topic = f"oximon/devices/{device_id}/readings"
    checks = sorted(((scenario.start + c.at, c) for c in scenario.checks), key=lambda x: x[0])
    check_results: list[tuple[Check, frozenset[str]]] = []
    sent = 0
    previous: datetime | None = None
    infos = []
    pending: deque[tuple[datetime, int]] = deque()  # (received, readings sent by then)
    for received, readings in messages:
        while checks and checks[0][0] < received:
            at, c = checks.pop(0)
            _sleep_until(clock, at)
            _wait_stored(db, patient, sent, f"before the check at +{c.at}")
            check_results.append(_watchdog_check(db, patient, scenario, at, c))
        if previous is not None and received - previous >= BARRIER_GAP:
            _wait_stored(db, patient, sent, f"before the reading received at {received}")
        else:
            while (
                pending
                and pending[0][0] < received - BACKLOG
                and sent - pending[0][1] >= BACKLOG_READINGS
            ):
                _wait_stored(db, patient, pending.popleft()[1], "while the worker catches up")
        _sleep_until(clock, received)
        body = [_payload(r, sent + i) for i, r in enumerate(readings)]
        infos.append(
            device.client.publish(topic, json.dumps(body if len(body) > 1 else body[0]), qos=1)
        )
        sent += len(readings)
        previous = received
        pending.append((received, sent))
    for info in infos[-20:]:
        info.wait_for_publish(10)
    _wait_stored(db, patient, sent, "after the last reading")
    for at, c in checks:
        _sleep_until(clock, at)
        check_results.append(_watchdog_check(db, patient, scenario, at, c))

    dead = db.execute("SELECT reason FROM dead_letters").fetchall()
    assert not dead, f"the worker refused readings of the replay: {dead[:3]}"
    # The worker's own judgement of what is live and what is history.
    stored = {
        r["time"]: r
        for r in db.execute(
            "SELECT time, late, received_at FROM readings WHERE patient_id = %s", (patient,)
        ).fetchall()
    }
    for r in scenario.readings:
        row = stored[r.at]
        if r.received - r.at > LATE_AFTER:
            assert row["late"], f"reading measured at {r.at} should be stored as late"
        elif r.received == r.at:
            assert not row["late"], (
                f"reading measured at {r.at} should be stored as live; the worker had it at "
                f"{row['received_at']} (late after {late_after_s} s): the replay fell behind"
            )

    seen = observed(db, patient)
    if scenario.checks:
        # The watchdog's nurse alerts are what `checks` describe (compared above and below);
        # the scenario's `expect`/`forbid` speak of the clinical engine.
        missed = [o for o in seen if o.kind == "missed_reading"]
        assert all(o.severity == "amber" for o in missed)
        alert_actions = [a for a in _actions(db, patient) if a[1] == "alert_nurses"]
        assert bool(missed) == bool(alert_actions)
        reminders = db.execute(
            "SELECT count(*) AS n FROM notifications WHERE recipient = %s AND body = %s",
            (PHONE, patient_text("reminder", LANGUAGE)),
        ).fetchone()["n"]
        assert reminders == len([a for a in _actions(db, patient) if a[1] == "remind_patient"])
        seen = [o for o in seen if o.kind != "missed_reading"]
    problems = check(scenario, seen, check_results)
    assert not problems, (
        f"{scenario.name} (clock speed {speed:,.0f}, late after {late_after_s} s):\n  "
        + "\n  ".join(problems)
    )
