"""SQL of the API, in one place. Every list keeps to the user's care teams (api.scope)."""

from api.scope import PATIENT_ID_IN_SCOPE, PATIENT_IN_SCOPE

# The patient list: each row with the latest reading, the most urgent unresolved alert (red
# first, then the oldest), the worn oximeter, and whether a missed_reading alert is open.
# Filters are NULL when unused; `total` counts every row the filters keep (for X-Total-Count).
PATIENT_LIST = f"""
WITH listed AS (
SELECT p.id, p.display_name, p.status, p.language, p.care_team_id,
       p.spo2_amber_max_pct, p.spo2_red_max_pct,
       r.time AS last_time, r.spo2 AS last_spo2, r.pulse AS last_pulse, r.quality AS last_quality,
       a.id AS alert_id, a.kind AS alert_kind, a.severity AS alert_severity,
       a.status AS alert_status, a.opened_at AS alert_opened_at, a.reason AS alert_reason,
       d.online AS device_online, d.battery_pct AS device_battery_pct,
       EXISTS (SELECT 1 FROM alerts m WHERE m.patient_id = p.id AND m.kind = 'missed_reading'
               AND m.status <> 'resolved') AS missed_reading
FROM patients p
LEFT JOIN LATERAL (
    SELECT time, spo2, pulse, quality FROM readings
    WHERE patient_id = p.id ORDER BY time DESC LIMIT 1
) r ON true
LEFT JOIN LATERAL (
    SELECT id, kind, severity, status, opened_at, reason FROM alerts
    WHERE patient_id = p.id AND status <> 'resolved'
    ORDER BY (severity = 'red') DESC, opened_at LIMIT 1
) a ON true
LEFT JOIN LATERAL (
    SELECT online, battery_pct FROM devices
    WHERE patient_id = p.id AND status = 'active' ORDER BY last_seen_at DESC NULLS LAST LIMIT 1
) d ON true
WHERE p.status = %(status)s AND {PATIENT_IN_SCOPE}
  AND (%(care_team_id)s::bigint IS NULL OR p.care_team_id = %(care_team_id)s)
  AND (%(q)s::text IS NULL OR p.display_name ILIKE %(q)s)
)
SELECT *, count(*) OVER () AS total FROM listed
WHERE (%(severity)s::text IS NULL OR alert_severity = %(severity)s
       OR (%(severity)s = 'none' AND alert_severity IS NULL))
  AND (NOT %(missed)s OR missed_reading)
ORDER BY {{order}}
LIMIT %(limit)s OFFSET %(offset)s
"""

PATIENT_LIST_ORDER = {
    # Open red first, then amber (a clinical or device alert), then patients whose most urgent
    # alert is a missed reading, then the rest; within each, the alert waiting longest first,
    # then in order of enrolment.
    "risk": "(alert_severity = 'red') DESC NULLS LAST,"
    " (alert_severity = 'amber' AND alert_kind <> 'missed_reading') DESC NULLS LAST,"
    " missed_reading DESC, alert_opened_at NULLS LAST, id",
    "name": "display_name, id",
    # Longest without a reading (or never) first: who to call.
    "last_reading": "last_time NULLS FIRST, id",
    "-last_reading": "last_time DESC NULLS LAST, id",
}

PATIENT = """
SELECT p.id, p.display_name, p.phone, p.language, p.care_team_id, t.name AS care_team_name,
       p.spo2_target_min_pct, p.spo2_target_max_pct, p.spo2_amber_max_pct, p.spo2_red_max_pct,
       p.pulse_red_min_bpm, p.pulse_red_max_bpm, p.schedule, p.status, p.enrolled_at,
       p.discharged_at, p.discharged_by, p.discharge_reason, p.updated_at
FROM patients p JOIN care_teams t ON t.id = p.care_team_id WHERE p.id = %s
"""

PATIENT_DEVICES = """
SELECT id, model, serial, online, battery_pct, last_seen_at FROM devices
WHERE patient_id = %s AND status = 'active' ORDER BY id
"""

PATIENT_FOR_UPDATE = "SELECT * FROM patients WHERE id = %s FOR UPDATE"

