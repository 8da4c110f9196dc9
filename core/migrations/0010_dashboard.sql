-- The clinician dashboard's per-user preferences, and personal reading links for patients
-- without a connected oximeter (api/patient_link.py).

-- One row per user who changed something; no row: the browser's language, sound on.
CREATE TABLE user_preferences (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    language    text CHECK (language IN ('nb', 'en')),
    alert_sound boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A personal link (sent by SMS) lets a patient enter a reading on a phone-sized page without a
-- password. The token in the link is this row's id and expiry, signed with the API's secret
-- (HMAC); the row says who made it and lets a nurse revoke it before it expires.
CREATE TABLE patient_links (
    id          bigserial PRIMARY KEY,
    patient_id  bigint NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    created_by  bigint REFERENCES users (id),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_by  bigint REFERENCES users (id),
    last_used_at timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX patient_links_patient_idx ON patient_links (patient_id, created_at DESC);
