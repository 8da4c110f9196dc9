"""SQL of the API, in one place. Every list keeps to the user's care teams (api.scope)."""

from api.scope import PATIENT_ID_IN_SCOPE, PATIENT_IN_SCOPE

PATIENT_LIST = f"""
SELECT p.id, p.display_name, p.status, p.language,
       p.spo2_amber_max_pct, p.spo2_red_max_pct,
       r.time AS last_time, r.spo2 AS last_spo2, r.pulse AS last_pulse, r.quality AS last_quality,
       a.id AS alert_id, a.kind AS alert_kind, a.severity AS alert_severity,
       a.status AS alert_status, a.opened_at AS alert_opened_at, a.reason AS alert_reason,
       d.online AS device_online, d.battery_pct AS device_battery_pct
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
ORDER BY (a.severity = 'red') DESC NULLS LAST, (a.severity = 'amber') DESC NULLS LAST, p.id
LIMIT %(limit)s OFFSET %(offset)s
"""

PATIENT = """
SELECT id, display_name, phone, language, care_team_id, spo2_target_min_pct, spo2_target_max_pct,
       spo2_amber_max_pct, spo2_red_max_pct, pulse_red_min_bpm, pulse_red_max_bpm,
       schedule, status, enrolled_at, discharged_at
FROM patients WHERE id = %s
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
