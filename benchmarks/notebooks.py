"""Benchmark: execute the teaching notebooks cold and time each against its budget.

What it measures
    Wall-clock time (time.perf_counter) of executing each notebook top to bottom with nbclient, the way
    nbval runs it, on the ``cpu`` profile (CAS_EDU_PROFILE=cpu), and the kernel's peak memory: the resident
    set size (RSS) of the kernel process and any processes it starts, summed, sampled every 50 ms by a
    background thread (psutil), maximum over the run. Every notebook runs in its *own fresh
    temporary copy* of ``notebooks/`` without ``runs/``, so no checkpoint is reused: a cold run, as a
    learner's first run. Kernel start-up is inside the timing. Notebooks that do not exist yet are listed
    as missing.

Budgets (reported PASS/FAIL, never asserted)
    01 ≤ 60 s, 02 ≤ 90 s, 03 ≤ 120 s, 04 ≤ 180 s — on an idle 2-core CPU machine. The load average
    before and after each notebook is printed: other processes on the machine inflate the times.
    Peak kernel memory ≤ 1.5 GB (1.5e9 bytes), so that a notebook fits mybinder.org's 2 GB limit beside the
    JupyterLab server (its own RSS is printed once, measured from a server started for the purpose).

Usage (repository root)
    PYTHONPATH=. .venv/bin/python benchmarks/notebooks.py [--only 03,04] [--timeout 1800]

Prints a markdown table and writes benchmarks/results/notebooks.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, verdict, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = Path(ROOT / "notebooks")
BUDGETS = {"01": 60, "02": 90, "03": 120, "04": 180}
MEMORY_BUDGET_BYTES = 1.5e9
SAMPLE_EVERY_S = 0.05


class PeakMemory:
    """Track the largest summed RSS of this process's descendants (the kernel) while the block runs."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # exited between listing and reading
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def jupyterlab_server_rss() -> int | None:
    """RSS in bytes of an idle JupyterLab server (started headless on a free port, then stopped)."""
    import socket
    import subprocess
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                                   "--ServerApp.token=x", "--allow-root", f"--ServerApp.root_dir={tmp}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(15)
            return psutil.Process(server.pid).memory_info().rss if server.poll() is None else None
        finally:
            server.terminate()
            server.wait(timeout=30)


def find(prefix: str) -> Path | None:
    """The notebook whose name starts with ``prefix_`` (None when absent)."""
    matches = sorted(NOTEBOOKS.glob(f"{prefix}_*.ipynb"))
    return matches[0] if matches else None


def run_cold(notebook: Path, timeout: int) -> tuple[float, int, str]:
    """Execute ``notebook`` in a fresh copy of notebooks/ (no runs/); returns (seconds, peak kernel RSS, status)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    with tempfile.TemporaryDirectory(prefix="cas_edu_nb_") as tmp:
        copy = Path(tmp) / "notebooks"
        shutil.copytree(NOTEBOOKS, copy, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints", "__pycache__"))
        nb = nbformat.read(copy / notebook.name, as_version=4)
        env_before = dict(os.environ)
        os.environ["CAS_EDU_PROFILE"] = "cpu"
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(copy)}})
        started = time.perf_counter()
        try:
            with PeakMemory() as memory:
                client.execute()
            status = "ok"
        except CellTimeoutError:
            status = "timeout"
        except CellExecutionError as err:
            status = f"error: {str(err).strip().splitlines()[-1][:120]}"
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        seconds = time.perf_counter() - started
        if status == "ok":
            errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
            status = "ok" if not errors else f"error output: {errors[0].get('ename')}"
    return seconds, memory.peak_bytes, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma list of notebook numbers, e.g. 03,04 (default: all four)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell before giving up")
    args = parser.parse_args()
    wanted = [p.strip() for p in args.only.split(",")] if args.only else list(BUDGETS)
    info = machine()
    rows, results = [], {}
    for prefix in wanted:
        budget = BUDGETS.get(prefix)
        notebook = find(prefix)
        if notebook is None:
            rows.append([prefix, "–", f"≤ {budget} s" if budget else "–", "–", "–", "missing"])
            results[prefix] = {"status": "missing"}
            continue
        load_before = os.getloadavg()[0]
        seconds, peak_bytes, status = run_cold(notebook, args.timeout)
        load_after = os.getloadavg()[0]
        time_ok = status == "ok" and budget is not None and seconds <= budget
        memory_ok = status == "ok" and peak_bytes <= MEMORY_BUDGET_BYTES
        rows.append([notebook.name, f"{seconds:.0f} s", f"≤ {budget} s" if budget else "–",
                     f"{peak_bytes / 1e9:.2f} GB", f"{load_before:.1f} → {load_after:.1f}",
                     f"time {verdict(time_ok)}, memory {verdict(memory_ok)}" if status == "ok" else f"FAIL ({status})"])
        results[prefix] = {"notebook": notebook.name, "seconds": seconds, "budget_s": budget, "status": status,
                           "peak_kernel_rss_bytes": peak_bytes, "memory_budget_bytes": MEMORY_BUDGET_BYTES,
                           "load_before": load_before, "load_after": load_after, "time_pass": time_ok,
                           "memory_pass": memory_ok}
        print(f"{notebook.name}: {seconds:.1f} s, peak kernel RSS {peak_bytes / 1e9:.2f} GB ({status})",
              file=sys.stderr, flush=True)
    server_rss = jupyterlab_server_rss()
    info["jupyterlab_server_rss_bytes"] = server_rss
    print("## Notebook run times (cold, CAS_EDU_PROFILE=cpu)\n")
    print(machine_line(info) + "\n")
    print(markdown_table(["notebook", "wall time", "budget", "peak kernel RSS (≤ 1.5 GB)",
                          "1-min load avg (before → after)", "verdict"], rows))
    if server_rss is not None:
        print(f"\nAn idle JupyterLab server beside the kernel: {server_rss / 1e9:.2f} GB RSS.")
    print("\nBudgets hold for an idle 2-core machine; a load average above the core count means other processes "
          "shared the CPU and the times are inflated.")
    path = write_json("notebooks", {"machine": info, "notebooks": results})
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