PATIENT_UNRESOLVED_ALERTS = (
    "SELECT id FROM alerts WHERE patient_id = %s AND status <> 'resolved' ORDER BY id"
)

NOTES = """
SELECT n.id, n.patient_id, n.author_id, u.username AS author_username,
       u.full_name AS author_name, n.at, n.body
FROM patient_notes n JOIN users u ON u.id = n.author_id
WHERE n.patient_id = %(patient_id)s ORDER BY n.at DESC, n.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""

NOTE_INSERT = """
WITH n AS (
    INSERT INTO patient_notes (patient_id, author_id, at, body)
    VALUES (%(patient_id)s, %(author_id)s, %(at)s, %(body)s) RETURNING *
)
SELECT n.id, n.patient_id, n.author_id, u.username AS author_username,
       u.full_name AS author_name, n.at, n.body
FROM n JOIN users u ON u.id = n.author_id
"""

# --- auth ---------------------------------------------------------------------------------------

USER_FOR_LOGIN = (
    "SELECT id, username, role, password_hash, active, locked_until FROM users WHERE username = %s"
)

LOGIN_FAILURE_INSERT = "INSERT INTO login_failures (user_id, at) VALUES (%s, %s)"

# Failures within the window, not counting those before a lock that has since ended.
LOGIN_FAILURES_RECENT = """
SELECT count(*) AS n FROM login_failures
WHERE user_id = %(user_id)s AND at >= GREATEST(%(since)s, %(lock_ended)s::timestamptz)
"""

REFRESH_INSERT = """
INSERT INTO refresh_tokens (user_id, family, token_hash, issued_at, expires_at)
VALUES (%(user_id)s, %(family)s, %(hash)s, %(now)s, %(expires)s)
"""

REFRESH_LOOKUP = """
SELECT t.id, t.user_id, t.family, t.expires_at, t.used_at, t.revoked_at,
       u.username, u.role, u.active
FROM refresh_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = %s FOR UPDATE OF t
"""

REFRESH_REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = %(now)s WHERE family = %(family)s AND revoked_at IS NULL
"""

REFRESH_REVOKE_USER = """
UPDATE refresh_tokens SET revoked_at = %(now)s WHERE user_id = %(user_id)s AND revoked_at IS NULL
"""

# --- users and care teams -------------------------------------------------------------------

# Users who share a care team with the admin: an admin sees and manages only those.
USERS_VISIBLE = """
SELECT m.user_id FROM user_care_teams m
WHERE m.care_team_id IN (SELECT care_team_id FROM user_care_teams WHERE user_id = %(admin_id)s)
"""

USERS = f"""
SELECT u.id, u.username, u.full_name, u.role, u.phone, u.email, u.on_call, u.active,
       u.oidc_subject IS NOT NULL AS oidc_linked, u.locked_until, u.created_at,
       COALESCE((SELECT array_agg(m.care_team_id ORDER BY m.care_team_id)
                 FROM user_care_teams m WHERE m.user_id = u.id AND m.care_team_id IN (
                     SELECT care_team_id FROM user_care_teams WHERE user_id = %(admin_id)s)),
                '{{}}') AS care_team_ids,
       count(*) OVER () AS total
FROM users u
WHERE u.id IN ({USERS_VISIBLE})
  AND (%(user_id)s::bigint IS NULL OR u.id = %(user_id)s)
  AND (%(role)s::text IS NULL OR u.role = %(role)s)
  AND (%(active)s::boolean IS NULL OR u.active = %(active)s)
ORDER BY u.username
LIMIT %(limit)s OFFSET %(offset)s
"""

CARE_TEAMS = """
SELECT t.id, t.name, t.created_at,
       (SELECT count(*) FROM user_care_teams m WHERE m.care_team_id = t.id) AS members,
       (SELECT count(*) FROM patients p WHERE p.care_team_id = t.id AND p.status = 'active')
           AS active_patients
FROM care_teams t
WHERE t.id IN (SELECT care_team_id FROM user_care_teams WHERE user_id = %(user_id)s)
ORDER BY t.name
"""

# --- audit ----------------------------------------------------------------------------------------

