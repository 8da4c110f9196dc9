"""Clinical scenarios as data: load the YAML tables, run them, check what they must (not) raise.

One file per scenario in this folder. Every scenario runs twice: through the pure engine
(`run_pure`, tests/test_scenarios.py, microseconds a reading) and through the real pipeline
(tests/test_scenarios_pipeline.py: each reading published to Mosquitto at its `received`
platform time, the ingest worker, the database, the watchdog at the `checks` instants; the
alerts read back and handed to `check` as `Observed`).

A scenario file:

    name: a single low spot check, then a normal one
    description: why it matters, for the clinician reading it
    start: 2026-11-24T08:00:00+01:00        # optional; this is the default (Oslo, 08:00)
    patient:                                 # columns of the `patients` row (Profile.from_row)
      schedule: {kind: spot, times: ["08:00", "14:00", "20:00"], grace_min: 60}
    readings: |
      # at          spo2    pulse  quality  pi    received
      0             97      72
      6h            91      80                            # red: asks for a re-check
      6h5m          97      76
    expect:                                  # each must match at least one alert
      - {kind: spo2_low, severity: red, recheck: true, between: [6h, 6h]}
    forbid:                                  # none may match any alert
      - {kind: spo2_low, confirmed: true}
    checks:                                  # missed readings (alerting.schedule.due_checks)
      - {at: 13h, actions: [remind_patient]}

Times are relative to `start`: `0`, `90s`, `5m`, `6h5m`, `1d8h`. A row `A..B/STEP` repeats
every STEP from A up to (not including) B (rows must not overlap: one reading per instant),
and a value `97->88` goes in a straight line over that range (rounded to whole numbers, as
devices report). `-` or a missing trailing column
takes the default: quality `ok`, no perfusion index, received when measured. `received`
`+10m` is relative to the reading's own time. A reading received more than 600 s after it was
measured is late, exactly as the ingest worker decides (`ingest_late_after_s`).

Expectations match an alert's kind, severity, flags (recheck, confirmed, history), a window
`between: [from, to]` (inclusive) or `after`/`before` on the measured time of the reading that
raised it, and `reason` (a substring).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from alerting.engine import Engine
from alerting.profile import Profile
from alerting.rules import Decision, Reading
from alerting.schedule import due_checks

HERE = Path(__file__).parent
DEFAULT_START = datetime.fromisoformat("2026-11-24T08:00:00+01:00")
LATE_AFTER = timedelta(seconds=600)  # core.settings.Settings.ingest_late_after_s
COLUMNS = ("at", "spo2", "pulse", "quality", "pi", "received")
FLAGS = ("recheck", "confirmed", "history")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


class ScenarioError(ValueError):
    """A scenario file that cannot be read; the message names the file and the row."""


@dataclass(frozen=True)
class ScenarioReading:
    at: datetime  # measured
    received: datetime  # reaches the platform
    spo2_pct: int
    pulse_bpm: int
    quality: str = "ok"
    pi_pct: float | None = None

    @property
    def late(self) -> bool:
        return self.received - self.at > LATE_AFTER


@dataclass(frozen=True)
class Observed:
    """An alert as a scenario sees it (from the engine's decisions, or from the database).
    A flag of None is unknown: it satisfies `expect` and never trips `forbid`.

    `update` marks what the database knows only as a later update of an alert already open
    (its newest reading's time, its severity by then): it can trip a `forbid` on kind,
    severity and time, and never satisfies an `expect`."""

    kind: str
    severity: str
    at: datetime
    reason: str = ""
    recheck: bool | None = None
    confirmed: bool | None = None
    history: bool | None = None
    update: bool = False

    @classmethod
    def of(cls, d: Decision) -> Observed:
        return cls(d.kind, d.severity, d.at, d.reason, d.recheck, d.confirmed, d.history)


@dataclass(frozen=True)
class Expectation:
    kind: str | None = None
    severity: str | None = None
    after: timedelta | None = None
    before: timedelta | None = None
    flags: Mapping[str, bool] = field(default_factory=dict)
    reason: str | None = None
    text: str = ""  # as written, for messages

    def matches(self, o: Observed, start: datetime, unknown_flags_match: bool) -> bool:
        if self.kind is not None and o.kind != self.kind:
            return False
        if self.severity is not None and o.severity != self.severity:
            return False
        if self.after is not None and o.at < start + self.after:
            return False
        if self.before is not None and o.at > start + self.before:
            return False
        if self.reason is not None and self.reason.lower() not in o.reason.lower():
            return False
        for name, wanted in self.flags.items():
            actual = getattr(o, name)
            if actual is None:
                if not unknown_flags_match:
                    return False
            elif actual != wanted:
                return False
        return True


@dataclass(frozen=True)
class Check:
    at: timedelta
    actions: frozenset[str]


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    start: datetime
    patient: Mapping[str, Any]
    readings: tuple[ScenarioReading, ...]
    expect: tuple[Expectation, ...]
    forbid: tuple[Expectation, ...]
    checks: tuple[Check, ...]

    @property
    def id(self) -> str:
        return self.path.stem

    def profile(self, tz: str = "Europe/Oslo") -> Profile:
        return Profile.from_row(self.patient, tz)

    @property
    def schedule(self) -> Mapping[str, Any]:
        return self.patient.get("schedule") or {
            "kind": "spot",
            "times": ["08:00", "14:00", "20:00"],
            "grace_min": 60,
        }

    def in_arrival_order(self) -> list[ScenarioReading]:
        return sorted(self.readings, key=lambda r: (r.received, r.at))


@dataclass
class Outcome:
    observed: list[Observed]
    checks: list[tuple[Check, frozenset[str]]]  # (expected, actual actions)


def has_delayed_readings(scenario: Scenario) -> bool:
    """Whether any reading reaches the platform after it was measured (an upload)."""
    return any(r.received > r.at for r in scenario.readings)


def load_scenarios(folder: Path = HERE) -> list[Scenario]:
    """Every scenario file in `folder`, sorted by file name."""
    return [load_scenario(path) for path in sorted(folder.glob("*.yaml"))]


def load_scenario(path: Path) -> Scenario:
    try:
        doc = yaml.safe_load(path.read_text())
        start = doc.get("start", DEFAULT_START)
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        if start.tzinfo is None:
            raise ScenarioError("start needs a UTC offset")
        return Scenario(
            name=doc["name"],
            path=path,
            description=" ".join(str(doc.get("description", "")).split()),
            start=start,
            patient=doc.get("patient") or {},
            readings=_one_per_instant(parse_table(doc["readings"], start), start),
            expect=tuple(_expectation(e) for e in doc.get("expect") or []),
            forbid=tuple(_expectation(e) for e in doc.get("forbid") or []),
            checks=tuple(
                Check(duration(str(c["at"])), frozenset(c.get("actions") or []))
                for c in doc.get("checks") or []
            ),
        )
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path.name}: {exc}") from exc


def _one_per_instant(
    readings: list[ScenarioReading], start: datetime
) -> tuple[ScenarioReading, ...]:
    """The readings, refusing two measured at the same instant (one device stores one reading
    per measured time: overlapping rows would not mean the same through the pipeline)."""
    seen: set[datetime] = set()
    for r in readings:
        if r.at in seen:
            raise ScenarioError(f"two readings measured at +{r.at - start}: rows overlap")
        seen.add(r.at)
    return tuple(readings)


def duration(text: str) -> timedelta:
    text = text.strip()
    if text in ("0", "0s"):
        return timedelta(0)
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        raise ScenarioError(f"{text!r} is not a time like 90s, 5m, 6h5m or 1d8h")
    d, h, mi, s = m.groups()
    return timedelta(
        days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0), seconds=float(s or 0)
    )


def parse_table(table: str, start: datetime) -> list[ScenarioReading]:
    out: list[ScenarioReading] = []
    for number, raw in enumerate(table.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = line.split()
        if len(cells) < 3 or len(cells) > len(COLUMNS):
            raise ScenarioError(f"readings row {number}: expected {', '.join(COLUMNS)}: {raw!r}")
        cells += ["-"] * (len(COLUMNS) - len(cells))
        at, spo2, pulse, quality, pi, received = cells
        times = _times(at)
        n = len(times)
        spo2s = _values(spo2, n)
        pulses = _values(pulse, n)
        for i, offset in enumerate(times):
            when = start + offset
            if received == "-":
                got = when
            elif received.startswith("+"):
                got = when + duration(received[1:])
            else:
                got = start + duration(received)
            if got < when:
                raise ScenarioError(f"readings row {number}: received before it was measured")
            out.append(
                ScenarioReading(
                    when,
                    got,
                    spo2s[i],
                    pulses[i],
                    "ok" if quality == "-" else quality,
                    None if pi == "-" else float(pi),
                )
            )
    return out


def _times(cell: str) -> list[timedelta]:
    if ".." not in cell:
        return [duration(cell)]
    span, _, step = cell.partition("/")
    lo, _, hi = span.partition("..")
    a, b, s = duration(lo), duration(hi), duration(step or "1m")
    if s <= timedelta(0) or b <= a:
        raise ScenarioError(f"{cell!r}: a range needs A..B/STEP with B after A")
    out = []
    t = a
    while t < b:
        out.append(t)
        t += s
    return out


def _values(cell: str, n: int) -> list[int]:
    if "->" not in cell:
        return [int(cell)] * n
    lo, _, hi = cell.partition("->")
    a, b = float(lo), float(hi)
    if n == 1:
        return [round(a)]
    return [round(a + (b - a) * i / (n - 1)) for i in range(n)]


def _expectation(doc: Mapping[str, Any]) -> Expectation:
    known = {"kind", "severity", "between", "after", "before", "reason", *FLAGS}
    unknown = set(doc) - known
    if unknown:
        raise ScenarioError(f"unknown expectation key(s) {sorted(unknown)} in {dict(doc)}")
    after = duration(str(doc["after"])) if "after" in doc else None
    before = duration(str(doc["before"])) if "before" in doc else None
    if "between" in doc:
        after, before = (duration(str(x)) for x in doc["between"])
    return Expectation(
        kind=doc.get("kind"),
        severity=doc.get("severity"),
        after=after,
        before=before,
        flags={k: bool(doc[k]) for k in FLAGS if k in doc},
        reason=doc.get("reason"),
        text=", ".join(f"{k}: {v}" for k, v in doc.items()),
    )


def run_pure(scenario: Scenario, tz: str = "Europe/Oslo") -> Outcome:
    """The scenario through `alerting.engine` alone; `now` is each reading's arrival."""
    engine = Engine()
    profile = scenario.profile(tz)
    observed: list[Observed] = []
    arrivals = scenario.in_arrival_order()
    for r in arrivals:
        reading = Reading(1, r.at, r.spo2_pct, r.pulse_bpm, r.quality, r.late, r.pi_pct)
        observed += [Observed.of(d) for d in engine.observe(reading, profile, r.received)]
    checks = []
    for c in scenario.checks:
        now = scenario.start + c.at
        arrived = [r.at for r in arrivals if r.received <= now]
        actions = due_checks(
            scenario.schedule, max(arrived, default=None), now, tz, enrolled_at=scenario.start
        )
        checks.append((c, frozenset(a.action for a in actions)))
    return Outcome(observed, checks)


def check(
    scenario: Scenario,
    observed: Iterable[Observed],
    checks: Iterable[tuple[Check, frozenset[str]]] = (),
) -> list[str]:
    """What the scenario wanted and did not get, in words; empty when all is well."""
    seen = list(observed)
    problems = []
    for e in scenario.expect:
        if not any(
            e.matches(o, scenario.start, unknown_flags_match=True) for o in seen if not o.update
        ):
            problems.append(
                f"expected an alert matching {{{e.text}}}; got {_summary(seen, scenario)}"
            )
    for e in scenario.forbid:
        hits = [o for o in seen if e.matches(o, scenario.start, unknown_flags_match=False)]
        if hits:
            first = hits[0]
            problems.append(
                f"forbidden {{{e.text}}} raised {len(hits)} time(s), first at "
                f"+{first.at - scenario.start}: {first.kind}/{first.severity}: {first.reason}"
            )
    for c, actual in checks:
        if actual != c.actions:
            problems.append(
                f"at +{c.at} missed-reading actions were {sorted(actual)}, expected "
                f"{sorted(c.actions)}"
            )
    return problems


def _summary(seen: list[Observed], scenario: Scenario) -> str:
    if not seen:
        return "no alerts at all"
    kinds: dict[tuple[str, str], list[timedelta]] = {}
    for o in seen:
        kinds.setdefault((o.kind, o.severity), []).append(o.at - scenario.start)
    return "; ".join(
        f"{k}/{s} ×{len(ts)} (first +{min(ts)})" for (k, s), ts in sorted(kinds.items())
    )
