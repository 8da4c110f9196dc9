"""Clinical rules, the per-patient engine, the alert lifecycle and the notification outbox."""

from alerting.rules import Decision, Reading, Thresholds, evaluate

__all__ = ["Decision", "Reading", "Thresholds", "evaluate"]
