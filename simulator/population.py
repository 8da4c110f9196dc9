"""A synthetic population for the clinical benchmark, with ground truth. Pure and seeded.

Stable patients with the artefacts real home oximetry has (movement, a finger out, cold hands,
noise, whole-number rounding, a lower SpO2 and pulse asleep, brief dips in sleep) and
deteriorating patients with a known onset: a slow decline over days, a faster fall over hours,
a sudden desaturation, silent hypoxia (a fall with no rise in pulse), and a fall that recovers
after treatment. Each patient is spot checks (three a day at set local times, each a single
reading from a device or an SMS; people are late and sometimes forget) or a continuous stream (a
reading every 1–5 seconds, with gaps, and offline spells uploaded late).

One physiology for everything that simulates a patient: the clinical benchmark runs it through
the pure engine in bulk, the live fleet (`simulator.fleet`, `oximon simulate`, the demo) plays the
same readings out on the platform clock over MQTT. Time is seconds after START (a Monday, local
midnight in Oslo); a live run maps the platform's "now" onto that axis with `t_of`.

The numbers are plausible rather than fitted to a cohort; each is named below so a clinician
can argue with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from alerting.profile import CONTINUOUS, SPOT, Profile

OSLO = ZoneInfo("Europe/Oslo")
# Monday 23 November 2026, local midnight: no daylight-saving change for the next 16 weeks.
START = datetime(2026, 11, 23, tzinfo=OSLO).astimezone(UTC)
START_S = START.timestamp()
DAY_S = 86400.0

STABLE = "stable"
SLOW_DECLINE = "slow_decline"  # a fall of 8–12 points over about three days
FAST_FALL = "fast_fall"  # 8–14 points over 3–8 hours
SUDDEN = "sudden"  # 7–12 points within minutes (a clot, a plugged airway)
SILENT_HYPOXIA = "silent_hypoxia"  # 7–12 points over 12–36 hours, pulse unchanged
DETERIORATIONS = (SLOW_DECLINE, FAST_FALL, SUDDEN, SILENT_HYPOXIA)
# A fast fall (8–14 points over 3–8 hours) treated 2–6 hours after it reaches its lowest, then
# back to baseline over 6–24 hours (oxygen, antibiotics). Not in DETERIORATIONS: the clinical
# benchmark's population is unchanged by it; ask for it with `patterns=`.
RECOVERY = "recovery"
PATTERNS = (*DETERIORATIONS, RECOVERY)

STREAM_PERIOD_S = 4.0  # a continuous oximeter reports every 4 s (the default; 1–5 s live)
SPOT_TIMES_H = (8.0, 14.0, 20.0)  # local times of the three daily spot checks
SPOT_ON_TIME = 0.94  # share of scheduled spot checks taken near the time; the rest forgotten
SPOT_LATE_MIN = (5.0, 20.0, -45.0, 55.0)  # lateness: mean, sd, clipped to [lo, hi] minutes
SLEEP_H = (23.0, 7.0)  # local hours asleep


@dataclass
class SimReading:
    """One reading as ingest would hand it to the engine: when measured, when received."""

    t_s: float
    received_s: float
    spo2_pct: int
    pulse_bpm: int
    quality: str
    pi_pct: float | None


@dataclass
class Patient:
    """One synthetic patient and the ground truth of their physiology."""

    patient_id: int
    scenario: str
    mode: str
    copd: bool
    days: float
    baseline_spo2_pct: float
    baseline_pulse_bpm: float
    sleep_drop_pct: float
    apnoea_per_h: float  # brief true dips in sleep
    reports_pi: bool
    onset_s: float | None = None  # seconds after START when true desaturation starts
    fall_pct: float = 0.0
    fall_s: float = 0.0
    pulse_per_pct: float = 2.0  # compensatory rise in pulse per point of SpO2 lost
    seed: int = 0
    period_s: float = STREAM_PERIOD_S  # seconds between stream readings
    recover_s: float | None = None  # seconds after START when treatment starts to work
    recover_over_s: float = 0.0  # how long the way back to baseline takes
    _wander: np.ndarray = field(default_factory=lambda: np.zeros(1), repr=False)

    WANDER_STEP_S = 300.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed + 7919)
        # Slow wander of the true SpO2: Ornstein–Uhlenbeck, sd 0.4 points, time constant 2 h.
        n = int(self.days * DAY_S / self.WANDER_STEP_S) + 2
        a = math.exp(-self.WANDER_STEP_S / 7200.0)
        eps = rng.normal(0.0, 0.4 * math.sqrt(1 - a * a), n)
        w = np.empty(n)
        w[0] = rng.normal(0.0, 0.4)
        for i in range(1, n):
            w[i] = a * w[i - 1] + eps[i]
        self._wander = w

    def profile(self) -> Profile:
        if self.copd:
            # Prescribed target 88–92% (BTS; NEWS2 scale 2): 86–87% amber, 85% and below red.
            return Profile.for_target_range(88, 92, mode=self.mode)
        return Profile(mode=self.mode)

    @property
    def red_level_pct(self) -> float:
        """The true SpO2 at which readings start rounding into the red band."""
        return self.profile().spo2_red_max_pct + 0.5

    def asleep(self, t_s: np.ndarray) -> np.ndarray:
        hour = ((t_s + _utc_offset_s()) % DAY_S) / 3600.0
        return (hour >= SLEEP_H[0]) | (hour < SLEEP_H[1])

    def lost_pct(self, t_s: np.ndarray) -> np.ndarray:
        """Points of SpO2 lost to deterioration at each time (0 before onset)."""
        if self.onset_s is None:
            return np.zeros_like(t_s)
        x = np.clip((t_s - self.onset_s) / max(self.fall_s, 1.0), 0.0, 1.0)
        if self.recover_s is not None:
            back = np.clip((t_s - self.recover_s) / max(self.recover_over_s, 1.0), 0.0, 1.0)
            x = x * (1.0 - back)
        return self.fall_pct * x

    def true_spo2(self, t_s: np.ndarray) -> np.ndarray:
        wander = np.interp(t_s / self.WANDER_STEP_S, np.arange(len(self._wander)), self._wander)
        sleep = np.where(self.asleep(t_s), self.sleep_drop_pct, 0.0)
        return self.baseline_spo2_pct + wander - sleep - self.lost_pct(t_s)

    def red_cross_s(self) -> float | None:
        """Ground truth: when the true SpO2 first reaches the red band after onset."""
        if self.onset_s is None:
            return None
        t = np.arange(self.onset_s, self.days * DAY_S, 30.0)
        below = np.nonzero(self.true_spo2(t) <= self.red_level_pct)[0]
        return float(t[below[0]]) if len(below) else None

    def recovered_s(self) -> float | None:
        """Ground truth: when the true SpO2 is back above the red band after treatment."""
        if self.recover_s is None:
            return None
        t = np.arange(self.recover_s, self.days * DAY_S, 30.0)
        above = np.nonzero(self.true_spo2(t) > self.red_level_pct)[0]
        return float(t[above[0]]) if len(above) else None

    def ground_truth(self) -> dict[str, object]:
        """What truly happened to this patient, for a benchmark to score alerts against.
        Times are seconds after START (None: it never happened in the run)."""
        nadir: float | None = None
        if self.onset_s is not None:
            t = np.arange(self.onset_s, self.days * DAY_S, 30.0)
            nadir = round(float(self.true_spo2(t).min()), 1) if len(t) else None
        return {
            "pattern": self.scenario,
            "mode": self.mode,
            "copd": self.copd,
            "baseline_spo2_pct": round(self.baseline_spo2_pct, 1),
            "baseline_pulse_bpm": round(self.baseline_pulse_bpm, 1),
            "red_max_pct": self.profile().spo2_red_max_pct,
            "onset_s": self.onset_s,
            "fall_pct": round(self.fall_pct, 2),
            "fall_s": self.fall_s,
            "nadir_true_spo2_pct": nadir,
            "red_cross_s": self.red_cross_s(),
            "recover_s": self.recover_s,
            "recovered_s": self.recovered_s(),
        }

    def true_pulse(self, t_s: np.ndarray) -> np.ndarray:
        sleep = np.where(self.asleep(t_s), 8.0, 0.0)
        rise = 0.0 if self.scenario == SILENT_HYPOXIA else self.pulse_per_pct
        return self.baseline_pulse_bpm - sleep + rise * self.lost_pct(t_s)


def _utc_offset_s() -> float:
    offset = START.astimezone(OSLO).utcoffset()
    return offset.total_seconds() if offset else 0.0


def sample_population(
    stable: int,
    deteriorating: int,
    days: float,
    seed: int,
    continuous_share: float = 0.3,
    patterns: Sequence[str] = DETERIORATIONS,
) -> list[Patient]:
    """`stable` patients for `days` days and `deteriorating` ones, each pattern in turn, spot
    and continuous alternating after each round of patterns."""
    rng = np.random.default_rng(seed)
    unknown = set(patterns) - set(PATTERNS)
    if unknown or not patterns:
        raise ValueError(f"unknown deterioration pattern(s) {sorted(unknown)}; known: {PATTERNS}")
    k = len(patterns)
    out: list[Patient] = []
    pid = 0
    for i in range(stable + deteriorating):
        pid += 1
        deteriorating_one = i >= stable
        scenario = patterns[(i - stable) % k] if deteriorating_one else STABLE
        if deteriorating_one:
            mode = CONTINUOUS if ((i - stable) // k) % 2 else SPOT
        else:
            mode = CONTINUOUS if rng.random() < continuous_share else SPOT
        copd = bool(rng.random() < 0.2)
        base = float(rng.uniform(89.0, 92.5) if copd else rng.uniform(95.5, 98.5))
        onset_s: float | None = None
        fall_pct = fall_s = 0.0
        recover_s: float | None = None
        recover_over_s = 0.0
        span_days = days
        if deteriorating_one:
            # Three to five ordinary days first, so the personal baseline is known; the run
            # ends a day and a half after the fall is complete.
            onset_s = float(rng.uniform(3.0, 5.0) * DAY_S)
            if scenario == SLOW_DECLINE:
                fall_pct, fall_s = float(rng.uniform(8, 12)), 3 * DAY_S
            elif scenario == FAST_FALL:
                fall_pct, fall_s = float(rng.uniform(8, 14)), float(rng.uniform(3, 8)) * 3600
            elif scenario == SUDDEN:
                fall_pct, fall_s = float(rng.uniform(7, 12)), float(rng.uniform(2, 10)) * 60
            elif scenario == SILENT_HYPOXIA:
                fall_pct, fall_s = float(rng.uniform(7, 12)), float(rng.uniform(12, 36)) * 3600
            else:  # RECOVERY
                fall_pct, fall_s = float(rng.uniform(8, 14)), float(rng.uniform(3, 8)) * 3600
                recover_s = onset_s + fall_s + float(rng.uniform(2, 6)) * 3600
                recover_over_s = float(rng.uniform(6, 24)) * 3600
            end_s = onset_s + fall_s if recover_s is None else recover_s + recover_over_s
            span_days = end_s / DAY_S + 1.5
        p = Patient(
            patient_id=pid,
            scenario=scenario,
            mode=mode,
            copd=copd,
            days=span_days,
            baseline_spo2_pct=base,
            baseline_pulse_bpm=float(rng.uniform(58.0, 88.0)),
            sleep_drop_pct=float(rng.uniform(0.5, 1.5)),
            apnoea_per_h=float(rng.choice([0.0, 0.0, 2.0, 6.0])),
            reports_pi=bool(rng.random() < 0.6),
            onset_s=onset_s,
            fall_pct=fall_pct,
            fall_s=fall_s,
            pulse_per_pct=float(rng.uniform(1.5, 3.0)),
            seed=int(rng.integers(1 << 31)),
            recover_s=recover_s,
            recover_over_s=recover_over_s,
        )
        out.append(p)
    return out


# --- spot checks ------------------------------------------------------------------------------


def spot_reading(p: Patient, rng: np.random.Generator, t_s: float) -> SimReading:
    """One spot check at `t_s`: the device's averaged value, or what the patient typed."""
    t = np.array([t_s])
    spo2 = float(p.true_spo2(t)[0]) + rng.normal(0.0, 0.8)
    pulse = float(p.true_pulse(t)[0]) + rng.normal(0.0, 4.0)
    if rng.random() < 0.15:  # just walked to fetch the oximeter
        pulse += rng.uniform(10.0, 25.0)
    pi: float | None = float(rng.lognormal(math.log(3.0), 0.5)) if p.reports_pi else None
    quality = "ok"
    u = rng.random()
    if u < 0.03:  # moving hand
        spo2 -= rng.uniform(2.0, 10.0)
        pulse += rng.uniform(-15.0, 30.0)
        quality = "motion" if rng.random() < 0.85 else "ok"
    elif u < 0.09:  # cold hands (Norwegian winter)
        spo2 -= rng.uniform(0.0, 4.0)
        pi = float(rng.uniform(0.1, 0.5)) if p.reports_pi else None
        quality = "low_perfusion" if rng.random() < 0.6 else "ok"
    elif u < 0.10:  # finger not in the clip
        spo2 = rng.uniform(0.0, 60.0)
        pulse = rng.uniform(0.0, 200.0)
        quality = "no_finger"
    elif u < 0.115:  # an error nobody flagged (nail polish, a typo in the SMS)
        spo2 -= rng.uniform(2.0, 6.0)
    return SimReading(
        t_s, t_s, _pct(spo2), _bpm(pulse), quality, None if pi is None else round(pi, 1)
    )


