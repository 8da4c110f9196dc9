"""A small migration runner: numbered SQL files, applied once each, in order, under a lock."""

from __future__ import annotations

from importlib import resources

import psycopg

# Any constant works; it only has to be the same in every process that migrates.
_LOCK_KEY = 0x0C5_1305


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every file in core/migrations, sorted by name."""
    folder = resources.files("core") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the versions applied now.

    A session advisory lock serialises concurrent runs (several services starting at once);
    each file runs in its own transaction with its bookkeeping row, so a failure leaves the
    database at the last good version.
    """
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
