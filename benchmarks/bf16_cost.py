"""Benchmark: what bf16 autocast costs in robustness (digits, small CNN, PGD-AT + CAS, fast preset).

What it measures
    For each seed (default 0, 1, 2) it trains the same run twice with ``cas_edu.training.train`` — once in
    float32 (``amp="off"``, the default) and once with bf16 autocast (``amp="bf16"``, which works on the
    CPU through ``torch.autocast``) — and evaluates the *last-epoch* model on the whole digits test split
    (359 images) at the training ε (0.1) with ``cas_edu.evaluation.evaluate``: natural, PGD-20 and CW∞,
    both with the adaptive objective ``ce+cas``. The score of a run is the per-example worst case: an
    example counts only if it is classified correctly naturally *and* under both attacks. Evaluation
    always runs in float32; only training differs.

    The table gives each precision's mean worst case over seeds with a 95 % t-interval over the seeds
    (t quantile with n−1 degrees of freedom; it describes seed-to-seed spread, and with 3 seeds it is
    wide), the paired difference bf16 − fp32 (same seed, same data order and initial weights) with its
    own 95 % t-interval, and every run's value with a 95 % Wilson interval over the test images
    (binomial: the uncertainty from having only 359 test images, for that one trained model).

    It also shows where the difference starts: on the first seed's trained fp32 model it crafts the
    training attack (PGD-10, ε 0.1, step ε/4, adaptive objective, uniform start) on the first 512 training
    images twice from the same random state, in fp32 and under bf16 autocast, and reports the share of
    pixels of x′ that differ.

Usage (repository root; about 6 trainings of ~25 s each on 2 idle cores, plus evaluation)
    PYTHONPATH=. .venv/bin/python benchmarks/bf16_cost.py [--seeds 0 1 2] [--epochs 12] [--threads 2]

Prints a markdown table, the machine and the command, and writes benchmarks/results/bf16_cost.json.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, pct, write_json  # noqa: E402

from cas_edu import attacks, data  # noqa: E402
from cas_edu.evaluation import evaluate  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.training import train  # noqa: E402

PRECISIONS = (("fp32", "off"), ("bf16", "bf16"))
ATTACKS = ("natural", "pgd20", "cw")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (fast preset: 12 on digits)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return parser.parse_args(argv)


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (scipy if installed, else a table)."""
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, df))
    except ImportError:
        return {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}.get(df, 1.96)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval (over the values, n − 1 degrees of freedom); a single value gives (v, v, v)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def worst_case_correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """Per example: correct naturally and under adaptive PGD-20 and CW∞ (``evaluate``'s per-example results)."""
    report = evaluate(model, x, y, eps, attacks=ATTACKS, objective="ce+cas", seed=seed)
    if getattr(report, "correct", None):
        return torch.stack([report.correct[a][o] for a in ATTACKS for o in report.correct[a]]).all(dim=0)
    # an evaluation module without per-example results: the same attacks, directly
    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    for craft in (attacks.pgd, attacks.cw_inf):
        x_adv = craft(model, x, y, eps, step_size=eps / 10, steps=20, objective="ce+cas")
        with torch.no_grad():
            ok &= model(x_adv).argmax(1) == y
    return ok


def attack_pixel_difference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config, seed: int) -> float:
    """Share of pixels where the training attack's x′ differs between fp32 and bf16 autocast, same random state."""
    crafted = []
    for enabled in (False, True):
        torch.manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            crafted.append(attacks.pgd(model, x, y, config.eps, config.step_size, config.attack_steps,
                                       objective="ce+cas", beta=config.cas_beta))
    return (crafted[0] != crafted[1]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    dataset = data.load("digits")
    x, y = dataset.test.x, dataset.test.y
    runs, pixels_differ = [], None
    for seed in args.seeds:
        for label, amp in PRECISIONS:
            config = make_config("digits", model="small_cnn", method="pgd_at", cas=True, preset="fast", seed=seed,
                                 device="cpu", amp=amp, epochs=args.epochs)
            started = time.perf_counter()
            model, history = train(config, dataset=dataset, progress=False)
            trained_s = time.perf_counter() - started
            correct = worst_case_correct(model, x, y, config.eps, seed)
            if pixels_differ is None:
                pixels_differ = attack_pixel_difference(model, dataset.train.x[:512], dataset.train.y[:512],
                                                        config, seed)
            runs.append({"seed": seed, "precision": label, "amp": amp, "worst_case": correct.float().mean().item(),
                         "n_correct": int(correct.sum()), "n": len(y), "train_seconds": trained_s,
                         "last_train_loss": history[-1]["train_loss"]})
            print(f"seed {seed} {label}: worst case {runs[-1]['worst_case']:.2%} ({trained_s:.0f} s training)",
                  file=sys.stderr, flush=True)

    rows, summary = [], {}
    for label, _ in PRECISIONS:
        values = [r["worst_case"] for r in runs if r["precision"] == label]
        mean, low, high = t_interval(values)
        summary[label] = {"mean": mean, "t95": [low, high], "values": values}
        per_run = ", ".join(f"{pct(r['worst_case'], 1)} [{pct(wilson(r['n_correct'], r['n'])[0], 1)}, "
                            f"{pct(wilson(r['n_correct'], r['n'])[1], 1)}]"
                            for r in runs if r["precision"] == label)
        rows.append([label, pct(mean), f"[{pct(low)}, {pct(high)}]", per_run])
    differences = [b["worst_case"] - f["worst_case"] for f, b in
                   zip([r for r in runs if r["precision"] == "fp32"], [r for r in runs if r["precision"] == "bf16"])]
    mean, low, high = t_interval(differences)
    summary["bf16_minus_fp32"] = {"mean": mean, "t95": [low, high], "values": differences}
    rows.append(["bf16 − fp32 (paired by seed)", pct(mean), f"[{pct(low)}, {pct(high)}]",
                 ", ".join(pct(d, 1) for d in differences)])

    command = "PYTHONPATH=. .venv/bin/python benchmarks/bf16_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"Worst-case robust accuracy (%) of digits PGD-AT+CAS (small CNN, fast preset, {args.epochs} epochs, "
          f"last-epoch model), natural + adaptive PGD-20 + adaptive CW∞ at ε = 0.1 on the {len(y)} test images; "
          f"seeds {', '.join(map(str, args.seeds))}.\n")
    print(markdown_table(["training precision", "mean worst case", "95 % t-interval over seeds",
                          "per seed [95 % Wilson interval over the test images]"], rows))
    print(f"\nTraining attack (PGD-10) on 512 training images, seed {args.seeds[0]}'s trained fp32 model, same "
          f"random state: {pixels_differ:.1%} of the pixels of x′ differ between fp32 and bf16 autocast.")
    print(f"\n{machine_line(info)}\nCommand: `{command.strip()}`")
    path = write_json("bf16_cost", {"machine": info, "command": command.strip(), "epochs": args.epochs,
                                    "seeds": args.seeds, "runs": runs, "summary": summary,
                                    "attack_pixels_differ": pixels_differ})
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
