"""Logging of the `app` loggers: one line per record, carrying the request id of the request it serves.

Texts (reviews, queries, user history) are never logged unless INFERENCE_LOG_PAYLOADS is on.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


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
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(RequestIdFilter())
        handler._app_handler = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
