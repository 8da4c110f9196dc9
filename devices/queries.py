"""SQL of the device registry and the fleet view, in one place."""

PATIENT_IS_ACTIVE = "SELECT status FROM patients WHERE id = %s"

SERIAL_IN_USE = """
SELECT id FROM devices
WHERE coalesce(model, '') = coalesce(%(model)s, '') AND serial = %(serial)s AND status = 'active'
"""

DEVICE_EXISTS = "SELECT 1 FROM devices WHERE id = %s"

INSERT_DEVICE = """
INSERT INTO devices (id, patient_id, serial, model, firmware, credentials_issued_at)
VALUES (%(id)s, %(patient_id)s, %(serial)s, %(model)s, %(firmware)s, coalesce(%(now)s, now()))
"""

LOCK_DEVICE = """
SELECT id, patient_id, status, credentials_revoked_at FROM devices WHERE id = %s FOR UPDATE
"""

OPEN_ASSIGNMENT = """
INSERT INTO device_assignments (device_id, patient_id, assigned_at, assigned_by)
VALUES (%(device_id)s, %(patient_id)s, coalesce(%(now)s, now()), %(by)s)
"""

# Closing at the same instant it opened is allowed (a device given to the wrong patient by
# mistake and moved at once); closing before it opened is not (the CHECK refuses it).
CLOSE_ASSIGNMENT = """
UPDATE device_assignments
SET unassigned_at = coalesce(%(now)s, now()), unassigned_by = %(by)s, end_reason = %(reason)s
WHERE device_id = %(device_id)s AND unassigned_at IS NULL
"""

SET_PATIENT = "UPDATE devices SET patient_id = %s WHERE id = %s"

RETIRE = """
UPDATE devices
SET status = 'retired', patient_id = NULL, retired_at = coalesce(%(now)s, now()),
    retired_by = %(by)s, credentials_revoked_at = coalesce(%(now)s, now())
WHERE id = %(device_id)s
"""

CREDENTIALS_ISSUED = """
UPDATE devices SET credentials_issued_at = coalesce(%s, now()), credentials_revoked_at = NULL
WHERE id = %s
"""

CREDENTIALS_REVOKED = """
UPDATE devices SET credentials_revoked_at = coalesce(%s, now()) WHERE id = %s
"""

NOTIFY = "SELECT pg_notify(%s, %s)"

DEVICE = """
SELECT d.id AS device_id, d.serial, d.model, d.firmware, d.status, d.patient_id,
       d.created_at, d.credentials_issued_at, d.credentials_revoked_at, d.retired_at,
       d.online, d.online_changed_at, d.last_seen_at, d.battery_pct,
       d.clock_skew_s, d.clock_skew_at
FROM devices d WHERE d.id = %s
"""

HISTORY = """
SELECT a.patient_id, a.assigned_at, a.assigned_by, ub.username AS assigned_by_username,
       a.unassigned_at, a.unassigned_by, uu.username AS unassigned_by_username, a.end_reason
FROM device_assignments a
LEFT JOIN users ub ON ub.id = a.assigned_by
LEFT JOIN users uu ON uu.id = a.unassigned_by
WHERE a.device_id = %s ORDER BY a.assigned_at, a.id
"""

# Who wore the device when: what the ingest worker needs to attribute a late upload.
ASSIGNMENTS_OF = """
SELECT device_id, patient_id, assigned_at, unassigned_at FROM device_assignments
WHERE device_id = ANY(%s) ORDER BY device_id, assigned_at
"""

# One row per device with everything `devices.health.problems` needs. Readings and refused
# readings are counted over [since, now]; the readings median of (measured - received) over
# readings that were not late estimates the device's clock skew when the worker has not
# recorded one. Index scans on readings (device_id, time) and dead_letters (device_id, …).
FLEET = """
SELECT d.id AS device_id, d.serial, d.model, d.firmware, d.status, d.created_at,
       d.patient_id, p.display_name AS patient_name, p.status AS patient_status, p.schedule,
       a.assigned_at, d.credentials_issued_at, d.credentials_revoked_at, d.retired_at,
       d.online, d.online_changed_at, d.last_seen_at, d.battery_pct,
       d.clock_skew_s AS reported_skew_s, d.clock_skew_at,
       coalesce(r.n, 0) AS readings_n, coalesce(r.bad_n, 0) AS bad_n,
       r.skew_s AS readings_skew_s, r.last_reading_at, coalesce(f.n, 0) AS future_refused_n
FROM devices d
LEFT JOIN patients p ON p.id = d.patient_id
LEFT JOIN device_assignments a ON a.device_id = d.id AND a.unassigned_at IS NULL
LEFT JOIN LATERAL (
    SELECT count(*) AS n,
           count(*) FILTER (WHERE quality <> 'ok') AS bad_n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM time - received_at))
               FILTER (WHERE NOT late) AS skew_s,
           max(time) AS last_reading_at
    FROM readings
    WHERE device_id = d.id AND time >= %(since)s
) r ON d.status = 'active'
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM dead_letters
    WHERE device_id = d.id AND received_at >= %(since)s AND reason LIKE '%%in the future'
) f ON d.status = 'active'
WHERE (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(device_id)s::text IS NULL OR d.id = %(device_id)s)
"""
