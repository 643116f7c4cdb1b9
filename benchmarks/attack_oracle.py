"""Benchmark: cas_edu's PGD-20 against torchattacks' PGD (the oracle), plus AutoAttack's APGD-CE beside it.

Setup (once; torchattacks pins requests~=2.25.1, which breaks JupyterLab, so it lives in its own venv):
    bash benchmarks/setup_oracle.sh
which runs, from the repository root,
    python3 -m venv benchmarks/.oracle-venv
    benchmarks/.oracle-venv/bin/pip install torch==2.14.1 torchattacks numpy scikit-learn tqdm
    benchmarks/.oracle-venv/bin/pip install --no-deps pyautoattack==0.2.0
    benchmarks/.oracle-venv/bin/pip install --no-deps -e .

Run (repository root; after benchmarks/train_digits.py, whose run folders it reuses, or it trains them):
    benchmarks/.oracle-venv/bin/python benchmarks/attack_oracle.py [--runs runs/digits_bench] [--threads 2]

What it measures, for each of the three digits models (STD, AT, AT+CAS), on the whole digits test split
as one batch, ε from the run's config (0.1), step ε/10, 20 steps, uniform random start:
    * robust accuracy under ``cas_edu.attacks.pgd(..., objective="ce")`` and under
      ``torchattacks.PGD(model, eps, alpha=eps/10, steps=20, random_start=True)``; both draw their random
      start with ``torch.empty_like(x).uniform_(-eps, eps)``, so repetition r seeds ``torch.manual_seed(r)``
      before each and the two start from the same point; accuracy is the mean over the timed repetitions;
    * wall-clock time of each attack call: median of 5 repetitions after 1 warm-up, ours and theirs
      interleaved, same torch thread count;
    * targets (PASS/FAIL, never asserted): accuracy difference ours − theirs ≤ +1 point (ours at least as
      strong, within noise); time ratio ours/theirs ≤ 1.0;
    * AutoAttack's APGD-CE (``pyautoattack``, 100 iterations, 1 restart as in standard AutoAttack, seed 0) accuracy and time (one run), as a
      stronger reference; for the CAS model also our adaptive PGD-20 (``objective="ce+cas"``), because
      torchattacks and APGD-CE only see the main head.
Prints markdown tables and writes benchmarks/results/attack_oracle.json.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, verdict, write_json  # noqa: E402

from cas_edu import data, load_checkpoint  # noqa: E402
from cas_edu.attacks import pgd  # noqa: E402
from cas_edu.checkpoint import read_checkpoint  # noqa: E402

MODELS = [("STD", "standard", False, "standard"),
          ("AT", "pgd_at", False, "pgd_at"),
          ("AT+CAS", "pgd_at", True, "pgd_at_cas")]
ACC_TARGET_POINTS = 1.0
RATIO_TARGET = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/digits_bench", help="parent of the run folders of train_digits.py")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    return parser.parse_args(argv)


def get_model(runs: Path, method: str, cas: bool, folder: str, ds: data.Dataset) -> tuple[torch.nn.Module, float, str]:
    """The run folder's model (best.pt, via load_checkpoint), training it first when the folder is missing."""
    run = runs / folder
    if not ((run / "best.pt").is_file() or (run / "checkpoint.pt").is_file()):
        from cas_edu.presets import make_config
        from cas_edu.training import train
        print(f"{run} has no checkpoint: training it ({method}{' + CAS' if cas else ''}) ...", flush=True)
        train(make_config("digits", method=method, cas=cas), out_dir=run, progress=False, dataset=ds)
        source = "trained now"
    else:
        source = "loaded"
    payload = read_checkpoint(run)
    return load_checkpoint(run, device="cpu"), float(payload["config"]["eps"]), f"{source}: {run} (epoch {payload['epoch']})"


