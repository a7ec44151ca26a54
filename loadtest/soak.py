"""Soak benchmark (issue 11): long mixed locust load, storefront traffic plus hostile requests, watching the
server's memory. A benchmark, not a test: run it on a quiet machine.

    .venv/bin/python -m loadtest.soak                       # 30 min; starts the service on model_store/
    .venv/bin/python -m loadtest.soak --minutes 5 --users 8 --hostile-users 1
    .venv/bin/python -m loadtest.soak --host http://127.0.0.1:8000 --pid 1234   # a running server

Without --host it starts the service on 127.0.0.1 from --store as the benchmarks do (bench.servers; the
caller's INFERENCE_* variables apply) and stops it at the end. It prints the server's RSS after warm-up
and at the end (goal: growth < 5%), responses by status for storefront and hostile traffic, and the p99
latency of each minute per endpoint; the summary goes to --out/summary.json beside locust's CSVs and HTML
report.

Exit code 0 when the soak passed (no storefront failure other than 429 shedding, no hostile request answered
5xx or left unanswered, RSS growth under the goal), 1 when it did not, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from bench.procstat import memory_kib
from bench.servers import SERVICE_FACTORY, ServerFailed, start_server, stop_server_process
from loadtest.run import REPO, locust_command
from loadtest.soak_stats import MIB, RssSample, format_report, summarize

LOCUST_GRACE_S = 120.0  # locust start-up, stop-timeout and the final write, past the run time
SERVER_READY_S = 300.0


def rss_bytes(pid: int) -> int | None:
    """Resident memory of the process and its children (uvicorn --workers), or None once it is gone."""
    try:
        import psutil
    except ImportError:
        try:
            return memory_kib(pid)["VmRSS"] * 1024
        except (OSError, KeyError):
            return None
    try:
        process = psutil.Process(pid)
        return int(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]))
    except psutil.Error:
        return None


def listener_pid(url: str) -> int | None:
    """The pid listening on the URL's port of this machine, when the OS tells us (psutil)."""
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"} or parts.port is None:
        return None
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == parts.port:
                pid: int | None = conn.pid
                return pid
    except (ImportError, OSError, RuntimeError):
        return None
    return None


