"""Reproduction: ResNet-18 AT and AT+CAS on CIFAR-10, trained and evaluated, one resumable command.

What it does, for AT (``pgd_at``) and AT+CAS (``pgd_at --cas``), ResNet-18, ``--preset`` (default ``fast``):
    1. trains into ``OUT/pgd_at`` and ``OUT/pgd_at_cas`` — resuming a run folder whose checkpoint.pt has fewer
       epochs than asked, reusing a finished one. ``--time-limit-s`` stops cleanly after the epoch that
       crosses the limit (its checkpoint is written), so a session with a per-command time limit reruns the
       same command until the table appears;
    2. evaluates ``best.pt`` (chosen on the validation split) with ``cas_edu.pipeline.evaluate_suite`` and the
       notebook-04 ``gpu`` profile's attacks: natural, FGSM, PGD-20 and CW∞ (both objectives for the CAS model)
       on the whole test set, and Square, AutoAttack and the straight-through (BPDA) PGD-100×5 and AutoAttack
       on a seeded, class-balanced subset of ``--subset-n`` test images (default 1,000); the per-example worst
       case uses the examples every attack ran on. Reports are kept in ``OUT/<run>/eval/`` (``cas_edu.run_folder``;
       a rerun reuses the newest one that covers the same attacks and examples);
    3. prints a markdown table (accuracy %, n for every column, the machine, the data, the command), the gain
       of CAS in worst-case accuracy with a paired 95 % interval, and writes benchmarks/results/reproduce_cifar10.json.

The CIFAR-10 copy in ../shared/data/cifar10 is decoded from JPEGs: exact labels and split, not the original
pixels, so numbers are comparable with the paper's only roughly; the table says so.

Usage (repository root; the data root holds cifar10/train-*.npz + cifar10/test.npz or cifar-10-batches-py/)
    PYTHONPATH=. python benchmarks/reproduce_cifar10.py --data-root DIR [--out runs/cifar10_r18] [--preset fast]
           [--epochs N] [--batch-size B] [--subset-n 1000] [--time-limit-s 540]
    # CPU smoke run (checks the pipeline end to end; its numbers mean nothing):
    #   --epochs 1 --train-n 256 --val-n 32 --test-n 64 --subset-n 10 --out /tmp/smoke
    # measured 2026-11-30 on 2 CPU cores under a load average of 5-12 from other jobs: 0.9 min of training per
    # run, 105 min wall in all -- nearly everything in evaluating ResNet-18 with Square (5,000 queries), AutoAttack
    # and the straight-through attacks. Run it on an idle machine or with a GPU.
Exit code 3: stopped at --time-limit-s after writing a checkpoint; run the same command again to go on.
Exit code 2 (one line): a run folder holds a run trained with other settings (e.g. another --epochs with the
fast preset, whose schedule depends on it), or another training holds it; nothing is replaced.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

from cas_edu import data, pipeline, presets, run_folder  # noqa: E402
from cas_edu.checkpoint import read_checkpoint  # noqa: E402
from cas_edu.evaluation import COSTLY, EvaluationReport, paired_difference  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.runtime import resolve_device  # noqa: E402
from cas_edu.training import train  # noqa: E402

RUNS = [("AT", "pgd_at", False), ("AT+CAS", "pgd_at_cas", True)]
PROFILE = presets.get_profile("gpu")  # the attacks notebook 04's gpu profile runs


EXIT_RERUN = 3  # stopped at --time-limit-s with a checkpoint written: run the same command again


class TimeLimitReached(Exception):
    """Training stopped after an epoch because ``--time-limit-s`` had passed; rerun to resume."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", default="runs/cifar10_r18")
    parser.add_argument("--preset", default="fast", choices=("fast", "paper"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--subset-n", "--autoattack-n", dest="subset_n", type=int, default=PROFILE.subset_n,
                        help="class-balanced test images for Square, AutoAttack and the straight-through attacks")
    parser.add_argument("--train-n", type=int, help="train on the first N training images only (smoke runs)")
    parser.add_argument("--test-n", type=int, help="evaluate on the first N test images only (smoke runs)")
    parser.add_argument("--val-n", type=int, help="validate on N images per epoch (default: the preset's 512)")
    parser.add_argument("--time-limit-s", type=float, help="stop after the epoch that passes this many seconds")
    return parser.parse_args(argv)


def subset(ds: data.Dataset, train_n: int | None, test_n: int | None) -> data.Dataset:
    return data.Dataset(ds.name, data.Split(ds.train.x[:train_n], ds.train.y[:train_n]), ds.val,
                        data.Split(ds.test.x[:test_n], ds.test.y[:test_n]), ds.classes)


def train_run(config, folder: Path, ds: data.Dataset, deadline: float | None) -> str:
    """Train, resume or reuse ``folder``; returns what happened."""
    def stop_when_late(record: dict) -> None:
        if deadline is not None and time.monotonic() > deadline and record["epoch"] < config.epochs:
            raise TimeLimitReached(f"{folder}: stopped after epoch {record['epoch']}/{config.epochs}; rerun to resume")

    checkpoint = folder / "checkpoint.pt"
    if checkpoint.is_file():
        saved = read_checkpoint(checkpoint)
        if int(saved["epoch"]) >= config.epochs:
            return f"reused ({saved['epoch']} epochs)"
        train(config, out_dir=folder, resume=True, dataset=ds, progress=False, on_epoch_end=stop_when_late)
        return f"resumed from epoch {saved['epoch']}"
    train(config, out_dir=folder, dataset=ds, progress=False, on_epoch_end=stop_when_late)
    return "trained"


def saved_report(folder: Path, n_test: int, subset_n: int) -> EvaluationReport | None:
    """The run's newest kept report (``run_folder.saved_reports``) that covers the profile's attacks on the same
    number of test and subset images, or None."""
    for path in run_folder.saved_reports(folder):
        try:
            report = run_folder.load_report(path)
        except ValueError:  # not a report: look further back
            continue
        same = (report.n_examples == n_test and set(PROFILE.attacks) <= set(report.accuracy)
                and all(report.count(a) == min(subset_n, n_test) for a in PROFILE.attacks if a in COSTLY))
        if same:
            return report
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.time_limit_s if args.time_limit_s else None
    info = machine()
    device = resolve_device(args.device)
    ds = subset(data.load("cifar10", root=args.data_root), args.train_n, args.test_n)
    results, folders, hows, eps = {}, {}, {}, None
    for label, folder_name, cas in RUNS:
        config = make_config("cifar10", model="resnet18", method="pgd_at", cas=cas, preset=args.preset,
                             epochs=args.epochs, batch_size=args.batch_size, device=args.device, val_examples=args.val_n,
                             data_root=str(Path(args.data_root).resolve()))
        folder = Path(args.out) / folder_name
        try:
            hows[label] = train_run(config, folder, ds, deadline)
        except TimeLimitReached as stop:
            print(stop)
            return EXIT_RERUN
        except ValueError as refused:  # the folder holds another run, another training holds it, or bad settings
            print(f"error: {refused}", file=sys.stderr)
            return 2
        folders[label], eps = folder, config.eps
        history = json.loads((folder / "history.json").read_text())["history"]
        results[label] = {"run": str(folder), "epochs": config.epochs,
                          "train_seconds": sum(r["seconds"] for r in history)}
    reports = {}
    for label, folder in folders.items():  # reuse an earlier rerun's evaluation of the same finished run
        report = saved_report(folder, len(ds.test.x), args.subset_n) if hows[label].startswith("reused") else None
        if report is not None:
            reports[label], hows[label] = report, hows[label] + ", evaluation reused"
    todo = {label: folder for label, folder in folders.items() if label not in reports}
    if todo:
        reports.update(pipeline.evaluate_suite(todo, ds, eps, profile=PROFILE, n=len(ds.test.x),
                                               subset_n=args.subset_n, device=args.device))
        for label in todo:
            hows[label] += ", evaluated best.pt"
    for label in folders:
        results[label].update(training=hows[label], eval=reports[label].to_dict())
        print(f"{label}: {hows[label]}", flush=True)
    reports = {("pgd_at+cas" if label == "AT+CAS" else "pgd_at"): reports[label] for label in folders}

    headers, rows = pipeline.results_rows(reports)
    counts = pipeline.results_counts(reports)
    headers = [h if i == 0 else f"{h} (n={c})" for i, (h, c) in enumerate(zip(headers, counts))] + ["train min"]
    rows = [row + [f"{results[row[0]]['train_seconds'] / 60:.1f}"] for row in rows]
    print(f"\n## CIFAR-10 (JPEG-derived copy), ResNet-18, preset {args.preset}, ε = 8/255\n")
    print(machine_line(info) + (f"; GPU: {__import__('torch').cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"\nCommand: python benchmarks/reproduce_cifar10.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print(markdown_table(headers, rows))
    gain = paired_difference(reports["pgd_at+cas"], reports["pgd_at"])
    results["cas_gain_worst_case"] = {"difference": gain.difference, "low": gain.low, "high": gain.high, "n": gain.n,
                                      "method": gain.method}
    print(f"\nAccuracy in % of best.pt (selected on the validation split); n = test images behind each column. "
          "Worst case: correct naturally and under every attack, per example, on the images every attack ran on. "
          "The data are decoded from a JPEG copy of CIFAR-10 (exact labels and split, not the original pixels).")
    print(f"CAS gain in worst-case accuracy (AT+CAS − AT, paired, same images): {gain}")
    for label, report in zip(folders, reports.values()):
        for warning in report.warnings:
            print(f"WARNING ({label}): {warning}")
    path = write_json("reproduce_cifar10", {"machine": info, "args": vars(args), "results": results,
                                            "seconds": time.monotonic() - started})
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
