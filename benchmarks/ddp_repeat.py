"""Run the same two-process (gloo) training N times in a row and count the failures, optionally with another
command (e.g. a test suite) running beside it: the evidence for or against a rank that aborts at random
("terminate called without an active exception"). A one-off check, not a test: a CI loop would be too slow.

    PYTHONPATH=. .venv/bin/python benchmarks/ddp_repeat.py --runs 20
    PYTHONPATH=. .venv/bin/python benchmarks/ddp_repeat.py --runs 20 --beside ".venv/bin/python -m pytest tests/test_attacks.py -q"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["-m", "cas_edu", "train", "--dataset", "digits", "--model", "small_cnn", "--method", "pgd_at", "--cas",
         "--epochs", "2", "--batch-size", "64", "--attack-steps", "2", "--device", "cpu", "--quiet", "--json"]
ABORT_SIGNS = ("terminate called", "Aborted", "SIGABRT", "Signal 6")


def one_run(out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *TRAIN, "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    aborts = [line for line in result.stderr.splitlines() if any(sign in line for sign in ABORT_SIGNS)]
    history = json.loads(result.stdout) if result.returncode == 0 else None
    return {"returncode": result.returncode, "seconds": time.perf_counter() - started, "abort_lines": aborts,
            "final_train_loss": history[-1]["train_loss"] if history else None,
            "stderr_tail": result.stderr[-2000:] if result.returncode else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--beside", help="a shell command kept running (restarted when it ends) during the runs")
    args = parser.parse_args()
    info = machine()
    beside, beside_rounds = None, 0
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            if args.beside and (beside is None or beside.poll() is not None):
                beside = subprocess.Popen(shlex.split(args.beside), cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                beside_rounds += 1
            runs.append(one_run(Path(tmp) / f"run{i}"))
            print(f"run {i + 1}/{args.runs}: exit {runs[-1]['returncode']}, {runs[-1]['seconds']:.1f} s", flush=True)
    if beside is not None:
        beside.terminate()
        beside.wait()
    failed = [r for r in runs if r["returncode"] != 0]
    losses = {r["final_train_loss"] for r in runs if r["final_train_loss"] is not None}
    print()
    print(markdown_table(["runs", "failed", "with abort lines", "distinct final train losses", "command beside",
                          "its rounds"],
                         [[len(runs), len(failed), sum(bool(r["abort_lines"]) for r in runs), len(losses),
                           args.beside or "–", beside_rounds]]))
    print(machine_line(info) + f", load average at end {tuple(round(v, 2) for v in os.getloadavg())}")
    for r in failed:
        print("\n--- failed run, stderr tail ---\n" + r["stderr_tail"])
    write_json("ddp_repeat", {"machine": info, "beside": args.beside, "runs": runs})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
