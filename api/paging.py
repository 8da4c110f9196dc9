"""Pagination: `limit`/`offset` query parameters and the total in an `X-Total-Count` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query, Response

Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]


def page(
    response: Response, rows: list[dict[str, Any]], count: Callable[[], int] | None = None
) -> list[dict[str, Any]]:
    """Rows with their window-function `total` moved into the X-Total-Count header. A page past
    the end has no row to carry the total: `count` then gives it."""
    if rows:
        total = int(rows[0]["total"])
    else:
        total = count() if count is not None else 0
    response.headers["X-Total-Count"] = str(total)
    for row in rows:
        row.pop("total", None)
    return rows