def spot_times(p: Patient, rng: np.random.Generator, from_s: float = 0.0) -> Iterator[float]:
    """When the patient actually measures: near each scheduled slot, mostly a little late
    (SPOT_LATE_MIN), and now and then not at all (1 - SPOT_ON_TIME), from `from_s` on."""
    mean, sd, lo, hi = SPOT_LATE_MIN
    for slot in spot_slots(p):
        on_time = rng.random() < SPOT_ON_TIME
        t = slot + float(np.clip(rng.normal(mean, sd), lo, hi)) * 60.0
        if on_time and from_s <= t < p.days * DAY_S:
            yield t


def spot_slots(p: Patient) -> Iterator[float]:
    """The scheduled local times of the spot checks, as seconds after START."""
    offset = _utc_offset_s()
    day = 0
    while day < p.days + 1:
        for h in SPOT_TIMES_H:
            t = day * DAY_S + h * 3600.0 - offset
            if 0.0 <= t < p.days * DAY_S:
                yield t
        day += 1


# --- continuous streams -----------------------------------------------------------------------


@dataclass
class StreamChunk:
    """One day of a stream: readings in measured order, and the spells the device was away."""

    readings: list[SimReading]
    offline: list[tuple[float, float]]  # (from, to) seconds after START: stored, sent late
    gaps: list[tuple[float, float]]  # oximeter off the finger: nothing sent


