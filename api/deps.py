"""Dependencies every router shares: one database connection per request, the platform clock
and the site's time zone. One definition, so FastAPI hands a request's routes and guards the
same connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

from core.clock import Clock


def _conn(request: Request) -> Iterator[psycopg.Connection[DictRow]]:
    pool: ConnectionPool[psycopg.Connection[DictRow]] = request.app.state.pool
    with pool.connection() as conn:
        yield conn


def _clock(request: Request) -> Clock:
    return request.app.state.clock  # type: ignore[no-any-return]


def _timezone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


# scope="function": the connection goes back to the pool, committing the request's work, before
# the response is sent (FastAPI's default since 0.118 ends it after), so a client that acts on a
# response, such as the dashboard re-reading a list after a POST, sees what that POST did.
Conn = Annotated[psycopg.Connection[DictRow], Depends(_conn, scope="function")]
Now = Annotated[Clock, Depends(_clock)]
Zone = Annotated[str, Depends(_timezone)]
