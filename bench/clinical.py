"""Clinical benchmark: a synthetic population through the pure engine over many simulated days.

Reports, for stable patients, alerts per patient-day (target: at most one a week, 0.143); for
deteriorating patients, the share detected with a red alert (target: all) and the delay from
the start of true desaturation to that alert; and the engine's readings per second on one core.

The loop closes the way a real patient would: a spot check that asks for a re-check gets one
(most of the time), a missed spot check gets a reminder from `alerting.schedule.due_checks` and
then (most of the time) a reading. Alerts are counted the way the lifecycle keeps them: one open
alert per patient and kind, resolved by a nurse some hours after it opened.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from alerting.engine import Engine
from alerting.health import OFFLINE_GRACE, device_offline
from alerting.profile import CONTINUOUS, Profile
from alerting.rules import Decision, Reading
from alerting.schedule import ALERT, REMIND, due_checks
from simulator.population import (
    DAY_S,
    PATTERNS,
    SPOT_TIMES_H,
    STABLE,
    START,
    START_S,
    Patient,
    SimReading,
    sample_population,
    spot_reading,
    spot_slots,
    stream_day,
)

CLINICAL_KINDS = ("spo2_low", "pulse_high", "pulse_low", "trend")
HEALTH_KINDS = ("bad_quality", "device_offline")
LATE_AFTER_S = 600.0  # ingest's default: older than this on arrival is late
SPOT_GRACE_S = 3600.0
STREAM_GAP_S = 1800.0
ALERT_AFTER_S = 3600.0  # alerting.schedule's default: an hour after the reminder
SPOT_SCHEDULE: dict[str, Any] = {
    "kind": "spot",
    "times": [f"{int(h):02d}:00" for h in SPOT_TIMES_H],
    "grace_min": SPOT_GRACE_S / 60,
}
STREAM_SCHEDULE: dict[str, Any] = {"kind": "continuous", "max_gap_min": STREAM_GAP_S / 60}
RECHECK_COMPLIANCE = 0.85  # share of patients who measure again when asked
SLOT_COMPLIANCE = 0.94  # share of spot checks taken on time
REMINDER_COMPLIANCE = 0.7  # share of missed ones taken after the reminder


@dataclass
class PatientResult:
    patient_id: int
    scenario: str
    mode: str
    copd: bool
    days: float
    readings: int = 0
    poor: int = 0
    late: int = 0
    alerts: Counter[str] = field(default_factory=Counter)  # "kind/severity" opened
    red_pages: int = 0  # opened red or upgraded to red (not history)
    reminders: int = 0
    missed_alerts: int = 0
    onset_s: float | None = None
    red_cross_s: float | None = None
    first_red_s: float | None = None  # first live red spo2_low at or after onset
    first_alert_s: float | None = None  # first clinical alert of any severity after onset
    alerts_before_onset: int = 0


class Ledger:
    """Alerts as the lifecycle keeps them: one open per (patient, kind), resolved by a nurse
    `resolve_after_s` after it opened; a decision for a resolved one opens a new alert."""

    def __init__(self, resolve_after_s: float) -> None:
        self.resolve_after_s = resolve_after_s
        self.open: dict[tuple[int, str], tuple[float, str]] = {}

    def add(self, d: Decision, now_s: float, result: PatientResult) -> None:
        key = (d.patient_id, d.kind)
        current = self.open.get(key)
        if current is not None and now_s < current[0] + self.resolve_after_s:
            if d.severity == "red" and current[1] == "amber":
                self.open[key] = (current[0], "red")
                result.red_pages += 1
            return
        self.open[key] = (now_s, d.severity)
        result.alerts[f"{d.kind}/{d.severity}"] += 1
        if d.severity == "red":
            result.red_pages += 1
        if d.kind in CLINICAL_KINDS and result.onset_s is not None:
            if d.at.timestamp() - START_S < result.onset_s:
                result.alerts_before_onset += 1


class Runner:
    def __init__(self, seed: int, resolve_after_h: float) -> None:
        self.engine = Engine()
        self.ledger = Ledger(resolve_after_h * 3600.0)
        self.rng = np.random.default_rng(seed + 1)
        self.engine_s = 0.0
        self.engine_readings = 0
        self.by_mode_s: defaultdict[str, float] = defaultdict(float)
        self.by_mode_n: defaultdict[str, int] = defaultdict(int)

    def feed(
        self, p: Patient, profile: Profile, batch: list[SimReading], result: PatientResult
    ) -> list[Decision]:
        """Readings in arrival order through the engine; time only the engine."""
        readings = [
            (
                Reading(
                    p.patient_id,
                    START + timedelta(seconds=r.t_s),
                    r.spo2_pct,
                    r.pulse_bpm,
                    r.quality,
                    r.received_s - r.t_s > LATE_AFTER_S,
                    r.pi_pct,
                ),
                START + timedelta(seconds=r.received_s),
            )
            for r in batch
        ]
        observe = self.engine.observe
        fired: list[tuple[datetime, list[Decision]]] = []
        started = time.perf_counter()
        for reading, now in readings:
            decisions = observe(reading, profile, now)
            if decisions:
                fired.append((now, decisions))
        spent = time.perf_counter() - started
        self.engine_s += spent
        self.engine_readings += len(readings)
        self.by_mode_s[profile.mode] += spent
        self.by_mode_n[profile.mode] += len(readings)
        result.readings += len(readings)
        result.late += sum(1 for r, _ in readings if r.late)
        out: list[Decision] = []
        for now, decisions in fired:
            for d in decisions:
                self._count(d, now.timestamp(), result)
            out += decisions
        return out

    def _count(self, d: Decision, now_s: float, result: PatientResult) -> None:
        self.ledger.add(d, now_s, result)
        if result.onset_s is None or d.kind not in CLINICAL_KINDS:
            return
        at_s = d.at.timestamp() - START_S
        if at_s < result.onset_s:
            return
        if result.first_alert_s is None:
            result.first_alert_s = at_s
        live_red = d.kind == "spo2_low" and d.severity == "red" and not d.history
        if live_red and result.first_red_s is None:
            result.first_red_s = at_s

    # --- spot checks ----------------------------------------------------------------------

    def run_spot(self, p: Patient, result: PatientResult) -> None:
        rng = self.rng
        profile = p.profile()
        last: float | None = None
        for slot in spot_slots(p):
            if rng.random() < SLOT_COMPLIANCE:
                t = slot + float(np.clip(rng.normal(5.0, 20.0), -45.0, 55.0)) * 60.0
            else:
                remind_at = slot + SPOT_GRACE_S
                actions = self._missed(SPOT_SCHEDULE, last, remind_at, result)
                if REMIND not in actions:
                    continue  # a reading near the slot already counted for it
                if rng.random() < REMINDER_COMPLIANCE:
                    t = remind_at + float(rng.uniform(5.0, 40.0)) * 60.0
                else:
                    self._missed(SPOT_SCHEDULE, last, remind_at + ALERT_AFTER_S, result)
                    continue
            if t >= p.days * DAY_S:
                break
            decisions = self.feed(p, profile, [spot_reading(p, rng, t)], result)
            last = t
            if any(d.recheck for d in decisions) and rng.random() < RECHECK_COMPLIANCE:
                t2 = t + float(rng.uniform(3.0, 15.0)) * 60.0
                self.feed(p, profile, [spot_reading(p, rng, t2)], result)
                last = t2

    def _missed(
        self, schedule: dict[str, Any], last_s: float | None, now_s: float, result: PatientResult
    ) -> set[str]:
        actions = due_checks(
            schedule,
            None if last_s is None else START + timedelta(seconds=last_s),
            START + timedelta(seconds=now_s),
            "Europe/Oslo",
            enrolled_at=START,
        )
        kinds = {a.action for a in actions}
        # The worker acts once per (slot, action): count only what became due just now.
        for a in actions:
            if (START + timedelta(seconds=now_s) - a.due_at).total_seconds() < 1.0:
                if a.action == REMIND:
                    result.reminders += 1
                elif a.action == ALERT:
                    result.missed_alerts += 1
        return kinds

    # --- streams ----------------------------------------------------------------------------

    def run_stream(self, p: Patient, result: PatientResult) -> None:
        rng = self.rng
        profile = p.profile()
        day = 0
        while day < p.days:
            chunk = stream_day(p, rng, day)
            # Arrival order: live readings as measured; an offline spell's arrive at its end.
            batch = sorted(chunk.readings, key=lambda r: (r.received_s, r.t_s))
            self.feed(p, profile, batch, result)
            for lo, hi in chunk.gaps + chunk.offline:
                # Nothing arrives between lo and hi: the worker's timer sees a gap.
                for now_s in (lo + STREAM_GAP_S, lo + STREAM_GAP_S + ALERT_AFTER_S):
                    if now_s < hi:
                        self._missed(STREAM_SCHEDULE, lo, now_s, result)
            for lo, hi in chunk.offline:
                check_s = lo + OFFLINE_GRACE.total_seconds()
                if check_s < hi:
                    d = device_offline(
                        p.patient_id,
                        f"sim-{p.patient_id:05d}",
                        False,
                        START + timedelta(seconds=lo),
                        START + timedelta(seconds=check_s),
                        continuous=True,
                    )
                    if d is not None:
                        self.ledger.add(d, START_S + check_s, result)
            day += 1


# --- engine cost, on its own ------------------------------------------------------------------


def engine_speed(n: int = 400_000, seed: int = 5) -> dict[str, float]:
    """Readings per second through `Engine.observe` on one core, for three kinds of input."""
    rng = np.random.default_rng(seed)
    t0 = START

    def rate(profile: Profile, spo2: np.ndarray, pulse: np.ndarray, step_s: float) -> float:
        readings = [
            Reading(
                i % 1000 + 1,
                t0 + timedelta(seconds=(i // 1000) * step_s),
                int(spo2[i]),
                int(pulse[i]),
            )
            for i in range(len(spo2))
        ]
        engine = Engine()
        observe = engine.observe
        started = time.perf_counter()
        for r in readings:
            observe(r, profile, r.time)
        return len(readings) / (time.perf_counter() - started)

    normal = np.clip(np.rint(rng.normal(96.5, 1.0, n)), 0, 100)
    pulse = np.rint(rng.normal(75.0, 6.0, n))
    low = np.clip(np.rint(rng.normal(88.0, 1.0, n)), 0, 100)
    stream = Profile(mode=CONTINUOUS)
    return {
        # 1,000 patients streaming normal readings every 4 s (threshold path + 5-min trend).
        "stream_normal_per_s": rate(stream, normal, pulse, 4.0),
        # the same, every reading in the red band (runs, red decisions with reasons).
        "stream_red_per_s": rate(stream, low, pulse, 4.0),
        # spot checks every 8 h: every reading is a trend point (numpy each time).
        "spot_per_s": rate(Profile(), normal[: n // 10], pulse[: n // 10], 8 * 3600.0),
    }


# --- the report -------------------------------------------------------------------------------


def summarise(results: list[PatientResult]) -> dict[str, Any]:
    """The report's two tables as data: stable patients' alerts per patient-day by group, and
    deteriorating patients detected and how late, by pattern and mode. `bench.score` builds
    the same `PatientResult`s from a live run's database and reuses this."""

    def per_day(pick: Callable[[PatientResult], float], group: list[PatientResult]) -> float:
        days = sum(r.days for r in group)
        return sum(pick(r) for r in group) / days if days else 0.0

    def clinical(r: PatientResult) -> int:
        return sum(n for k, n in r.alerts.items() if k.split("/")[0] in CLINICAL_KINDS)

    stable = [r for r in results if r.scenario == STABLE]
    groups: dict[str, list[PatientResult]] = defaultdict(list)
    for r in stable:
        groups[f"{r.mode}, {'COPD 88–92%' if r.copd else 'default bands'}"].append(r)
    stable_rows = []
    for name, group in sorted(groups.items()) + [("all stable", stable)]:
        kinds: Counter[str] = Counter()
        for r in group:
            kinds.update({k: v for k, v in r.alerts.items() if k.split("/")[0] in CLINICAL_KINDS})
        stable_rows.append(
            {
                "group": name,
                "patients": len(group),
                "patient_days": round(sum(r.days for r in group), 1),
                "readings": sum(r.readings for r in group),
                "poor_quality_share": round(
                    sum(r.poor for r in group) / max(1, sum(r.readings for r in group)), 4
                ),
                "clinical_alerts_per_patient_day": round(per_day(clinical, group), 4),
                "red_pages_per_patient_day": round(per_day(lambda r: r.red_pages, group), 4),
                "device_alerts_per_patient_day": round(
                    per_day(
                        lambda r: sum(
                            n for k, n in r.alerts.items() if k.split("/")[0] in HEALTH_KINDS
                        ),
                        group,
                    ),
                    4,
                ),
                "reminders_per_patient_day": round(per_day(lambda r: r.reminders, group), 4),
                "missed_reading_alerts_per_patient_day": round(
                    per_day(lambda r: r.missed_alerts, group), 4
                ),
                "clinical_alerts_by_kind": dict(sorted(kinds.items())),
            }
        )
    det_rows = []
    bad = [r for r in results if r.scenario != STABLE]
    for name, group in [
        *[
            (f"{s}, {m}", [r for r in bad if r.scenario == s and r.mode == m])
            for s in PATTERNS  # recovery too (a live run may ask for it; this one does not)
            for m in ("spot", "continuous")
        ],
        ("all deteriorating", bad),
    ]:
        if not group:
            continue
        detected = [r for r in group if r.first_red_s is not None]
        onset_delay = [
            (r.first_red_s - r.onset_s) / 3600.0
            for r in detected
            if r.first_red_s is not None and r.onset_s is not None
        ]
        cross_delay = [
            (r.first_red_s - r.red_cross_s) / 3600.0
            for r in detected
            if r.first_red_s is not None and r.red_cross_s is not None
        ]
        first_alert = [
            (r.first_alert_s - r.onset_s) / 3600.0
            for r in group
            if r.first_alert_s is not None and r.onset_s is not None
        ]
        det_rows.append(
            {
                "group": name,
                "patients": len(group),
                "detected": len(detected),
                "onset_to_red_median_h": _med(onset_delay),
                "onset_to_red_worst_h": _max(onset_delay),
                "red_band_to_red_median_h": _med(cross_delay),
                "red_band_to_red_worst_h": _max(cross_delay),
                "onset_to_first_alert_median_h": _med(first_alert),
                "alerts_before_onset": sum(r.alerts_before_onset for r in group),
            }
        )
    return {"stable": stable_rows, "deteriorating": det_rows}


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


