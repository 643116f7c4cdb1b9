"""Profile: where cas_edu's PGD-20 spends its time, next to a bare PGD loop with torchattacks' arithmetic.

What it measures (median of ``--repeats`` calls after one warm-up, same seed, same thread count), on the
digits test split as one batch with the AT model of benchmarks/train_digits.py (or ``--run DIR``):
    * ``cas_edu.attacks.pgd`` end to end (objective "ce");
    * its pieces on their own: ``validate_attack_inputs`` (x.min()/x.max() scans), the random start,
      the 20 forward+backward steps with our ``project``, and the final ``_exact_linf`` pass
      (float64 comparison plus ``torch.nextafter``);
    * a bare loop written like torchattacks.PGD (mean CE, clamp(delta) projection), no validation, no
      exact-projection pass, for reference.
Needs only the main venv:  PYTHONPATH=. .venv/bin/python benchmarks/profile_pgd.py [--threads 2]
Prints a markdown table and writes benchmarks/results/profile_pgd.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

from cas_edu import data, load_checkpoint  # noqa: E402
from cas_edu import attacks as A  # noqa: E402
from cas_edu.models import eval_mode  # noqa: E402


def bare_pgd(model, x, y, eps, alpha, steps):
    """torchattacks.PGD's arithmetic (v3.5.1), model already in eval mode."""
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad = True
        cost = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(cost, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def our_loop(model, x, y, eps, alpha, steps):
    """The body of cas_edu.attacks.pgd without validation and without the final _exact_linf pass."""
    adv = A._random_start(x, eps, "linf")
    low, high = A._linf_bounds(x, eps)
    for _ in range(steps):
        adv.requires_grad_(True)
        value = A.attack_objective(model, adv, y, "ce", "ce")
        (grad,) = torch.autograd.grad(value, adv)
        adv = A._linf_step(adv, grad, alpha, low, high)
    return adv


def _enter_exit(model) -> None:
    with eval_mode(model):
        pass


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    fn()
    times = []
    for _ in range(repeats):
        torch.manual_seed(0)
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/digits_bench/pgd_at")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    ds = data.load("digits")
    x, y = ds.test.x, ds.test.y
    model = load_checkpoint(args.run)  # in eval mode, as the bare loops need
    eps, alpha, steps = 0.1, 0.01, args.steps
    x_adv = our_loop(model, x, y, eps, alpha, steps)
    parts = {
        "cas_edu.attacks.pgd (end to end)": lambda: A.pgd(model, x, y, eps, alpha, steps, random_start=True),
        f"↳ {steps} steps + random start (our loop)": lambda: our_loop(model, x, y, eps, alpha, steps),
        "↳ validate_attack_inputs": lambda: A.validate_attack_inputs(model, x, y, eps, "ce", "linf"),
        "↳ _exact_linf (final pass)": lambda: A._exact_linf(x_adv, x, eps),
        "↳ eval_mode enter/exit": lambda: _enter_exit(model),
        "bare torchattacks-style loop": lambda: bare_pgd(model, x, y, eps, alpha, steps),
    }
    results = {}
    for name, fn in parts.items():
        median, times = median_seconds(fn, args.repeats)
        results[name.strip()] = {"median_s": median, "each_s": times}
    total = results["cas_edu.attacks.pgd (end to end)"]["median_s"]
    print(f"# profile_pgd: cas_edu PGD-{steps} on digits test (n = {len(y)}, one batch)\n\n{machine_line(info)}\n")
    rows = [[name, f"{1000 * results[name.strip()]['median_s']:.2f}",
             f"{100 * results[name.strip()]['median_s'] / total:.1f}"] for name in parts]
    print(markdown_table(["part", "median ms", "% of pgd()"], rows))
    info["loadavg_end"] = os.getloadavg()
    print(f"\nmedian of {args.repeats} after 1 warm-up; load average at end {tuple(round(v, 2) for v in info['loadavg_end'])}")
    path = write_json("profile_pgd", {"machine": info, "args": vars(args), "n": len(y), "parts": results})
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
