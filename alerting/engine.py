"""The per-patient clinical engine: bands, re-checks, sustained streams, trend. Pure.

    state, decisions = evaluate(state, reading, profile, now)

No database, no clock, no I/O: `now` is passed in (the platform clock at the edge) and is used
only to say how old a late reading is. `Engine` keeps a dict of states for the ingest worker,
and `rebuild` makes one from the last week of readings after a restart.

For speed `evaluate` updates the state it is given and returns it (the caller hands the state
over and keeps the returned one), and the common case — a normal, good reading — touches a few
attributes and allocates nothing but its result list. numpy runs only when a trend point is
complete: every good spot check, or every 5-minute bucket of a stream.

The rules (defaults and sources in `alerting.profile`):

* Bands. SpO2 at or below `spo2_red_max_pct` is red, at or below `spo2_amber_max_pct` amber;
  pulse at or below `pulse_red_min_bpm` or at or above `pulse_red_max_bpm` is red. NEWS2's
  graded pulse bands (41–50, 91–130/min) are named in SpO2 reasons and counted, and raise amber
  pulse alerts only where `pulse_amber_alerts` is set.
* Quality. A reading flagged motion/no_finger/low_perfusion, with a perfusion index under
  `pi_min_pct`, or with impossible values is counted and kept out of every clinical rule (it
  can never raise red); many of them raise an amber `bad_quality`.
* Spot checks (mode "spot"). A red reading raises red at once with `recheck=True` (ask the
  patient to measure again); a second low reading at least `confirm_min_gap_s` and at most
  `confirm_window_s` later confirms it (`confirmed=True`). Amber the same way.
* Streams (mode "continuous"). SpO2 red only after `sustain_red_s` of good readings in the red
  band, amber after `sustain_amber_s` in the amber band or below; pulse after `sustain_pulse_s`.
  A flagged reading counts against a run in progress. Such a decision is `confirmed`. Once the
  stream's personal baseline is known, amber also needs the run's recent level
  `stream_amber_margin_pct` below the patient's usual for the local hour (`_below_usual`): a
  patient who sleeps at 93–94% is not amber every night. Red never waits for that.
* Trend (kind "trend", amber). A personal baseline; amber when the recent level sits
  `trend_drop_pct` or more below it, or when the fitted slope reaches the red band within
  `trend_horizon_s` (the reason says when).
* Late readings (flag `late`, store-and-forward) feed the trend and the counts and run the same
  rules on a separate history state; what they raise is marked `history=True`, capped at amber
  and its reason starts "late upload": the record shows it, nobody is paged about an old state.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from alerting import trend
from alerting.health import bad_quality
from alerting.profile import (
    BAD_QUALITY_MIN_READINGS,
    BAD_QUALITY_SHARE,
    BAD_QUALITY_SPOT_RUN,
    BAD_QUALITY_WINDOW_S,
    BASELINE_MIN_POINTS,
    CONTINUOUS,
    DEFAULT_PROFILE,
    PULSE_PLAUSIBLE_MAX_BPM,
    PULSE_PLAUSIBLE_MIN_BPM,
    SPO2_PLAUSIBLE_MIN_PCT,
    TREND_BUCKET_S,
    Profile,
)
from alerting.rules import Decision, Reading

NORMAL, AMBER, RED = 0, 1, 2
GOOD = "ok"
# Points of a stream's bucket needed for its median to count as a trend point.
BUCKET_MIN_READINGS = 3
# The baseline is recomputed at most this often (it moves by the day, not the minute).
BASELINE_EVERY_S = 3600.0
# A stream run's recent level averages good readings over about this long.
LEVEL_TAU_S = 300.0
_SPOT_BITS = (1 << BAD_QUALITY_SPOT_RUN) - 1
_NO_TIME = -math.inf


@dataclass(slots=True)
class Run:
    """A condition holding in a stream: good readings inside one band since `start_s`."""

    start_s: float = -1.0  # -1: no run
    last_s: float = 0.0  # the newest reading inside the band
    n_in: int = 0
    n_out: int = 0
    worst: int = 0  # the lowest SpO2 (or most extreme pulse) inside the run
    # The recent level while the run lasts: every good reading, in or just outside the band,
    # averaged over about `LEVEL_TAU_S` (a sleeper's 94–95% reads as about 94.3, not 94).
    level: float = 0.0
    level_s: float = 0.0


@dataclass(slots=True)
class Bands:
    """What the band rules remember: the previous spot check and the runs of a stream."""

    # Spot checks. A "measurement" is the readings within confirm_min_gap_s of its first one
    # (a device may send a short burst); it keeps its worst level.
    prev_s: float = _NO_TIME  # start of the previous measurement
    prev_level: int = NORMAL
    prev_spo2: int = 0
    prev_pulse_hi: int = NORMAL
    prev_pulse_lo: int = NORMAL
    cur_s: float = _NO_TIME  # start of the current measurement
    cur_level: int = NORMAL
    cur_spo2: int = 0
    cur_pulse_hi: int = NORMAL
    cur_pulse_lo: int = NORMAL
    cur_confirming: bool = False
    # Streams.
    spo2_amber: Run = field(default_factory=Run)
    spo2_red: Run = field(default_factory=Run)
    pulse_high: Run = field(default_factory=Run)
    pulse_high_amber: Run = field(default_factory=Run)
    pulse_low: Run = field(default_factory=Run)
    pulse_low_amber: Run = field(default_factory=Run)


@dataclass(slots=True)
class Bucket:
    """The good SpO2 values of one trend bucket of a stream."""

    index: int = -1
    values: list[int] = field(default_factory=list)


@dataclass(slots=True)
class PatientState:
    """Everything the engine remembers about one patient, in memory."""

    patient_id: int
    live: Bands = field(default_factory=Bands)
    history: Bands = field(default_factory=Bands)  # late readings run here, apart from live
    newest_s: float = _NO_TIME
    # Counts (shown on the dashboard and in the benchmark).
    readings: int = 0
    poor: int = 0
    poor_by_flag: dict[str, int] = field(default_factory=dict)
    late: int = 0
    pulse_graded: int = 0  # readings in NEWS2's graded pulse bands (41–50, 91–130/min)
    # Device health: the last few spot checks as bits (1 = flagged), or a stream's hour.
    quality_bits: int = 0
    quality_window: int = -1
    quality_window_n: int = 0
    quality_window_poor: int = 0
    quality_window_flags: dict[str, int] = field(default_factory=dict)
    # Trend points: times (Unix s) and SpO2 (%), sorted by time; 8 bytes a value (a week of a
    # stream is about 2,300 points, 37 kB).
    point_t: array[float] = field(default_factory=lambda: array("d"))
    point_v: array[float] = field(default_factory=lambda: array("d"))
    first_point_s: float = math.inf
    live_bucket: Bucket = field(default_factory=Bucket)
    late_bucket: Bucket = field(default_factory=Bucket)
    baseline_pct: float | None = None
    baseline_at_s: float = _NO_TIME
    # Streams: each local hour's usual offset from the baseline (asleep is lower), or None.
    diurnal: np.ndarray | None = None


def evaluate(
    state: PatientState | None, reading: Reading, profile: Profile, now: datetime
) -> tuple[PatientState, list[Decision]]:
    """The decisions one reading calls for, and the patient's state after it."""
    if state is None:
        state = PatientState(reading.patient_id)
    out: list[Decision] = []
    t = reading.time.timestamp()
    state.readings += 1
    late = reading.late
    if late:
        state.late += 1
    elif t > state.newest_s:
        state.newest_s = t
    spo2 = reading.spo2_pct
    pulse = reading.pulse_bpm
    flag = _quality_flag(reading, profile)
    if flag is not None:
        state.poor += 1
        state.poor_by_flag[flag] = state.poor_by_flag.get(flag, 0) + 1
    if not late:
        _device_quality(state, profile, t, flag, reading, out)
    if flag is not None:
        if profile.mode == CONTINUOUS:
            # A flagged reading is not evidence either way, but a run must be made of good
            # readings: it counts against any run in progress (see _step's tolerance).
            _interrupt(state.history if late else state.live, t, profile)
    else:
        if pulse >= profile.pulse_amber_max_bpm or pulse <= profile.pulse_amber_min_bpm:
            state.pulse_graded += 1
        bands = state.history if late else state.live
        if profile.mode == CONTINUOUS:
            _stream(state, bands, profile, t, spo2, pulse, reading, out)
        else:
            _spot(bands, profile, t, spo2, pulse, reading, out)
        if _add_point(state, profile, t, spo2, late):
            _assess_trend(state, profile, reading, out)
    if late and out:
        out = [_as_history(d, reading, now, profile) for d in out]
    return state, out