def _max(xs: list[float]) -> float | None:
    return round(max(xs), 2) if xs else None


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def stable_table(rows: list[dict[str, Any]]) -> list[str]:
    """The stable patients' rows of `summarise` as a Markdown table with its heading."""
    lines = [
        "Stable patients (target: clinical alerts ≤ 0.143 per patient-day, one a week):",
        "",
        "| group | patients | patient-days | readings | flagged | clinical alerts /pt-day "
        "| red pages /pt-day | device alerts /pt-day | reminders /pt-day "
        "| missed-reading alerts /pt-day |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['patients']} | {_fmt(r['patient_days'], 0)} "
            f"| {_fmt(r['readings'])} | {100 * r['poor_quality_share']:.1f}% "
            f"| {_fmt(r['clinical_alerts_per_patient_day'])} "
            f"| {_fmt(r['red_pages_per_patient_day'])} "
            f"| {_fmt(r['device_alerts_per_patient_day'])} "
            f"| {_fmt(r['reminders_per_patient_day'])} "
            f"| {_fmt(r['missed_reading_alerts_per_patient_day'])} |"
        )
    return lines


def deteriorating_table(rows: list[dict[str, Any]]) -> list[str]:
    """The deteriorating patients' rows of `summarise` as a Markdown table with its heading."""
    lines = [
        "Deteriorating patients (target: every one detected with a red alert). Delays in hours: "
        "from the start of true desaturation (onset) and from the moment true SpO2 reached the "
        "red band, to the first red `spo2_low` alert; and from onset to the first alert of any "
        "severity:",
        "",
        "| scenario, mode | patients | detected | onset→red median | onset→red worst "
        "| red band→red median | red band→red worst | onset→first alert median "
        "| false alerts before onset |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['patients']} | {r['detected']} "
            f"| {_fmt(r['onset_to_red_median_h'], 2)} | {_fmt(r['onset_to_red_worst_h'], 2)} "
            f"| {_fmt(r['red_band_to_red_median_h'], 2)} "
            f"| {_fmt(r['red_band_to_red_worst_h'], 2)} "
            f"| {_fmt(r['onset_to_first_alert_median_h'], 2)} | {r['alerts_before_onset']} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    sp = report["engine"]
    lines = [
        *stable_table(s["stable"]),
        "",
        *deteriorating_table(s["deteriorating"]),
        "",
        "Engine cost, one core (`Engine.observe` only):",
        "",
        "| input | readings/s |",
        "|---|---|",
        f"| this population, all readings | {sp['population_per_s']:,.0f} |",
        f"| this population, stream readings | {sp['population_stream_per_s']:,.0f} |",
        f"| this population, spot checks | {sp['population_spot_per_s']:,.0f} |",
        f"| 1,000 streams, normal readings | {sp['stream_normal_per_s']:,.0f} |",
        f"| 1,000 streams, every reading red | {sp['stream_red_per_s']:,.0f} |",
        f"| 1,000 patients, spot checks (trend fit on each) | {sp['spot_per_s']:,.0f} |",
        "",
        f"Seed {report['params']['seed']}; alerts counted as the lifecycle keeps them, one open "
        f"per patient and kind, resolved by a nurse {report['params']['resolve_after_h']} h "
        "after it opened. Clinical alerts: spo2_low, pulse_high, pulse_low, trend (late-upload "
        "history included, as amber). Device alerts: bad_quality, device_offline. "
        f"Run time {report['run_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def run(
    stable: int = 400,
    deteriorating: int = 64,
    days: float = 14.0,
    seed: int = 20261124,
    continuous_share: float = 0.15,
    resolve_after_h: float = 4.0,
    out: Path | None = Path("results"),
    speed_readings: int = 400_000,
) -> dict[str, Any]:
    """Run the population, write results/clinical.{json,md}, return the report."""
    started = time.perf_counter()
    patients = sample_population(stable, deteriorating, days, seed, continuous_share)
    runner = Runner(seed, resolve_after_h)
    results = []
    for p in patients:
        result = PatientResult(
            p.patient_id,
            p.scenario,
            p.mode,
            p.copd,
            round(p.days, 3),
            onset_s=p.onset_s,
            red_cross_s=p.red_cross_s(),
        )
        if p.mode == CONTINUOUS:
            runner.run_stream(p, result)
        else:
            runner.run_spot(p, result)
        state = runner.engine.state(p.patient_id)
        if state is not None:
            result.poor = state.poor
        runner.engine.forget(p.patient_id)
        results.append(result)
    speed = engine_speed(speed_readings)
    speed["population_per_s"] = runner.engine_readings / max(runner.engine_s, 1e-9)
    speed["population_stream_per_s"] = runner.by_mode_n[CONTINUOUS] / max(
        runner.by_mode_s[CONTINUOUS], 1e-9
    )
    speed["population_spot_per_s"] = runner.by_mode_n["spot"] / max(runner.by_mode_s["spot"], 1e-9)
    report: dict[str, Any] = {
        "params": {
            "stable": stable,
            "deteriorating": deteriorating,
            "days": days,
            "seed": seed,
            "continuous_share": continuous_share,
            "resolve_after_h": resolve_after_h,
        },
        "summary": summarise(results),
        "engine": {k: round(v) for k, v in speed.items()},
        "patients": [
            {**asdict(r), "alerts": dict(r.alerts)} for r in results if r.scenario != STABLE
        ],
        "run_s": round(time.perf_counter() - started, 1),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "clinical.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "clinical.md").write_text(markdown(report))
    return report


def main(
    stable: int, deteriorating: int, days: float, seed: int, continuous_share: float, out: Path
) -> None:
    report = run(stable, deteriorating, days, seed, continuous_share, out=out)
    print(markdown(report))