def stream_day(p: Patient, rng: np.random.Generator, day: int) -> StreamChunk:
    """Readings every `p.period_s` for one day, with artefacts and gaps."""
    a = day * DAY_S
    b = min((day + 1) * DAY_S, p.days * DAY_S)
    return stream_window(p, rng, a, b, offline_chance=0.25)


def stream_window(
    p: Patient, rng: np.random.Generator, a: float, b: float, offline_chance: float | None = None
) -> StreamChunk:
    """Readings every `p.period_s` from `a` to `b` (seconds after START), with artefacts, gaps
    and at most one offline spell (by default a chance of a quarter a day, pro rata)."""
    t = np.arange(a, b, p.period_s)
    n = len(t)
    asleep = p.asleep(t)
    spo2 = p.true_spo2(t)
    pulse = p.true_pulse(t)
    # Brief true dips in sleep (apnoea-like): 3–8 points, at most about 40 s below the start
    # level's red band, quality ok. Must not page.
    period = p.period_s
    for centre in _spaced(_events(rng, t, asleep, p.apnoea_per_h, period), 180.0):
        width = rng.uniform(6.0, 15.0)
        spo2 -= rng.uniform(3.0, 8.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    # Activity bursts while awake: pulse up 10–35/min for 2–10 min.
    for start in _spaced(_events(rng, t, ~asleep, 1.0, period), 600.0):
        active = (t >= start) & (t < start + rng.uniform(120.0, 600.0))
        pulse[active] += rng.uniform(10.0, 35.0)
    # Device noise: correlated over a few readings (the oximeter averages), sd 0.6 points.
    spo2 = spo2 + _ar1(rng, n, 0.6, 0.7)
    pulse = pulse + _ar1(rng, n, 2.0, 0.8)
    quality = np.full(n, "ok", dtype=object)
    pi = rng.lognormal(math.log(3.0), 0.4, n) if p.reports_pi else None
    # Movement: about 1.5 episodes an hour awake, 5–120 s; SpO2 falls away, pulse jumps;
    # the device flags 85% of those readings, the rest pass as "ok".
    for start in _events(rng, t, ~asleep, 1.5, period):
        span = np.nonzero((t >= start) & (t < start + rng.lognormal(math.log(20.0), 0.8)))[0]
        if len(span) == 0:
            continue
        spo2[span] -= rng.uniform(1.0, 12.0, len(span))
        pulse[span] += rng.normal(10.0, 20.0, len(span))
        flagged = span[rng.random(len(span)) < 0.85]
        quality[flagged] = "motion"
    # Cold hands: about once a day awake, 5–40 min; readings a little low, perfusion index low;
    # half flagged low_perfusion by the device.
    for start in _events(rng, t, ~asleep, 1.0 / 16.0, period):
        span = np.nonzero((t >= start) & (t < start + rng.uniform(300.0, 2400.0)))[0]
        spo2[span] -= rng.uniform(0.5, 3.0)
        if pi is not None:
            pi[span] = rng.uniform(0.1, 0.45, len(span))
        flagged = span[rng.random(len(span)) < 0.5]
        quality[flagged] = "low_perfusion"
    # Off the finger once a day (washing, dressing): 10–45 min with nothing sent, preceded by
    # a few no_finger readings of nonsense.
    gaps: list[tuple[float, float]] = []
    keep = np.ones(n, dtype=bool)
    for start in _events(rng, t, ~asleep, 1.0 / 16.0, period):
        end = start + rng.uniform(600.0, 2700.0)
        gaps.append((start, end))
        keep &= ~((t >= start) & (t < end))
        edge = np.nonzero((t >= start - 20.0) & (t < start))[0]
        quality[edge] = "no_finger"
        spo2[edge] = rng.uniform(0.0, 70.0, len(edge))
    # Offline (home Wi-Fi down) about every fourth day for 1–4 h: stored, uploaded on return.
    offline: list[tuple[float, float]] = []
    chance = 0.25 * (b - a) / DAY_S if offline_chance is None else offline_chance
    if rng.random() < chance:
        start = float(rng.uniform(a, b))
        offline.append((start, min(start + rng.uniform(3600.0, 4 * 3600.0), b)))
    received = t.copy()
    for lo, hi in offline:
        received[(t >= lo) & (t < hi)] = hi
    out = []
    spo2_i = np.clip(np.rint(spo2), 0, 100).astype(int)
    pulse_i = np.clip(np.rint(pulse), 25, 250).astype(int)
    for i in np.nonzero(keep)[0]:
        out.append(
            SimReading(
                float(t[i]),
                float(received[i]),
                int(spo2_i[i]),
                int(pulse_i[i]),
                str(quality[i]),
                None if pi is None else round(float(pi[i]), 1),
            )
        )
    return StreamChunk(out, offline, gaps)


def _events(
    rng: np.random.Generator,
    t: np.ndarray,
    allowed: np.ndarray,
    per_h: float,
    period_s: float = STREAM_PERIOD_S,
) -> list[float]:
    """Start times of a Poisson process at `per_h` an hour, over the allowed readings."""
    if per_h <= 0 or len(t) == 0:
        return []
    hours = allowed.sum() * period_s / 3600.0
    k = rng.poisson(per_h * hours)
    candidates = t[allowed]
    if k == 0 or len(candidates) == 0:
        return []
    return [float(x) for x in rng.choice(candidates, size=k)]


def _spaced(times: list[float], min_gap_s: float) -> list[float]:
    """Keep events at least `min_gap_s` apart (two dips run together are one long dip)."""
    out: list[float] = []
    for x in sorted(times):
        if not out or x - out[-1] >= min_gap_s:
            out.append(x)
    return out


def _ar1(rng: np.random.Generator, n: int, sd: float, a: float) -> np.ndarray:
    eps = rng.normal(0.0, sd * math.sqrt(1 - a * a), n)
    out = np.empty(n)
    acc = rng.normal(0.0, sd)
    for i in range(n):  # n is a day of readings; a plain loop is fast enough here
        acc = a * acc + eps[i]
        out[i] = acc
    return out


def _pct(x: float) -> int:
    return int(min(100, max(0, round(x))))


def _bpm(x: float) -> int:
    return int(min(250, max(25, round(x))))


def at(t_s: float) -> datetime:
    """Seconds after START as an aware UTC datetime."""
    return START + timedelta(seconds=t_s)


def t_of(instant: datetime) -> float:
    """An aware instant as seconds after START (the inverse of `at`)."""
    return (instant - START).total_seconds()
