"""Headless locust run with pass/fail thresholds, for CI and release checks.

    .venv/bin/python -m loadtest.run --host http://127.0.0.1:8000 --shape steady --users 16 --run-time 60s

Writes locust's CSV files and HTML report plus summary.json to --out, prints a summary, and exits
0 when every threshold holds, 1 when one is exceeded, 2 when locust produced no results. 429 answers
(load shedding, see the locustfile) are counted apart: they do not count as failures, and have their
own threshold (--max-shed-ratio, off by default).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHED_MARKER = "shed:"


@dataclass
class Row:
    name: str
    requests: int
    failures: int
    shed: int
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class Summary:
    total: Row
    rows: list[Row]
    failure_messages: dict[str, int]
    failure_ratio: float
    shed_ratio: float
    violations: list[str] = field(default_factory=list)


def _ms(value: str) -> float | None:
    return None if value in {"", "N/A"} else float(value)


def read_summary(prefix: Path) -> Summary:
    """Reads `<prefix>_stats.csv` and `<prefix>_failures.csv` as locust wrote them."""
    shed_by_name: dict[str, int] = {}
    messages: dict[str, int] = {}
    with Path(f"{prefix}_failures.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            count = int(row["Occurrences"])
            messages[row["Error"]] = messages.get(row["Error"], 0) + count
            if SHED_MARKER in row["Error"]:
                shed_by_name[row["Name"]] = shed_by_name.get(row["Name"], 0) + count

    rows: list[Row] = []
    total: Row | None = None
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            aggregated = row["Name"] == "Aggregated"
            shed = sum(shed_by_name.values()) if aggregated else shed_by_name.get(row["Name"], 0)
            entry = Row(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]) - shed,
                shed=shed,
                requests_per_s=float(row["Requests/s"]),
                p50_ms=_ms(row["50%"]),
                p95_ms=_ms(row["95%"]),
                p99_ms=_ms(row["99%"]),
            )
            if aggregated:
                total = entry
            else:
                rows.append(entry)
    if total is None:
        raise ValueError(f"{prefix}_stats.csv has no Aggregated row")
    requests = max(total.requests, 1)
    return Summary(
        total=total,
        rows=rows,
        failure_messages=messages,
        failure_ratio=total.failures / requests,
        shed_ratio=total.shed / requests,
    )


def check(
    summary: Summary, *, max_failure_ratio: float, max_p95_ms: float, max_shed_ratio: float
) -> list[str]:
    """Threshold violations, in words."""
    problems = []
    if summary.total.requests == 0:
        problems.append("no request completed")
    if summary.failure_ratio > max_failure_ratio:
        problems.append(f"failure ratio {summary.failure_ratio:.4f} > {max_failure_ratio}")
    p95 = summary.total.p95_ms
    if p95 is not None and p95 > max_p95_ms:
        problems.append(f"p95 {p95:.0f} ms > {max_p95_ms:.0f} ms")
    if summary.shed_ratio > max_shed_ratio:
        problems.append(f"shed (429) ratio {summary.shed_ratio:.4f} > {max_shed_ratio}")
    return problems


def format_summary(summary: Summary) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    lines = [
        f"{'name':<46} {'reqs':>7} {'fail':>5} {'shed':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}",
    ]
    for row in [*summary.rows, summary.total]:
        lines.append(
            f"{row.name[:46]:<46} {row.requests:>7} {row.failures:>5} {row.shed:>5} "
            f"{row.requests_per_s:>7.1f} {fmt(row.p50_ms):>6} {fmt(row.p95_ms):>6} {fmt(row.p99_ms):>6}"
        )
    lines.append(
        f"failure ratio {summary.failure_ratio:.4f}, shed ratio {summary.shed_ratio:.4f} (latencies in ms)"
    )
    for message, count in sorted(summary.failure_messages.items(), key=lambda item: -item[1])[:10]:
        lines.append(f"  {count:>6} x {message[:150]}")
    return "\n".join(lines)


def locust_command(
    *,
    host: str,
    out: Path,
    shape: str = "steady",
    users: int = 16,
    spawn_rate: float = 8.0,
    run_time: str = "60s",
    seed: int = 0,
    api_token: str | None = None,
    locustfiles: Sequence[Path] = (),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The headless locust command line; results go to `out/locust_*.csv` and `out/report.html`.
    `locustfiles` are loaded beside loadtest/locustfile.py; `extra_args` go last (e.g. user class names)."""
    files = [REPO / "loadtest" / "locustfile.py", *locustfiles]
    command = [
        sys.executable, "-m", "locust",
        "--config", str(REPO / "loadtest" / "locust.conf"),
        "--locustfile", ",".join(str(path) for path in files),
        "--headless", "--only-summary",
        "--host", host,
        "--shape", shape,
        "--users", str(users),
        "--spawn-rate", str(spawn_rate),
        "--run-time", run_time,
        "--seed", str(seed),
        "--csv", str(out / "locust"),
        "--html", str(out / "report.html"),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if api_token:
        command += ["--api-token", api_token]
    return [*command, *extra_args]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="base URL of the service")
    parser.add_argument("--shape", choices=("steady", "spike", "soak"), default="steady")
    parser.add_argument("--users", type=int, default=16, help="peak concurrent users")
    parser.add_argument("--spawn-rate", type=float, default=8.0, help="users started per second")
    parser.add_argument("--run-time", default="60s", help="locust time span: 20s, 5m, 1h")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default loadtest/results/...)"
    )
    parser.add_argument(
        "--max-failure-ratio", type=float, default=0.01, help="failures (429 excluded) / requests"
    )
    parser.add_argument("--max-p95-ms", type=float, default=1000.0, help="p95 over all requests, ms")
    parser.add_argument("--max-shed-ratio", type=float, default=1.0, help="429s / requests (1.0: no limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-token", default=None, help="bearer token (or LOADTEST_API_TOKEN)")
    parser.add_argument("--timeout-s", type=float, default=None, help="kill locust after this long")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out or REPO / "loadtest" / "results" / f"{args.shape}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "locust"
    command = locust_command(
        host=args.host,
        out=out,
        shape=args.shape,
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time=args.run_time,
        seed=args.seed,
        api_token=args.api_token,
    )
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=REPO, timeout=args.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"locust did not finish within {args.timeout_s} s", file=sys.stderr)
        return 2
    if result.returncode != 0 or not Path(f"{prefix}_stats.csv").is_file():
        print(f"locust failed (exit code {result.returncode}); no results in {out}", file=sys.stderr)
        return 2

    summary = read_summary(prefix)
    summary.violations = check(
        summary,
        max_failure_ratio=args.max_failure_ratio,
        max_p95_ms=args.max_p95_ms,
        max_shed_ratio=args.max_shed_ratio,
    )
    report = {
        "shape": args.shape,
        "users": args.users,
        "run_time": args.run_time,
        "host": args.host,
        "wall_s": round(time.monotonic() - started, 1),
        **asdict(summary),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(format_summary(summary))
    print(f"results: {out}")
    if summary.violations:
        print("THRESHOLDS EXCEEDED: " + "; ".join(summary.violations), file=sys.stderr)
        return 1
    print("thresholds held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
