-- The clinical engine (issue 4): per-patient rule overrides, and confirmed alerts.

-- Any setting of the engine's profile for one patient, by name (alerting.profile.Profile
-- fields, e.g. {"sustain_amber_s": 900, "stream_amber_margin_pct": null}); empty: the
-- documented defaults. The bands have columns of their own.
ALTER TABLE patients
    ADD COLUMN alert_rules jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(alert_rules) = 'object');

-- A low spot check re-checked and still low, or a stream's condition held for its sustained
-- time: the alert is confirmed (more urgent than a single reading the patient is asked to
-- repeat). The confirming reading's words replace the first one's.
ALTER TABLE alerts
    ADD COLUMN confirmed boolean NOT NULL DEFAULT false;
