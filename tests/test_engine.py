"""The per-patient engine beyond the scenario tables: profiles, restarts, quality, late
readings, device health, and its decisions through the real alert lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerting.engine import Engine, evaluate, rebuild
from alerting.health import bad_quality, device_offline, low_battery
from alerting.lifecycle import apply_decisions
from alerting.profile import Profile
from alerting.rules import Decision, Reading

T0 = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # 08:00 in Oslo
SPOT = Profile()
STREAM = Profile(mode="continuous")


def at(**kw: float) -> datetime:
    return T0 + timedelta(**kw)


def spot(spo2: int, pulse: int = 72, **kw: float) -> Reading:
    return Reading(7, at(**kw), spo2, pulse)


def stream(
    first_s: float, n: int, spo2: int, pulse: int = 72, step_s: float = 4.0
) -> list[Reading]:
    return [Reading(7, at(seconds=first_s + i * step_s), spo2, pulse) for i in range(n)]


def run(engine: Engine, readings: list[Reading], profile: Profile) -> list[Decision]:
    out: list[Decision] = []
    for r in readings:
        out += engine.observe(r, profile, r.time)
    return out


# --- profiles -----------------------------------------------------------------------------------


def test_profile_from_a_patients_row_takes_its_bands_and_reading_mode() -> None:
    row = {
        "id": 7,
        "spo2_target_min_pct": 88,
        "spo2_target_max_pct": 92,
        "spo2_amber_max_pct": 87,
        "spo2_red_max_pct": 85,
        "pulse_red_min_bpm": 45,
        "pulse_red_max_bpm": 125,
        "schedule": {"kind": "continuous", "max_gap_min": 30},
    }
    p = Profile.from_row(row, tz="Europe/Oslo")
    assert (p.spo2_target_min_pct, p.spo2_amber_max_pct, p.spo2_red_max_pct) == (88, 87, 85)
    assert (p.pulse_red_min_bpm, p.pulse_red_max_bpm) == (45, 125)
    assert p.mode == "continuous" and p.tz == "Europe/Oslo"


def test_profile_from_a_row_with_nulls_and_rule_overrides() -> None:
    p = Profile.from_row({"spo2_red_max_pct": None, "alert_rules": {"sustain_red_s": 120}})
    assert p.spo2_red_max_pct == 92 and p.sustain_red_s == 120
    with pytest.raises(ValueError, match="sustain_red_sec"):
        Profile.from_row({"alert_rules": {"sustain_red_sec": 120}})


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"sustain_amber_s": "15 min"}, "sustain_amber_s"),
        ({"pulse_amber_alerts": 1}, "pulse_amber_alerts"),
        ({"sustain_red_s": None}, "sustain_red_s"),
    ],
)
def test_a_stored_rule_override_of_the_wrong_kind_is_refused_naming_it(
    rules: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        Profile.from_row({"alert_rules": rules})


def test_the_personal_stream_amber_rule_can_be_turned_off_for_one_patient() -> None:
    assert Profile().stream_amber_margin_pct == 2.0
    p = Profile.from_row({"alert_rules": {"stream_amber_margin_pct": None, "sustain_amber_s": 900}})
    assert p.stream_amber_margin_pct is None and p.sustain_amber_s == 900.0


def test_a_target_range_puts_the_news2_scale_2_bands_below_it() -> None:
    copd = Profile.for_target_range(88, 92)
    assert (copd.spo2_amber_max_pct, copd.spo2_red_max_pct) == (87, 85)
    default = Profile.for_target_range(95, 100)
    assert (default.spo2_amber_max_pct, default.spo2_red_max_pct) == (94, 92)
    assert default == Profile()


def test_inconsistent_bands_are_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match="92/95/95"):
        Profile(spo2_amber_max_pct=95)
    with pytest.raises(ValueError, match="reading mode"):
        Profile(mode="hourly")


# --- spot checks --------------------------------------------------------------------------------


def test_a_low_spot_check_confirms_across_the_next_scheduled_check() -> None:
    engine = Engine()
    [first] = run(engine, [spot(91, hours=12)], SPOT)  # 20:00
    [second] = run(engine, [spot(90, hours=24)], SPOT)  # 08:00 next day, 12 h later
    assert first.recheck and not first.confirmed
    assert second.confirmed and not second.recheck and second.severity == "red"


def test_readings_of_one_burst_do_not_confirm_each_other() -> None:
    engine = Engine()
    burst = [spot(90, seconds=s) for s in (0, 10, 20)]
    decisions = run(engine, burst, SPOT)
    assert [d.confirmed for d in decisions] == [False, False, False]
    [recheck] = run(engine, [spot(91, minutes=5)], SPOT)
    assert recheck.confirmed


def test_an_amber_reading_does_not_confirm_a_red_one() -> None:
    engine = Engine()
    run(engine, [spot(94, hours=0)], SPOT)
    [red] = run(engine, [spot(91, minutes=5)], SPOT)
    assert red.severity == "red" and red.recheck and not red.confirmed


def test_graded_pulse_bands_alert_only_where_a_clinician_asked_for_it() -> None:
    assert run(Engine(), [spot(97, 118)], SPOT) == []
    opted = Profile(pulse_amber_alerts=True)
    [d] = run(Engine(), [spot(97, 118)], opted)
    assert (d.kind, d.severity, d.recheck) == ("pulse_high", "amber", True)
    [low] = run(Engine(), [spot(97, 45)], opted)
    assert (low.kind, low.severity) == ("pulse_low", "amber")


# --- quality ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reading",
    [
        Reading(7, T0, 80, 150, "motion"),
        Reading(7, T0, 0, 30, "no_finger"),
        Reading(7, T0, 85, 72, "low_perfusion"),
        Reading(7, T0, 85, 72, "ok", pi_pct=0.2),  # the device did not flag it; its PI does
        Reading(7, T0, 12, 72, "ok"),  # impossible: a device fault
        Reading(7, T0, 97, 0, "ok"),
    ],
    ids=["motion", "no_finger", "low_perfusion", "low_pi", "spo2_impossible", "pulse_impossible"],
)
def test_an_unreliable_reading_raises_nothing_and_is_counted(reading: Reading) -> None:
    state, decisions = evaluate(None, reading, SPOT, T0)
    assert decisions == []
    assert state.poor == 1 and sum(state.poor_by_flag.values()) == 1


def test_three_unreliable_spot_checks_in_a_row_raise_amber_bad_quality() -> None:
    engine = Engine()
    readings = [Reading(7, at(hours=h), 80, 90, "motion") for h in (0, 6, 12)]
    decisions = run(engine, readings, SPOT)
    assert [(d.kind, d.severity) for d in decisions] == [("bad_quality", "amber")]
    assert "last 3 spot checks" in decisions[0].reason


def test_an_hour_of_mostly_flagged_stream_raises_amber_bad_quality_once_the_hour_ends() -> None:
    engine = Engine()
    flagged = [Reading(7, at(seconds=4 * i), 70, 90, "motion") for i in range(900)]
    assert run(engine, flagged, STREAM) == []
    [d] = run(engine, stream(3600, 1, 96), STREAM)
    assert (d.kind, d.severity) == ("bad_quality", "amber") and "900 of 900" in d.reason


def test_flagged_readings_inside_a_stream_run_count_against_it() -> None:
    engine = Engine()
    mixed: list[Reading] = []
    for i in range(40):  # 160 s: every other reading low and "ok", the rest flagged
        quality = "ok" if i % 2 else "motion"
        mixed.append(Reading(7, at(seconds=4 * i), 89 if i % 2 else 75, 90, quality))
    assert run(engine, mixed, STREAM) == []


# --- streams ------------------------------------------------------------------------------------


def test_a_stream_pages_after_sixty_seconds_of_red_and_not_before() -> None:
    engine = Engine()
    decisions = run(engine, stream(0, 15, 89), STREAM)  # 0..56 s
    assert decisions == []
    [d] = run(engine, stream(60, 1, 89), STREAM)
    assert (d.kind, d.severity, d.confirmed) == ("spo2_low", "red", True)
    assert "60 s" in d.reason


def test_a_stream_run_survives_a_reading_just_above_the_band() -> None:
    engine = Engine()
    readings = stream(0, 8, 92) + stream(32, 1, 93) + stream(36, 8, 92)
    decisions = run(engine, readings, STREAM)
    assert decisions and decisions[-1].severity == "red"


def test_amber_on_a_stream_waits_ten_minutes() -> None:
    engine = Engine()
    assert run(engine, stream(0, 149, 94), STREAM) == []  # 0..592 s
    [d] = run(engine, stream(600, 1, 94), STREAM)
    assert (d.kind, d.severity) == ("spo2_low", "amber")


def test_a_stream_pulse_of_131_or_more_pages_only_after_five_minutes() -> None:
    engine = Engine()
    assert run(engine, stream(0, 70, 97, 140), STREAM) == []  # 0..276 s: a walk upstairs
    [d] = run(engine, stream(300, 1, 97, 140), STREAM)
    assert (d.kind, d.severity) == ("pulse_high", "red")


# --- late readings ------------------------------------------------------------------------------


def test_a_late_red_spot_check_is_amber_history_that_says_so() -> None:
    late = Reading(7, T0, 88, 80, late=True)
    _, [d] = evaluate(None, late, SPOT, T0 + timedelta(hours=5))
    assert (d.kind, d.severity, d.history) == ("spo2_low", "amber", True)
    assert d.reason.startswith("Late upload, measured Tue 24 Nov 08:00 and received 5 h later")
    assert not d.recheck  # nobody asks a patient to re-measure a reading five hours old


def test_late_readings_do_not_disturb_the_live_state() -> None:
    engine = Engine()
    run(engine, [spot(91, hours=6)], SPOT)  # live red, awaiting its re-check
    late = Reading(7, at(hours=1), 97, 70, late=True)
    engine.observe(late, SPOT, at(hours=6, minutes=2))
    [recheck] = run(engine, [spot(90, hours=6, minutes=5)], SPOT)
    assert recheck.confirmed


# --- trend --------------------------------------------------------------------------------------


def test_the_baseline_is_the_median_of_the_first_48_hours() -> None:
    engine = Engine()
    values = [97, 98, 96, 97, 99, 97, 97]  # 08:00, 14:00, 20:00 for two days, then day 3
    hours = [0, 6, 12, 24, 30, 36, 48]
    run(engine, [spot(v, hours=h) for v, h in zip(values, hours, strict=True)], SPOT)
    state = engine.state(7)
    assert state is not None and state.baseline_pct == 97.0


def test_a_drop_of_three_below_a_high_baseline_raises_trend_while_still_normal() -> None:
    engine = Engine()
    hours = [0, 6, 12, 24, 30, 36]
    run(engine, [spot(99, hours=h) for h in hours], SPOT)
    decisions = run(engine, [spot(96, hours=h) for h in (48, 54, 60)], SPOT)
    trend = [d for d in decisions if d.kind == "trend"]
    assert trend and trend[-1].severity == "amber"
    assert "3 points below this patient's baseline of 99%" in trend[-1].reason
    assert not [d for d in decisions if d.kind == "spo2_low"]  # 96% is in the normal band


# --- restart ------------------------------------------------------------------------------------


def _rows(readings: list[Reading]) -> list[tuple[object, ...]]:
    return [
        (r.patient_id, r.time, r.spo2_pct, r.pulse_bpm, r.quality, r.pi_pct, r.late)
        for r in readings
    ]


def test_a_rebuilt_engine_confirms_a_low_spot_check_taken_before_the_restart() -> None:
    before = [spot(97, hours=0), spot(91, hours=6)]
    engine = rebuild(_rows(before), {7: SPOT}, now=at(hours=6, minutes=3))
    [d] = engine.observe(spot(90, hours=6, minutes=5), SPOT, at(hours=6, minutes=5))
    assert d.confirmed


def test_a_rebuilt_engine_continues_a_stream_run_without_repeating_alerts() -> None:
    before = stream(0, 10, 89)  # 36 s of red before the restart
    engine = Engine.rebuild(
        [
            dict(
                zip(
                    ("patient_id", "time", "spo2", "pulse", "quality", "pi", "late"),
                    row,
                    strict=True,
                )
            )
            for row in _rows(before)
        ],
        lambda _id: STREAM,
        now=at(seconds=38),
    )
    decisions = run(engine, stream(40, 6, 89), STREAM)  # 40..60 s
    assert [d.severity for d in decisions] == ["red"]  # at 60 s, once the minute is complete


def test_a_rebuilt_engine_has_the_same_trend_state_as_one_that_ran_live() -> None:
    week = [spot(97 - (h >= 120) * 2, hours=h) for h in range(0, 168, 6)]
    live = Engine()
    run(live, week, SPOT)
    rebuilt = rebuild(_rows(week), {7: SPOT}, now=at(hours=168))
    a, b = live.state(7), rebuilt.state(7)
    assert a is not None and b is not None
    assert (a.point_t, a.point_v, a.readings) == (b.point_t, b.point_v, b.readings)
    nxt = spot(93, hours=168)
    assert live.observe(nxt, SPOT, nxt.time) == rebuilt.observe(nxt, SPOT, nxt.time)


def test_reloading_patients_after_a_rollback_forgets_what_was_not_committed() -> None:
    engine = Engine()
    committed = [spot(97, hours=0)]
    run(engine, committed, SPOT)
    run(engine, [spot(91, hours=6)], SPOT)  # observed, then its transaction rolled back
    engine.reload(_rows(committed), {7: SPOT}, now=at(hours=6), patient_ids=[7])
    # Redelivered: judged afresh, not as a re-check of itself.
    [d] = engine.observe(spot(91, hours=6), SPOT, at(hours=6))
    assert d.recheck and not d.confirmed
    state = engine.state(7)
    assert state is not None and state.readings == 2


# --- device health ------------------------------------------------------------------------------


def test_device_health_is_amber_and_only_for_what_matters() -> None:
    now = at(hours=2)
    off = device_offline(7, "ox-1", False, at(hours=1), now, continuous=True)
    assert off is not None and (off.kind, off.severity, off.value) == (
        "device_offline",
        "amber",
        60,
    )
    assert "reported itself offline for 60 min" in off.reason
    assert device_offline(7, "ox-1", False, at(hours=1, minutes=45), now, continuous=True) is None
    assert device_offline(7, "ox-1", False, at(hours=-5), now, continuous=False) is None
    low = low_battery(7, "ox-1", 12, now)
    assert low is not None and (low.kind, low.severity) == ("low_battery", "amber")
    assert low_battery(7, "ox-1", 21, now) is None and low_battery(7, "ox-1", None, now) is None
    poor = bad_quality(7, 6, 10, now, {"motion": 6}, min_share=0.5, min_readings=10, span="x")
    assert poor is not None and poor.severity == "amber" and "movement ×6" in poor.reason


# --- through the real lifecycle -----------------------------------------------------------------


def test_engine_decisions_open_and_upgrade_alerts_through_the_lifecycle(
    db: psycopg.Connection, patient: int
) -> None:
    engine = Engine()
    amber = engine.observe(Reading(patient, T0, 94, 72), SPOT, T0)
    red = engine.observe(Reading(patient, at(minutes=5), 91, 80), SPOT, at(minutes=5))
    confirmed = engine.observe(Reading(patient, at(minutes=10), 90, 82), SPOT, at(minutes=10))
    with db.transaction():
        apply_decisions(db, amber, T0)
        [upgraded] = apply_decisions(db, red + confirmed, at(minutes=10))
    assert upgraded.upgraded and upgraded.severity == "red"
    row = db.execute(
        "SELECT kind, severity, status, worst_value, reading_count FROM alerts"
    ).fetchone()
    assert row == {
        "kind": "spo2_low",
        "severity": "red",
        "status": "open",
        "worst_value": 90,
        "reading_count": 3,
    }
