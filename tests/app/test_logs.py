"""app.logs: W3C trace context, JSON lines, escaped text lines; and a real server logging JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from app.logs import EscapingFormatter, JsonFormatter, RequestIdFilter, parse_traceparent, request_id_var
from tests.app.server import run_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_parsed_and_returned_with_this_servers_span() -> None:
    trace = parse_traceparent(TRACEPARENT.encode())
    assert trace is not None
    assert (trace.trace_id, trace.parent_id, trace.flags) == (TRACE_ID, "00f067aa0ba902b7", "01")
    version, trace_id, span_id, flags = trace.traceparent().decode().split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert len(span_id) == 16
    assert span_id != "00f067aa0ba902b7"
    future = parse_traceparent(f"cc-{TRACE_ID}-00f067aa0ba902b7-01-what-comes-later".encode())
    assert future is not None
    assert future.trace_id == TRACE_ID


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-0000000000000000-01".encode(),  # all-zero parent id
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01".encode(),  # version ff
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01".encode(),  # upper case
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra".encode(),  # version 00 has exactly four fields
        f"00-{TRACE_ID}\n-00f067aa0ba902b7-01".encode(),
    ],
)
def test_an_invalid_traceparent_is_ignored(value: bytes) -> None:
    assert parse_traceparent(value) is None


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("app.access", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    token = request_id_var.set("req-1")
    try:
        RequestIdFilter().filter(rec)
    finally:
        request_id_var.reset(token)
    return rec


def test_json_lines_carry_the_request_and_access_fields_and_cannot_be_split() -> None:
    line = JsonFormatter().format(
        record("%s %s", "POST", "/v1/x\nforged", method="POST", status=422, duration_ms=1.5, model="m")
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "req-1"
    assert parsed["message"] == "POST /v1/x\nforged"
    assert (parsed["method"], parsed["status"], parsed["duration_ms"], parsed["model"]) == (
        "POST",
        422,
        1.5,
        "m",
    )
    assert "trace_id" not in parsed
    surrogate = json.loads(JsonFormatter().format(record("payload %s", "\ud800")))
    assert surrogate["message"] == "payload \ud800"


def test_text_lines_escape_control_characters() -> None:
    line = EscapingFormatter("%(request_id)s %(message)s").format(
        record("GET %s", "/a\r\n2026 forged\x1b[0m")
    )
    assert line == "req-1 GET /a\\r\\n2026 forged\\x1b[0m"


@pytest.mark.integration
def test_a_server_logging_json_propagates_the_trace_into_its_lines_and_answers(
    tiny_store: Path, tmp_path: Path
) -> None:
    with run_server(tiny_store, tmp_path, log_format="json", log_level="debug") as s:
        r = httpx.post(
            s.base_url + "/v1/sentiment",
            json={"texts": ["great"]},
            headers={"traceparent": TRACEPARENT, "x-request-id": "order-7"},
        )
        assert r.status_code == 200
        assert r.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
        assert r.headers["traceparent"].endswith("-01")
        refused = httpx.post(
            s.base_url + "/v1/sentiment", json={"texts": [" "]}, headers={"traceparent": "junk"}
        )
        assert refused.status_code == 422
        assert "traceparent" not in refused.headers
    lines = [json.loads(line) for line in s.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "app.access"]
    ok = next(line for line in access if line["request_id"] == "order-7")
    assert ok["trace_id"] == TRACE_ID
    assert (ok["method"], ok["path"], ok["status"]) == ("POST", "/v1/sentiment", 200)
    assert (ok["model"], ok["version"]) == ("review-sentiment", "1")
    assert ok["duration_ms"] > 0
    bad = next(line for line in access if line["status"] == 422)
    assert bad["level"] == "warning"
    assert "trace_id" not in bad
    assert any(line["logger"] == "app.main" and "auth OFF" in line["message"] for line in lines)
