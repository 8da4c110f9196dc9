"""Errors at the edge: bad input is a 4xx that says what was wrong, never a 500.

FastAPI already answers a request that fails its pydantic models with 422 naming the field.
What reaches these handlers is input that passed the models but not PostgreSQL or Python's
arithmetic: text with a NUL character, a number beyond a column's range, a date so far out
that adding to it overflows (422), a value a table's CHECK refuses (422, naming the
constraint), a row that conflicts with one stored (409). Routes that can name the field catch
these themselves; these are the backstop.
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

    @app.exception_handler(psycopg.errors.CheckViolation)
    async def _check(request: Request, exc: psycopg.errors.CheckViolation) -> JSONResponse:
        constraint = exc.diag.constraint_name or "a check"
        event(log, "api_bad_value", path=request.url.path, constraint=constraint)
        return JSONResponse(
            {"detail": f"a value is not allowed by the database ({constraint})"},
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )

    @app.exception_handler(psycopg.IntegrityError)
    async def _integrity(request: Request, exc: psycopg.IntegrityError) -> JSONResponse:
        constraint = exc.diag.constraint_name or type(exc).__name__
        event(log, "api_conflict", path=request.url.path, constraint=constraint)
        return JSONResponse(
            {"detail": f"conflicts with what is stored ({constraint})"},
            status_code=status.HTTP_409_CONFLICT,
        )

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> JSONResponse:
        event(log, "api_bad_value", path=request.url.path, error="OverflowError")
        return JSONResponse(
            {"detail": "a date or number is out of range"},
            status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
