-- oximon initial schema: the database contract of DESIGN.md.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    full_name     text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'nurse', 'doctor')),
    password_hash text NOT NULL,
    phone         text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    on_call       boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE patients (
    id                 bigserial PRIMARY KEY,
    display_name       text NOT NULL,
    phone              text CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    language           text NOT NULL DEFAULT 'nb' CHECK (language IN ('nb', 'en')),
    -- SpO2 bands (percent). Defaults: NHS Oximetry @home and NEWS2 scale 1 (95+ normal,
    -- 93-94 amber, 92 and below red). A clinician may set a patient's own.
    spo2_target_min_pct smallint NOT NULL DEFAULT 95 CHECK (spo2_target_min_pct BETWEEN 50 AND 100),
    spo2_target_max_pct smallint NOT NULL DEFAULT 100 CHECK (spo2_target_max_pct BETWEEN 50 AND 100),
    spo2_amber_max_pct  smallint NOT NULL DEFAULT 94 CHECK (spo2_amber_max_pct BETWEEN 50 AND 100),
    spo2_red_max_pct    smallint NOT NULL DEFAULT 92 CHECK (spo2_red_max_pct BETWEEN 50 AND 100),
    -- Pulse bands (beats per minute), NEWS2: 40 or below, or 131 and above, is red.
    pulse_red_min_bpm   smallint NOT NULL DEFAULT 40,
    pulse_red_max_bpm   smallint NOT NULL DEFAULT 131,
    schedule           jsonb NOT NULL DEFAULT '{"kind": "spot", "times": ["08:00", "14:00", "20:00"], "grace_min": 60}',
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'discharged')),
    enrolled_at        timestamptz NOT NULL DEFAULT now(),
    discharged_at      timestamptz,
    CHECK (spo2_red_max_pct <= spo2_amber_max_pct AND spo2_amber_max_pct < spo2_target_min_pct
           AND spo2_target_min_pct <= spo2_target_max_pct)
);
CREATE UNIQUE INDEX patients_phone_key ON patients (phone) WHERE status = 'active';

CREATE TABLE devices (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{3,64}$'),
    patient_id    bigint REFERENCES patients (id),
    serial        text,
    model         text,
    firmware      text,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    online        boolean,
    last_seen_at  timestamptz,
    battery_pct   smallint,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_patient_idx ON devices (patient_id);

-- One row per (device, measured time): a redelivery, a retry or a duplicated upload stores once.
CREATE TABLE readings (
    time         timestamptz NOT NULL,
    device_id    text NOT NULL,
    patient_id   bigint NOT NULL,
    spo2         smallint NOT NULL,
    pulse        smallint NOT NULL,
    pi           real,
    quality      text NOT NULL DEFAULT 'ok',
    source       text NOT NULL DEFAULT 'mqtt' CHECK (source IN ('mqtt', 'sms')),
    received_at  timestamptz NOT NULL,
    seq          bigint,
    battery_pct  smallint,
    late         boolean NOT NULL DEFAULT false
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
CREATE UNIQUE INDEX readings_device_time_key ON readings (device_id, time);
CREATE INDEX readings_patient_time_idx ON readings (patient_id, time DESC);

CREATE TABLE alerts (
    id               bigserial PRIMARY KEY,
    patient_id       bigint NOT NULL REFERENCES patients (id),
    kind             text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('amber', 'red')),
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'escalated', 'resolved')),
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    acknowledged_by  bigint REFERENCES users (id),
    resolved_at      timestamptz,
    resolved_by      bigint REFERENCES users (id),
    outcome          text,
    reason           text NOT NULL,
    first_value      real,
    worst_value      real,
    latest_value     real,
    reading_count    integer NOT NULL DEFAULT 1,
    last_reading_at  timestamptz
);
-- One unresolved alert per patient and kind: later readings update it.
CREATE UNIQUE INDEX alerts_one_open_per_kind ON alerts (patient_id, kind) WHERE status <> 'resolved';
CREATE INDEX alerts_status_idx ON alerts (status, opened_at DESC);

CREATE TABLE alert_events (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL,
    user_id   bigint REFERENCES users (id),   -- NULL: the system
    action    text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, at);

-- Payloads that could not be stored as readings, kept raw with the reason.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    device_id    text
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at DESC);

-- The outbox: every outgoing message, claimed by alerting workers with FOR UPDATE SKIP LOCKED.
CREATE TABLE notifications (
    id                bigserial PRIMARY KEY,
    created_at        timestamptz NOT NULL,
    channel           text NOT NULL CHECK (channel IN ('sms', 'web')),
    recipient         text NOT NULL,
    recipient_user_id bigint REFERENCES users (id),
    patient_id        bigint REFERENCES patients (id),
    alert_id          bigint REFERENCES alerts (id),
    body              text NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'sending', 'sent', 'delivered', 'failed', 'logged')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    provider_id       text,
    provider_status   text,
    sent_at           timestamptz,
    last_error        text
);
CREATE INDEX notifications_pending_idx ON notifications (next_attempt_at) WHERE state = 'pending';