def observe_history(state: PatientState | None, reading: Reading, profile: Profile) -> PatientState:
    """Take an old reading into the counts and the trend only (no rules): `rebuild` uses it."""
    if state is None:
        state = PatientState(reading.patient_id)
    t = reading.time.timestamp()
    state.readings += 1
    if reading.late:
        state.late += 1
    if t > state.newest_s:
        state.newest_s = t
    flag = _quality_flag(reading, profile)
    if flag is not None:
        state.poor += 1
        state.poor_by_flag[flag] = state.poor_by_flag.get(flag, 0) + 1
    else:
        _add_point(state, profile, t, reading.spo2_pct, False)
    return state


# --- quality --------------------------------------------------------------------------------


def _quality_flag(reading: Reading, profile: Profile) -> str | None:
    """None for a reading the clinical rules may use; else why not."""
    if reading.quality != GOOD:
        return reading.quality
    pi = reading.pi_pct
    if pi is not None and pi < profile.pi_min_pct:
        return "low_pi"
    if (
        reading.spo2_pct < SPO2_PLAUSIBLE_MIN_PCT
        or reading.spo2_pct > 100
        or not PULSE_PLAUSIBLE_MIN_BPM <= reading.pulse_bpm <= PULSE_PLAUSIBLE_MAX_BPM
    ):
        return "implausible"
    return None


