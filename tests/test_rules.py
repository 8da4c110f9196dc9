"""The clinical threshold rules, as a table a clinician can check row by row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from alerting.rules import Decision, Reading, Thresholds, evaluate, worst

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
DEFAULT = Thresholds()  # NHS Oximetry @home / NEWS2: 95+ normal, 93-94 amber, <=92 red
COPD = Thresholds(spo2_amber_max_pct=87, spo2_red_max_pct=85)  # target 88-92 (BTS, NEWS2 scale 2)
NO_AMBER = Thresholds(spo2_amber_max_pct=92, spo2_red_max_pct=92)
FAST_125 = Thresholds(pulse_red_max_bpm=125)
SLOW_45 = Thresholds(pulse_red_min_bpm=45)


# Expected alerts, as (kind, severity, value).
def spo2_amber(pct: int) -> tuple[str, str, int]:
    return ("spo2_low", "amber", pct)


def spo2_red(pct: int) -> tuple[str, str, int]:
    return ("spo2_low", "red", pct)


def pulse_high(bpm: int) -> tuple[str, str, int]:
    return ("pulse_high", "red", bpm)


def pulse_low(bpm: int) -> tuple[str, str, int]:
    return ("pulse_low", "red", bpm)


@dataclass(frozen=True)
class Row:
    """One reading in, the alerts (kind, severity, value) it must raise out."""

    name: str
    spo2_pct: int
    pulse_bpm: int = 72
    expected: list[tuple[str, str, int]] = field(default_factory=list)
    thresholds: Thresholds = DEFAULT
    quality: str = "ok"
    late: bool = False


TABLE = [
    # SpO2, default bands
    Row("spo2 100 is normal", 100),
    Row("spo2 95 is normal", 95),
    Row("spo2 94 is amber", 94, expected=[spo2_amber(94)]),
    Row("spo2 93 is amber", 93, expected=[spo2_amber(93)]),
    Row("spo2 92 is red", 92, expected=[spo2_red(92)]),
    Row("spo2 91 is red", 91, expected=[spo2_red(91)]),
    Row("spo2 80 is red", 80, expected=[spo2_red(80)]),
    Row("spo2 0 is red", 0, expected=[spo2_red(0)]),
    # SpO2, a COPD patient's own bands (red at 85, amber at 87)
    Row("copd spo2 92 is normal", 92, thresholds=COPD),
    Row("copd spo2 88 is normal", 88, thresholds=COPD),
    Row("copd spo2 87 is amber", 87, thresholds=COPD, expected=[spo2_amber(87)]),
    Row("copd spo2 86 is amber", 86, thresholds=COPD, expected=[spo2_amber(86)]),
    Row("copd spo2 85 is red", 85, thresholds=COPD, expected=[spo2_red(85)]),
    Row("copd spo2 84 is red", 84, thresholds=COPD, expected=[spo2_red(84)]),
    # A patient with no amber band (amber threshold equal to red)
    Row("no amber band: 93 is normal", 93, thresholds=NO_AMBER),
    Row("no amber band: 92 is red", 92, thresholds=NO_AMBER, expected=[spo2_red(92)]),
    # Pulse, NEWS2: 40 or below, or 131 and above, is red
    Row("pulse 130 is normal", 97, pulse_bpm=130),
    Row("pulse 131 is red", 97, pulse_bpm=131, expected=[pulse_high(131)]),
    Row("pulse 180 is red", 97, pulse_bpm=180, expected=[pulse_high(180)]),
    Row("pulse 41 is normal", 97, pulse_bpm=41),
    Row("pulse 40 is red", 97, pulse_bpm=40, expected=[pulse_low(40)]),
    Row("pulse 25 is red", 97, pulse_bpm=25, expected=[pulse_low(25)]),
    Row(
        "own band: pulse 125 is red",
        97,
        pulse_bpm=125,
        thresholds=FAST_125,
        expected=[pulse_high(125)],
    ),
    Row("own band: pulse 124 is normal", 97, pulse_bpm=124, thresholds=FAST_125),
    Row(
        "own band: pulse 45 is red", 97, pulse_bpm=45, thresholds=SLOW_45, expected=[pulse_low(45)]
    ),
    # Both at once: one alert of each kind
    Row("red spo2, high pulse", 90, pulse_bpm=140, expected=[spo2_red(90), pulse_high(140)]),
    Row("amber spo2, low pulse", 94, pulse_bpm=38, expected=[spo2_amber(94), pulse_low(38)]),
    # Artefacts raise nothing, however alarming the numbers
    Row("motion raises nothing", 80, pulse_bpm=150, quality="motion"),
    Row("no finger raises nothing", 0, pulse_bpm=30, quality="no_finger"),
    Row("low perfusion raises nothing", 85, pulse_bpm=135, quality="low_perfusion"),
    Row("ok quality still alerts", 85, quality="ok", expected=[spo2_red(85)]),
    # A late (store-and-forward) reading is history, not news
    Row("late red reading raises nothing", 80, pulse_bpm=150, late=True),
    Row("late amber reading raises nothing", 93, late=True),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_reading_raises_exactly_the_alerts_of_the_clinical_table(row: Row) -> None:
    reading = Reading(
        patient_id=7,
        time=T0,
        spo2_pct=row.spo2_pct,
        pulse_bpm=row.pulse_bpm,
        quality=row.quality,
        late=row.late,
    )
    decisions = evaluate(row.thresholds, reading)
    assert sorted((d.kind, d.severity, d.value) for d in decisions) == sorted(row.expected)
    for d in decisions:
        assert (d.patient_id, d.at) == (7, T0)
        assert d.reason  # a nurse reads it


def test_alert_reason_names_the_value_and_the_patients_own_threshold() -> None:
    [red] = evaluate(COPD, Reading(7, T0, spo2_pct=84, pulse_bpm=72))
    assert "84%" in red.reason and "85%" in red.reason
    [amber] = evaluate(COPD, Reading(7, T0, spo2_pct=87, pulse_bpm=72))
    assert "87%" in amber.reason and "86–87%" in amber.reason
    [pulse] = evaluate(DEFAULT, Reading(7, T0, spo2_pct=97, pulse_bpm=131))
    assert "131/min" in pulse.reason


def decision(patient_id: int, kind: str, severity: str, value: float, minutes: int) -> Decision:
    return Decision(patient_id, kind, severity, value, T0 + timedelta(minutes=minutes), "reason")


def test_worst_collapses_a_batch_to_one_decision_per_patient_and_kind() -> None:
    batch = [
        decision(1, "spo2_low", "amber", 94, 0),
        decision(1, "spo2_low", "red", 91, 1),  # the most severe wins over a later amber
        decision(1, "spo2_low", "amber", 93, 2),
        decision(1, "pulse_high", "red", 131, 0),
        decision(1, "pulse_high", "red", 140, 3),  # of equal severity, the latest wins
        decision(2, "spo2_low", "amber", 94, 5),
        decision(2, "spo2_low", "amber", 93, 4),
    ]
    collapsed = {(d.patient_id, d.kind): d for d in worst(batch)}
    assert len(worst(batch)) == 3
    assert collapsed[(1, "spo2_low")] == batch[1]
    assert collapsed[(1, "pulse_high")] == batch[4]
    assert collapsed[(2, "spo2_low")] == batch[5]


def test_worst_of_an_empty_batch_is_empty() -> None:
    assert worst([]) == []


def test_worst_keeps_a_single_decision_as_it_is() -> None:
    only = decision(3, "pulse_low", "red", 38, 0)
    assert worst([only]) == [only]
