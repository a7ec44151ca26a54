"""The side-by-side serving benchmark: baseline PyTorch server vs the service (fp32 / int8 / pruned int8,
batching on and off), one server at a time on 127.0.0.1, the same payloads and closed-loop loads.

    .venv/bin/python -m bench.serving            # full run (~20 min on 2 cores)
    .venv/bin/python -m bench.serving --quick    # smoke run (~2 min)

Prints a table and the target check; writes bench_results/serving-<time>.{json,md,png} and *-latest.*.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.loadgen import run_load, use_uvloop
from bench.machine import describe, headline
from bench.paths import DATA_ROOT, REPO_ROOT, RESULTS_DIR, movielens_dir
from bench.payloads import ENDPOINTS, Endpoint, Payload, build_payloads
from bench.procstat import memory_kib
from bench.report import Row, fill_ratios, format_table, plot_png, target_lines, write_json
from bench.servers import (
    BASELINE_FACTORY,
    SERVICE_FACTORY,
    Server,
    ServerFailed,
    http_get,
    start_server,
    stop_server,
    wait_idle,
)
from bench.variants import Variant, plan_variants

_METRIC = re.compile(r"^(\w+)(?:\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$")


def scrape(server: Server) -> dict[str, float]:
    """Sums of the service's counters the report uses (empty for the baseline or on failure)."""
    try:
        status, body = http_get(server.port, "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    wanted = (
        "inference_embedding_cache_hits_total",
        "inference_embedding_cache_misses_total",
        "inference_batch_size_sum",
        "inference_batch_size_count",
    )
    sums = dict.fromkeys(wanted, 0.0)
    for line in body.decode(errors="replace").splitlines():
        match = _METRIC.match(line)
        if match and match.group(1) in sums:
            sums[match.group(1)] += float(match.group(2))
    return sums


def _delta_ratio(
    before: dict[str, float], after: dict[str, float], num: str, den: str, den_plus: str | None = None
) -> float | None:
    if not before or not after:
        return None
    n = after[num] - before[num]
    d = after[den] - before[den] + ((after[den_plus] - before[den_plus]) if den_plus else 0.0)
    return n / d if d > 0 else None