def _device_quality(
    state: PatientState,
    profile: Profile,
    t: float,
    flag: str | None,
    reading: Reading,
    out: list[Decision],
) -> None:
    if profile.mode == CONTINUOUS:
        window = int(t // BAD_QUALITY_WINDOW_S)
        if window != state.quality_window:
            if window > state.quality_window >= 0:
                end = datetime.fromtimestamp((state.quality_window + 1) * BAD_QUALITY_WINDOW_S, UTC)
                d = bad_quality(
                    state.patient_id,
                    state.quality_window_poor,
                    state.quality_window_n,
                    reading.time,
                    state.quality_window_flags,
                    min_share=BAD_QUALITY_SHARE,
                    min_readings=BAD_QUALITY_MIN_READINGS,
                    span=f"the hour to {_local(end, profile.tz)}",
                )
                if d is not None:
                    out.append(d)
            if window > state.quality_window:
                state.quality_window = window
                state.quality_window_n = 0
                state.quality_window_poor = 0
                state.quality_window_flags = {}
            else:
                return  # out of order across a window boundary: leave the counts alone
        state.quality_window_n += 1
        if flag is not None:
            state.quality_window_poor += 1
            state.quality_window_flags[flag] = state.quality_window_flags.get(flag, 0) + 1
        return
    bits = ((state.quality_bits << 1) | (flag is not None)) & _SPOT_BITS
    state.quality_bits = bits
    if flag is not None and bits == _SPOT_BITS:
        d = bad_quality(
            state.patient_id,
            BAD_QUALITY_SPOT_RUN,
            BAD_QUALITY_SPOT_RUN,
            reading.time,
            None,
            min_share=1.0,
            min_readings=BAD_QUALITY_SPOT_RUN,
            span=f"the last {BAD_QUALITY_SPOT_RUN} spot checks",
        )
        if d is not None:
            out.append(d)


# --- bands ----------------------------------------------------------------------------------


def _spo2_level(p: Profile, spo2: int) -> int:
    if spo2 <= p.spo2_red_max_pct:
        return RED
    if spo2 <= p.spo2_amber_max_pct:
        return AMBER
    return NORMAL


def _pulse_levels(p: Profile, pulse: int) -> tuple[int, int]:
    """(high, low): how far the pulse sits in the upper and the lower bands."""
    if pulse >= p.pulse_amber_max_bpm:
        return (RED if pulse >= p.pulse_red_max_bpm else AMBER), NORMAL
    if pulse <= p.pulse_amber_min_bpm:
        return NORMAL, (RED if pulse <= p.pulse_red_min_bpm else AMBER)
    return NORMAL, NORMAL


def band(profile: Profile, spo2_pct: int, pulse_bpm: int) -> str:
    """Where one good reading sits in the patient's own bands: normal, amber or red, as the
    rules above judge it (the graded pulse bands count only where `pulse_amber_alerts` is
    set). For telling a patient at once what their texted reading means."""
    level = _spo2_level(profile, spo2_pct)
    hi, lo = _pulse_levels(profile, pulse_bpm)
    for pulse_level in (hi, lo):
        if pulse_level == RED or profile.pulse_amber_alerts:
            level = max(level, pulse_level)
    return ("normal", "amber", "red")[level]


def _spot(
    b: Bands, p: Profile, t: float, spo2: int, pulse: int, r: Reading, out: list[Decision]
) -> None:
    level = _spo2_level(p, spo2)
    hi, lo = _pulse_levels(p, pulse)
    if b.cur_s <= t < b.cur_s + p.confirm_min_gap_s:
        # Part of the measurement in hand (a burst): it keeps its worst, and its confirmation.
        b.cur_level = max(b.cur_level, level)
        b.cur_spo2 = min(b.cur_spo2, spo2)
        b.cur_pulse_hi = max(b.cur_pulse_hi, hi)
        b.cur_pulse_lo = max(b.cur_pulse_lo, lo)
    elif t >= b.cur_s:
        b.prev_s, b.prev_level, b.prev_spo2 = b.cur_s, b.cur_level, b.cur_spo2
        b.prev_pulse_hi, b.prev_pulse_lo = b.cur_pulse_hi, b.cur_pulse_lo
        b.cur_s, b.cur_level, b.cur_spo2 = t, level, spo2
        b.cur_pulse_hi, b.cur_pulse_lo = hi, lo
        b.cur_confirming = t - b.prev_s <= p.confirm_window_s
    # else: older than the measurement in hand (out of order): judged alone, remembered nowhere.
    confirming = b.cur_confirming and b.cur_s <= t
    if level:
        confirmed = confirming and b.prev_level >= level
        out.append(
            Decision(
                r.patient_id,
                "spo2_low",
                "red" if level == RED else "amber",
                spo2,
                r.time,
                _spot_spo2_reason(p, level, spo2, pulse, confirmed, b),
                recheck=not confirmed,
                confirmed=confirmed,
            )
        )
    for kind, lvl, prev in (
        ("pulse_high", hi, b.prev_pulse_hi),
        ("pulse_low", lo, b.prev_pulse_lo),
    ):
        if lvl == RED or (lvl == AMBER and p.pulse_amber_alerts):
            confirmed = confirming and prev >= lvl
            out.append(
                Decision(
                    r.patient_id,
                    kind,
                    "red" if lvl == RED else "amber",
                    pulse,
                    r.time,
                    _pulse_reason(p, kind, lvl, pulse, None if confirmed else "recheck"),
                    recheck=not confirmed,
                    confirmed=confirmed,
                )
            )


def _step(run: Run, t: float, inside: bool, value: int, low_is_worse: bool, p: Profile) -> None:
    """Advance a run by one good reading of a stream."""
    if inside:
        if run.start_s < 0 or t - run.last_s > p.sustain_gap_s:
            run.start_s, run.last_s, run.n_in, run.n_out, run.worst = t, t, 1, 0, value
            run.level, run.level_s = value, t
            return
        _level(run, t, value)
        if t > run.last_s:
            run.last_s = t
        run.n_in += 1
        if (value < run.worst) if low_is_worse else (value > run.worst):
            run.worst = value
    elif run.start_s >= 0:
        run.n_out += 1
        if run.n_out > run.n_in * p.sustain_tolerance or t - run.last_s > p.sustain_gap_s:
            run.start_s = -1.0
        elif value:
            _level(run, t, value)


def _level(run: Run, t: float, value: int) -> None:
    if t > run.level_s:
        run.level += (value - run.level) * min(1.0, (t - run.level_s) / LEVEL_TAU_S)
        run.level_s = t


def _interrupt(b: Bands, t: float, p: Profile) -> None:
    for run in (
        b.spo2_amber,
        b.spo2_red,
        b.pulse_high,
        b.pulse_high_amber,
        b.pulse_low,
        b.pulse_low_amber,
    ):
        if run.start_s >= 0:
            _step(run, t, False, 0, True, p)


def _held(run: Run, sustain_s: float, p: Profile) -> bool:
    return (
        run.start_s >= 0
        and run.last_s - run.start_s >= sustain_s
        and run.n_in >= p.sustain_min_readings
    )


def _stream(
    state: PatientState,
    b: Bands,
    p: Profile,
    t: float,
    spo2: int,
    pulse: int,
    r: Reading,
    out: list[Decision],
) -> None:
    level = _spo2_level(p, spo2)
    amber = b.spo2_amber
    if level or amber.start_s >= 0:
        _step(amber, t, level >= AMBER, spo2, True, p)
        red = b.spo2_red
        if level == RED or red.start_s >= 0:
            _step(red, t, level == RED, spo2, True, p)
        if level == RED and _held(red, p.sustain_red_s, p):
            out.append(
                Decision(
                    r.patient_id,
                    "spo2_low",
                    "red",
                    spo2,
                    r.time,
                    f"SpO2 has stayed at or below {p.spo2_red_max_pct}% (the red threshold) for "
                    f"{_seconds(red.last_s - red.start_s)} of good-quality readings, now {spo2}% "
                    f"(lowest {red.worst}%){_pulse_note(p, pulse)}: urgent assessment",
                    confirmed=True,
                )
            )
        elif level >= AMBER and _held(amber, p.sustain_amber_s, p):
            note = _below_usual(state, p, t, amber)
            if note is not None:
                out.append(
                    Decision(
                        r.patient_id,
                        "spo2_low",
                        "amber",
                        spo2,
                        r.time,
                        f"SpO2 has stayed at or below {p.spo2_amber_max_pct}%{_target_note(p)} "
                        f"for {_seconds(amber.last_s - amber.start_s)} of good-quality readings"
                        f"{note}, now {spo2}%{_pulse_note(p, pulse)}: clinical review",
                        confirmed=True,
                    )
                )
    if p.pulse_amber_min_bpm < pulse < p.pulse_amber_max_bpm:
        # The common case: a normal pulse ends nothing unless a pulse run is in progress.
        if b.pulse_high.start_s < 0 and b.pulse_low.start_s < 0:
            if not p.pulse_amber_alerts or (
                b.pulse_high_amber.start_s < 0 and b.pulse_low_amber.start_s < 0
            ):
                return
    hi, lo = _pulse_levels(p, pulse)
    _pulse_stream(b.pulse_high, b.pulse_high_amber, "pulse_high", hi, p, t, pulse, r, out)
    _pulse_stream(b.pulse_low, b.pulse_low_amber, "pulse_low", lo, p, t, pulse, r, out)


def _below_usual(state: PatientState, p: Profile, t: float, run: Run) -> str | None:
    """Whether a sustained amber run of a stream is news: the words for its reason, or None
    when it is not.

    Before the stream's personal baseline is known (its first 48 h), or with the rule off for
    the patient (`stream_amber_margin_pct` None), the amber band alone decides (""). After,
    the run's recent level must also sit `stream_amber_margin_pct` or more below this
    patient's usual for the local hour (baseline plus the hour's offset, within ±2 points):
    someone who sleeps at 93–94% every night is not amber every night, while the same level
    in someone whose nights are at 96% is.
    """
    margin = p.stream_amber_margin_pct
    if margin is None or state.diurnal is None or state.baseline_pct is None:
        return ""
    hour = int((t + _utc_offset_s(t, p.tz)) // 3600.0 % 24)
    usual = state.baseline_pct + float(state.diurnal[hour])
    if run.level > usual - margin:
        return None
    return (
        f", about {run.level:.0f}% lately, {usual - run.level:.0f} points below this "
        f"patient's usual for the time of day ({usual:.0f}%)"
    )


def _pulse_stream(
    run_red: Run,
    run_amber: Run,
    kind: str,
    lvl: int,
    p: Profile,
    t: float,
    pulse: int,
    r: Reading,
    out: list[Decision],
) -> None:
    low_is_worse = kind == "pulse_low"
    if lvl == RED or run_red.start_s >= 0:
        _step(run_red, t, lvl == RED, pulse, low_is_worse, p)
    if p.pulse_amber_alerts and (lvl or run_amber.start_s >= 0):
        _step(run_amber, t, lvl >= AMBER, pulse, low_is_worse, p)
    if lvl == RED and _held(run_red, p.sustain_pulse_s, p):
        held = _seconds(run_red.last_s - run_red.start_s)
        out.append(
            Decision(
                r.patient_id,
                kind,
                "red",
                pulse,
                r.time,
                _pulse_reason(p, kind, RED, pulse, f"for {held} of good-quality readings"),
                confirmed=True,
            )
        )
    elif p.pulse_amber_alerts and lvl >= AMBER and _held(run_amber, p.sustain_pulse_s, p):
        held = _seconds(run_amber.last_s - run_amber.start_s)
        out.append(
            Decision(
                r.patient_id,
                kind,
                "amber",
                pulse,
                r.time,
                _pulse_reason(p, kind, AMBER, pulse, f"for {held} of good-quality readings"),
                confirmed=True,
            )
        )


# --- trend ----------------------------------------------------------------------------------


def _add_point(state: PatientState, p: Profile, t: float, spo2: int, late: bool) -> bool:
    """Take a good SpO2 into the trend points; True when a new point is complete."""
    if p.mode != CONTINUOUS:
        _insert_point(state, t, float(spo2))
        return True
    bucket = state.late_bucket if late else state.live_bucket
    index = int(t // TREND_BUCKET_S)
    if index == bucket.index:
        bucket.values.append(spo2)
        return False
    done = False
    if len(bucket.values) >= BUCKET_MIN_READINGS:
        values = sorted(bucket.values)
        n = len(values)
        median = (values[(n - 1) // 2] + values[n // 2]) / 2.0
        _insert_point(state, (bucket.index + 1) * TREND_BUCKET_S, median)
        done = True
    bucket.index = index
    bucket.values = [spo2]
    return done


def _insert_point(state: PatientState, t: float, v: float) -> None:
    ts, vs = state.point_t, state.point_v
    if not ts or t >= ts[-1]:
        ts.append(t)
        vs.append(v)
    else:
        i = bisect.bisect_right(ts, t)
        ts.insert(i, t)
        vs.insert(i, v)
        state.baseline_at_s = _NO_TIME  # history changed under the baseline
    if t < state.first_point_s:
        state.first_point_s = t


def _assess_trend(state: PatientState, p: Profile, r: Reading, out: list[Decision]) -> None:
    ts, vs = state.point_t, state.point_v
    keep_s = p.baseline_window_s + p.baseline_lag_s
    cut = bisect.bisect_left(ts, ts[-1] - keep_s)
    if cut:
        del ts[:cut]
        del vs[:cut]
    at_s = ts[-1]
    stream = p.mode == CONTINUOUS
    w = trend.CONTINUOUS_WINDOWS if stream else trend.SPOT_WINDOWS
    offset_s = _utc_offset_s(at_s, p.tz)
    if at_s - state.baseline_at_s >= BASELINE_EVERY_S:
        # Hourly at most: the whole week of points.
        span = trend.baseline_span(
            state.first_point_s, at_s, p.baseline_initial_s, p.baseline_window_s, p.baseline_lag_s
        )
        min_points = max(w.baseline_min_points, BASELINE_MIN_POINTS)
        baseline = None
        state.diurnal = None
        if span is not None:
            t_all = np.frombuffer(ts, dtype=np.float64)
            v_all = np.frombuffer(vs, dtype=np.float64)
            baseline = trend.personal_baseline(t_all, v_all, span, min_points)
            if stream and baseline is not None:
                state.diurnal = trend.diurnal_profile(t_all, v_all, span, offset_s, baseline, 6)
        state.baseline_pct = baseline
        state.baseline_at_s = at_s
    baseline = state.baseline_pct
    # Every new point: only the recent window the rules look at.
    tail = bisect.bisect_left(ts, at_s - max(w.slope_window_s, w.drop_window_s))
    tail = min(tail, max(0, len(ts) - w.drop_points))
    # Views, not copies: they must be gone before the arrays next grow (they are locals).
    t = np.frombuffer(ts, dtype=np.float64)[tail:]
    v = np.frombuffer(vs, dtype=np.float64)[tail:]
    raw_level = trend.recent_level(t, v, w.drop_points, w.drop_window_s)
    if state.diurnal is not None:
        # Judge each point against this patient's usual for its hour of the day.
        v = v - state.diurnal[trend.hour_of_day(t, offset_s)]
    level = trend.recent_level(t, v, w.drop_points, w.drop_window_s)
    # The drop rule speaks only while the level is still in the normal band: below it the
    # band rules have already raised spo2_low, and a second alert would say nothing new.
    dropped = (
        baseline is not None
        and level is not None
        and raw_level is not None
        and baseline - level >= p.trend_drop_pct
        and raw_level > p.spo2_amber_max_pct + 0.5
    )
    projected_s: float | None = None
    # A stream's slope needs the time-of-day profile (it comes with the baseline, after 48 h):
    # without it, falling asleep looks like a decline. Spot checks are taken awake.
    fit = None
    if state.diurnal is not None or not stream:
        fit = trend.fit_slope(t, v, w.slope_window_s, w.slope_min_points, w.slope_min_span_s)
    if fit is not None and fit.t_stat <= p.trend_slope_t_max:
        reference = baseline if baseline is not None else fit.first_pct
        if reference - fit.level_now_pct >= p.trend_slope_min_drop_pct:
            hours = trend.hours_to_reach(fit, p.spo2_red_max_pct + 0.5)
            if hours is not None and hours * 3600.0 <= p.trend_horizon_s:
                projected_s = at_s + hours * 3600.0
    if not dropped and projected_s is None:
        return
    parts = []
    value = raw_level if raw_level is not None else float(vs[-1])
    if projected_s is not None and fit is not None:
        per_day = -fit.slope_pct_per_h * 24.0
        projected = datetime.fromtimestamp(projected_s, UTC)
        parts.append(
            f"SpO2 is falling about {per_day:.1f} points a day ({fit.first_pct:.0f}% to "
            f"{fit.level_now_pct:.0f}% over {_seconds(fit.span_s)}); on this slope it reaches "
            f"the red band ({p.spo2_red_max_pct}% or below) around "
            f"{_local(projected, p.tz)}, in about {_seconds(projected_s - at_s)}"
        )
    if dropped and baseline is not None and level is not None:
        if stream:
            parts.append(
                f"SpO2 has sat around {value:.0f}% over the last "
                f"{_seconds(w.drop_points * TREND_BUCKET_S)}, {baseline - level:.0f} points below "
                f"this patient's usual for the time of day (baseline {baseline:.0f}%)"
            )
        else:
            parts.append(
                f"SpO2 has sat around {level:.0f}% over the last {w.drop_points} readings, "
                f"{baseline - level:.0f} points below this patient's baseline of {baseline:.0f}%"
            )
    out.append(
        Decision(
            r.patient_id,
            "trend",
            "amber",
            round(value, 1),
            r.time,
            "; ".join(parts) + ": clinical review",
            projected_at=None if projected_s is None else datetime.fromtimestamp(projected_s, UTC),
        )
    )


# --- words ----------------------------------------------------------------------------------


_ACTIONS = (": urgent assessment", ": clinical review")


def _as_history(d: Decision, r: Reading, now: datetime, p: Profile) -> Decision:
    delay = max(0.0, (now - r.time).total_seconds())
    what = d.reason
    for action in _ACTIONS:
        if what.endswith(action):
            what = what[: -len(action)]
    return Decision(
        d.patient_id,
        d.kind,
        "amber",
        d.value,
        d.at,
        f"Late upload, measured {_local(r.time, p.tz)} and received {_seconds(delay)} later: "
        f"{what}. History, nobody was paged: ask the patient how they are now",
        recheck=False,
        confirmed=d.confirmed,
        history=True,
        projected_at=d.projected_at,
    )


def _spot_spo2_reason(
    p: Profile, level: int, spo2: int, pulse: int, confirmed: bool, b: Bands
) -> str:
    if level == RED:
        band = f"at or below the red threshold ({p.spo2_red_max_pct}%)"
        action = "urgent assessment"
    else:
        band = f"in the amber band ({p.spo2_red_max_pct + 1}–{p.spo2_amber_max_pct}%)"
        action = "clinical review"
    note = _target_note(p) + _pulse_note(p, pulse)
    if confirmed:
        prev = datetime.fromtimestamp(b.prev_s, UTC)
        return (
            f"SpO2 {spo2}% {band}{note}, confirmed by the spot check before it "
            f"({b.prev_spo2}% at {_local(prev, p.tz)}): {action}"
        )
    return (
        f"SpO2 {spo2}% on a spot check is {band}{note}: ask the patient to rest for five "
        f"minutes, warm their hands and measure again; {action} if it is still low"
    )


def _pulse_reason(p: Profile, kind: str, level: int, pulse: int, how: str | None) -> str:
    if kind == "pulse_high":
        edge = p.pulse_red_max_bpm if level == RED else p.pulse_amber_max_bpm
        band = f"at or above {edge}/min"
    else:
        edge = p.pulse_red_min_bpm if level == RED else p.pulse_amber_min_bpm
        band = f"at or below {edge}/min"
    action = "urgent assessment" if level == RED else "clinical review"
    if how == "recheck":
        return (
            f"Pulse {pulse}/min is {band}: ask the patient to rest for five minutes and measure "
            f"again; {action} if it stays"
        )
    if how:
        return f"Pulse has stayed {band} {how}, now {pulse}/min: {action}"
    return f"Pulse {pulse}/min is {band}, confirmed by the spot check before it: {action}"


def _pulse_note(p: Profile, pulse: int) -> str:
    # NEWS2 grades 91–110 as 1 and 111–130 as 2; with the default bands the note says which.
    if p.pulse_amber_max_bpm <= pulse < p.pulse_red_max_bpm:
        return f"; pulse {pulse}/min is raised too"
    if p.pulse_red_min_bpm < pulse <= p.pulse_amber_min_bpm:
        return f"; pulse {pulse}/min is low too"
    return ""


def _target_note(p: Profile) -> str:
    if p.spo2_target_min_pct == DEFAULT_PROFILE.spo2_target_min_pct:
        return ""
    return f", below this patient's target range ({p.spo2_target_min_pct}–{p.spo2_target_max_pct}%)"


def _seconds(s: float) -> str:
    s = round(s)
    if s < 120:
        return f"{s} s"
    minutes = s // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


@lru_cache(maxsize=64)
def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _utc_offset_s(at_s: float, tz: str) -> float:
    offset = datetime.fromtimestamp(at_s, _zone(tz)).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def _local(at: datetime, tz: str) -> str:
    return at.astimezone(_zone(tz)).strftime("%a %d %b %H:%M")


# --- the engine -----------------------------------------------------------------------------


ProfileLookup = Mapping[int, Profile] | Callable[[int], Profile | None]


class Engine:
    """Per-patient state in memory, for one process. Not thread-safe: one writer thread."""

    def __init__(self, states: dict[int, PatientState] | None = None) -> None:
        self.states: dict[int, PatientState] = states if states is not None else {}

    def observe(self, reading: Reading, profile: Profile, now: datetime) -> list[Decision]:
        """The decisions one newly stored reading calls for (and remember it)."""
        states = self.states
        state, decisions = evaluate(states.get(reading.patient_id), reading, profile, now)
        states[reading.patient_id] = state
        return decisions

    def observe_all(
        self, readings: Iterable[tuple[Reading, Profile]], now: datetime
    ) -> list[Decision]:
        """A batch in order; the decisions of all of it (collapse with `rules.worst`)."""
        out: list[Decision] = []
        for reading, profile in readings:
            out += self.observe(reading, profile, now)
        return out

    def forget(self, patient_id: int) -> None:
        """A discharged patient: drop their state."""
        self.states.pop(patient_id, None)

    def reload(
        self,
        rows: Iterable[Sequence[Any] | Mapping[str, Any]],
        profiles: ProfileLookup,
        now: datetime,
        patient_ids: Iterable[int] = (),
    ) -> None:
        """Replace the state of `patient_ids` (and of every patient in `rows`) with one rebuilt
        from `rows` (as for `rebuild`, those patients only).

        For a transaction that rolled back after `observe`: the state had already moved on,
        and the broker will redeliver the batch, so re-read what was committed.
        """
        for patient_id in patient_ids:
            self.states.pop(patient_id, None)
        self.states.update(rebuild(rows, profiles, now).states)

    def state(self, patient_id: int) -> PatientState | None:
        return self.states.get(patient_id)

    @classmethod
    def rebuild(
        cls,
        rows: Iterable[Sequence[Any] | Mapping[str, Any]],
        profiles: ProfileLookup,
        now: datetime,
    ) -> Engine:
        return rebuild(rows, profiles, now)


def rebuild(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    profiles: ProfileLookup,
    now: datetime,
) -> Engine:
    """An engine as it would be had it seen these readings, without repeating any alert.

    `rows` as from `SELECT patient_id, time, spo2, pulse, quality, pi, late FROM readings
    WHERE time > now() - interval '7 days' ORDER BY patient_id, time` (tuples in that order, or
    dict rows). Rows older than what the band rules look back on (the confirmation window for
    spot checks, twice the amber sustain time for streams) only feed the counts and the trend;
    the rest run through `evaluate` and their decisions are dropped (their alerts are already
    in the database). `profiles` maps patient id to Profile (missing: the defaults).
    """
    lookup = profiles.get if isinstance(profiles, Mapping) else profiles
    engine = Engine()
    states = engine.states
    now_s = now.timestamp()
    current: int | None = None
    profile = DEFAULT_PROFILE
    replay_from_s = 0.0
    for row in rows:
        if isinstance(row, Mapping):
            patient_id, time, spo2, pulse = (
                row["patient_id"],
                row["time"],
                row["spo2"],
                row["pulse"],
            )
            quality, pi, late = row.get("quality"), row.get("pi"), row.get("late")
        else:
            patient_id, time, spo2, pulse, quality, pi, late = row[:7]
        if patient_id != current:
            current = patient_id
            profile = lookup(patient_id) or DEFAULT_PROFILE
            lookback_s = (
                2 * max(profile.sustain_amber_s, profile.sustain_red_s, profile.sustain_pulse_s)
                + TREND_BUCKET_S
                if profile.mode == CONTINUOUS
                else profile.confirm_window_s
            )
            replay_from_s = now_s - lookback_s
        reading = Reading(
            int(patient_id),
            time,
            int(spo2),
            int(pulse),
            quality or GOOD,
            bool(late),
            None if pi is None else float(pi),
        )
        state = states.get(reading.patient_id)
        if time.timestamp() < replay_from_s:
            states[reading.patient_id] = observe_history(state, reading, profile)
        else:
            states[reading.patient_id], _ = evaluate(state, reading, profile, now)
    return engine
