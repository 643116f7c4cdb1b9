"""Where the tests' thresholds on trained models sit inside the seed-to-seed spread of what they compare.

A test that thresholds a trained model's accuracy depends on the machine's floating-point details (reduction
order, CPU kernels): the same seed gives another model elsewhere. This script retrains each such test's
model with ``--seeds`` different seeds and prints the spread beside the threshold, so every threshold can be
set well outside the spread (and the margin quoted). Rerun it when a test's model or threshold changes:

    PYTHONPATH=. .venv/bin/python benchmarks/test_margins.py --seeds 10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

from cas_edu import data  # noqa: E402
from cas_edu.attacks import fgsm, pgd  # noqa: E402
from cas_edu.evaluation import evaluate  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.training import train  # noqa: E402


def subset(dataset: data.Dataset, n_train: int, n_val: int) -> data.Dataset:
    return data.Dataset(dataset.name, data.Split(dataset.train.x[:n_train], dataset.train.y[:n_train]),
                        data.Split(dataset.val.x[:n_val], dataset.val.y[:n_val]), dataset.test, dataset.classes)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def attacks_on_standard_model(digits: data.Dataset, seed: int) -> dict[str, float]:
    """tests/test_attacks.py's ``trained`` fixture (5 epochs, standard) with another seed."""
    from pyautoattack import AutoAttack

    model, _ = train(make_config("digits", method="standard", epochs=5, device="cpu", seed=seed), progress=False,
                     dataset=digits)
    x, y, eps = digits.test.x, digits.test.y, 0.1
    torch.manual_seed(0)
    x_pgd = pgd(model, x, y, eps, step_size=eps / 4, steps=20)
    reference = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce"], device=x.device, seed=0)
    reference.apgd.n_restarts = 1
    x_apgd, _ = reference.run_standard_evaluation(x[:200], y[:200], batch_size=500)
    return {"natural": accuracy(model, x, y), "pgd20": accuracy(model, x_pgd, y),
            "fgsm": accuracy(model, fgsm(model, x, y, eps), y),
            "pgd20 − apgd-ce (200)": accuracy(model, x_pgd[:200], y[:200]) - accuracy(model, x_apgd, y[:200])}


def short_training(digits: data.Dataset, seed: int) -> dict[str, float]:
    """tests/test_training.py (3 epochs on 512 digits) and tests/test_evaluation.py (2 epochs on 256)."""
    found = {}
    for method in ("standard", "pgd_at"):
        config = make_config("digits", method=method, epochs=3, device="cpu", val_examples=144, attack_steps=2,
                             val_attack_steps=2, batch_size=32, seed=seed)
        _, history = train(config, dataset=subset(digits, 512, 144), progress=False)
        found[f"{method}, 3 epochs: val natural"] = history[-1]["val_natural_accuracy"]
    config = make_config("digits", method="pgd_at", cas=True, epochs=2, device="cpu", val_examples=16,
                         attack_steps=2, val_attack_steps=1, batch_size=32, seed=seed)
    model, _ = train(config, dataset=subset(digits, 256, 16), progress=False)
    report = evaluate(model, digits.test.x[:64], digits.test.y[:64], 0.1, attacks=("natural", "pgd20", "cw"),
                      objective="both")
    acc = report.accuracy
    found["AT+CAS, 2 epochs: natural (64)"] = acc["natural"]["ce"]
    found["AT+CAS: natural − max(pgd20, cw)"] = acc["natural"]["ce"] - max(
        v for name in ("pgd20", "cw") for v in acc[name].values())
    return found


#: The threshold each test applies to the quantity of the same name.
THRESHOLDS = {
    "natural": "≥ 0.90 (test_attacks)",
    "pgd20": "≤ natural − 0.20 (test_attacks)",
    "fgsm": "≥ pgd20 (test_attacks)",
    "pgd20 − apgd-ce (200)": "≤ tolerance in test_attacks",
    "standard, 3 epochs: val natural": "> 0.6 (test_training)",
    "pgd_at, 3 epochs: val natural": "> 0.6 (test_training)",
    "AT+CAS, 2 epochs: natural (64)": "> 0.3 (test_evaluation)",
    "AT+CAS: natural − max(pgd20, cw)": "≥ 0 (test_evaluation)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    info = machine()
    digits = data.load("digits")
    values: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        for name, value in {**attacks_on_standard_model(digits, seed), **short_training(digits, seed)}.items():
            values.setdefault(name, []).append(value)
        print(f"seed {seed} done", flush=True)
    rows = [[name, f"{min(v):.3f}", f"{max(v):.3f}", f"{sum(v) / len(v):.3f}", THRESHOLDS.get(name, "–")]
            for name, v in values.items()]
    print(markdown_table(["quantity", f"min over {args.seeds} seeds", "max", "mean", "test threshold"], rows))
    print(machine_line(info))
    write_json("test_margins", {"machine": info, "values": values})


if __name__ == "__main__":
    main()
