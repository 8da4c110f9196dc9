"""Synthetic patients: a personal baseline, sensor noise, artefacts and deterioration. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class SimPatient:
    """Ground truth for one synthetic patient. `onset` is when true desaturation starts."""

    baseline_spo2_pct: float
    baseline_pulse_bpm: float
    onset: datetime | None = None
    # Points of SpO2 lost per platform minute once deterioration has started.
    decline_pct_per_min: float = 0.0
    floor_spo2_pct: float = 84.0
    motion_rate: float = 0.02

    @classmethod
    def sample(cls, rng: random.Random, start: datetime, deteriorating: bool) -> SimPatient:
        patient = cls(
            baseline_spo2_pct=rng.uniform(96.5, 98.5),
            baseline_pulse_bpm=rng.uniform(58, 88),
        )
        if deteriorating:
            patient.onset = start + timedelta(seconds=rng.uniform(15, 60))
            patient.decline_pct_per_min = rng.uniform(4, 8)
        return patient

    def true_spo2(self, at: datetime) -> float:
        if self.onset is None or at < self.onset:
            return self.baseline_spo2_pct
        minutes = (at - self.onset).total_seconds() / 60
        return max(self.floor_spo2_pct, self.baseline_spo2_pct - self.decline_pct_per_min * minutes)

    def reading(self, rng: random.Random, at: datetime) -> dict[str, object]:
        """One reading as a device reports it: whole numbers, noisy, sometimes an artefact."""
        spo2 = self.true_spo2(at) + rng.gauss(0, 0.6)
        # Hypoxaemia drives the heart rate up (compensatory tachycardia).
        pulse = self.baseline_pulse_bpm + 2.5 * max(0.0, self.baseline_spo2_pct - spo2)
        pulse += rng.gauss(0, 2.0)
        quality = "ok"
        if rng.random() < self.motion_rate:
            spo2 -= rng.uniform(3, 9)
            pulse += rng.uniform(-15, 25)
            quality = "motion"
        return {
            "spo2": int(round(min(100.0, max(50.0, spo2)))),
            "pulse": int(round(min(250.0, max(30.0, pulse)))),
            "pi": round(rng.uniform(1.0, 6.0), 1),
            "quality": quality,
        }
