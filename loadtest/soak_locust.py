"""The locust side of the soak; loadtest/soak.py runs it beside loadtest/locustfile.py:

    locust -f loadtest/locustfile.py,loadtest/soak_locust.py --hostile-users 2 --soak-record rec.json \\
        StorefrontUser HostileUser

- HostileUser sends loadtest/hostile.py's bodies; 200 and 4xx are successes, a 5xx or no answer a failure.
  It is a fixed number of users (--hostile-users); the storefront users are the rest of -u.
- every request (both kinds) goes into a loadtest.soak_stats.Recorder, written as JSON to --soak-record
  every few seconds and when locust stops, so a killed run still leaves its record.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

# locust imports this file by path; the package next to it must be importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.hostile import acceptable, draw
from loadtest.soak_stats import Recorder

SNAPSHOT_EVERY_S = 5.0

_recorder: Recorder | None = None
_record_path: Path | None = None
_last_write = 0.0
_USER_NUMBERS = itertools.count()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--hostile-users", type=int, default=2, help="hostile users (fixed count, at least 1; list the class)"
    )
    parser.add_argument("--soak-record", default="", help="JSON file for the per-request record")
    parser.add_argument("--soak-bucket-s", type=float, default=60.0, help="latency bucket width, seconds")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    global _record_path
    options = environment.parsed_options
    if options is None:
        return
    HostileUser.fixed_count = max(1, int(options.hostile_users))
    _record_path = Path(options.soak_record) if options.soak_record else None


@events.test_start.add_listener
def _start_recording(environment: Environment, **_: Any) -> None:
    global _recorder
    options = environment.parsed_options
    bucket_s = float(options.soak_bucket_s) if options is not None else 60.0
    _recorder = Recorder(time.time(), bucket_s)
    _write()


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    response: Any,
    exception: BaseException | None,
    start_time: float | None = None,
    url: str | None = None,
    **_: Any,
) -> None:
    if _recorder is None:
        return
    _recorder.add(
        name=name,
        url=url or name,
        status=int(getattr(response, "status_code", 0) or 0),
        response_ms=float(response_time or 0.0),
        start_time=start_time if start_time is not None else time.time(),
        failure=None if exception is None else str(exception),
    )
    if time.monotonic() - _last_write > SNAPSHOT_EVERY_S:
        _write()


@events.test_stop.add_listener
def _on_stop(**_: Any) -> None:
    _write()


@events.quitting.add_listener
def _on_quit(**_: Any) -> None:
    _write()


def _write() -> None:
    global _last_write
    _last_write = time.monotonic()
    if _recorder is None or _record_path is None:
        return
    partial = _record_path.with_suffix(".partial")
    partial.write_text(json.dumps(_recorder.to_json()))
    os.replace(partial, _record_path)  # readers never see half a file


def _text(response: Any) -> str:
    try:
        return str(response.text or "")[:120]
    except Exception:  # a response without a body (connection reset) has no text to decode
        return ""


class HostileUser(FastHttpUser):
    """A client that sends broken, oversized or adversarial requests, in a loop, for the whole run."""

    fixed_count = 2
    wait_time = between(0.2, 1.0)
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        seed = getattr(options, "seed", 0) if options is not None else 0
        self.rng = random.Random(100_000 + seed + next(_USER_NUMBERS))
        token = getattr(options, "api_token", "") if options is not None else ""
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    @task
    def hostile(self) -> None:
        request = draw(self.rng)
        headers = {"Content-Type": request.content_type, **self.auth}
        with self.client.request(
            "POST",
            f"/v1/{request.endpoint}",
            data=request.body,  # type: ignore[arg-type]  # raw bytes: some bodies are not valid UTF-8
            headers=headers,
            name=request.name,
            catch_response=True,
        ) as response:
            if acceptable(response.status_code):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code} on {request.name}: {_text(response)}")
