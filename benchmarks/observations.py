"""Benchmark: the paper's two observations, with intervals, on models trained here by the CLI.

What it measures
    1. Which model shows the observations: for each candidate architecture (``--models``), the standard model
       of notebooks 02-03's cpu configuration (``cas_edu.pipeline.observation_configs("cpu")``: digits, the fast
       preset's 12 epochs) with only the architecture changed.
    2. What adversarial training does to them: PGD-AT and PGD-AT+CAS on the chosen model
       (``pipeline.OBSERVATION_MODELS["cpu"]``), schedule-matched (same 12 epochs, PGD-3 training attacks).
    Each model is trained by the one ``python -m cas_edu train`` command printed in the results (a finished run
    folder is reused, and its training time is then not measured), and timed. Then
    ``cas_edu.observations.measure_observations`` runs on the whole digits test set (359 images) at ε = 0.1: the
    magnitude ratio (observation 1), per-class channel entropy, and at thresholds 1 / 10 / 20 % the saturation and
    the woken channels per class under PGD-20 (the official figures' attack) and under ±ε sign noise (the null),
    each with a 95 % bootstrap interval over images resampled within class. Every run is repeated for each seed.

Verdicts (reported, never asserted)
    observation 1 shown: the magnitude ratio's interval lies above 1;
    observation 2 shown: the attack wakes more quiet channels per class than sign noise (the paired excess's
    interval lies above 0) at the 1 % threshold.

Usage (repository root)
    PYTHONPATH=. .venv/bin/python benchmarks/observations.py [--models small_cnn,wide_cnn,resnet18_w16,resnet18_w32,resnet18]
        [--seeds 0,1] [--out runs/observations] [--threads 2]

Prints the observation table and the training times (markdown) and writes benchmarks/results/observations.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

from cas_edu import cli, data  # noqa: E402
from cas_edu.checkpoint import load_checkpoint  # noqa: E402
from cas_edu.observations import TABLE_THRESHOLDS, measure_observations, observation_table  # noqa: E402
from cas_edu.pipeline import OBSERVATION_MODELS, cli_command, display_name, observation_configs  # noqa: E402
from cas_edu.training import accuracy  # noqa: E402

CANDIDATES = "small_cnn,wide_cnn,resnet18_w16,resnet18_w32,resnet18"


def runs_to_measure(models: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(model, run name, seed): the standard run of every candidate, then AT and AT+CAS of the chosen model."""
    chosen = OBSERVATION_MODELS["cpu"]
    todo = [(model, "standard", seed) for model in models for seed in seeds]
    return todo + [(chosen, run, seed) for run in ("pgd_at", "pgd_at+cas") for seed in seeds]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=CANDIDATES, help="candidate architectures (standard training)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--out", default="runs/observations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="observations", help="results file name (benchmarks/results/NAME.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    ds = data.load("digits")
    results, timings, records = [], [], []
    for model, run, seed in runs_to_measure(args.models.split(","), [int(s) for s in args.seeds.split(",")]):
        config = dataclasses.replace(observation_configs("cpu", seed=seed, device="cpu")[run], model=model)
        out = Path(args.out) / f"{model}_{run}_seed{seed}"
        command = cli_command(config, out)
        seconds = None
        if not (out / "checkpoint.pt").exists():
            started = time.perf_counter()
            code = cli.main(shlex.split(command)[3:] + ["--quiet"])
            seconds = time.perf_counter() - started
            if code != 0:
                print(f"training failed ({code}): {command}")
                return code
        net = load_checkpoint(out)
        started = time.perf_counter()
        obs = measure_observations(net, ds.test.x, ds.test.y, config.eps, seed=seed, n_resamples=args.n_resamples)
        measure_s = time.perf_counter() - started
        label = f"{model} {display_name(run)} s{seed}"
        results.append((label, obs))
        natural = accuracy(net, ds.test.x, ds.test.y)
        timings.append([label, "reused" if seconds is None else f"{seconds:.0f}", f"{measure_s:.0f}",
                        f"{100 * natural:.1f}", "yes" if obs.observation_1 else "no",
                        "yes" if obs.observation_2() else "no", f"{obs.row(0.01).woken_excess.format(1)}"])
        records.append({"label": label, "model": model, "run": run, "seed": seed, "command": command,
                        "train_seconds": seconds, "measure_seconds": measure_s, "natural_accuracy": natural,
                        "observations": dataclasses.asdict(obs)})
        print(f"{label}: trained in {timings[-1][1]} s, measured in {measure_s:.0f} s", flush=True)
    print()
    print(machine_line(info))
    print(f"\nDigits test set ({len(ds.test.y)} images), ε = 0.1, PGD-20 (the official figures' attack); 95 % "
          f"bootstrap intervals ({args.n_resamples} resamples within class). Counts are channels per class, "
          "averaged over the 10 classes; 'noise' is ±ε random sign noise.\n")
    print(observation_table(results))
    print()
    print(markdown_table(["model", "train s", "measure s", "natural acc %", "obs. 1", "obs. 2 @1%",
                          "woken excess @1% (attack − noise)"], timings))
    print("\nCommands:")
    for record in records:
        print(f"  {record['command']}")
    write_json(args.name, {"machine": info, "args": vars(args), "thresholds": TABLE_THRESHOLDS, "runs": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
