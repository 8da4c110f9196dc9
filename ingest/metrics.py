"""Prometheus metrics of the ingest worker."""

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("oximon_ingest_messages_received_total", "MQTT messages received")
STORED = Counter("oximon_ingest_readings_stored_total", "Readings stored (new rows)")
DUPLICATES = Counter("oximon_ingest_readings_duplicate_total", "Readings already stored (ignored)")
DEAD_LETTERED = Counter(
    "oximon_ingest_dead_letters_total", "Payloads kept as dead letters", ["reason"]
)
BATCH_SIZE = Histogram(
    "oximon_ingest_batch_readings",
    "Readings per stored batch",
    buckets=(1, 5, 10, 50, 100, 500, 1000, 2000, 5000),
)
WRITE_SECONDS = Histogram(
    "oximon_ingest_write_seconds",
    "Time to store one batch (transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LAG_SECONDS = Gauge("oximon_ingest_lag_seconds", "Measured-to-stored lag of the latest batch")
DB_UP = Gauge("oximon_ingest_database_up", "1 when the last write succeeded")
