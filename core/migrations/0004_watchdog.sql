-- What the alerting watchdog already did about a missed reading: one reminder and one alert
-- per expected reading (spot slot, or start of a stream's gap), whatever the number of workers.
CREATE TABLE missed_reading_actions (
    patient_id  bigint NOT NULL REFERENCES patients (id),
    slot_at     timestamptz NOT NULL,
    action      text NOT NULL CHECK (action IN ('remind_patient', 'alert_nurses')),
    done_at     timestamptz NOT NULL,
    PRIMARY KEY (patient_id, slot_at, action)
);
