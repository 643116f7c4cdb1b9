"""Benchmark: train the three digits models (STD, PGD-AT, PGD-AT+CAS) with the library defaults.

What it measures
    Wall-clock time (time.perf_counter) of ``cas_edu.training.train`` for each of the three small-CNN
    models on scikit-learn's ``digits`` (the ``fast`` preset of ``cas_edu.presets.make_config``), the
    total of the three, and each model's natural test accuracy. The dataset is loaded once, outside
    the timings. Run folders (best.pt, checkpoint.pt, history.json) are written to ``--out`` so that
    ``benchmarks/attack_oracle.py`` and the README can reuse the models; writing them is inside the
    timed ``train`` call, as it is for a user.

Targets (reported PASS/FAIL, never asserted)
    * natural test accuracy >= 97 % for each model;
    * the three trainings together <= 90 s.

With ``--evaluate`` it also runs ``cas_edu.evaluation.evaluate`` (natural, FGSM, PGD-20, CW∞, Square,
AutoAttack; objective "both") on each trained model, times it, and prints the combined table.

Usage (repository root)
    PYTHONPATH=. .venv/bin/python benchmarks/train_digits.py [--out runs/digits_bench] [--evaluate]
           [--eval-n N] [--threads 2]
    PYTHONPATH=. .venv/bin/python benchmarks/train_digits.py --evaluate-only [--eval-n N]   # reuse --out's models

Prints markdown tables and writes benchmarks/results/train_digits.json (train_digits_evaluate.json with
--evaluate-only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, pct, timed, verdict, write_json  # noqa: E402

from cas_edu import data, load_checkpoint  # noqa: E402
from cas_edu.checkpoint import read_checkpoint  # noqa: E402
from cas_edu.evaluation import evaluate  # noqa: E402
from cas_edu.presets import TrainConfig, make_config  # noqa: E402
from cas_edu.runtime import resolve_device  # noqa: E402
from cas_edu.training import accuracy, train  # noqa: E402

#: (row label, method, cas, run-folder name)
MODELS = [("STD", "standard", False, "standard"),
          ("AT", "pgd_at", False, "pgd_at"),
          ("AT+CAS", "pgd_at", True, "pgd_at_cas")]
ACCURACY_TARGET = 0.97
TIME_TARGET_S = 90.0
EVAL_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st", "autoattack-st")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/digits_bench", help="parent folder of the three run folders")
    parser.add_argument("--evaluate", action="store_true", help="also run the full robustness evaluation")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: evaluate the checkpoint.pt (last epoch) models already in --out")
    parser.add_argument("--eval-n", type=int, default=0,
                        help="evaluate on the first N test images only (0 = the whole test split)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the target has 2 cores)")
    parser.add_argument("--device", default=None, help="override the config's device (default: the library's 'auto')")
    return parser.parse_args(argv)


def evaluation_rows(reports: dict[str, dict]) -> list[list[str]]:
    """Rows STD / AT / AT+CAS of the combined evaluation table (accuracy in %)."""
    def get(acc: dict, attack: str, objective: str) -> float | None:
        return acc.get(attack, {}).get(objective)

    rows = []
    for label, report in reports.items():
        acc = report["accuracy"]
        rows.append([label, pct(get(acc, "natural", "ce")), pct(get(acc, "fgsm", "ce")),
                     pct(get(acc, "pgd20", "ce")), pct(get(acc, "pgd20", "ce+cas")),
                     pct(get(acc, "cw", "ce")), pct(get(acc, "cw", "ce+cas")),
                     pct(get(acc, "square", "ce")), pct(get(acc, "autoattack", "ce")),
                     pct(get(acc, "pgd-st", "ce+cas") if get(acc, "pgd-st", "ce") is None else get(acc, "pgd-st", "ce")),
                     pct(get(acc, "autoattack-st", "ce")), pct(report.get("worst_case"))])
    return rows


def train_all(args: argparse.Namespace, ds: data.Dataset, info: dict, payload: dict) -> tuple[dict, dict]:
    """Train the three models, print the training table and targets; return (models, configs)."""
    out = Path(args.out)
    results, models, configs = {}, {}, {}
    for label, method, cas, folder in MODELS:
        overrides = {"device": args.device} if args.device else {}
        config = make_config("digits", method=method, cas=cas, **overrides)
        load_before, cpu_before = os.getloadavg()[0], time.process_time()
        (model, history), seconds = timed(lambda: train(config, out_dir=out / folder, progress=False, dataset=ds))
        cpu_seconds, load_after = time.process_time() - cpu_before, os.getloadavg()[0]
        natural = accuracy(model, ds.test.x, ds.test.y)
        scores = [h["val_robust_accuracy"] if h["val_robust_accuracy"] is not None else h["val_natural_accuracy"]
                  for h in history]
        best_epoch = 1 + max(range(len(scores)), key=lambda i: (scores[i], -i))  # first maximum, as train() keeps
        models[label], configs[label] = model, config
        results[label] = {"method": method, "cas": cas, "run_dir": str(out / folder), "config": config.to_dict(),
                          "device": str(resolve_device(config.device)), "train_seconds": seconds,
                          "train_cpu_seconds": cpu_seconds, "loadavg_1min_before": load_before,
                          "loadavg_1min_after": load_after,
                          "natural_test_accuracy": natural, "epochs": len(history), "best_pt_epoch": best_epoch,
                          "last_val_robust_accuracy": history[-1]["val_robust_accuracy"],
                          "seconds_per_epoch": [h["seconds"] for h in history]}
        print(f"trained {label:6s} in {seconds:6.2f} s, natural test accuracy {natural:.2%}", flush=True)

    total = sum(r["train_seconds"] for r in results.values())
    rows = []
    for label, r in results.items():
        c = r["config"]
        steps = c["attack_steps"] if c["method"] != "standard" else 0
        rows.append([label, f"{c['method']}{' + CAS' if c['cas'] else ''}",
                     f"{c['epochs']} × bs {c['batch_size']}, ε {c['eps']:.3g}, {steps} steps",
                     r["device"], f"{r['train_seconds']:.2f}", f"{r['train_cpu_seconds']:.1f}",
                     f"{r['loadavg_1min_before']:.2f} → {r['loadavg_1min_after']:.2f}", pct(r["natural_test_accuracy"]),
                     verdict(r["natural_test_accuracy"] >= ACCURACY_TARGET)])
    rows.append(["total", "", "", "", f"{total:.2f}", f"{sum(r['train_cpu_seconds'] for r in results.values()):.1f}",
                 "", "", ""])
    print("\n## Training (wall clock, `train(config, out_dir=..., progress=False, dataset=ds)`)\n")
    print(markdown_table(["model", "method", "schedule", "device", "train s", "CPU s", "load 1-min", "natural test acc %",
                          f"acc ≥ {ACCURACY_TARGET:.0%}"], rows))
    accuracy_ok = all(r["natural_test_accuracy"] >= ACCURACY_TARGET for r in results.values())
    time_ok = total <= TIME_TARGET_S
    print(f"\nTarget: natural test accuracy ≥ {ACCURACY_TARGET:.0%} each: {verdict(accuracy_ok)}")
    print(f"Target: all three together ≤ {TIME_TARGET_S:.0f} s: {total:.2f} s → {verdict(time_ok)}")
    print(f"(CPU s: process CPU time, up to {info['torch_threads']}× wall with {info['torch_threads']} threads; a 1-min "
          f"load average above {info['usable_cores']} means other processes shared the cores and the times are inflated)")
    print(f"\nRun folders: {', '.join(r['run_dir'] for r in results.values())} "
          f"(best.pt epochs: {', '.join(k + ' ' + str(r['best_pt_epoch']) + '/' + str(r['epochs']) for k, r in results.items())}; "
          "load_checkpoint(dir) loads best.pt, checkpoint.pt holds the last epoch)")
    payload.update({"models": results, "total_train_seconds": total,
                    "targets": {"natural_accuracy_each": {"target": ACCURACY_TARGET, "pass": accuracy_ok},
                                "total_seconds": {"target": TIME_TARGET_S, "value": total, "pass": time_ok}}})
    return models, configs


def load_all(args: argparse.Namespace) -> tuple[dict, dict]:
    """The three models of an earlier run: each folder's checkpoint.pt (the last epoch, what train() returned)."""
    models, configs = {}, {}
    for label, _, _, folder in MODELS:
        path = Path(args.out) / folder / "checkpoint.pt"
        models[label] = load_checkpoint(path)
        configs[label] = TrainConfig.from_dict(read_checkpoint(path)["config"])
        print(f"loaded {label:6s} from {path}")
    return models, configs


