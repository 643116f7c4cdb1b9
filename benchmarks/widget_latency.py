"""Benchmark: how long one control change takes to update the notebooks' widgets (01 and 02) on CPU.

What it measures
    Wall-clock time (time.perf_counter) of setting a control's ``.value`` -- which fires the widget's
    observer, recomputes the view and writes it into the ``go.FigureWidget`` inside ``batch_update()`` --
    for ~30 changes per control, on the digits models the notebooks train (standard and PGD-AT, cpu
    profile; reused from ``notebooks/runs`` when the notebooks ran, trained there otherwise):

    * ``EpsilonExplorer`` (notebook 01), ε slider with FGSM and with PGD-10: every change is a new ε, so
      each one crafts the attack on one image (no cache hits);
    * ``ActivationExplorer`` (notebook 02), ε slider, class picker and model toggle, after its one-off
      precompute (PGD for every model and slider ε), which is timed and reported separately;
    * ``ChannelExplorer`` (notebook 03), class picker and ε slider on the PGD-AT+CAS model, after its
      one-off ``activations.channel_data`` precompute (also reported separately).

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

from cas_edu import activations, data, presets, training, widgets  # noqa: E402

TARGET_MS = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=30, help="control changes timed per row")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the target has 2 cores)")
    parser.add_argument("--runs", default="notebooks/runs", help="folder holding the notebooks' run folders")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def notebook_models(ds: data.Dataset, runs: Path) -> dict:
    """The STD and AT digits models exactly as notebooks 01/02 configure them (cpu profile)."""
    eps, steps = 0.1, 3
    std = presets.make_config("digits", method="standard", epochs=6, seed=0, device="cpu")
    at = presets.make_config("digits", method="pgd_at", epochs=5, eps=eps, attack_steps=steps,
                             step_size=2.5 * eps / steps, val_attack_steps=steps, seed=0, device="cpu")
    return {"STD": training.train_or_load(std, runs / "digits_standard", progress=False, dataset=ds)[0],
            "AT": training.train_or_load(at, runs / "digits_pgd_at", progress=False, dataset=ds)[0]}


def notebook_cas_model(ds: data.Dataset, runs: Path):
    """The PGD-AT+CAS digits model exactly as notebook 03 configures it (cpu profile)."""
    config = presets.make_config("digits", method="pgd_at", cas=True, epochs=6, attack_steps=5, eps=0.1, seed=0,
                                 device="cpu")
    return training.train_or_load(config, runs / "cpu" / "pgd_at+cas", progress=False, dataset=ds)[0]


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
    models = notebook_models(ds, Path(args.runs))
    rows, raw = [], {}

    # Notebook 01: a new ε every change, so every change crafts a fresh attack on one image.
    x, y = ds.test.x[:50], ds.test.y[:50]
    grid = [round(i * 0.01, 2) for i in range(31)]
    for attack in ("fgsm", "pgd"):
        explorer = widgets.EpsilonExplorer(models["STD"], x, y, ds.classes, eps=0.1, eps_max=0.3, attack=attack)
        seen = set()
        values = [v for v in changing(grid, 10 * args.changes, 0.1, rng) if not (v in seen or seen.add(v))]
        values = (values + [v + 0.005 for v in grid])[:args.changes]  # distinct: every change is a cache miss
        seconds = time_changes(explorer.eps_slider, values)
        rows.append(row("EpsilonExplorer (01)", f"ε slider, {widgets.EPSILON_ATTACKS[attack]}", seconds))
        raw[f"epsilon_{attack}"] = seconds

    # Notebook 02: precompute once, then every control change reads the cache.
    x, y = ds.test.x[:200], ds.test.y[:200]
    started = time.perf_counter()
    explorer = widgets.ActivationExplorer(models, x, y, ds.classes, eps=0.1, eps_max=0.2, eps_step=0.05, class_id=0,
                                          steps=10, seed=0, progress=False)
    precompute_s = time.perf_counter() - started
    for name, control, options in (("ε slider", explorer.eps_slider, explorer.eps_grid),
                                   ("class picker", explorer.class_picker, [v for _, v in explorer.class_picker.options]),
                                   ("model toggle", explorer.model_toggle, list(explorer.model_toggle.options))):
        seconds = time_changes(control, changing(options, args.changes, control.value, rng))
        rows.append(row("ActivationExplorer (02)", name, seconds))
        raw[f"activation_{name}"] = seconds

    # Notebook 03: precompute once (the grid of notebook 03), then every change indexes the cache.
    started = time.perf_counter()
    channel_data = activations.channel_data(notebook_cas_model(ds, Path(args.runs)), x, y, [0.0, 0.05, 0.1, 0.2, 0.3],
                                         seed=0)
    channel_precompute_s = time.perf_counter() - started
    channel_explorer = widgets.ChannelExplorer(channel_data, ds.classes, class_id=0, eps=0.1)
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
    print(f"\nActivationExplorer one-off precompute (2 models × {len(explorer.eps_grid)} ε, PGD-10 on {len(x)} images): "
          f"{precompute_s:.1f} s")
    print(f"ChannelExplorer one-off precompute (5 ε, PGD-10 adaptive on {len(x)} images): {channel_precompute_s:.1f} s")
    path = write_json("widget_latency", {"machine": info, "load_end": load_end, "rows": rows, "seconds": raw,
                                         "activation_precompute_seconds": precompute_s,
                                         "channel_precompute_seconds": channel_precompute_s})
    print(f"\nraw timings: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
