"""The soak's numbers (locust-free, so the driver and the tests can import it without gevent's patching).

`Recorder` is fed every request by the locust plugin (loadtest/soak_locust.py) and keeps, per time bucket
(one minute by default), endpoint and traffic kind, a latency histogram: percentiles are then those of the
requests of that minute alone, not cumulative since the start. `summarize` turns its record and the RSS
samples into the summary that loadtest/soak.py prints and writes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loadtest.hostile import HOSTILE_PREFIX

SHED_MARKER = "shed:"  # how loadtest/locustfile.py marks a 429 (see loadtest/run.py)
MAX_MESSAGES = 40  # distinct failure messages kept per kind; the rest are counted under OTHER
OTHER = "(other messages)"
MIB = 1024 * 1024


def round_ms(ms: float) -> int:
    """1 ms steps below one second, 10 ms above: a histogram of bounded size, p99 within 1%."""
    return round(ms) if ms < 1000 else 10 * round(ms / 10)


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The smallest latency with at least a fraction q of the requests at or below it."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def merged(histograms: Iterable[Mapping[int, int]]) -> Counter[int]:
    total: Counter[int] = Counter()
    for histogram in histograms:
        total.update(histogram)
    return total


@dataclass
class Cell:
    """The requests of one (bucket, kind, endpoint)."""

    requests: int = 0
    failures: int = 0
    shed: int = 0
    latency_ms: Counter[int] = field(default_factory=Counter)


def endpoint_of(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    return path.rsplit("/", 1)[-1] or "?"


class Recorder:
    """Per-request bookkeeping; memory is bounded by buckets × endpoints × distinct rounded latencies."""

    def __init__(self, t0: float, bucket_s: float = 60.0) -> None:
        self.t0 = t0
        self.bucket_s = bucket_s
        self.cells: dict[tuple[int, str, str], Cell] = {}
        self.status: dict[str, Counter[int]] = {"normal": Counter(), "hostile": Counter()}
        self.messages: dict[str, Counter[str]] = {"normal": Counter(), "hostile": Counter()}
        self.hostile_cases: dict[str, Counter[int]] = {}

    def add(
        self, *, name: str, url: str, status: int, response_ms: float, start_time: float, failure: str | None
    ) -> None:
        kind = "hostile" if name.startswith(HOSTILE_PREFIX) else "normal"
        bucket = max(0, int((start_time - self.t0) // self.bucket_s))
        cell = self.cells.setdefault((bucket, kind, endpoint_of(url)), Cell())
        cell.requests += 1
        cell.latency_ms[round_ms(response_ms)] += 1
        self.status[kind][status] += 1
        if kind == "hostile":
            self.hostile_cases.setdefault(name, Counter())[status] += 1
        if failure is None:
            return
        if failure.startswith(SHED_MARKER):
            cell.shed += 1
            return
        cell.failures += 1
        messages = self.messages[kind]
        message = failure[:160]
        messages[message if message in messages or len(messages) < MAX_MESSAGES else OTHER] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "t0": self.t0,
            "bucket_s": self.bucket_s,
            "cells": [
                {
                    "bucket": bucket,
                    "kind": kind,
                    "endpoint": endpoint,
                    "requests": cell.requests,
                    "failures": cell.failures,
                    "shed": cell.shed,
                    "latency_ms": {str(ms): n for ms, n in sorted(cell.latency_ms.items())},
                }
                for (bucket, kind, endpoint), cell in sorted(self.cells.items())
            ],
            "status": {kind: _keyed(counts) for kind, counts in self.status.items()},
            "failure_messages": {kind: dict(counts.most_common()) for kind, counts in self.messages.items()},
            "hostile_cases": {name: _keyed(counts) for name, counts in sorted(self.hostile_cases.items())},
        }


def _keyed(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(status): n for status, n in sorted(counts.items())}


# --- the summary --------------------------------------------------------------------------------------


@dataclass
class RssSample:
    t_s: float  # seconds since the recorder's t0 (the start of the load)
    bytes: int
    role: str  # idle (before the load) | start (after warm-up) | minute | end (when the load stopped)


def _histogram(raw: Mapping[str, int]) -> Counter[int]:
    return Counter({int(ms): n for ms, n in raw.items()})


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def per_bucket_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (bucket, kind, endpoint), plus an `all` row per bucket and kind."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for cell in record["cells"]:
        groups.setdefault((cell["bucket"], cell["kind"]), []).append(cell)
    for (bucket, kind), cells in sorted(groups.items()):
        for endpoint, members in [*((c["endpoint"], [c]) for c in cells), ("all", cells)]:
            histogram = merged(_histogram(c["latency_ms"]) for c in members)
            rows.append(
                {
                    "minute": bucket,
                    "start_s": bucket * record["bucket_s"],
                    "kind": kind,
                    "endpoint": endpoint,
                    "requests": sum(c["requests"] for c in members),
                    "failures": sum(c["failures"] for c in members),
                    "shed": sum(c["shed"] for c in members),
                    "p50_ms": _ms(percentile(histogram, 0.50)),
                    "p99_ms": _ms(percentile(histogram, 0.99)),
                    "max_ms": _ms(float(max(histogram)) if histogram else None),
                }
            )
    return rows


def rss_summary(samples: list[RssSample], max_growth_pct: float) -> dict[str, Any]:
    by_role = {sample.role: sample for sample in samples}  # the last sample of each role
    start, end = by_role.get("start"), by_role.get("end")
    growth = None if start is None or end is None else 100.0 * (end.bytes - start.bytes) / start.bytes
    return {
        "idle_mib": round(by_role["idle"].bytes / MIB, 1) if "idle" in by_role else None,
        "start_mib": round(start.bytes / MIB, 1) if start else None,
        "start_at_s": round(start.t_s, 1) if start else None,
        "end_mib": round(end.bytes / MIB, 1) if end else None,
        "growth_pct": None if growth is None else round(growth, 2),
        "goal_pct": max_growth_pct,
        "passed": None if growth is None else growth < max_growth_pct,
        "samples": [
            {"t_s": round(s.t_s, 1), "mib": round(s.bytes / MIB, 1), "role": s.role} for s in samples
        ],
    }


def summarize(record: Mapping[str, Any], samples: list[RssSample], max_growth_pct: float) -> dict[str, Any]:
    rows = per_bucket_rows(record)
    totals = {
        kind: {
            "requests": sum(r["requests"] for r in rows if r["kind"] == kind and r["endpoint"] == "all"),
            "failures": sum(r["failures"] for r in rows if r["kind"] == kind and r["endpoint"] == "all"),
            "shed": sum(r["shed"] for r in rows if r["kind"] == kind and r["endpoint"] == "all"),
        }
        for kind in ("normal", "hostile")
    }
    hostile_5xx = sum(n for status, n in record["status"]["hostile"].items() if int(status) >= 500)
    rss = rss_summary(samples, max_growth_pct)
    problems = []
    if totals["normal"]["requests"] == 0:
        problems.append("no normal request completed")
    if totals["normal"]["failures"]:
        problems.append(f"{totals['normal']['failures']} normal requests failed (not 200, 429 excluded)")
    if hostile_5xx:
        problems.append(f"{hostile_5xx} hostile requests answered 5xx")
    if unanswered := record["status"]["hostile"].get("0", 0):
        problems.append(f"{unanswered} hostile requests got no answer")
    if rss["passed"] is None:
        problems.append("RSS not measured")
    elif not rss["passed"]:
        problems.append(f"RSS grew {rss['growth_pct']:+.2f}% (goal < {max_growth_pct}%)")
    return {
        "bucket_s": record["bucket_s"],
        "rss": rss,
        "totals": totals,
        "status": record["status"],
        "hostile_5xx": hostile_5xx,
        "hostile_cases": record["hostile_cases"],
        "failure_messages": record["failure_messages"],
        "per_minute": rows,
        "passed": not problems,
        "problems": problems,
    }


# --- the printed report -------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(summary: Mapping[str, Any]) -> str:
    rss = summary["rss"]
    lines = []
    if rss["passed"] is None:
        lines.append("RSS: not measured (no server process to sample)")
    else:
        verdict = "PASS" if rss["passed"] else "FAIL"
        idle = "-" if rss["idle_mib"] is None else rss["idle_mib"]
        lines.append(
            f"RSS: idle {idle} MiB, start {rss['start_mib']} MiB (at {rss['start_at_s']} s, after warm-up), "
            f"end {rss['end_mib']} MiB: growth {rss['growth_pct']:+.2f}% (goal < {rss['goal_pct']}%) "
            f"{verdict}"
        )

    codes = sorted({int(code) for counts in summary["status"].values() for code in counts})
    lines.append("")
    lines.append("responses by status (0 = no answer)")
    lines.append(f"{'':<8}" + "".join(f"{code:>8}" for code in codes))
    for kind in ("normal", "hostile"):
        counts = summary["status"][kind]
        lines.append(f"{kind:<8}" + "".join(f"{counts.get(str(code), 0):>8}" for code in codes))

    rows = summary["per_minute"]
    endpoints = sorted({r["endpoint"] for r in rows if r["kind"] == "normal" and r["endpoint"] != "all"})
    table = {(r["minute"], r["kind"], r["endpoint"]): r for r in rows}
    samples = summary["rss"]["samples"]
    lines.append("")
    lines.append("p99 latency per minute (ms; each minute's own requests)")
    header = "".join(f"{e:>11}" for e in [*endpoints, "all", "hostile"])
    lines.append(f"{'minute':>6}{header}{'reqs':>8}{'fail':>6}{'shed':>6}{'h-fail':>8}{'RSS MiB':>9}")
    bucket_s = summary.get("bucket_s", 60.0)
    minutes = sorted({r["minute"] for r in rows})
    for minute in minutes:
        normal = table.get((minute, "normal", "all"), {})
        hostile = table.get((minute, "hostile", "all"), {})
        p99s = [table.get((minute, "normal", e), {}).get("p99_ms") for e in [*endpoints, "all"]]
        # The sample at a minute's end (the last row: when the load stopped, which may be a little later).
        until = math.inf if minute == minutes[-1] else (minute + 1) * bucket_s
        inside = [s["mib"] for s in samples if minute * bucket_s < s["t_s"] <= until]
        lines.append(
            f"{minute:>6}"
            + "".join(f"{_fmt(p):>11}" for p in [*p99s, hostile.get("p99_ms")])
            + f"{normal.get('requests', 0) + hostile.get('requests', 0):>8}"
            + f"{normal.get('failures', 0):>6}{normal.get('shed', 0):>6}{hostile.get('failures', 0):>8}"
            + f"{inside[-1] if inside else '-':>9}"
        )

    bad_cases = {
        name: {code: n for code, n in counts.items() if int(code) >= 500 or code == "0"}
        for name, counts in summary["hostile_cases"].items()
    }
    bad_cases = {name: counts for name, counts in bad_cases.items() if counts}
    if bad_cases:
        lines.append("")
        lines.append("hostile cases answered 5xx or not at all (FAILURES):")
        for name, counts in bad_cases.items():
            lines.append(f"  {name}: " + ", ".join(f"{n} x {code}" for code, n in counts.items()))
    for kind in ("normal", "hostile"):
        messages = summary["failure_messages"][kind]
        if messages:
            lines.append("")
            lines.append(f"{kind} failure messages (top 8):")
            for message, n in list(messages.items())[:8]:
                lines.append(f"  {n:>6} x {message[:150]}")
    lines.append("")
    lines.append("soak PASSED" if summary["passed"] else "soak FAILED: " + "; ".join(summary["problems"]))
    return "\n".join(lines)
