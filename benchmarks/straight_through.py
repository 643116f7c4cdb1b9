"""Benchmark: how robust is the digits PGD-AT+CAS model once the attack sees the mask choice?

What it measures
    On scikit-learn's digits test split (ε = 0.1 L∞, pixels in [0, 1]), the robust accuracy of a small CNN
    trained with PGD-AT+CAS (``make_config("digits", method="pgd_at", cas=True)``, the fast preset) under:
    natural; PGD-20 on the main head (``ce``); the official adaptive PGD-20 (``ce+cas``, step ε/10);
    the straight-through (BPDA) PGD-100 × 5 restarts (``attacks.straight_through_pgd``, defaults);
    AutoAttack on the deployed hard-mask model; AutoAttack through the straight-through model
    (``attacks.autoattack(..., straight_through=True)``); and the per-example worst case of the last two
    rows with the straight-through PGD. With ``--train-seeds`` it trains that many models (seeds 0..n−1)
    and prints one table row per seed; otherwise it loads ``--run`` (a run folder) or trains seed 0.

    AutoAttack is the standard suite (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries) unless
    ``--aa-attacks`` names a subset (e.g. ``apgd-ce,apgd-t``).

Usage (repository root)
    PYTHONPATH=. .venv/bin/python benchmarks/straight_through.py [--run runs/digits_bench/pgd_at_cas]
           [--train-seeds 3] [--epochs 12] [--n 0] [--aa-attacks apgd-ce,apgd-t] [--threads 2]

Prints a markdown table with the machine described and writes benchmarks/results/straight_through.json.
No targets: the numbers are what they are (the README quotes them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, pct, timed, write_json  # noqa: E402

from cas_edu import attacks, data, load_checkpoint  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.training import train  # noqa: E402

EPS = 0.1
COLUMNS = ["natural", "PGD-20 ce", "PGD-20 ce+cas", "ST PGD-100×5", "AutoAttack", "AutoAttack ST", "worst case"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a trained PGD-AT+CAS run folder or .pt (default: train seed 0)")
    parser.add_argument("--train-seeds", type=int, default=0, help="train this many models (seeds 0..n-1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs when training (default: the fast preset's)")
    parser.add_argument("--n", type=int, default=0, help="first N test images only (0 = the whole test split)")
    parser.add_argument("--aa-attacks", default=None, help="comma-separated AutoAttack subset (default: standard)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    return parser.parse_args(argv)


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, aa_attacks: list[str] | None) -> dict:
    """Per attack: robust accuracy and seconds; plus the per-example worst case of the straight-through attacks."""
    def correct(x_adv: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x_adv).argmax(1) == y

    crafted = {
        "natural": lambda: x,
        "PGD-20 ce": lambda: attacks.pgd(model, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce"),
        "PGD-20 ce+cas": lambda: attacks.pgd(model, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce+cas"),
        "ST PGD-100×5": lambda: attacks.straight_through_pgd(model, x, y, EPS),
        "AutoAttack": lambda: attacks.autoattack(model, x, y, EPS, aa_attacks).cpu(),
        "AutoAttack ST": lambda: attacks.autoattack(model, x, y, EPS, aa_attacks, straight_through=True).cpu(),
    }
    results, hits = {}, {}
    for name, craft in crafted.items():
        torch.manual_seed(0)
        x_adv, seconds = timed(craft)
        hits[name] = correct(x_adv)
        results[name] = {"accuracy": hits[name].float().mean().item(), "seconds": seconds}
        print(f"  {name:14s} {results[name]['accuracy']:.2%}  ({seconds:.0f} s)", flush=True)
    worst = hits["ST PGD-100×5"] & hits["AutoAttack"] & hits["AutoAttack ST"]
    results["worst case"] = {"accuracy": worst.float().mean().item(), "seconds": None}
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    ds = data.load("digits")
    n = args.n or len(ds.test)
    x, y = ds.test.x[:n], ds.test.y[:n]
    aa = args.aa_attacks.split(",") if args.aa_attacks else None
    models = {}
    if args.run and not args.train_seeds:
        models[f"{args.run}"] = load_checkpoint(args.run, device="cpu")
    else:
        for seed in range(max(args.train_seeds, 1)):
            config = make_config("digits", method="pgd_at", cas=True, device="cpu", seed=seed, epochs=args.epochs)
            (model, _), seconds = timed(lambda: train(config, progress=False, dataset=ds))
            print(f"trained seed {seed} ({config.epochs} epochs) in {seconds:.0f} s", flush=True)
            models[f"seed {seed}"] = model.eval()
    payload = {"machine": info, "eps": EPS, "n_examples": n, "autoattack": aa or "standard", "models": {}}
    rows = []
    for label, model in models.items():
        print(label, flush=True)
        results = measure(model, x, y, aa)
        payload["models"][label] = results
        rows.append([label] + [pct(results[c]["accuracy"]) for c in COLUMNS])
    print(f"\n## Digits PGD-AT+CAS under attack (robust accuracy %, ε = {EPS} L∞, {n} test images, "
          f"AutoAttack {'standard' if aa is None else '+'.join(aa)})\n")
    print(markdown_table(["model"] + COLUMNS, rows))
    print("\nST = straight-through (BPDA) CAS masks (cas_edu.cas.straight_through); worst case = an example counts "
          "as robust only if ST PGD-100×5, AutoAttack and AutoAttack ST all fail on it.")
    print("\n" + machine_line(info))
    print(f"\nwrote {write_json('straight_through', payload)}")


if __name__ == "__main__":
    main()
