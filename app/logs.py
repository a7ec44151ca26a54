"""Logging of the `app` loggers: one line per record, carrying the request id of the request it serves and,
when the caller sent a W3C `traceparent`, its trace id.

Two formats (INFERENCE_LOG_FORMAT): `text`, one human-readable line, and `json`, one JSON object per line
for a log pipeline, with the access fields (method, path, status, duration_ms, model, version) as keys.

Texts (reviews, queries, user history) are never logged unless INFERENCE_LOG_PAYLOADS is on. Messages
are escaped: a path or header value that carries a line break or another control character (uvicorn
percent-decodes paths, so `%0a` arrives as a newline) is written as `\\n`, `\\x1b`, ... and cannot start a
forged log line (JSON escapes them by itself).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# Fields of an access record (`logging` extra=...), written as keys of a JSON line.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "model", "version")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The caller's W3C trace context and this server's span in it."""

    trace_id: str
    parent_id: str
    flags: str
    span_id: str

    def traceparent(self) -> bytes:
        """The header to return: the same trace, this server's span as the parent of what follows."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode()


trace_var: ContextVar[TraceContext | None] = ContextVar("trace", default=None)

# version-trace_id-parent_id-flags (https://www.w3.org/TR/trace-context/#traceparent-header); a later
# version may append fields after a dash, which are ignored; version ff is invalid.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def parse_traceparent(value: bytes) -> TraceContext | None:
    """The trace context of a valid `traceparent` header, else None (an invalid one is ignored, as the
    specification asks)."""
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = (g.decode() if g else "" for g in match.groups())
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return TraceContext(trace_id, parent_id, flags, os.urandom(8).hex())


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request_id, trace_id, message, the access fields
    when the record has them, and the exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            line["trace_id"] = trace_id
        for key in ACCESS_FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line).decode()
        except TypeError:  # a str orjson refuses (a lone surrogate): json escapes it as \udXXX
            return json.dumps(line, default=str)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        trace = trace_var.get()
        record.trace_id = trace.trace_id if trace is not None else None
        return True


def configure_logging(level: str, log_format: str = "text") -> None:
    """Give the `app` logger one stderr handler in `log_format` (several apps in one process share it; the
    latest configuration wins)."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    handler = next((h for h in logger.handlers if getattr(h, "_app_handler", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RequestIdFilter())
        handler._app_handler = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    handler.setFormatter(JsonFormatter() if log_format == "json" else EscapingFormatter(FORMAT))
