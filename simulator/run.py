"""One simulation run (`oximon simulate`): a scenario from the command line or a YAML file,
oximeters over MQTT and phones over the SMS webhook on the platform clock, live progress, and
the run's ground truth written to a file a clinical benchmark can score against.

A scenario file holds the same settings as the command line's options, by the same names
(`patients`, `spot_share`, `interval`, `deteriorating`, `patterns`, `onset_within`, `sms`,
`sms_url`, `duration`, `seed`, `truth`) and a `faults:` mapping with the fields of
`simulator.fleet.Faults`. Options given on the command line win over the file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from core.clock import Clock
from core.settings import Settings
from simulator import population as pop
from simulator.fleet import (
    Faults,
    Fleet,
    FleetConfig,
    ensure_fleet,
    plan_patients,
    truth_times,
    write_truth,
)


class ScenarioError(ValueError):
    """A scenario cannot be run; the message names the setting."""


@dataclass
class Scenario:
    patients: int = 50
    spot_share: float = 0.0
    interval: float | None = None  # seconds between stream readings; None: 1–5 s per device
    deteriorating: float = 0.1
    patterns: list[str] = field(default_factory=lambda: [pop.SUDDEN])
    onset_within: float = 1.0  # platform minutes
    sms: int = 0
    sms_url: str | None = None
    duration: float | None = None  # wall seconds
    seed: int = 1
    truth: str | None = None
    faults: Faults = field(default_factory=Faults)

    def check(self) -> Scenario:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ScenarioError(f"{name}: {what}")

        need(self.patients >= 0, "patients", "must be 0 or more")
        need(0 <= self.spot_share <= 1, "spot_share", "must be between 0 and 1")
        need(0 <= self.deteriorating <= 1, "deteriorating", "must be between 0 and 1")
        need(self.interval is None or self.interval > 0, "interval", "must be positive seconds")
        bad = [p for p in self.patterns if p not in pop.PATTERNS]
        need(not bad, "patterns", f"unknown {bad}; known: {', '.join(pop.PATTERNS)}")
        need(bool(self.patterns), "patterns", "name at least one")
        need(self.onset_within > 0, "onset_within", "must be positive minutes")
        need(self.sms >= 0, "sms", "must be 0 or more")
        need(self.patients + self.sms > 0, "patients", "nothing to simulate (and no sms)")
        f = self.faults
        for name in ("duplicate_rate", "malformed_rate", "clock_skew_share", "offline_share"):
            need(0 <= getattr(f, name) <= 1, f"faults.{name}", "must be between 0 and 1")
        return self


def load_scenario(path: Path | None, overrides: Mapping[str, Any]) -> Scenario:
    """A scenario file (YAML) with command-line overrides on top (None = not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"scenario file {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ScenarioError(f"scenario file {path}: must be a mapping of settings")
        data = dict(loaded or {})
    return scenario_from(data, overrides)


def scenario_from(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> Scenario:
    data = dict(data)
    faults_data = data.pop("faults", None) or {}
    known = {f.name for f in fields(Scenario)} - {"faults"}
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    fault_names = {f.name for f in fields(Faults)}
    unknown = set(faults_data) - fault_names
    if unknown:
        raise ScenarioError(f"faults: unknown {sorted(unknown)}; known: {sorted(fault_names)}")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in fault_names:
            faults_data[key] = value
        else:
            data[key] = value
    if isinstance(data.get("patterns"), str):
        data["patterns"] = [p.strip() for p in data["patterns"].split(",") if p.strip()]
    if "storm_at_min" in faults_data:
        storm = faults_data["storm_at_min"]
        if isinstance(storm, str):
            storm = [float(x) for x in storm.split(",") if x.strip()]
        elif isinstance(storm, int | float):
            storm = [storm]
        faults_data["storm_at_min"] = tuple(float(x) for x in storm)
    try:
        return Scenario(**data, faults=Faults(**faults_data)).check()
    except TypeError as exc:
        raise ScenarioError(str(exc)) from exc


def run(
    settings: Settings,
    scenario: Scenario,
    stop: threading.Event,
    echo: Callable[[str], None] = print,
) -> Fleet:
    """Register what the scenario needs, run it until `stop` or its duration, write its truth."""
    from simulator.sms import SmsPatients, SmsPhone, ensure_sms_patients

    if not settings.mqtt_admin_url:
        raise ScenarioError("OXIMON_MQTT_ADMIN_URL is needed to give simulated devices credentials")
    clock = Clock.from_settings(settings)
    start = clock.now()
    config = FleetConfig(
        patients=scenario.patients,
        spot_share=scenario.spot_share,
        interval_s=scenario.interval,
        deteriorating=scenario.deteriorating,
        patterns=tuple(scenario.patterns),
        onset_within_min=scenario.onset_within,
        seed=scenario.seed,
        faults=scenario.faults,
    )
    patients = plan_patients(config, start)
    devices = ensure_fleet(settings.database_url, settings.mqtt_admin_url, patients)
    fleet = Fleet(
        settings.mqtt_url,
        devices,
        patients,
        clock,
        start,
        scenario.faults,
        scenario.seed,
        on_progress=echo,
    )
    threads: list[threading.Thread] = []
    sms_runner: SmsPatients | None = None
    sms_rows: list[dict[str, Any]] = []
    if scenario.sms:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        if not token:
            raise ScenarioError("sms: OXIMON_TWILIO_AUTH_TOKEN is needed to sign texts as Twilio")
        base = (
            scenario.sms_url
            or settings.public_url
            or (f"http://{settings.api_host}:{settings.api_port}")
        )
        url = base.rstrip("/") + "/api/v1/sms/inbound"
        sms_config = FleetConfig(
            patients=scenario.sms,
            spot_share=1.0,
            deteriorating=scenario.deteriorating,
            patterns=tuple(scenario.patterns),
            onset_within_min=scenario.onset_within,
            seed=scenario.seed + 1,
        )
        sms_patients = plan_patients(sms_config, start)
        registered = ensure_sms_patients(settings.database_url, sms_patients)
        phones = [
            SmsPhone(url, token, phone, account_sid=settings.twilio_account_sid or "")
            for _, phone in registered
        ]
        sms_runner = SmsPatients(
            phones, sms_patients, lambda: fleet_model_t(fleet, clock), scenario.seed
        )
        for (patient_id, _phone), p in zip(registered, sms_patients, strict=True):
            row = {"patient_id": patient_id, "device_id": f"sms-{patient_id}"}
            row.update(truth_times(fleet.instant, p.ground_truth()))
            sms_rows.append(row)
        threads.append(threading.Thread(target=sms_runner.run, args=(stop,), daemon=True))
    echo(
        f"simulating {len(devices)} oximeters and {scenario.sms} SMS patients on the platform clock"
        f" (speed {clock.speed:g}); Ctrl-C stops"
    )
    run_info = {
        "started_at": start.isoformat(),
        "clock_origin": clock.origin.isoformat() if clock.origin else None,
        "clock_speed": clock.speed,
        "scenario": _plain(asdict(scenario)),
    }
    truth_path = Path(scenario.truth) if scenario.truth else None
    if truth_path:
        # Written at once (the truth is known from the start) and again with the faults at the end.
        write_truth(truth_path, fleet.ground_truth() + sms_rows, run_info, fleet.events)
    for t in threads:
        t.start()
    try:
        fleet.run(stop, scenario.duration)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        if truth_path:
            run_info["ended_at"] = clock.now().isoformat()
            write_truth(truth_path, fleet.ground_truth() + sms_rows, run_info, fleet.events)
            echo(f"ground truth written to {truth_path}")
        s = fleet.stats
        sms = sms_runner.stats if sms_runner else None
        echo(
            f"done: readings {s.readings}, messages {s.messages}, acked {s.acked},"
            f" errors {s.errors}"
            + (
                f"; sms sent {sms.sent}, replied {sms.replied}, refused {sms.refused}"
                if sms
                else ""
            )
        )
    return fleet


def fleet_model_t(fleet: Fleet, clock: Clock) -> float:
    return pop.t_of(clock.now()) - fleet.shift_s


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value
