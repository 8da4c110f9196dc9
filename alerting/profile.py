"""A patient's clinical profile: target range, alert bands, reading mode and rule settings.

Every default is named here with its unit and its source, so a clinician can check each one,
and every one can be set per patient (`Profile.from_row` reads the `patients` row; the optional
`alert_rules` mapping overrides any field by name).

Sources:
* NHS England, "COVID Oximetry @home" (standard operating procedure and patient guidance,
  2020–2021): SpO2 95% and above is normal; 93–94% calls for a clinical review; 92% and below
  calls for urgent assessment, after the patient has measured again within a few minutes.
* Royal College of Physicians, National Early Warning Score 2 (NEWS2, 2017).
  SpO2 scale 1 scores 1 at 94–95%, 2 at 92–93%, 3 at 91% and below. SpO2 scale 2 is for
  patients with a prescribed target of 88–92% (hypercapnic respiratory failure, BTS oxygen
  guideline, O'Driscoll et al. 2017): 88–92% (and 93% or more on air) scores 0, 86–87% scores 1,
  84–85% scores 2, 83% and below scores 3. Pulse scores 3 at 40/min or below and at 131/min or
  above, 1 at 41–50/min and 91–110/min, 2 at 111–130/min, 0 at 51–90/min.
* Engineering choices, not clinical standards (marked "ours" below): the timings that decide
  when a stream or a trend is believable. Each is measured by `python -m bench clinical`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPOT = "spot"
CONTINUOUS = "continuous"
MODES = (SPOT, CONTINUOUS)

# --- SpO2 bands (percent). NHS COVID Oximetry @home; NEWS2 scale 1. -----------------------
SPO2_TARGET_MIN_PCT = 95  # 95% and above: normal
SPO2_TARGET_MAX_PCT = 100
SPO2_AMBER_MAX_PCT = 94  # 93–94%: amber, clinical review
SPO2_RED_MAX_PCT = 92  # 92% and below: red, urgent assessment (after a re-check)
# Below a prescribed target range the bands follow NEWS2 scale 2: the two points just below
# the range score 1 (amber), three or more below score 2–3 (red). With the default target of
# 95% this gives exactly the @home bands above, so one rule covers both scales.
AMBER_BAND_WIDTH_PCT = 2

# --- Pulse bands (beats per minute). NEWS2. ---------------------------------------------------
PULSE_RED_MIN_BPM = 40  # 40/min or below: red (NEWS2 score 3)
PULSE_AMBER_MIN_BPM = 50  # 41–50/min: NEWS2 score 1
PULSE_AMBER_MAX_BPM = 91  # 91–130/min: NEWS2 score 1 (91–110) or 2 (111–130)
PULSE_RED_MAX_BPM = 131  # 131/min or above: red (NEWS2 score 3)

# --- Signal quality. ------------------------------------------------------------------------
# Perfusion index below this (percent) makes the SpO2 unreliable: ours, after oximeter makers'
# guidance that readings at a perfusion index under about 0.3–0.5% may be inaccurate.
PI_MIN_PCT = 0.3
# Outside these a reading is a device fault, not physiology (ours; the device contract allows it).
SPO2_PLAUSIBLE_MIN_PCT = 50
PULSE_PLAUSIBLE_MIN_BPM = 20
PULSE_PLAUSIBLE_MAX_BPM = 250

# --- Spot checks. -------------------------------------------------------------------------------
# @home guidance: a red reading is re-checked within about five minutes; a second low reading
# confirms it. Readings closer together than CONFIRM_MIN_GAP_S are one measurement (a device
# sending a burst); a low reading confirms the previous one up to CONFIRM_WINDOW_S later
# (ours: 12 h, so the next scheduled check confirms an unchecked low one).
CONFIRM_MIN_GAP_S = 60.0
CONFIRM_WINDOW_S = 12 * 3600.0

# --- Continuous streams (ours; 60 s is issue 4's default). ---------------------------------
# Red only when the condition holds for this long in good-quality readings: a brief dip or a
# moving finger pages nobody.
SUSTAIN_RED_S = 60.0
# Amber (a review within hours, not a page) waits longer and so removes most noise for free:
# ten minutes, so a patient dozing off in a chair or a wandering reading does not ask for a
# review (clinical benchmark: 5 min raised twice the amber alerts of stable patients).
SUSTAIN_AMBER_S = 600.0
# Once a stream's personal baseline is known (48 h, see below), a sustained amber must also sit
# this many points below the patient's own usual SpO2 for the local hour (ours). The @home
# bands were written for a reading taken awake and at rest; asleep, SpO2 runs a point or two
# lower, and someone whose nights sit at 93–94% would otherwise be amber every night. Red is
# never judged this way: 92% and below is red for everyone on the default bands.
# None: the amber band alone decides (a clinician's choice per patient).
STREAM_AMBER_MARGIN_PCT = 2.0
# A pulse at or beyond its red band must hold longer: a stream records the patient walking
# about, and exertion raises the pulse for minutes at a time (NEWS2 scores a resting pulse).
SUSTAIN_PULSE_S = 300.0
# A sustained run tolerates this share of readings outside the band (whole-number rounding
# around a threshold) or flagged before it starts again.
SUSTAIN_TOLERANCE = 0.25
# No good reading for this long ends a run: we no longer know.
SUSTAIN_GAP_S = 60.0
# Readings a run needs at least, whatever the rate.
SUSTAIN_MIN_READINGS = 3

# --- Trend (numpy; ours unless marked). -------------------------------------------------------
# Personal baseline: median of the first 48 h (issue 4), then of a rolling 7 days that leaves
# out the most recent day, so a decline does not drag its own baseline down with it.
BASELINE_INITIAL_S = 48 * 3600.0
BASELINE_WINDOW_S = 7 * 24 * 3600.0
BASELINE_LAG_S = 24 * 3600.0
BASELINE_MIN_POINTS = 4
# Amber when SpO2 sits this many points below the baseline (issue 4) over several readings.
TREND_DROP_PCT = 3.0
# Amber when the recent slope reaches the red band within this horizon (issue 4: 12 h).
TREND_HORIZON_S = 12 * 3600.0
# ... and the fitted level already sits this far below the baseline (keeps the normal
# overnight dip of a sleeping patient from projecting anything).
TREND_SLOPE_MIN_DROP_PCT = 2.0
# ... and the fall is clear of the noise: slope / its standard error at most this.
TREND_SLOPE_T_MAX = -3.0
# Continuous streams are summarised as the median of each bucket of good readings.
TREND_BUCKET_S = 300.0

# --- Device health (ours; never red). --------------------------------------------------------
BAD_QUALITY_SPOT_RUN = 3  # the last three spot checks all flagged
BAD_QUALITY_WINDOW_S = 3600.0  # continuous: share flagged within each hour ...
BAD_QUALITY_SHARE = 0.5  # ... at least half ...
BAD_QUALITY_MIN_READINGS = 30  # ... of at least this many readings


@dataclass(frozen=True, slots=True)
class Profile:
    """What the engine needs to know about one patient. Build it once, reuse it per reading."""

    spo2_target_min_pct: int = SPO2_TARGET_MIN_PCT
    spo2_target_max_pct: int = SPO2_TARGET_MAX_PCT
    spo2_amber_max_pct: int = SPO2_AMBER_MAX_PCT
    spo2_red_max_pct: int = SPO2_RED_MAX_PCT
    pulse_red_min_bpm: int = PULSE_RED_MIN_BPM
    pulse_amber_min_bpm: int = PULSE_AMBER_MIN_BPM
    pulse_amber_max_bpm: int = PULSE_AMBER_MAX_BPM
    pulse_red_max_bpm: int = PULSE_RED_MAX_BPM
    # NEWS2's graded pulse bands (41–50, 91–130/min) raise no alert of their own by default:
    # at home a pulse of 91–130 follows every walk to the door. They are named in the reason of
    # any SpO2 alert and counted. A clinician can turn them into amber alerts per patient.
    pulse_amber_alerts: bool = False
    mode: str = SPOT  # "spot" (a few readings a day) or "continuous" (every few seconds)
    tz: str = "Europe/Oslo"  # for times in reasons; the engine itself works in UTC
    pi_min_pct: float = PI_MIN_PCT
    confirm_min_gap_s: float = CONFIRM_MIN_GAP_S
    confirm_window_s: float = CONFIRM_WINDOW_S
    sustain_red_s: float = SUSTAIN_RED_S
    sustain_amber_s: float = SUSTAIN_AMBER_S
    stream_amber_margin_pct: float | None = STREAM_AMBER_MARGIN_PCT
    sustain_pulse_s: float = SUSTAIN_PULSE_S
    sustain_tolerance: float = SUSTAIN_TOLERANCE
    sustain_gap_s: float = SUSTAIN_GAP_S
    sustain_min_readings: int = SUSTAIN_MIN_READINGS
    trend_drop_pct: float = TREND_DROP_PCT
    trend_horizon_s: float = TREND_HORIZON_S
    trend_slope_min_drop_pct: float = TREND_SLOPE_MIN_DROP_PCT
    trend_slope_t_max: float = TREND_SLOPE_T_MAX
    baseline_initial_s: float = BASELINE_INITIAL_S
    baseline_window_s: float = BASELINE_WINDOW_S
    baseline_lag_s: float = BASELINE_LAG_S

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"reading mode must be one of {MODES}, not {self.mode!r}")
        if not (
            self.spo2_red_max_pct <= self.spo2_amber_max_pct < self.spo2_target_min_pct
            and self.spo2_target_min_pct <= self.spo2_target_max_pct
        ):
            raise ValueError(
                "SpO2 bands must satisfy red max <= amber max < target min <= target max, got "
                f"{self.spo2_red_max_pct}/{self.spo2_amber_max_pct}/"
                f"{self.spo2_target_min_pct}–{self.spo2_target_max_pct}%"
            )
        if not (
            self.pulse_red_min_bpm
            <= self.pulse_amber_min_bpm
            < self.pulse_amber_max_bpm
            <= self.pulse_red_max_bpm
        ):
            raise ValueError(
                "pulse bands must satisfy red min <= amber min < amber max <= red max, got "
                f"{self.pulse_red_min_bpm}/{self.pulse_amber_min_bpm}/"
                f"{self.pulse_amber_max_bpm}/{self.pulse_red_max_bpm}/min"
            )

    @property
    def continuous(self) -> bool:
        return self.mode == CONTINUOUS

    @classmethod
    def for_target_range(cls, min_pct: int, max_pct: int, **overrides: Any) -> Profile:
        """Bands below a prescribed target range, as NEWS2 scale 2 grades them.

        `for_target_range(88, 92)`: 88–92% normal, 86–87% amber, 85% and below red.
        `for_target_range(95, 100)` gives the @home defaults (93–94% amber, 92% and below red).
        """
        return cls(
            spo2_target_min_pct=min_pct,
            spo2_target_max_pct=max_pct,
            spo2_amber_max_pct=min_pct - 1,
            spo2_red_max_pct=min_pct - 1 - AMBER_BAND_WIDTH_PCT,
            **overrides,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], tz: str = "Europe/Oslo") -> Profile:
        """The profile of a `patients` row (a dict row; missing or NULL columns take defaults).

        Reads spo2_target_min_pct, spo2_target_max_pct, spo2_amber_max_pct, spo2_red_max_pct,
        pulse_red_min_bpm, pulse_red_max_bpm, schedule (its "kind" is the reading mode) and,
        when present, pulse_amber_min_bpm, pulse_amber_max_bpm and an `alert_rules` mapping whose
        keys are field names of this class.
        """
        values: dict[str, Any] = {"tz": tz}
        for name in (
            "spo2_target_min_pct",
            "spo2_target_max_pct",
            "spo2_amber_max_pct",
            "spo2_red_max_pct",
            "pulse_red_min_bpm",
            "pulse_amber_min_bpm",
            "pulse_amber_max_bpm",
            "pulse_red_max_bpm",
        ):
            if row.get(name) is not None:
                values[name] = int(row[name])
        schedule = row.get("schedule") or {}
        if isinstance(schedule, Mapping) and schedule.get("kind") in MODES:
            values["mode"] = schedule["kind"]
        rules = row.get("alert_rules") or {}
        if not isinstance(rules, Mapping):
            raise ValueError("alert_rules must be a mapping of setting names to values")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(rules) - set(fields)
        if unknown:
            raise ValueError(f"unknown alert rule setting(s): {', '.join(sorted(unknown))}")
        for name, value in rules.items():
            values[name] = _setting(fields[name], value)
        return cls(**values)


def _setting(f: dataclasses.Field[Any], value: Any) -> Any:
    """One `alert_rules` value checked against the field it sets (a stored override is JSON)."""
    default = f.default
    if value is None:
        if "None" in str(f.type):
            return None
        raise ValueError(f"alert_rules.{f.name} needs a value")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"alert_rules.{f.name} must be true or false")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"alert_rules.{f.name} must be text")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"alert_rules.{f.name} must be a number")
    if isinstance(default, int) and not float(value).is_integer():
        raise ValueError(f"alert_rules.{f.name} must be a whole number")
    return int(value) if isinstance(default, int) else float(value)


DEFAULT_PROFILE = Profile()
