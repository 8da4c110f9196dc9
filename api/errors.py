"""Errors at the edge: bad input is a 4xx that says what was wrong, never a 500.

FastAPI already answers a request that fails its pydantic models with 422 naming the field.
What reaches these handlers is input that passed the models but not PostgreSQL or Python's
arithmetic: text with a NUL character, a number beyond a column's range, a date so far out
that adding to it overflows.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from core.logs import event

log = logging.getLogger("oximon.api")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(psycopg.DataError)
    async def _data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        event(log, "api_bad_value", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {"detail": "a value is not acceptable: out of range, or text with a NUL character"},
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        event(log, "api_bad_value", path=request.url.path, error="OverflowError")
        return JSONResponse(
            {"detail": "a date or number is out of range"},
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
