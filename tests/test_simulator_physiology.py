"""The simulated physiology (`simulator.population`, pure numpy), over a simulated month: stable
patients' readings have the stated distribution and artefact rates, and deteriorating patients'
readings cross into the red band when the recorded ground truth says they do. Seeded: the same
numbers every run."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest

from simulator.population import (
    CONTINUOUS,
    DAY_S,
    PATTERNS,
    RECOVERY,
    SPOT,
    SPOT_ON_TIME,
    Patient,
    SimReading,
    sample_population,
    spot_reading,
    spot_slots,
    spot_times,
    stream_day,
    stream_window,
)

MONTH_DAYS = 30
SEED = 20261125


@cache
def stable_month() -> list[tuple[Patient, list[SimReading]]]:
    """200 stable patients for 30 days: spot checks, and (a share of 2%) continuous streams."""
    patients = sample_population(200, 0, MONTH_DAYS, SEED, continuous_share=0.02)
    out = []
    for p in patients:
        rng = np.random.default_rng(p.seed)
        if p.mode == CONTINUOUS:
            readings = [r for day in range(MONTH_DAYS) for r in stream_day(p, rng, day).readings]
        else:
            readings = [spot_reading(p, rng, t) for t in spot_times(p, rng)]
        out.append((p, readings))
    return out


def ok_values(readings: list[SimReading]) -> tuple[np.ndarray, np.ndarray]:
    good = [r for r in readings if r.quality == "ok"]
    return np.array([r.spo2_pct for r in good]), np.array([r.pulse_bpm for r in good])


def test_the_month_has_both_reading_modes_and_a_share_with_chronic_lung_disease() -> None:
    month = stable_month()
    modes = Counter(p.mode for p, _ in month)
    assert modes[SPOT] >= 180 and modes[CONTINUOUS] >= 3
    copd = sum(p.copd for p, _ in month) / len(month)
    assert 0.12 <= copd <= 0.28  # stated: about one in five


def test_stable_patients_read_95_to_99_or_88_to_92_with_copd_and_pulse_55_to_100() -> None:
    for p, readings in stable_month():
        spo2, pulse = ok_values(readings)
        assert len(spo2) > 50
        median = float(np.median(spo2))
        if p.copd:
            # Baselines 89.0–92.5% (population.sample_population): a few read 93 at the median.
            assert 88 <= median <= 93, (p.patient_id, median)
        else:
            assert 95 <= median <= 99, (p.patient_id, median)
        assert 55 <= float(np.median(pulse)) <= 100, p.patient_id
    # Pooled: nine in ten good readings of patients without COPD lie in 94–99%.
    pooled = np.concatenate([ok_values(r)[0] for p, r in stable_month() if not p.copd])
    assert np.mean((pooled >= 94) & (pooled <= 99)) >= 0.9


def test_readings_are_whole_numbers_within_what_a_device_can_show() -> None:
    for _, readings in stable_month():
        for r in readings[:500]:
            assert isinstance(r.spo2_pct, int) and isinstance(r.pulse_bpm, int)
            assert 0 <= r.spo2_pct <= 100 and 20 <= r.pulse_bpm <= 300
            assert r.quality in {"ok", "motion", "no_finger", "low_perfusion"}


def test_spot_check_artefacts_come_at_the_stated_rates() -> None:
    counts: Counter[str] = Counter()
    for p, readings in stable_month():
        if p.mode == SPOT:
            counts.update(r.quality for r in readings)
    n = sum(counts.values())
    # Stated in population.spot_reading: moving hand 3% (85% of those flagged), cold hands 6%
    # (60% flagged), finger out 1% (always flagged). Tolerance ±0.6 points at n ≈ 17,000.
    assert n > 15_000
    assert counts["motion"] / n == pytest.approx(0.03 * 0.85, abs=0.006)
    assert counts["low_perfusion"] / n == pytest.approx(0.06 * 0.6, abs=0.006)
    assert counts["no_finger"] / n == pytest.approx(0.01, abs=0.004)


def test_streams_flag_one_to_three_percent_and_sometimes_do_not_flag_an_artefact() -> None:
    for p, readings in stable_month():
        if p.mode != CONTINUOUS:
            continue
        flagged = sum(r.quality != "ok" for r in readings) / len(readings)
        assert 0.005 <= flagged <= 0.03, (p.patient_id, flagged)
    # Unflagged artefacts exist: some "ok" readings fall 4+ points below the patient's usual.
    p, readings = next((p, r) for p, r in stable_month() if p.mode == CONTINUOUS)
    spo2, _ = ok_values(readings)
    assert np.mean(spo2 <= np.median(spo2) - 4) > 0.0005


def test_streams_are_lower_asleep_than_awake_by_the_patients_sleep_drop() -> None:
    for p, readings in stable_month():
        if p.mode != CONTINUOUS:
            continue
        good = [r for r in readings if r.quality == "ok"]
        t = np.array([r.t_s for r in good])
        spo2 = np.array([r.spo2_pct for r in good], dtype=float)
        asleep = p.asleep(t)
        drop = spo2[~asleep].mean() - spo2[asleep].mean()
        assert drop == pytest.approx(p.sleep_drop_pct, abs=0.6), p.patient_id


def test_people_take_most_spot_checks_a_little_late_and_forget_some() -> None:
    p = next(p for p, _ in stable_month() if p.mode == SPOT)
    rng = np.random.default_rng(1)
    slots = np.array(list(spot_slots(p)))
    taken = np.array(list(spot_times(p, rng)))
    assert len(taken) / len(slots) == pytest.approx(SPOT_ON_TIME, abs=0.05)
    late_min = np.array([(t - slots[np.argmin(abs(slots - t))]) / 60 for t in taken])
    assert 0 < np.median(late_min) < 15 and late_min.min() >= -45 and late_min.max() <= 55


# --- deterioration ------------------------------------------------------------------------------


def deteriorating() -> list[Patient]:
    """Six patients of each pattern, half spot checks and half streams."""
    return sample_population(0, 6 * len(PATTERNS), MONTH_DAYS, SEED + 1, patterns=PATTERNS)


def time_at(p: Patient, level: float, after_s: float) -> float:
    """When the patient's true SpO2 first reaches `level` or below, after `after_s`."""
    t = np.arange(after_s, p.days * DAY_S, 30.0)
    below = np.nonzero(p.true_spo2(t) <= level)[0]
    assert len(below), f"patient {p.patient_id} never reaches {level}"
    return float(t[below[0]])