def sample_times(duration_s: float, warmup_s: float, every_s: float) -> list[tuple[float, str]]:
    """When (seconds after the load starts) to sample RSS, and the role of each sample."""
    times = [(warmup_s, "start")]
    t = every_s
    while t < duration_s - 1 and len(times) < 10_000:
        if abs(t - warmup_s) > 1:
            times.append((t, "minute"))
        t += every_s
    return sorted(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=None, help="base URL of a running service (default: start one)")
    parser.add_argument("--pid", type=int, default=None, help="its process id (default: who listens there)")
    parser.add_argument("--store", type=Path, default=REPO / "model_store", help="store of a started server")
    parser.add_argument("--minutes", type=float, default=30.0, help="load duration")
    parser.add_argument("--seconds", type=float, default=None, help="load duration (overrides --minutes)")
    parser.add_argument("--users", type=int, default=16, help="storefront users")
    parser.add_argument("--hostile-users", type=int, default=2, help="hostile users (0: none)")
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="load before the start RSS sample")
    parser.add_argument("--sample-s", type=float, default=60.0, help="RSS sample interval")
    parser.add_argument("--bucket-s", type=float, default=60.0, help="latency bucket (a minute)")
    parser.add_argument("--max-rss-growth-pct", type=float, default=5.0, help="goal: RSS growth below this")
    parser.add_argument("--out", type=Path, default=REPO / "bench_results" / "soak", help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-token", default=None, help="bearer token (or LOADTEST_API_TOKEN)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.hostile_users < 0:
        parser.error("--users must be at least 1 and --hostile-users at least 0")
    return args


@contextlib.contextmanager
def service(args: argparse.Namespace, out: Path) -> Iterator[tuple[str, int | None]]:
    """(base URL, pid) of the server under load: the given one, or one started (and stopped) here."""
    if args.host:
        yield args.host, args.pid or listener_pid(args.host)
        return
    env = {"INFERENCE_MODEL_STORE": str(args.store.resolve())}
    server = start_server(SERVICE_FACTORY, env, out / "server.log", ready_timeout_s=SERVER_READY_S)
    print(f"service on {server.url} (pid {server.pid}, store {args.store}), ready in {server.ready_s:.1f} s")
    try:
        yield server.url, server.pid
    finally:
        stop_server_process(server.process)


def _progress(at_s: float, duration_s: float, sample: RssSample | None, record_path: Path) -> str:
    """One line per RSS sample while the load runs; the request counts lag by up to 5 s (the record's
    snapshot interval)."""
    mib = f"{sample.bytes / MIB:.1f} MiB ({sample.role})" if sample and sample.t_s == at_s else "-"
    line = f"[{at_s / 60:5.1f}/{duration_s / 60:.1f} min] RSS {mib}"
    try:
        cells = json.loads(record_path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return line
    done = {kind: sum(c["requests"] for c in cells if c["kind"] == kind) for kind in ("normal", "hostile")}
    failed = sum(c["failures"] for c in cells)
    return f"{line}, {done['normal']} storefront + {done['hostile']} hostile requests, {failed} failures"


def run_load(
    args: argparse.Namespace, url: str, pid: int | None, out: Path, duration_s: float
) -> list[RssSample]:
    """Runs locust for `duration_s`, sampling the server's RSS before, during (times counted from the start
    of the load) and after it."""
    record_path = out / "soak_record.json"
    record_path.unlink(missing_ok=True)
    classes = ["StorefrontUser", "HostileUser"] if args.hostile_users else ["StorefrontUser"]
    command = locust_command(
        host=url,
        out=out,
        users=args.users + args.hostile_users,
        spawn_rate=args.spawn_rate,
        run_time=f"{math.ceil(duration_s)}s",
        seed=args.seed,
        api_token=args.api_token,
        locustfiles=[REPO / "loadtest" / "soak_locust.py"],
        extra_args=[
            "--hostile-users", str(max(1, args.hostile_users)),
            "--soak-record", str(record_path),
            "--soak-bucket-s", str(args.bucket_s),
            *classes,
        ],
    )  # fmt: skip
    samples: list[RssSample] = []

    def sample(t_s: float, role: str) -> None:
        value = rss_bytes(pid) if pid else None
        if value is not None:
            samples.append(RssSample(t_s, value, role))

    sample(0.0, "idle")
    warmup_s = min(args.warmup_s, duration_s / 4)
    started = time.monotonic()
    with (out / "locust.log").open("wb") as log:
        locust = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            load_started = _load_started(locust, record_path)
            if load_started is None:
                print("locust did not start the load", file=sys.stderr)
            else:
                started = load_started
                for at_s, role in sample_times(duration_s, warmup_s, args.sample_s):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        locust.wait(timeout=max(0.0, started + at_s - time.monotonic()))
                    if locust.poll() is not None:
                        break
                    sample(at_s, role)
                    last = samples[-1] if samples else None
                    print(_progress(at_s, duration_s, last, record_path), flush=True)
                locust.wait(timeout=max(1.0, started + duration_s + LOCUST_GRACE_S - time.monotonic()))
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            print("stopping locust early", file=sys.stderr)
        finally:
            _stop(locust)
    sample(time.monotonic() - started, "end")
    return samples


def _load_started(
    locust: subprocess.Popen[bytes], record_path: Path, timeout_s: float = 120.0
) -> float | None:
    """When (time.monotonic) locust started the load, read from its record's t0; None if it never did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and locust.poll() is None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            t0 = float(json.loads(record_path.read_text())["t0"])
            return time.monotonic() - (time.time() - t0)
        time.sleep(0.2)
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # locust stops its users and writes its CSVs and the record
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration_s = args.seconds if args.seconds is not None else args.minutes * 60
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        with service(args, out) as (url, pid):
            if pid is None:
                print(f"no process id for {url}: RSS is not sampled (pass --pid)", file=sys.stderr)
            print(
                f"soak: {duration_s / 60:.1f} min, {args.users} storefront + {args.hostile_users} hostile "
                f"users against {url}; results in {out}",
                flush=True,
            )
            samples = run_load(args, url, pid, out, duration_s)
    except ServerFailed as exc:
        print(f"the service did not start: {exc}", file=sys.stderr)
        return 2
    record_path = out / "soak_record.json"
    if not record_path.is_file():
        print(f"locust recorded nothing; see {out / 'locust.log'}", file=sys.stderr)
        return 2
    record = json.loads(record_path.read_text())
    summary = summarize(record, samples, args.max_rss_growth_pct)
    report = {
        "host": url,
        "pid": pid,
        "duration_s": duration_s,
        "users": args.users,
        "hostile_users": args.hostile_users,
        "warmup_s": min(args.warmup_s, duration_s / 4),
        **summary,
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(format_report(summary))
    print(f"summary: {out / 'summary.json'}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
