"""Helpers shared by the benchmark scripts: the machine description, markdown tables, JSON results."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from cas_edu.checkpoint import write_json as write_atomically
from cas_edu.tables import markdown_table  # noqa: F401 - the scripts import it from here

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu_visible": gpu,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def machine_line(info: dict[str, Any]) -> str:
    """The machine, in one markdown line."""
    return (f"Machine: {info['cpu']}, {info['logical_cores']} logical cores ({info['usable_cores']} usable), "
            f"torch {info['torch']}, {info['torch_threads']} torch threads, Python {info['python']}, "
            f"date {info['date']}"
            + (f", load average {tuple(round(v, 2) for v in info['loadavg'])} at start" if info.get("loadavg") else ""))


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string, or an en dash when missing."""
    return "–" if value is None else f"{100 * value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` once; return its result and the wall-clock seconds (time.perf_counter)."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[Any, float, list[float]]:
    """Median wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones; returns the last result too."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(repeats):
        result, seconds = timed(fn)
        times.append(seconds)
    return result, statistics.median(times), times


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically and return its path.

    An earlier result of the same name is never lost: it is first renamed to ``<name>-<its UTC mtime>.json``
    (``-2``, ``-3``... appended if that exists too), and the new file appears whole or not at all.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    if path.exists():
        stamp = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        kept, n = RESULTS / f"{name}-{stamp}.json", 1
        while kept.exists():
            n += 1
            kept = RESULTS / f"{name}-{stamp}-{n}.json"
        os.replace(path, kept)
        print(f"kept the previous result as {kept}")
    write_atomically(path, json.loads(json.dumps(payload, default=str)), replace=False)
    return path
