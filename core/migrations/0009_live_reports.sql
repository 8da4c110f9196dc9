-- The clinical API's live stream and reports (issue 6).

-- Every change of an alert a dashboard shows (opened, upgraded, acknowledged, escalated,
-- resolved, a new reason) is announced at commit on `oximon_alert_changes`; the API's one
-- LISTEN connection per process fans it out to the clients whose care teams see the patient.
-- `alerts` is a small table (not the readings hypertable), so a row trigger costs little; it
-- fires only when something shown changes, not on every reading that updates a count.
CREATE FUNCTION oximon_notify_alert_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('oximon_alert_changes', json_build_object(
        'id', NEW.id,
        'patient_id', NEW.patient_id,
        'kind', NEW.kind,
        'severity', NEW.severity,
        'status', NEW.status,
        -- A reason is a sentence; the cut keeps the payload far below NOTIFY's 8000 bytes.
        'reason', left(NEW.reason, 1000),
        'opened_at', NEW.opened_at,
        'updated_at', NEW.updated_at,
        'acknowledged_by', NEW.acknowledged_by,
        'resolved_by', NEW.resolved_by,
        'outcome', NEW.outcome,
        'change', CASE WHEN TG_OP = 'INSERT' THEN 'opened' ELSE 'updated' END
    )::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER alerts_notify_insert AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION oximon_notify_alert_change();
CREATE TRIGGER alerts_notify_update AFTER UPDATE ON alerts
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.severity IS DISTINCT FROM NEW.severity
          OR OLD.reason IS DISTINCT FROM NEW.reason)
    EXECUTE FUNCTION oximon_notify_alert_change();

-- Reports: alerts opened in a period, and alert events by who and when (workload).
CREATE INDEX alerts_patient_opened_idx ON alerts (patient_id, opened_at);
CREATE INDEX alert_events_user_at_idx ON alert_events (user_id, at) WHERE user_id IS NOT NULL;
-- The patient timeline: messages to and from one patient, in time order.
CREATE INDEX notifications_patient_created_idx ON notifications (patient_id, created_at)
    WHERE patient_id IS NOT NULL;
CREATE INDEX sms_inbound_patient_received_idx ON sms_inbound (patient_id, received_at)
    WHERE patient_id IS NOT NULL;

-- Charts read a month of one patient's readings (43,200 at one a minute) through time_bucket.
-- Rows of one patient are scattered over the chunks' heap pages (readings arrive in time order
-- from every patient at once), so a plain index scan fetches one heap page per reading (about
-- 0.9 s for a month, measured by `python -m bench api`). With SpO2 and pulse in the index the
-- chart is an index-only scan of a few hundred contiguous leaf pages once autovacuum has
-- marked the pages all-visible (insert-only chunks are vacuumed by PostgreSQL 13+). The same
-- key serves every other (patient_id, time DESC) lookup; the old index goes.
CREATE INDEX readings_patient_time_cover_idx ON readings (patient_id, time DESC)
    INCLUDE (spo2, pulse);
DROP INDEX readings_patient_time_idx;
