"""The database connection pool."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.settings import Settings


def make_pool(settings: Settings, *, min_size: int = 1, name: str = "oximon") -> ConnectionPool:
    """An open pool whose connections return rows as dicts."""
    pool = ConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max(min_size, settings.database_pool_max),
        kwargs={"row_factory": dict_row, "application_name": name},
        name=name,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool
