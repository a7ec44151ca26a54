"""Load shapes as pure functions of time, so they can be tested without running locust.

- steady: ramp to the peak at the spawn rate and hold it (throughput and latency at a known load);
- spike:  a quarter of the peak, then the full peak for the middle fifth of the run, then back (does
          the service shed with 429 and recover, instead of timing out?);
- soak:   three quarters of the peak for the whole (long) run, ramped slowly (leaks, drift, cache growth).
"""

from __future__ import annotations

import math

SHAPES = ("steady", "spike", "soak")


def shape_tick(
    shape: str, elapsed_s: float, *, peak_users: int, spawn_rate: float, duration_s: float
) -> tuple[int, float] | None:
    """(users, spawn rate) at `elapsed_s` seconds into the run, or None when the run is over."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if peak_users < 1 or spawn_rate <= 0 or duration_s <= 0:
        raise ValueError("peak_users, spawn_rate and duration_s must be positive")
    if elapsed_s >= duration_s:
        return None
    if shape == "steady":
        return peak_users, spawn_rate
    if shape == "spike":
        base = max(1, peak_users // 4)
        in_spike = 0.4 * duration_s <= elapsed_s < 0.6 * duration_s
        # A spike arrives all at once: everyone who is coming is spawned within a second.
        return (peak_users, float(peak_users)) if in_spike else (base, float(peak_users))
    users = max(1, math.ceil(0.75 * peak_users))
    ramp_s = max(1.0, 0.1 * duration_s)
    return users, max(spawn_rate / 10, users / ramp_s)
