"""Clinical rules, the per-patient engine, the alert lifecycle and the notification outbox."""

from alerting.engine import Engine, PatientState, rebuild
from alerting.engine import evaluate as evaluate_reading
from alerting.profile import Profile
from alerting.rules import Decision, Reading, Thresholds, evaluate
from alerting.schedule import MissedReading, due_checks, next_check_at

__all__ = [
    "Decision",
    "Engine",
    "MissedReading",
    "PatientState",
    "Profile",
    "Reading",
    "Thresholds",
    "due_checks",
    "evaluate",
    "evaluate_reading",
    "next_check_at",
    "rebuild",
]
