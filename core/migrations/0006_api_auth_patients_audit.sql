-- The clinical API (issue 6): the audit log, refresh tokens and lock-out, OpenID Connect
-- identities, care notes, and who discharged a patient.

-- Every read of a patient's record and every change, with who, when and from where. Ids only:
-- `detail` names fields and values that are not personal data (never names or phone numbers).
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    user_id      bigint REFERENCES users (id),      -- NULL: the system, or an unknown login name
    action       text NOT NULL,                     -- e.g. patient.read, patient.update, auth.login
    object_kind  text,                              -- patient, note, user, care_team, device, alert
    object_id    text,
    patient_id   bigint REFERENCES patients (id),
    detail       jsonb NOT NULL DEFAULT '{}',
    ip           text
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_patient_idx ON audit_log (patient_id, at DESC) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_log_user_idx ON audit_log (user_id, at DESC);

-- Refresh tokens, stored as SHA-256 hashes. Each use rotates the token: the old row gets
-- `used_at`, a new row of the same family is issued. A used token presented again means it
-- was stolen (or replayed): the whole family is revoked.
CREATE TABLE refresh_tokens (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Failed password logins of known users (lock-out counts those within a window).
CREATE TABLE login_failures (
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL
);
CREATE INDEX login_failures_user_idx ON login_failures (user_id, at DESC);

ALTER TABLE users
    ADD COLUMN locked_until  timestamptz,
    -- OpenID Connect: the provider's subject (`sub`) of this user, or their e-mail address.
    ADD COLUMN oidc_subject  text UNIQUE,
    ADD COLUMN email         text CHECK (email IS NULL OR email ~ '^[^@\s]+@[^@\s]+$');
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE email IS NOT NULL;

-- Free-text care notes, with author and time; never edited (a correction is a new note).
CREATE TABLE patient_notes (
    id          bigserial PRIMARY KEY,
    patient_id  bigint NOT NULL REFERENCES patients (id),
    author_id   bigint NOT NULL REFERENCES users (id),
    at          timestamptz NOT NULL,
    body        text NOT NULL CHECK (length(btrim(body)) BETWEEN 1 AND 10000)
);
CREATE INDEX patient_notes_patient_idx ON patient_notes (patient_id, at DESC);

ALTER TABLE patients
    ADD COLUMN discharged_by     bigint REFERENCES users (id),
    ADD COLUMN discharge_reason  text,
    ADD COLUMN updated_at        timestamptz;

-- A patient's bands, schedule or status changed: services that cache patients (the ingest
-- worker's engine profiles) hear it at commit.
CREATE FUNCTION oximon_notify_patient_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('oximon_patients', json_build_object('patient_id', NEW.id)::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER patients_notify_change AFTER UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION oximon_notify_patient_change();
