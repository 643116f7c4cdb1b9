"""Benchmark: how long one control change takes to update the notebooks' widgets (01 and 02) on CPU.

What it measures
    Wall-clock time (time.perf_counter) of setting a control's ``.value`` -- which fires the widget's
    observer, recomputes the view and writes it into the ``go.FigureWidget`` inside ``batch_update()`` --
    for ~30 changes per control, on the digits models the notebooks train on the cpu profile (reused from
    ``notebooks/runs`` when the notebooks ran, trained there otherwise):

    * ``EpsilonExplorer`` (notebook 01, its standard small CNN), ε slider with FGSM and with PGD-10: every
      change is a new ε, so each one crafts the attack on one image (no cache hits);
    * ``ActivationExplorer`` (notebook 02, its standard and PGD-AT ``resnet18_w32`` of
      ``pipeline.observation_configs``), ε slider, class picker, model toggle and threshold slider on all test digits, after its
      one-off precompute (PGD-20 for every model and slider ε), which is timed and reported separately;
    * ``ChannelExplorer`` (notebook 03, its PGD-AT+CAS ``resnet18_w32``, at the first CAS layer), class picker
      and ε slider, after its one-off ``activations.channel_data`` precompute on notebook 03's 200 images and
      ε grid (also reported separately).

    No frontend is attached, so the time is Python-side work: attack, statistics, figure serialisation.

Target (reported PASS/FAIL, never asserted): median update <= 100 ms on CPU.

Usage (repository root)
    PYTHONPATH=. .venv/bin/python benchmarks/widget_latency.py [--changes 30] [--threads 2] [--runs notebooks/runs]

Prints a markdown table and writes benchmarks/results/widget_latency.json.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, verdict, write_json  # noqa: E402

from cas_edu import activations, data, pipeline, presets, training, widgets  # noqa: E402

TARGET_MS = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=30, help="control changes timed per row")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the target has 2 cores)")
    parser.add_argument("--runs", default="notebooks/runs", help="folder holding the notebooks' run folders")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def notebook_01_model(ds: data.Dataset, runs: Path):
    """Notebook 01's standard small CNN (cpu profile), from its run folder."""
    config = presets.make_config("digits", method="standard", epochs=6, seed=0, device="cpu")
    return training.train_or_load(config, runs / "cpu" / "digits_standard", progress=False, dataset=ds)[0]


def observation_models(ds: data.Dataset, runs: Path) -> dict:
    """Notebooks 02-03's standard, PGD-AT and PGD-AT+CAS ``resnet18_w32`` (cpu profile), from their run folders."""
    configs = pipeline.observation_configs("cpu", seed=0, device="cpu")
    return {name: training.train_or_load(config, pipeline.observation_run_dir(runs, "cpu", name), progress=False,
                                         dataset=ds)[0] for name, config in configs.items()}


def time_changes(control, values: list) -> list[float]:
    """Seconds per ``control.value = v`` (observer and figure update included)."""
    seconds = []
    for value in values:
        started = time.perf_counter()
        control.value = value
        seconds.append(time.perf_counter() - started)
    return seconds


def changing(options: list, n: int, start, rng: random.Random) -> list:
    """``n`` values drawn from ``options``, each different from the one before."""
    values, current = [], start
    for _ in range(n):
        current = rng.choice([o for o in options if o != current])
        values.append(current)
    return values


