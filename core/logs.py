"""Structured logging: one JSON object per line, ids and counts only, never patient details.

A line reads `{"ts": "…Z", "level": "info", "logger": "oximon.ingest", "event": "batch_stored",
"readings": 12}`: log shippers (Loki, Elasticsearch, journald's JSON export) take it as is.
Callers pass ids, counts and reasons as fields; names, phone numbers and message bodies never
reach a log call. As a second line of defence the formatter blanks anything that looks like a
phone number (E.164 or a Norwegian eight-digit number), since a free-text field such as an
exception message could carry one (a database constraint error quotes the row it refused).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# +4791234567, 0047 91234567, 91234567, "912 34 567": what a Twilio or database error might quote.
_PHONE = re.compile(r"(?<![\w.-])(?:\+|00)?\d(?:[ -]?\d){7,14}(?![\w.])")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with every run of digits that could be a phone number replaced."""
    return _PHONE.sub(REDACTED, text)


def _safe(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(item) for item in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; exceptions as a `error` type and a redacted message."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        fields: dict[str, Any] = getattr(record, "fields", {})
        for key, value in fields.items():
            line.setdefault(key, _safe(value))
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            # The traceback (file names and lines) helps; the exception's text may quote data.
            line["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs each request's URL, which for Twilio holds the account; paho and uvicorn are
    # chatty below WARNING.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (ids, counts, reasons; never names or numbers)."""
    logger.log(level, name, extra={"fields": fields})