@torch.no_grad()
def accuracy_on(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def compare(attacks: dict, model, x, y, repeats: int, warmup: int) -> dict:
    """Run each named attack ``warmup + repeats`` times, interleaved; rep r seeds torch with r before every attack."""
    out = {name: {"seconds": [], "accuracy": [], "x_adv": None} for name in attacks}
    for rep in range(warmup + repeats):
        for name, attack in attacks.items():
            torch.manual_seed(rep)
            started = time.perf_counter()
            x_adv = attack()
            seconds = time.perf_counter() - started
            if rep >= warmup:
                out[name]["seconds"].append(seconds)
                out[name]["accuracy"].append(accuracy_on(model, x_adv, y))
                if rep == warmup:
                    out[name]["x_adv"] = x_adv.detach()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torchattacks
        from pyautoattack import AutoAttack
    except ImportError as err:
        print(f"{err}. Run this script in the oracle venv: bash benchmarks/setup_oracle.sh, then "
              "benchmarks/.oracle-venv/bin/python benchmarks/attack_oracle.py", file=sys.stderr)
        return 2
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    info = machine()
    info["torchattacks"] = torchattacks.__version__
    info["loadavg_start"] = os.getloadavg()
    ds = data.load("digits")
    x, y = ds.test.x.contiguous(), ds.test.y.contiguous()
    n = len(y)
    print(f"# attack_oracle: cas_edu PGD-{args.steps} vs torchattacks {torchattacks.__version__} PGD "
          f"(+ APGD-CE)\n\n{machine_line(info)}\n")
    print(f"digits test split, n = {n}, one batch; step ε/10, {args.steps} steps, random start; "
          f"times: median of {args.repeats} after {args.warmup} warm-up, interleaved\n")

    results = {}
    for label, method, cas, folder in MODELS:
        model, eps, source = get_model(Path(args.runs), method, cas, folder, ds)
        step = eps / 10
        theirs_attack = torchattacks.PGD(model, eps=eps, alpha=step, steps=args.steps, random_start=True)
        attacks = {
            "ours_ce": lambda: pgd(model, x, y, eps, step_size=step, steps=args.steps, random_start=True, objective="ce"),
            "torchattacks": lambda: theirs_attack(x, y),
        }
        if getattr(model, "has_cas", False):
            attacks["ours_ce+cas"] = lambda: pgd(model, x, y, eps, step_size=step, steps=args.steps,
                                                 random_start=True, objective="ce+cas")
        runs = compare(attacks, model, x, y, args.repeats, args.warmup)
        started = time.perf_counter()
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce"], device="cpu", seed=0)
        adversary.apgd.n_restarts = 1  # as in the standard AutoAttack suite ('custom' would keep 5)
        adversary.verbose = False
        x_apgd, _ = adversary.run_standard_evaluation(x, y, batch_size=500)
        apgd_seconds = time.perf_counter() - started
        ours, theirs = runs["ours_ce"], runs["torchattacks"]
        same_pred = (model(ours["x_adv"]).argmax(1) == model(theirs["x_adv"]).argmax(1)).float().mean().item()
        summary = {
            "source": source, "eps": eps, "step_size": step, "steps": args.steps, "n": n,
            "natural_accuracy": accuracy_on(model, x, y),
            "max_linf_ours": (ours["x_adv"] - x).abs().max().item(),
            "max_linf_theirs": (theirs["x_adv"] - x).abs().max().item(),
            "max_abs_diff_ours_vs_theirs": (ours["x_adv"] - theirs["x_adv"]).abs().max().item(),
            "same_prediction_fraction": same_pred,
            "apgd_ce_accuracy": accuracy_on(model, x_apgd, y), "apgd_ce_seconds": apgd_seconds,
        }
        for name, run in runs.items():
            summary[name] = {"accuracy_mean": statistics.mean(run["accuracy"]), "accuracy_each": run["accuracy"],
                             "seconds_median": statistics.median(run["seconds"]), "seconds_each": run["seconds"]}
        summary["difference_points"] = 100 * (summary["ours_ce"]["accuracy_mean"] - summary["torchattacks"]["accuracy_mean"])
        summary["time_ratio"] = summary["ours_ce"]["seconds_median"] / summary["torchattacks"]["seconds_median"]
        summary["accuracy_pass"] = summary["difference_points"] <= ACC_TARGET_POINTS
        summary["time_pass"] = summary["time_ratio"] <= RATIO_TARGET
        results[label] = summary
        print(f"{label}: {source}; ours {summary['ours_ce']['seconds_median']:.3f} s, torchattacks "
              f"{summary['torchattacks']['seconds_median']:.3f} s, APGD-CE {apgd_seconds:.2f} s", flush=True)

    def cas_cell(s: dict, key: str, scale: float, digits: int) -> str:
        return f"{scale * s['ours_ce+cas'][key]:.{digits}f}" if "ours_ce+cas" in s else "–"

    print(f"\n## Robust accuracy % (mean over {args.repeats} seeded repetitions; APGD-CE: one run, seed 0)\n")
    rows = [[label, f"{100 * s['natural_accuracy']:.2f}", f"{100 * s['ours_ce']['accuracy_mean']:.2f}",
             f"{100 * s['torchattacks']['accuracy_mean']:.2f}", f"{s['difference_points']:+.2f}",
             verdict(s["accuracy_pass"]), f"{100 * s['apgd_ce_accuracy']:.2f}",
             cas_cell(s, "accuracy_mean", 100, 2)]
            for label, s in results.items()]
    print(markdown_table(["model", "natural", "ours PGD-20 (ce)", "torchattacks PGD-20", "Δ ours − theirs (pts)",
                          f"Δ ≤ +{ACC_TARGET_POINTS:g}", "APGD-CE", "ours PGD-20 ce+cas (adaptive)"], rows))
    print("\n## Time per attack call (s, whole split as one batch)\n")
    rows = [[label, f"{s['ours_ce']['seconds_median']:.3f}", f"{s['torchattacks']['seconds_median']:.3f}",
             f"{s['time_ratio']:.3f}", verdict(s["time_pass"]), f"{s['apgd_ce_seconds']:.2f}",
             cas_cell(s, "seconds_median", 1, 3)]
            for label, s in results.items()]
    print(markdown_table(["model", "ours PGD-20 (ce)", "torchattacks PGD-20", "ratio ours/theirs",
                          f"ratio ≤ {RATIO_TARGET:g}", "APGD-CE (1 run)", "ours ce+cas"], rows))
    print("\n## Agreement (repetition 1, same seed for both)\n")
    rows = [[label, f"{s['max_linf_ours']:.7g}", f"{s['max_linf_theirs']:.7g}", f"{s['max_abs_diff_ours_vs_theirs']:.3g}",
             f"{100 * s['same_prediction_fraction']:.2f}"] for label, s in results.items()]
    print(markdown_table(["model", "max ‖δ‖∞ ours", "max ‖δ‖∞ theirs", "max abs(x_ours − x_theirs)",
                          "same adversarial prediction %"], rows))
    info["loadavg_end"] = os.getloadavg()
    print(f"\nLoad average (1, 5, 15 min) at start {tuple(round(v, 2) for v in info['loadavg_start'])}, "
          f"at end {tuple(round(v, 2) for v in info['loadavg_end'])} on {info['usable_cores']} usable cores.")
    print(f"Targets: Δ ≤ +{ACC_TARGET_POINTS:g} pt for every model: {verdict(all(s['accuracy_pass'] for s in results.values()))}; "
          f"time ratio ≤ {RATIO_TARGET:g} for every model: {verdict(all(s['time_pass'] for s in results.values()))}")
    path = write_json("attack_oracle", {"machine": info, "args": vars(args), "models": results})
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
