-- The alert lifecycle (outcomes, checklist, snooze), the on-call rota, escalation timers and
-- two-way SMS. Configuration tables (policies, checklist templates) only hold overrides: the
-- defaults live in code (alerting.escalation, alerting.lifecycle), so an empty table is valid.

-- Resolution: an outcome from a fixed list; `other` needs words; a note is optional.
ALTER TABLE alerts
    ADD COLUMN outcome_text    text,
    ADD COLUMN resolution_note text,
    ADD CONSTRAINT alerts_outcome_known CHECK (
        outcome IS NULL OR outcome IN ('called_stable', 'home_visit', 'referred_hospital',
                                       'admitted', 'artefact_false_alarm', 'other')),
    ADD CONSTRAINT alerts_other_outcome_has_text CHECK (
        outcome IS DISTINCT FROM 'other' OR length(btrim(coalesce(outcome_text, ''))) > 0);

-- Opt-out (STOP / START by SMS), respected by every outgoing message.
ALTER TABLE patients
    ADD COLUMN sms_opted_out    boolean NOT NULL DEFAULT false,
    ADD COLUMN sms_opted_out_at timestamptz;
ALTER TABLE users
    ADD COLUMN sms_opted_out    boolean NOT NULL DEFAULT false;

-- The on-call rota. Times are instants (UTC inside); the API reads and shows them in the
-- service's zone (Europe/Oslo). `priority` orders people on duty at once: 1 is first called.
CREATE TABLE oncall_shifts (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    role        text NOT NULL CHECK (role IN ('nurse', 'doctor')),
    phone       text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    priority    smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 1 AND 9),
    note        text,
    created_at  timestamptz NOT NULL,
    created_by  bigint REFERENCES users (id),
    CHECK (ends_at > starts_at)
);
CREATE INDEX oncall_shifts_time_idx ON oncall_shifts (ends_at, starts_at);
CREATE INDEX oncall_shifts_phone_idx ON oncall_shifts (phone);

-- Escalation policy overrides per severity (no row: the default in alerting.escalation).
-- No foreign key to users on purpose: configuration must survive a user being removed.
CREATE TABLE escalation_policies (
    severity    text PRIMARY KEY CHECK (severity IN ('amber', 'red')),
    steps       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  bigint
);

-- Outgoing messages: Twilio's states, and cancelled (the alert was taken before it went).
ALTER TABLE notifications DROP CONSTRAINT notifications_state_check;
ALTER TABLE notifications
    ADD CONSTRAINT notifications_state_check CHECK (state IN (
        'pending', 'sending', 'queued', 'sent', 'delivered', 'undelivered', 'failed', 'logged',
        'cancelled')),
    ADD COLUMN status_at  timestamptz,
    ADD COLUMN error_code text;
CREATE INDEX notifications_provider_idx ON notifications (provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX notifications_alert_idx ON notifications (alert_id) WHERE alert_id IS NOT NULL;

-- Escalation timers: one row per thing to do at `due_at`, claimed by alerting workers with
-- FOR UPDATE SKIP LOCKED and marked done in the transaction that queues its messages, so a
-- restart resumes and never repeats a step.
--   ladder   step `step` of the alert's severity policy (round > 0: a repeat of that step)
--   failover a message failed: the next person in the rota, now
--   rearm    a snooze ended: start the ladder again if nobody has taken the alert
CREATE TABLE escalation_steps (
    id                    bigserial PRIMARY KEY,
    alert_id              bigint NOT NULL REFERENCES alerts (id),
    kind                  text NOT NULL CHECK (kind IN ('ladder', 'failover', 'rearm')),
    step                  smallint NOT NULL DEFAULT 0,
    round                 integer NOT NULL DEFAULT 0,
    due_at                timestamptz NOT NULL,
    state                 text NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'done', 'cancelled')),
    done_at               timestamptz,
    -- A failed message moves the escalation on once, however many times its failure is told.
    cause_notification_id bigint UNIQUE REFERENCES notifications (id),
    -- Who the step reached ({"to": [{"user_id", "role", "as"}]}; an empty list: nobody).
    detail                jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL
);
CREATE INDEX escalation_steps_due_idx ON escalation_steps (due_at) WHERE state = 'pending';
CREATE INDEX escalation_steps_alert_idx ON escalation_steps (alert_id);

ALTER TABLE notifications ADD COLUMN escalation_step_id bigint REFERENCES escalation_steps (id);

-- Response checklists: templates per alert kind (overrides; '*' for every other kind), copied
-- onto each alert when it opens, so a later template change never rewrites what was done.
CREATE TABLE checklist_templates (
    kind        text PRIMARY KEY,
    items       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  bigint
);
CREATE TABLE alert_checklist (
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    item      text NOT NULL,
    label     text NOT NULL,
    position  smallint NOT NULL,
    done      boolean NOT NULL DEFAULT false,
    done_at   timestamptz,
    done_by   bigint REFERENCES users (id),
    PRIMARY KEY (alert_id, item)
);

-- Snoozes: a patient's alerts of one kind stay quiet until `until` (platform time); red breaks
-- through unless `include_red`. Alerts are still recorded while snoozed, nobody is paged.
CREATE TABLE alert_snoozes (
    id            bigserial PRIMARY KEY,
    patient_id    bigint NOT NULL REFERENCES patients (id),
    kind          text NOT NULL,
    include_red   boolean NOT NULL DEFAULT false,
    starts_at     timestamptz NOT NULL,
    until         timestamptz NOT NULL,
    reason        text NOT NULL CHECK (length(btrim(reason)) > 0),
    created_by    bigint REFERENCES users (id),
    cancelled_at  timestamptz,
    cancelled_by  bigint REFERENCES users (id),
    CHECK (until > starts_at)
);
CREATE INDEX alert_snoozes_patient_idx ON alert_snoozes (patient_id, kind, until DESC);

-- Text messages received from known numbers (a patient or someone on the rota). A number we
-- do not know gets a polite reply and leaves no row. The provider id makes Twilio's retries
-- of one webhook harmless.
CREATE TABLE sms_inbound (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    provider_id  text,
    patient_id   bigint REFERENCES patients (id),
    user_id      bigint REFERENCES users (id),
    body         text NOT NULL,
    outcome      text NOT NULL,
    reply        text,
    detail       jsonb NOT NULL DEFAULT '{}',
    CHECK (patient_id IS NOT NULL OR user_id IS NOT NULL)
);
CREATE UNIQUE INDEX sms_inbound_provider_key ON sms_inbound (provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX sms_inbound_received_idx ON sms_inbound (received_at DESC);

-- Counters of refused requests (for example webhooks with a bad signature): nothing of the
-- request is kept, only how many and when the last one came.
CREATE TABLE audit_counts (
    name     text PRIMARY KEY,
    count    bigint NOT NULL DEFAULT 0,
    last_at  timestamptz
);