def run_variant(
    variant: Variant,
    payloads: dict[Endpoint, list[Payload]],
    concurrency: list[int],
    args: argparse.Namespace,
    log_dir: Path,
    startup: dict[str, dict[str, float]],
) -> list[Row]:
    factory = BASELINE_FACTORY if variant.baseline else SERVICE_FACTORY
    env = dict(variant.env)
    if variant.baseline and args.sentiment_checkpoint:
        env["BENCH_SENTIMENT_CHECKPOINT"] = str(args.sentiment_checkpoint)
    if variant.baseline and args.embedder_checkpoint:
        env["BENCH_EMBEDDER_CHECKPOINT"] = str(args.embedder_checkpoint)
    if variant.baseline and args.baseline_threads:
        env["BENCH_TORCH_THREADS"] = str(args.baseline_threads)
    if not variant.baseline:
        env.update(args.service_env)
    print(f"\n== {variant.label}  {' '.join(variant.artifacts)}", flush=True)
    server = start_server(factory, env, log_dir / f"{variant.key}.log")
    rss_ready = memory_kib(server.pid).get("VmRSS", 0) / 1024
    print(f"   ready in {server.ready_s:.1f}s, RSS {rss_ready:.0f} MB", flush=True)
    startup[variant.key] = {"ready_s": round(server.ready_s, 2), "rss_ready_mb": round(rss_ready, 1)}
    rows: list[Row] = []
    try:
        for endpoint, bodies in payloads.items():
            for c in concurrency:
                before = scrape(server)
                result = asyncio.run(
                    run_load(
                        server.url,
                        bodies,
                        concurrency=c,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        timeout_s=args.request_timeout,
                        server_pid=server.pid,
                    )
                )
                after = scrape(server)
                settled = wait_idle(server.port)
                if settled > 1.0:
                    print(f"   (waited {settled:.0f}s for the server's backlog)", flush=True)
                s = result.stats
                row = Row(
                    variant.key,
                    variant.label,
                    endpoint,
                    c,
                    s.texts_per_s,
                    s.requests_per_s,
                    s.p50_ms,
                    s.p95_ms,
                    s.p99_ms,
                    s.errors,
                    result.server_cpu_pct,
                    result.client_cpu_pct,
                    memory_kib(server.pid).get("VmHWM", 0) / 1024,
                    mean_batch=_delta_ratio(
                        before, after, "inference_batch_size_sum", "inference_batch_size_count"
                    ),
                    cache_hit_rate=_delta_ratio(
                        before,
                        after,
                        "inference_embedding_cache_hits_total",
                        "inference_embedding_cache_hits_total",
                        "inference_embedding_cache_misses_total",
                    ),
                )
                rows.append(row)
                extra = f" batch~{row.mean_batch:.1f}" if row.mean_batch else ""
                extra += f" cache-hit {row.cache_hit_rate:.0%}" if row.cache_hit_rate is not None else ""
                bad = {k: v for k, v in result.statuses.items() if k != "200"}
                print(
                    f"   {endpoint:<9} c={c:<3} {s.texts_per_s:8.1f} texts/s {s.requests_per_s:7.1f} req/s "
                    f"p50 {s.p50_ms:7.1f} p99 {s.p99_ms:7.1f} ms  server CPU {row.server_cpu_pct or 0:4.0f}% "
                    f"client CPU {row.client_cpu_pct:3.0f}%{extra}{'  errors ' + str(bad) if bad else ''}",
                    flush=True,
                )
    finally:
        stop_server(server)
    return [replace(r, peak_rss_mb=max(r.peak_rss_mb or 0, rss_ready)) for r in rows]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument(
        "--built",
        type=Path,
        default=RESULTS_DIR / "built",
        help="the fp32 and pruned builds of bench.prepare_store",
    )
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS))
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell")
    parser.add_argument(
        "--variants",
        default="baseline,fp32,int8,pruned-int8",
        help="which servers (baseline, fp32, int8, pruned-int8)",
    )
    parser.add_argument("--batching", default="on,off", help="service batching modes to run: on,off")
    parser.add_argument("--payloads", type=int, default=2000, help="distinct request bodies per endpoint")
    parser.add_argument("--request-timeout", type=float, default=20.0)
    parser.add_argument(
        "--sentiment-checkpoint", type=Path, default=REPO_ROOT / "checkpoints" / "review-sentiment-teacher"
    )
    parser.add_argument(
        "--embedder-checkpoint", type=Path, help="baseline's bi-encoder (default: the packaged MiniLM)"
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=0,
        help="torch threads of the baseline (0: PyTorch's default, one per core). On a loaded machine "
        "two spinning OpenMP threads can make it 50x slower than one: pick what is fastest there",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra INFERENCE_* setting for every service variant (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 s cells, c=1,8, 200 payloads, sentiment only unless --endpoints",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.payloads = min(args.duration, 2.0), min(args.warmup, 0.5), 200
        if "--concurrency" not in (argv or sys.argv):
            args.concurrency = "1,8"
        if "--endpoints" not in (argv or sys.argv):
            args.endpoints = "sentiment"
    env = {}
    for item in args.service_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("INFERENCE_"):
            parser.error(f"--service-env wants INFERENCE_KEY=VALUE, got {item!r}")
        env[key] = value
    args.service_env = env
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = describe()
    command = "python -m bench.serving " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"{command}\n{headline(info)}", flush=True)
    endpoints = [e for e in args.endpoints.split(",") if e]
    for e in endpoints:
        if e not in ENDPOINTS:
            raise SystemExit(f"unknown endpoint {e!r}; choose from {', '.join(ENDPOINTS)}")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    modes = tuple(m == "on" for m in args.batching.split(","))
    wanted = {v.strip() for v in args.variants.split(",")}
    planned, skipped = plan_variants([args.store, args.built], args.out / "stores", batching_modes=modes)
    variants = [v for v in planned if (v.key.rsplit("-", 1)[0] if not v.baseline else "baseline") in wanted]
    if "baseline" in wanted and not args.sentiment_checkpoint.is_dir():
        skipped.append(f"baseline: no sentiment checkpoint at {args.sentiment_checkpoint}")
        variants = [v for v in variants if not v.baseline]
    for line in skipped:
        print(f"skipped: {line}", flush=True)
    ml_dir = movielens_dir()
    payloads = {e: build_payloads(DATA_ROOT, ml_dir, e, args.payloads) for e in endpoints}
    for e, bodies in payloads.items():
        print(
            f"payloads {e}: {len(bodies)} bodies, "
            f"{sum(p.texts for p in bodies) / len(bodies):.1f} texts each",
            flush=True,
        )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    use_uvloop()
    rows: list[Row] = []
    failures: list[str] = []
    startup: dict[str, dict[str, float]] = {}
    for variant in variants:
        try:
            rows.extend(
                run_variant(variant, payloads, concurrency, args, args.out / f"logs-{stamp}", startup)
            )
        except ServerFailed as exc:
            failures.append(f"{variant.label}: {exc}")
            print(f"   FAILED: {exc}", flush=True)
    fill_ratios(rows)
    table = format_table(rows)
    targets = target_lines(rows)
    print("\n" + table + "\n")
    for line in targets or ["targets: no sentiment cells at c=32/64 with a baseline to compare"]:
        print(line)
    started = [
        f"{key}: ready in {v['ready_s']:.1f} s, RSS {v['rss_ready_mb']:.0f} MB" for key, v in startup.items()
    ]
    print("startup: " + "; ".join(started))
    meta = {
        "command": command,
        "machine": info,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "concurrency": concurrency,
        "skipped": skipped,
        "failures": failures,
        "variants": {v.key: {"label": v.label, "artifacts": v.artifacts, "env": v.env} for v in variants},
        "load_average_end": describe()["load_average"],
        "startup": startup,
    }
    for name in (f"serving-{stamp}", "serving-latest"):
        write_json(args.out / f"{name}.json", meta, rows)
        (args.out / f"{name}.md").write_text(
            f"`{command}`\n\n{headline(info)}\n\n{table}\n\n"
            + "\n".join(targets)
            + "\n\nstartup: "
            + "; ".join(started)
            + "\n"
        )
        plot_png(args.out / f"{name}.png", rows, f"{command} | {headline(info)}")
    print(f"\nwrote {args.out}/serving-{stamp}.json/.md/.png")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
