-- Storage over years (core/storage.py): the hourly per-patient summary that outlives raw
-- readings' retention. With the Timescale licence it is a continuous aggregate, declared by the
-- storage job (a continuous aggregate cannot be created inside this migration's transaction on
-- every release); with Debian's Apache build it is this table, filled by the same job.
DO $$
BEGIN
    IF current_setting('timescaledb.license') = 'apache' THEN
        CREATE TABLE readings_hourly (
            patient_id  bigint NOT NULL,
            bucket      timestamptz NOT NULL,           -- start of the hour, UTC
            readings    integer NOT NULL,
            spo2_min    smallint NOT NULL,
            spo2_avg    real NOT NULL,
            spo2_max    smallint NOT NULL,
            pulse_min   smallint NOT NULL,
            pulse_avg   real NOT NULL,
            pulse_max   smallint NOT NULL,
            PRIMARY KEY (patient_id, bucket)
        );
        PERFORM create_hypertable('readings_hourly', 'bucket',
                                  chunk_time_interval => interval '30 days');
    END IF;
END
$$;
