"""Trend arithmetic over a patient's recent SpO2 points, with numpy. Pure.

A point is one good-quality spot check, or the median of one bucket of a continuous stream
(see `alerting.engine`). Times are Unix seconds, values percent. The engine calls these only
when a new point arrives, so their cost is spread over every reading of the bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Whole-number readings carry at least this much noise (rounding alone gives 0.29 points);
# a perfectly straight run of integers must not look like a certain fall.
NOISE_FLOOR_PCT = 0.5
# The time-of-day correction of a stream is at most this many points either way.
MAX_DIURNAL_PCT = 2.0


@dataclass(frozen=True, slots=True)
class Windows:
    """How many points the trend rules look at; spot checks are sparse, streams are dense."""

    drop_points: int  # "several readings": the drop rule takes the median of this many
    drop_window_s: float  # ... all within this window
    slope_window_s: float  # the slope is fitted over this window
    slope_min_points: int
    slope_min_span_s: float
    baseline_min_points: int


# Spot checks, three a day: three readings (about a day) for a drop; a slope over the last
# 30 h (four or five checks: long enough to see through one odd reading, short enough that a
# fall which began yesterday is not averaged away by the flat days before it).
SPOT_WINDOWS = Windows(3, 36 * 3600.0, 30 * 3600.0, 4, 12 * 3600.0, 4)
# Streams, one point per 5 min: two hours for a drop; a slope over twelve hours (at least
# three). Shorter windows mistake falling asleep (SpO2 1–2 points lower) for a decline.
CONTINUOUS_WINDOWS = Windows(24, 2.5 * 3600.0, 12 * 3600.0, 36, 3 * 3600.0, 24)


@dataclass(frozen=True, slots=True)
class Fit:
    """A least-squares line through the recent points."""

    slope_pct_per_h: float
    t_stat: float  # slope / its standard error (noise floored)
    level_now_pct: float  # the line's value at the newest point
    first_pct: float  # the line's value at the oldest point of the window
    span_s: float
    points: int


def baseline_span(
    first_s: float, at_s: float, initial_s: float, window_s: float, lag_s: float
) -> tuple[float, float] | None:
    """The time window the personal baseline is taken from at `at_s`, or None if too early.

    The first `initial_s` (48 h) once that much has passed; from the day the rolling window
    stops overlapping it, the `window_s` (7 days) that ends `lag_s` (24 h) before `at_s`, so a
    decline now does not drag its own reference down.
    """
    if at_s < first_s + initial_s:
        return None
    end = at_s - lag_s
    if end <= first_s + initial_s:
        return first_s, first_s + initial_s
    return end - window_s, end


def personal_baseline(
    t: FloatArray, v: FloatArray, span: tuple[float, float], min_points: int
) -> float | None:
    """The patient's own usual SpO2: the median of the points within `span`."""
    a, b = np.searchsorted(t, span)
    if b - a < min_points:
        return None
    return float(np.median(v[a:b]))


def hour_of_day(t: FloatArray, utc_offset_s: float) -> npt.NDArray[np.intp]:
    return ((t + utc_offset_s) // 3600.0 % 24).astype(np.intp)


def diurnal_profile(
    t: FloatArray,
    v: FloatArray,
    span: tuple[float, float],
    utc_offset_s: float,
    baseline_pct: float,
    min_per_hour: int,
) -> FloatArray:
    """How far each local hour's median sits from the baseline, over the baseline window.

    Asleep, SpO2 runs a point or two lower; a stream's trend rules subtract this so falling
    asleep is not read as a decline. Hours with too few points get 0, and the profile is kept
    within ±MAX_DIURNAL_PCT so it can never explain away a real fall.
    """
    a, b = np.searchsorted(t, span)
    hours = hour_of_day(t[a:b], utc_offset_s)
    order = np.argsort(hours, kind="stable")
    hs = hours[order]
    vs = v[a:b][order]
    bounds = np.searchsorted(hs, np.arange(25))
    out = np.zeros(24)
    for h in range(24):
        lo, hi = bounds[h], bounds[h + 1]
        if hi - lo >= min_per_hour:
            out[h] = float(np.median(vs[lo:hi])) - baseline_pct
    return np.clip(out, -MAX_DIURNAL_PCT, MAX_DIURNAL_PCT)


def recent_level(t: FloatArray, v: FloatArray, n: int, window_s: float) -> float | None:
    """The median of the last `n` points, when all of them fall within `window_s`."""
    if len(v) < n or t[-1] - t[-n] > window_s:
        return None
    return float(np.median(v[-n:]))


def fit_slope(
    t: FloatArray, v: FloatArray, window_s: float, min_points: int, min_span_s: float
) -> Fit | None:
    """Least squares over the points of the last `window_s`; None when too few or too short."""
    a = int(np.searchsorted(t, t[-1] - window_s))
    x = (t[a:] - t[-1]) / 3600.0  # hours, the newest point at 0
    y = v[a:]
    n = len(y)
    if n < min_points or -x[0] * 3600.0 < min_span_s:
        return None
    xm = x.mean()
    ym = y.mean()
    dx = x - xm
    sxx = float(dx @ dx)
    if sxx <= 0.0:
        return None
    slope = float(dx @ (y - ym)) / sxx
    resid = y - (ym + slope * dx)
    sd = max(math.sqrt(float(resid @ resid) / max(n - 2, 1)), NOISE_FLOOR_PCT)
    se = sd / math.sqrt(sxx)
    return Fit(
        slope_pct_per_h=slope,
        t_stat=slope / se,
        level_now_pct=float(ym - slope * xm),
        first_pct=float(ym + slope * (x[0] - xm)),
        span_s=-float(x[0]) * 3600.0,
        points=n,
    )


def hours_to_reach(fit: Fit, level_pct: float) -> float | None:
    """Hours from the newest point until the fitted line falls to `level_pct`, if it falls."""
    if fit.slope_pct_per_h >= 0.0 or fit.level_now_pct <= level_pct:
        return None
    return (fit.level_now_pct - level_pct) / -fit.slope_pct_per_h
