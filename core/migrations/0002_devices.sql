-- Devices: who wore which oximeter when, credential state, and presence/health the worker records.

-- Credentials live only in the broker; the registry keeps when they were issued or revoked.
ALTER TABLE devices
    ADD COLUMN credentials_issued_at  timestamptz,
    ADD COLUMN credentials_revoked_at timestamptz,
    ADD COLUMN retired_at             timestamptz,
    ADD COLUMN retired_by             bigint REFERENCES users (id),
    -- When `online` last changed (the retained status topic); set by the ingest worker.
    ADD COLUMN online_changed_at      timestamptz,
    -- Device clock minus platform clock, seconds (negative: the device is behind), estimated
    -- by the ingest worker from live (single, not late) readings and from readings it refused
    -- as "in the future". NULL: not measured yet.
    ADD COLUMN clock_skew_s           real,
    ADD COLUMN clock_skew_at          timestamptz;

UPDATE devices SET credentials_issued_at = created_at;

-- One live device per (model, serial): a roll-out file listing a serial twice, or a serial
-- already in use, is refused. A retired device's serial may come back (re-commissioned).
CREATE UNIQUE INDEX devices_model_serial_key ON devices (coalesce(model, ''), serial)
    WHERE serial IS NOT NULL AND status = 'active';

-- Who wore which device, from when to when. Readings carry the patient at ingest; this is the
-- record an administrator (or the worker, for late uploads) can check that against.
CREATE TABLE device_assignments (
    id             bigserial PRIMARY KEY,
    -- Devices are retired, not deleted; an operator who deletes one by hand erases its history.
    device_id      text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    patient_id     bigint NOT NULL REFERENCES patients (id),
    assigned_at    timestamptz NOT NULL,
    assigned_by    bigint REFERENCES users (id),      -- NULL: the system or the command line
    unassigned_at  timestamptz,                       -- NULL: still wearing it
    unassigned_by  bigint REFERENCES users (id),
    end_reason     text CHECK (end_reason IN ('moved', 'unassigned', 'retired')),
    CHECK (unassigned_at IS NULL OR unassigned_at >= assigned_at),
    CHECK ((unassigned_at IS NULL) = (end_reason IS NULL))
);
-- A device is worn by at most one patient at a time.
CREATE UNIQUE INDEX device_assignments_current_key ON device_assignments (device_id)
    WHERE unassigned_at IS NULL;
CREATE INDEX device_assignments_device_idx ON device_assignments (device_id, assigned_at DESC);
CREATE INDEX device_assignments_patient_idx ON device_assignments (patient_id, assigned_at DESC);

-- Devices registered before this migration: their current patient since registration.
INSERT INTO device_assignments (device_id, patient_id, assigned_at)
SELECT id, patient_id, created_at FROM devices WHERE patient_id IS NOT NULL AND status = 'active';

-- The fleet view counts each device's readings refused as "in the future" (its clock ahead).
CREATE INDEX dead_letters_device_idx ON dead_letters (device_id, received_at DESC)
    WHERE device_id IS NOT NULL;
