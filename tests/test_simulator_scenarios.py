"""Scenario files: the ones shipped load as they say, and a bad one is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.run import ScenarioError, load_scenario, scenario_from

SCENARIOS = Path(__file__).parent.parent / "simulator" / "scenarios"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path, {})
    assert scenario.patients > 0


def test_command_line_options_win_over_the_file() -> None:
    scenario = load_scenario(
        SCENARIOS / "faults.yaml", {"patients": 3, "duplicate_rate": 0.5, "storm_at_min": "1,2"}
    )
    assert scenario.patients == 3 and scenario.interval == 2  # the rest from the file
    assert scenario.faults.duplicate_rate == 0.5
    assert scenario.faults.storm_at_min == (1.0, 2.0)
    assert scenario.faults.malformed_rate == 0.005


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"patterns": ["sudden", "heart_attack"]}, "patterns: unknown ['heart_attack']"),
        ({"spot_share": 1.5}, "spot_share: must be between 0 and 1"),
        ({"faults": {"duplicate_rate": 2}}, "faults.duplicate_rate: must be between 0 and 1"),
        ({"patient": 3}, "unknown setting(s) ['patient']"),
    ],
)
def test_a_bad_scenario_is_refused_naming_the_setting(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario_from(data, {})
    assert message in str(err.value)