def evaluate_all(args: argparse.Namespace, ds: data.Dataset, models: dict, configs: dict, payload: dict) -> None:
    """Run evaluate() on each model, print the combined table, the warnings and the times."""
    n = len(ds.test) if args.eval_n <= 0 else min(args.eval_n, len(ds.test))
    x, y = ds.test.x[:n], ds.test.y[:n]
    reports, eval_seconds, eval_load = {}, {}, {}
    for label, model in models.items():
        load_before = os.getloadavg()[0]
        report, seconds = timed(lambda: evaluate(model, x, y, eps=configs[label].eps, attacks=EVAL_ATTACKS,
                                                 objective="both"))
        reports[label], eval_seconds[label] = report.to_dict(), seconds
        eval_load[label] = (load_before, os.getloadavg()[0])
        print(f"evaluated {label:6s} in {seconds:6.1f} s", flush=True)
    eps = configs["AT"].eps
    print(f"\n## Robust test accuracy % (ε = {eps:g} L∞, n = {n} test images, `evaluate(..., objective=\"both\")`)\n")
    print(markdown_table(["model", "natural", "FGSM", "PGD-20 ce", "PGD-20 ce+cas", "CW∞ ce", "CW∞ ce+cas",
                          "Square", "AutoAttack", "PGD-100×5 straight-through", "AutoAttack straight-through",
                          "worst case (per example)"], evaluation_rows(reports)))
    fgsm_cas = reports["AT+CAS"]["accuracy"].get("fgsm", {}).get("ce+cas")
    print(f"\nFGSM column: main-head objective (ce); AT+CAS under FGSM ce+cas: {pct(fgsm_cas)} %. "
          "'–': not applicable (no CAS heads). Square: 5000 queries; AutoAttack: pyautoattack standard suite. "
          "Straight-through columns: through the BPDA masks on AT+CAS; on STD and AT (no CAS) plain PGD-100×5 and "
          "plain AutoAttack with their own seeds.")
    any_warning = False
    for label, report in reports.items():
        for warning in report["warnings"]:
            print(f"WARNING ({label}): {warning}")
            any_warning = True
    if not any_warning:
        print("No gradient-masking warnings.")
    print("\n## Evaluation time (s, wall clock)\n")
    time_rows = [[label] + [f"{reports[label]['seconds'].get(a, 0):.1f}" for a in EVAL_ATTACKS]
                 + [f"{eval_seconds[label]:.1f}", f"{eval_load[label][0]:.2f} → {eval_load[label][1]:.2f}"]
                 for label in reports]
    print(markdown_table(["model", "natural", "FGSM", "PGD-20", "CW∞", "Square", "AutoAttack", "PGD-100×5 ST",
                          "AutoAttack ST", "total", "load 1-min"],
                         time_rows))
    print(f"\n(white-box columns include both objectives for AT+CAS; total of the three: "
          f"{sum(eval_seconds.values()):.1f} s)")
    payload["evaluation"] = {"n": n, "eps": eps, "attacks": list(EVAL_ATTACKS), "reports": reports,
                             "seconds": eval_seconds, "loadavg_1min": eval_load}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    ds, load_s = timed(lambda: data.load("digits"))
    print(f"# train_digits: STD, PGD-AT, PGD-AT+CAS on digits (library defaults)\n\n{machine_line(info)}\n")
    print(f"digits: {len(ds.train)} train / {len(ds.val)} val / {len(ds.test)} test images, "
          f"shape {ds.input_shape}; loaded once in {load_s:.2f} s (not in the training times)\n")
    payload = {"machine": info, "dataset_load_seconds": load_s, "n_test": len(ds.test)}
    if args.evaluate_only:
        models, configs = load_all(args)
    else:
        models, configs = train_all(args, ds, info, payload)
    if args.evaluate or args.evaluate_only:
        evaluate_all(args, ds, models, configs, payload)
    info["loadavg_end"] = os.getloadavg()
    path = write_json("train_digits_evaluate" if args.evaluate_only else "train_digits", payload)
    print(f"\nLoad average at end {tuple(round(v, 2) for v in info['loadavg_end'])}. JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
