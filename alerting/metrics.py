"""Prometheus metrics read from the database at scrape time: open alerts, time to acknowledge,
SMS outcomes, the device fleet, newest reading, database size.

They describe state that lives in PostgreSQL rather than in one process, so every alerting
worker reports the same values: dashboards and alert rules take `max` over the workers. Each
scrape is one short connection with a statement timeout, so a slow database makes the scrape
report `oximon_database_up 0` instead of hanging Prometheus.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

# (name, help, labels). The names dashboards and alert rules may use; tests check them.
FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("oximon_database_up", "1 when the metrics query reached the database", ()),
    ("oximon_alerts_unresolved", "Alerts not yet resolved", ("severity", "status")),
    (
        "oximon_alert_acknowledge_seconds",
        "Opened to acknowledged, alerts acknowledged in the last 24 h",
        ("severity", "quantile"),
    ),
    ("oximon_alerts_acknowledged_24h", "Alerts acknowledged in the last 24 h", ("severity",)),
    (
        "oximon_notifications_last_hour",
        "Outgoing messages created in the last hour, by current state",
        ("channel", "state"),
    ),
    ("oximon_devices", "Oximeters in service, by connection state", ("state",)),
    (
        "oximon_readings_newest_age_seconds",
        "Age of the newest stored reading (measured time)",
        (),
    ),
    ("oximon_database_size_bytes", "Size of the oximon database", ()),
    ("oximon_table_size_bytes", "Size of a table with its indexes", ("table",)),
)

QUERIES = {
    "alerts": "SELECT severity, status, count(*) AS n FROM alerts WHERE status <> 'resolved'"
    " GROUP BY severity, status",
    "acknowledge": "SELECT severity, count(*) AS n,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))"
    " AS p50,"
    " percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - opened_at))"
    " AS p90"
    " FROM alerts WHERE acknowledged_at > now() - interval '24 hours' GROUP BY severity",
    "notifications": "SELECT channel, state, count(*) AS n FROM notifications"
    " WHERE created_at > now() - interval '1 hour' GROUP BY channel, state",
    "devices": "SELECT CASE WHEN last_seen_at IS NULL THEN 'never_seen'"
    " WHEN online THEN 'online' ELSE 'offline' END AS state, count(*) AS n"
    " FROM devices WHERE status = 'active' GROUP BY 1",
    "newest": "SELECT extract(epoch FROM now() - time) AS age FROM readings"
    " ORDER BY time DESC LIMIT 1",
    "database": "SELECT pg_database_size(current_database()) AS bytes",
    # hypertable_size counts every chunk; pg_total_relation_size of the parent alone is ~0.
    "tables": "SELECT t AS name, CASE WHEN h.hypertable_name IS NOT NULL"
    " THEN hypertable_size(t::regclass) ELSE pg_total_relation_size(t::regclass) END AS bytes"
    " FROM unnest(ARRAY['readings', 'readings_hourly', 'alerts', 'alert_events',"
    " 'notifications', 'dead_letters']) AS t"
    " LEFT JOIN timescaledb_information.hypertables h ON h.hypertable_name = t"
    " WHERE to_regclass(t) IS NOT NULL",
}


class DatabaseCollector(Collector):
    def __init__(self, database_url: str, timeout_s: float = 5.0) -> None:
        self.database_url = database_url
        self.timeout_s = timeout_s

    def describe(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(name, text, labels=list(labels)) for name, text, labels in FAMILIES
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {f.name: f for f in self.describe()}
        try:
            rows = self._query()
        except psycopg.Error:
            families["oximon_database_up"].add_metric([], 0)
            yield families["oximon_database_up"]
            return
        families["oximon_database_up"].add_metric([], 1)
        for r in rows["alerts"]:
            families["oximon_alerts_unresolved"].add_metric([r[0], r[1]], r[2])
        for severity, n, p50, p90 in rows["acknowledge"]:
            families["oximon_alerts_acknowledged_24h"].add_metric([severity], n)
            families["oximon_alert_acknowledge_seconds"].add_metric([severity, "0.5"], p50)
            families["oximon_alert_acknowledge_seconds"].add_metric([severity, "0.9"], p90)
        for channel, state, n in rows["notifications"]:
            families["oximon_notifications_last_hour"].add_metric([channel, state], n)
        for state, n in rows["devices"]:
            families["oximon_devices"].add_metric([state], n)
        for (age,) in rows["newest"]:
            families["oximon_readings_newest_age_seconds"].add_metric([], float(age))
        for (size,) in rows["database"]:
            families["oximon_database_size_bytes"].add_metric([], size)
        for table, size in rows["tables"]:
            families["oximon_table_size_bytes"].add_metric([table], size or 0)
        yield from families.values()

    def _query(self) -> dict[str, list[tuple[Any, ...]]]:
        timeout_ms = int(self.timeout_s * 1000)
        with psycopg.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=max(1, int(self.timeout_s)),
            options=f"-c statement_timeout={timeout_ms}",
            application_name="oximon-metrics",
        ) as conn:
            return {key: conn.execute(sql).fetchall() for key, sql in QUERIES.items()}


_registered = threading.Lock()
_collector: DatabaseCollector | None = None


def register(database_url: str) -> DatabaseCollector:
    """Add the database metrics to this process's /metrics (once per process)."""
    global _collector
    with _registered:
        if _collector is None:
            _collector = DatabaseCollector(database_url)
            REGISTRY.register(_collector)
        return _collector
