"""Profile the service under load with py-spy: start it, drive a closed loop at it, sample its stacks.

    .venv/bin/python -m bench.profile --endpoint sentiment --concurrency 32 --seconds 20

Writes bench_results/profile-<time>.txt (py-spy's collapsed stacks) and prints the functions with the
largest share of samples, inclusive (anywhere on the stack) and self (the leaf frame); `--gil` samples only
the thread holding the GIL (where Python itself is the cost).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench.loadgen import LoadResult, run_load, use_uvloop
from bench.paths import DATA_ROOT, REPO_ROOT, RESULTS_DIR, movielens_dir
from bench.payloads import ENDPOINTS, build_payloads
from bench.servers import SERVICE_FACTORY, start_server, stop_server


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw output: `frame;frame;... count` per line -> [(frames root-first, count)]."""
    stacks = []
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    """`run (onnxruntime/capi/session.py:270)` -> `run (session.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(path).name})" if path else name


def shares(
    stacks: list[tuple[list[str], int]], *, skip_thread_frames: bool = True
) -> tuple[Counter[str], Counter[str], int]:
    """(inclusive samples per function, self samples per function, total samples)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        names = [
            _short(f) for f in frames if not (skip_thread_frames and f.startswith(("thread ", "process ")))
        ]
        if not names:
            continue
        total += count
        for name in set(names):
            inclusive[name] += count
        leaf[names[-1]] += count
    return inclusive, leaf, total


def report(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    inclusive, leaf, total = shares(stacks)
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "inclusive (on the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self (leaf frame):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    return "\n".join(lines)


def record(pid: int, seconds: float, out: Path, *, fmt: str, gil: bool, rate: int) -> subprocess.Popen[bytes]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--format",
        fmt,
        "--output",
        str(out),
        "--nonblocking",
    ]
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="sentiment")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    env = {"INFERENCE_MODEL_STORE": str(args.store)}
    for item in args.service_env:
        key, _, value = item.partition("=")
        env[key] = value
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{stamp}.txt"
    payloads = build_payloads(DATA_ROOT, movielens_dir(), args.endpoint, 2000)
    server = start_server(SERVICE_FACTORY, env, args.out / f"profile-{stamp}.log")
    print(f"server ready in {server.ready_s:.1f}s (pid {server.pid})", flush=True)
    try:
        use_uvloop()
        result_box: list[LoadResult] = []

        def load() -> None:
            result_box.append(
                asyncio.run(
                    run_load(
                        server.url,
                        payloads,
                        concurrency=args.concurrency,
                        duration_s=args.seconds + 2,
                        warmup_s=2.0,
                        server_pid=server.pid,
                    )
                )
            )

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(2.5)  # warm-up first
        spy = record(server.pid, args.seconds, raw, fmt="raw", gil=args.gil, rate=args.rate)
        _, err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0:
            print(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
        loader.join()
    finally:
        stop_server(server)
    if result_box:
        stats = result_box[0].stats
        print(
            f"load: {stats.texts_per_s:.0f} texts/s, p50 {stats.p50_ms:.1f} ms, p99 {stats.p99_ms:.1f} ms, "
            f"server CPU {result_box[0].server_cpu_pct or 0:.0f}%"
        )
    if raw.exists():
        text = report(parse_collapsed(raw.read_text().splitlines()))
        print(text)
        (args.out / f"profile-{stamp}-summary.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
