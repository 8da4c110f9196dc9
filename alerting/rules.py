"""Clinical threshold rules. Pure: no database, no clock, no I/O.

Sources for the default bands (every one overridable per patient):
* SpO2 — NHS England, COVID Oximetry @home (2021) and RCP NEWS2 (2017), SpO2 scale 1:
  95% and above normal; 93–94% amber (clinical review); 92% and below red (urgent assessment).
* Pulse — NEWS2: 51–90 normal; 40 or below, or 131 and above, scores 3 (red).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Readings with these quality flags are stored and shown but never raise an alert on their own:
# a moving finger or a cold hand gives false dips (NHS Oximetry @home guidance on artefacts).
POOR_QUALITY = frozenset({"motion", "no_finger", "low_perfusion"})


@dataclass(frozen=True, slots=True)
class Thresholds:
    spo2_amber_max_pct: int = 94
    spo2_red_max_pct: int = 92
    pulse_red_min_bpm: int = 40
    pulse_red_max_bpm: int = 131


@dataclass(frozen=True, slots=True)
class Reading:
    patient_id: int
    time: datetime
    spo2_pct: int
    pulse_bpm: int
    quality: str = "ok"
    late: bool = False
    # Perfusion index (percent), when the device reports it; a very low one makes SpO2 unreliable.
    pi_pct: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Open (or update) the patient's alert of this kind."""

    patient_id: int
    kind: str
    severity: str  # "amber" | "red"
    value: float
    at: datetime
    reason: str
    # Added by the engine (alerting.engine); the threshold rules leave the defaults.
    # A single low spot check: ask the patient to measure again.
    recheck: bool = False
    # Confirmed by a second spot check, or sustained in a continuous stream: more urgent.
    confirmed: bool = False
    # From a late (store-and-forward) upload: history, never a page; the reason says so.
    history: bool = False
    # Trend alerts: when the fitted slope reaches the red band.
    projected_at: datetime | None = None


def evaluate(thresholds: Thresholds, reading: Reading) -> list[Decision]:
    """The alerts one stored reading calls for.

    Late readings (store-and-forward uploads) are history: they are stored and charted but do
    not page anyone about a state that may be hours old.
    """
    if reading.late or reading.quality in POOR_QUALITY:
        return []
    out: list[Decision] = []
    spo2 = reading.spo2_pct
    if spo2 <= thresholds.spo2_red_max_pct:
        out.append(
            Decision(
                reading.patient_id,
                "spo2_low",
                "red",
                spo2,
                reading.time,
                f"SpO2 {spo2}% is at or below the red threshold "
                f"({thresholds.spo2_red_max_pct}%): urgent assessment",
            )
        )
    elif spo2 <= thresholds.spo2_amber_max_pct:
        out.append(
            Decision(
                reading.patient_id,
                "spo2_low",
                "amber",
                spo2,
                reading.time,
                f"SpO2 {spo2}% is in the amber band "
                f"({thresholds.spo2_red_max_pct + 1}–{thresholds.spo2_amber_max_pct}%)"
                ": clinical review",
            )
        )
    pulse = reading.pulse_bpm
    if pulse >= thresholds.pulse_red_max_bpm:
        out.append(
            Decision(
                reading.patient_id,
                "pulse_high",
                "red",
                pulse,
                reading.time,
                f"Pulse {pulse}/min is at or above {thresholds.pulse_red_max_bpm}/min",
            )
        )
    elif pulse <= thresholds.pulse_red_min_bpm:
        out.append(
            Decision(
                reading.patient_id,
                "pulse_low",
                "red",
                pulse,
                reading.time,
                f"Pulse {pulse}/min is at or below {thresholds.pulse_red_min_bpm}/min",
            )
        )
    return out


def worst(decisions: list[Decision]) -> list[Decision]:
    """Collapse a batch to one decision per (patient, kind): the most severe, then the latest."""
    rank = {"amber": 0, "red": 1}
    best: dict[tuple[int, str], Decision] = {}
    for d in decisions:
        key = (d.patient_id, d.kind)
        current = best.get(key)
        if current is None or (rank[d.severity], d.at) > (rank[current.severity], current.at):
            best[key] = d
    return list(best.values())