def row(widget: str, control: str, seconds: list[float]) -> list:
    ms = sorted(s * 1000 for s in seconds)
    median, p90 = statistics.median(ms), ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return [widget, control, len(ms), f"{median:.1f}", f"{p90:.1f}", f"{ms[-1]:.1f}", verdict(median <= TARGET_MS)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    rng = random.Random(args.seed)
    ds = data.load("digits")
    runs = Path(args.runs)
    observed = observation_models(ds, runs)
    eps = pipeline.observation_configs("cpu")["pgd_at"].eps
    rows, raw = [], {}

    # Notebook 01: a new ε every change, so every change crafts a fresh attack on one image.
    x, y = ds.test.x[:50], ds.test.y[:50]
    grid = [round(i * 0.01, 2) for i in range(31)]
    model_01 = notebook_01_model(ds, runs)
    for attack in ("fgsm", "pgd"):
        explorer = widgets.EpsilonExplorer(model_01, x, y, ds.classes, eps=0.1, eps_max=0.3, attack=attack)
        seen = set()
        values = [v for v in changing(grid, 10 * args.changes, 0.1, rng) if not (v in seen or seen.add(v))]
        values = (values + [v + 0.005 for v in grid])[:args.changes]  # distinct: every change is a cache miss
        seconds = time_changes(explorer.eps_slider, values)
        rows.append(row("EpsilonExplorer (01)", f"ε slider, {widgets.EPSILON_ATTACKS[attack]}", seconds))
        raw[f"epsilon_{attack}"] = seconds

    # Notebook 02: precompute once (every model and slider ε), then every control change reads the cache.
    x, y = ds.test.x, ds.test.y
    started = time.perf_counter()
    explorer = widgets.ActivationExplorer({"STD": observed["standard"], "AT": observed["pgd_at"]}, x, y, ds.classes,
                                          eps=eps, eps_max=2 * eps, eps_step=eps / 2, class_id=0, steps=20, seed=0,
                                          progress=False)
    precompute_s = time.perf_counter() - started
    for name, control, options in (("ε slider", explorer.eps_slider, explorer.eps_grid),
                                   ("class picker", explorer.class_picker, [v for _, v in explorer.class_picker.options]),
                                   ("model toggle", explorer.model_toggle, list(explorer.model_toggle.options)),
                                   ("threshold slider", explorer.threshold_slider,
                                    [v for _, v in explorer.threshold_slider.options])):
        seconds = time_changes(control, changing(options, args.changes, control.value, rng))
        rows.append(row("ActivationExplorer (02)", name, seconds))
        raw[f"activation_{name}"] = seconds

    # Notebook 03: precompute once (its 200 images and ε grid), then every change indexes the cache.
    cas_model = observed["pgd_at+cas"]
    x, y = ds.test.x[:200], ds.test.y[:200]
    started = time.perf_counter()
    channel_data = activations.channel_data(cas_model, x, y, [eps / 2, eps, 2 * eps, 3 * eps],
                                            layer=cas_model.cas_layers[0], seed=0)
    channel_precompute_s = time.perf_counter() - started
    channel_explorer = widgets.ChannelExplorer(channel_data, ds.classes, class_id=0, eps=eps)
    for name, control, options in (("class picker", channel_explorer.class_picker,
                                    [v for _, v in channel_explorer.class_picker.options]),
                                   ("ε slider", channel_explorer.eps_slider,
                                    [v for _, v in channel_explorer.eps_slider.options])):
        seconds = time_changes(control, changing(options, args.changes, control.value, rng))
        rows.append(row("ChannelExplorer (03)", name, seconds))
        raw[f"channel_{name}"] = seconds

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print("## Widget update latency (one control change → figure updated)\n")
    print(machine_line(info) + (f"; load average {tuple(round(v, 2) for v in load_end)} at end" if load_end else ""))
    print()
    print(markdown_table(["widget", "control", "changes", "median ms", "p90 ms", "max ms",
                          f"median ≤ {TARGET_MS:.0f} ms"], rows))
    print(f"\nActivationExplorer one-off precompute (2 models × {len(explorer.eps_grid)} ε, PGD-20 on "
          f"{len(ds.test)} images): {precompute_s:.1f} s")
    print(f"ChannelExplorer one-off precompute (4 ε, PGD adaptive on {len(x)} images): {channel_precompute_s:.1f} s")
    path = write_json("widget_latency", {"machine": info, "load_end": load_end, "rows": rows, "seconds": raw,
                                         "activation_precompute_seconds": precompute_s,
                                         "channel_precompute_seconds": channel_precompute_s})
    print(f"\nraw timings: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