WINDOW_S = 600.0  # a nurse looking at ten-minute medians of a stream
TOLERANCE_PCT = 1.5  # "at the recorded time": while the true SpO2 is within 1.5 points of red


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_deteriorating_stream_turns_red_when_the_ground_truth_says(pattern: str) -> None:
    patients = [p for p in deteriorating() if p.scenario == pattern and p.mode == CONTINUOUS]
    assert len(patients) == 3
    for p in patients:
        truth = p.ground_truth()
        red_cross = truth["red_cross_s"]
        assert isinstance(red_cross, float) and p.onset_s is not None
        red = p.profile().spo2_red_max_pct
        rng = np.random.default_rng(p.seed)
        window = stream_window(p, rng, p.onset_s - 3600, red_cross + 6 * 3600, offline_chance=0)
        good = [r for r in window.readings if r.quality == "ok"]
        t = np.array([r.t_s for r in good])
        spo2 = np.array([r.spo2_pct for r in good])
        # The median of the last ten minutes, every minute.
        ends = np.arange(t[0] + WINDOW_S, t[-1], 60.0)
        lo, hi = np.searchsorted(t, ends - WINDOW_S), np.searchsorted(t, ends)
        first_red = next(
            e for e, a, b in zip(ends, lo, hi, strict=True) if b > a and np.median(spo2[a:b]) <= red
        )
        earliest = time_at(p, p.red_level_pct + TOLERANCE_PCT, p.onset_s)
        latest = time_at(p, p.red_level_pct - TOLERANCE_PCT, p.onset_s) + WINDOW_S
        assert earliest <= red_cross <= latest
        assert earliest <= first_red <= latest, (p.patient_id, first_red - red_cross)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_deteriorating_spot_checks_are_red_while_the_ground_truth_is_red(pattern: str) -> None:
    patients = [p for p in deteriorating() if p.scenario == pattern and p.mode == SPOT]
    assert len(patients) == 3
    deep_checks = deep_red = 0
    for p in patients:
        assert p.onset_s is not None
        red = p.profile().spo2_red_max_pct
        rng = np.random.default_rng(p.seed)
        checks = [spot_reading(p, rng, t) for t in spot_times(p, rng, from_s=p.onset_s)]
        checks = [r for r in checks if r.quality == "ok"]
        red_checks = [r.t_s for r in checks if r.spo2_pct <= red]
        # Never red before the true SpO2 is within 2.5 points of red (a single check is noisier
        # than a stream's median) …
        earliest = time_at(p, p.red_level_pct + 2.5, p.onset_s)
        assert not red_checks or red_checks[0] >= earliest, p.patient_id
        # … and red while the true SpO2 is 1.5 points or more into red.
        true = p.true_spo2(np.array([r.t_s for r in checks]))
        deep = [r for r, v in zip(checks, true, strict=True) if v <= p.red_level_pct - 1.5]
        deep_checks += len(deep)
        deep_red += sum(r.spo2_pct <= red for r in deep)
    # A recovery can pass between two checks; over the pattern, deep-red checks are seen.
    assert deep_checks >= 3
    assert deep_red / deep_checks >= 0.9, (deep_red, deep_checks)


def test_after_treatment_the_stream_is_back_out_of_red_when_the_ground_truth_says() -> None:
    for p in [p for p in deteriorating() if p.scenario == RECOVERY and p.mode == CONTINUOUS]:
        truth = p.ground_truth()
        recovered = truth["recovered_s"]
        assert isinstance(recovered, float) and p.recover_s is not None
        assert p.recover_s < recovered < p.recover_s + p.recover_over_s
        red = p.profile().spo2_red_max_pct
        rng = np.random.default_rng(p.seed)
        # Once the true SpO2 is 1.5 points above red again, ten-minute medians are out of red.
        t = np.arange(recovered, p.days * DAY_S, 30.0)
        clear = float(t[np.nonzero(p.true_spo2(t) > p.red_level_pct + 1.5)[0][0]])
        window = stream_window(p, rng, clear, clear + 5 * 3600, offline_chance=0)
        spo2 = np.array([r.spo2_pct for r in window.readings if r.quality == "ok"])
        medians = [np.median(chunk) for chunk in np.array_split(spo2, 30)]
        assert min(medians) > red, p.patient_id