# An admin reads the records about their teams' patients and their teams' users (as actor or
# as the object), and records about nobody in particular by those users.
AUDIT = f"""
SELECT a.id, a.at, a.user_id, u.username, a.action, a.object_kind, a.object_id,
       a.patient_id, a.detail, a.ip, count(*) OVER () AS total
FROM audit_log a LEFT JOIN users u ON u.id = a.user_id
WHERE ((a.patient_id IS NOT NULL AND a.patient_id IN (
            SELECT p.id FROM patients p WHERE p.care_team_id IN (
                SELECT care_team_id FROM user_care_teams WHERE user_id = %(admin_id)s)))
       OR (a.patient_id IS NULL AND (a.user_id IN ({USERS_VISIBLE}) OR (a.object_kind = 'user'
           AND a.object_id IN (SELECT v.user_id::text FROM ({USERS_VISIBLE}) v)))))
  AND (%(user_id)s::bigint IS NULL OR a.user_id = %(user_id)s)
  AND (%(patient_id)s::bigint IS NULL OR a.patient_id = %(patient_id)s)
  AND (%(action)s::text IS NULL OR a.action = %(action)s
       OR (right(%(action)s, 1) = '.' AND starts_with(a.action, %(action)s)))
  AND (%(since)s::timestamptz IS NULL OR a.at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.at < %(until)s)
ORDER BY a.at DESC, a.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""

READINGS_RAW = """
SELECT time, device_id, spo2, pulse, pi, quality, source, late FROM readings
WHERE patient_id = %(patient_id)s AND time >= %(since)s AND time < %(until)s
ORDER BY time LIMIT %(limit)s
"""

READINGS_BUCKETED = """
SELECT time_bucket(%(bucket)s, time) AS time, count(*) AS n,
       min(spo2) AS spo2_min, avg(spo2)::real AS spo2_mean, max(spo2) AS spo2_max,
       min(pulse) AS pulse_min, avg(pulse)::real AS pulse_mean, max(pulse) AS pulse_max
FROM readings
WHERE patient_id = %(patient_id)s AND time >= %(since)s AND time < %(until)s
GROUP BY 1 ORDER BY 1
"""

ALERT_COLUMNS = """
a.id, a.patient_id, a.kind, a.severity, a.status, a.opened_at, a.updated_at, a.reason,
a.acknowledged_at, a.acknowledged_by, ua.username AS acknowledged_by_username,
a.resolved_at, a.resolved_by, a.outcome, a.first_value, a.worst_value, a.latest_value,
a.reading_count, a.last_reading_at
"""

ALERTS = f"""
SELECT {ALERT_COLUMNS} FROM alerts a LEFT JOIN users ua ON ua.id = a.acknowledged_by
WHERE (%(status)s::text IS NULL OR a.status = %(status)s
       OR (%(status)s = 'unresolved' AND a.status <> 'resolved'))
  AND (%(patient_id)s::bigint IS NULL OR a.patient_id = %(patient_id)s)
  AND a.patient_id IN ({PATIENT_ID_IN_SCOPE})
ORDER BY (a.severity = 'red') DESC, a.opened_at DESC
LIMIT %(limit)s
"""

# A message about a patient is in scope with the patient; a message about nobody (a staff
# notice) with the user it went to.
NOTIFICATIONS = f"""
SELECT id, created_at, channel, recipient, patient_id, alert_id, body, state, attempts, sent_at
FROM notifications n WHERE (%(channel)s::text IS NULL OR channel = %(channel)s)
  AND (n.patient_id IN ({PATIENT_ID_IN_SCOPE})
       OR (n.patient_id IS NULL AND (n.recipient_user_id = %(user_id)s OR n.alert_id IN (
           SELECT id FROM alerts WHERE patient_id IN ({PATIENT_ID_IN_SCOPE})))))
ORDER BY created_at DESC, id DESC LIMIT %(limit)s
"""

DEAD_LETTERS = """
SELECT id, received_at, topic, reason, device_id, encode(payload, 'escape') AS payload_text
FROM dead_letters ORDER BY received_at DESC, id DESC LIMIT %(limit)s
"""
