"""Every clinical scenario in tests/scenarios/ through the pure engine: the alerts each must and
must not raise. The scenarios are data; to add one, add a YAML file (see tests/scenarios)."""

from __future__ import annotations

import pytest

from tests.scenarios import Scenario, check, load_scenarios, run_pure

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_raises_exactly_what_its_table_says(scenario: Scenario) -> None:
    outcome = run_pure(scenario)
    problems = check(scenario, outcome.observed, outcome.checks)
    assert not problems, f"{scenario.name}:\n  " + "\n  ".join(problems)


def test_the_suite_covers_the_clinical_cases_of_issue_4() -> None:
    names = " | ".join(s.name for s in SCENARIOS)
    for case in (
        "stable patient",
        "COPD patient",
        "slow decline",
        "sudden desaturation",
        "moving finger",
        "single low spot check, then a normal one",
        "missed spot checks",
        "late upload",
        "sleeps at 93-94%",
        "falls to 93-94% awake",
    ):
        assert case in names, case
