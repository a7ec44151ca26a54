"""A one-line description of the machine a benchmark ran on (CPU model, cores, load), for every report."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return [
                        f
                        for f in line.split(":", 1)[1].split()
                        if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
                    ]
    except OSError:
        pass
    return []


def describe() -> dict[str, object]:
    one, five, fifteen = os.getloadavg()
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_average": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "python": platform.python_version(),
    }


def headline(info: dict[str, object]) -> str:
    flags = ",".join(str(f) for f in info["cpu_flags"]) if isinstance(info["cpu_flags"], list) else ""
    return (
        f"{info['date_utc']} | {info['cpus']} CPUs, {info['cpu']} ({flags}) | load average "
        f"{info['load_average']} at start"
    )
