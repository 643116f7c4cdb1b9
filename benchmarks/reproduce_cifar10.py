"""Reproduction: ResNet-18 AT and AT+CAS on CIFAR-10, trained and evaluated, one resumable command.

What it does, for AT (``pgd_at``) and AT+CAS (``pgd_at --cas``), ResNet-18, ``--preset`` (default ``fast``):
    1. trains into ``OUT/pgd_at`` and ``OUT/pgd_at_cas`` — resuming a run folder whose checkpoint.pt has fewer
       epochs than asked, reusing a finished one. ``--time-limit-s`` stops cleanly after the epoch that
       crosses the limit (its checkpoint is written), so a session with a per-command time limit reruns the
       same command until the table appears;
    2. evaluates ``best.pt`` (chosen on the validation split; a finished run's reports are reused) on the test set: natural, FGSM, PGD-20 and CW∞
       with both objectives for the CAS model (``OUT/<run>/eval.json``), then natural, adaptive PGD-20 and
       AutoAttack (standard) on the first ``--autoattack-n`` test images (``OUT/<run>/eval_autoattack.json``),
       so that AutoAttack is compared with PGD-20 on the same images;
    3. prints a markdown table (accuracy %, the machine, the data, the command) and writes
       benchmarks/results/reproduce_cifar10.json.

The CIFAR-10 copy in ../shared/data/cifar10 is decoded from JPEGs: exact labels and split, not the original
pixels, so numbers are comparable with the paper's only roughly; the table says so.

Usage (repository root; the data root holds cifar10/train-*.npz + cifar10/test.npz or cifar-10-batches-py/)
    PYTHONPATH=. python benchmarks/reproduce_cifar10.py --data-root DIR [--out runs/cifar10_r18] [--preset fast]
           [--epochs N] [--batch-size B] [--autoattack-n 1000] [--time-limit-s 540]
    # CPU smoke run on a subset (minutes): --epochs 1 --train-n 256 --val-n 32 --test-n 64 --autoattack-n 8
Exit code 3: stopped at --time-limit-s after writing a checkpoint; run the same command again to go on.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, markdown_table, write_json  # noqa: E402

from cas_edu import data, load_checkpoint  # noqa: E402
from cas_edu.checkpoint import read_checkpoint, write_json as write_report  # noqa: E402
from cas_edu.evaluation import evaluate  # noqa: E402
from cas_edu.presets import make_config  # noqa: E402
from cas_edu.runtime import resolve_device  # noqa: E402
from cas_edu.training import train  # noqa: E402

RUNS = [("AT", "pgd_at", False), ("AT+CAS", "pgd_at_cas", True)]
COLUMNS = [("natural", "natural", "ce"), ("FGSM", "fgsm", "ce"), ("FGSM adaptive", "fgsm", "ce+cas"),
           ("PGD-20", "pgd20", "ce"), ("PGD-20 adaptive", "pgd20", "ce+cas"), ("CW∞", "cw", "ce"),
           ("CW∞ adaptive", "cw", "ce+cas")]


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
    parser.add_argument("--autoattack-n", type=int, default=1000)
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


def evaluate_run(folder: Path, ds: data.Dataset, eps: float, autoattack_n: int, device) -> tuple[dict, dict]:
    model = load_checkpoint(folder, device=device)
    x, y = ds.test.x, ds.test.y
    white_box = evaluate(model, x, y, eps, attacks=("natural", "fgsm", "pgd20", "cw"), objective="both")
    write_report(folder / "eval.json", white_box.to_dict())
    n = min(autoattack_n, len(x))
    black_box = evaluate(model, x[:n], y[:n], eps, attacks=("natural", "pgd20", "autoattack"), objective="ce+cas"
                         if getattr(model, "has_cas", False) else "ce")
    write_report(folder / "eval_autoattack.json", black_box.to_dict())
    return white_box.to_dict(), black_box.to_dict()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    deadline = started + args.time_limit_s if args.time_limit_s else None
    info = machine()
    device = resolve_device(args.device)
    ds = subset(data.load("cifar10", root=args.data_root), args.train_n, args.test_n)
    results = {}
    for label, folder_name, cas in RUNS:
        config = make_config("cifar10", model="resnet18", method="pgd_at", cas=cas, preset=args.preset,
                             epochs=args.epochs, batch_size=args.batch_size, device=args.device, val_examples=args.val_n,
                             data_root=str(Path(args.data_root).resolve()))
        folder = Path(args.out) / folder_name
        try:
            how = train_run(config, folder, ds, deadline)
        except TimeLimitReached as stop:
            print(stop)
            return EXIT_RERUN
        history = json.loads((folder / "history.json").read_text())["history"]
        reports = [folder / "eval.json", folder / "eval_autoattack.json"]
        if how.startswith("reused") and all(r.is_file() for r in reports):  # evaluated by an earlier rerun
            white_box, black_box = (json.loads(r.read_text()) for r in reports)
            how += ", evaluation reused"
        else:
            white_box, black_box = evaluate_run(folder, ds, config.eps, args.autoattack_n, device)
            how += ", evaluated"
        results[label] = {"run": str(folder), "training": how, "epochs": config.epochs,
                          "train_seconds": sum(r["seconds"] for r in history), "eval": white_box,
                          "eval_autoattack": black_box}
        print(f"{label}: {how}", flush=True)

    rows = []
    for label, result in results.items():
        accuracy = result["eval"]["accuracy"]
        cells = [f"{accuracy[a][o] * 100:.2f}" if o in accuracy.get(a, {}) else "–" for _, a, o in COLUMNS]
        aa = result["eval_autoattack"]
        reference = "ce+cas" if "ce+cas" in aa["accuracy"]["pgd20"] else "ce"
        rows.append([label, *cells, f"{aa['accuracy']['pgd20'][reference] * 100:.2f}",
                     f"{aa['accuracy']['autoattack']['ce'] * 100:.2f}", f"{result['train_seconds'] / 60:.1f}"])
    n_test, n_aa = len(ds.test.x), min(args.autoattack_n, len(ds.test.x))
    print(f"\n## CIFAR-10 (JPEG-derived copy), ResNet-18, preset {args.preset}, ε = 8/255\n")
    print(machine_line(info) + (f"; GPU: {__import__('torch').cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"\nCommand: python benchmarks/reproduce_cifar10.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print(markdown_table(["model", *[c[0] for c in COLUMNS], f"PGD-20 adaptive (first {n_aa})",
                          f"AutoAttack (first {n_aa})", "train min"], rows))
    print(f"\nAccuracy in % on the first {n_test} test images (all columns but the last three). The data are "
          "decoded from a JPEG copy of CIFAR-10 (exact labels and split, not the original pixels).")
    for label, result in results.items():
        for warning in result["eval"]["warnings"] + result["eval_autoattack"]["warnings"]:
            print(f"WARNING ({label}): {warning}")
    path = write_json("reproduce_cifar10", {"machine": info, "args": vars(args), "results": results,
                                            "seconds": time.monotonic() - started})
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
