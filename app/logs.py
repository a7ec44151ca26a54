"""Logging of the `app` loggers: one line per record, carrying the request id of the request it serves.

Texts (reviews, queries, user history) are never logged unless INFERENCE_LOG_PAYLOADS is on. Messages
are escaped: a path or header value that carries a line break or another control character (uvicorn
percent-decodes paths, so `%0a` arrives as a newline) is written as `\n`, `\x1b`, ... and cannot start a
forged log line.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_CONTROL = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: ascii(chr(c))[1:-1] for c in _CONTROL}


def escape_controls(text: str) -> str:
    return text if text.isprintable() else text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose messages cannot contain line breaks or terminal escapes (tracebacks, which the
    formatter appends after the message, keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str) -> None:
    """Give the `app` logger one stderr handler (idempotent: several apps in one process share it)."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_app_handler", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter(FORMAT))
        handler.addFilter(RequestIdFilter())
        handler._app_handler = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
