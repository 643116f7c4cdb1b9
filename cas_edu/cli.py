"""Command line: ``python -m cas_edu train | evaluate | activations``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from . import data
from .checkpoint import checkpoint_file, read_checkpoint, write_json
from .evaluation import ATTACKS, STRAIGHT_THROUGH
from .models import MODELS
from .presets import METHODS, PRESETS, TrainConfig
from .runtime import AMP_MODES, CHANNELS_LAST_MODES, DEFAULT_AMP
from .training import NonFiniteLossError


#: What ``evaluate RUN`` reports by default: the paper's attacks plus standard AutoAttack (which includes Square);
#: CAS models also get the straight-through (BPDA) attacks (:func:`default_attacks`).
REPORT_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "autoattack")


def default_attacks(has_cas: bool) -> tuple[str, ...]:
    """The attacks ``evaluate`` runs without ``--attacks``: :data:`REPORT_ATTACKS`, plus for CAS models the
    straight-through PGD-100×5 and AutoAttack (``pgd-st``, ``autoattack-st``)."""
    return REPORT_ATTACKS + (STRAIGHT_THROUGH if has_cas else ())


class UsageError(Exception):
    """Bad arguments: reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _eps(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"eps must lie in [0, 1] (images are in [0, 1]), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cas_edu", description="Channel-wise Activation Suppressing: train, attack, inspect.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (digits small CNN with PGD-AT by default)")
    train.add_argument("--dataset", default="digits", help=f"one of {', '.join(data.DATASETS)} or npz:PATH")
    train.add_argument("--model", default="small_cnn", choices=MODELS)
    train.add_argument("--method", default="pgd_at", choices=METHODS)
    train.add_argument("--cas", action="store_true", help="add CAS modules at the official default places")
    train.add_argument("--cas-beta", type=float, default=None, help="weight β of the auxiliary CAS losses (2)")
    train.add_argument("--preset", default="fast", choices=PRESETS, help="fast: one-cycle short schedule; paper: official")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--eps", type=_eps, help="L∞ budget (default per dataset: digits 0.1, CIFAR-10 8/255)")
    train.add_argument("--step-size", type=float)
    train.add_argument("--attack-steps", type=int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--val-fraction", type=float,
                       help="share of the training set held out to choose best.pt (default 0.1); 0 trains on all "
                            "of it like the official scripts, and best.pt is then the last epoch")
    train.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    train.add_argument("--data-root", help="dataset folder (default: $CAS_EDU_DATA, else ~/.cache/cas_edu)")
    train.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    train.add_argument("--amp", default=DEFAULT_AMP, choices=AMP_MODES,
                       help="bf16 autocast of the attack and training forwards: off (default, fp32 as the official "
                            "code), bf16 (everywhere), auto (on CUDA only); bf16 changes the training attack")
    train.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_MODES,
                       help="channels_last memory format: auto = on CUDA only")
    train.add_argument("--compile", action="store_true", help="torch.compile each block (small_cnn, resnet18)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--json", action="store_true", help="print the history as JSON")
    train.add_argument("--out", required=True, help="run folder: checkpoint.pt, best.pt, history.json")

    evaluate = sub.add_parser("evaluate", help="accuracy under natural, FGSM, PGD-20, CW∞, Square, AutoAttack, "
                                               "straight-through (BPDA) attacks; per-example worst case")
    evaluate.add_argument("run", help="run folder (uses best.pt, else checkpoint.pt) or a .pt file")
    evaluate.add_argument("--attacks", default=None,
                          help=f"comma list from {','.join(ATTACKS)} (default: {','.join(REPORT_ATTACKS)}, "
                               f"plus {','.join(STRAIGHT_THROUGH)} for CAS models)")
    evaluate.add_argument("--objective", default="both", choices=["ce", "ce+cas", "both"])
    evaluate.add_argument("--eps", type=_eps, help="default: the training eps")
    evaluate.add_argument("--dataset", help="default: the training dataset")
    evaluate.add_argument("--split", default="test", choices=["test", "val"])
    evaluate.add_argument("--n", type=int, help="only the first N examples of the split")
    evaluate.add_argument("--subset-n", type=int,
                          help="run Square, AutoAttack and the straight-through attacks on a seeded, class-balanced "
                               "subset of N of the examples (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-root")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--output", help="where to write the JSON report (default: RUN/eval.json for a run folder)")

    acts = sub.add_parser("activations", help="channel activation statistics, natural vs PGD-20 adversarial "
                                              "(the official figures' attack; adaptive ce+cas on CAS models)")
    acts.add_argument("run", help="run folder or .pt file")
    acts.add_argument("--layer", help="layer name (default: the model's penultimate CAS-able layer)")
    acts.add_argument("--eps", type=_eps)
    acts.add_argument("--class-id", type=int, help="only examples of this class (the paper uses class 0)")
    acts.add_argument("--dataset")
    acts.add_argument("--n", type=int, help="only the first N examples of the test split")
    acts.add_argument("--seed", type=int, default=0)
    acts.add_argument("--device", default="auto")
    acts.add_argument("--data-root")
    acts.add_argument("--json", action="store_true")
    return parser


def _command_train(args: argparse.Namespace) -> int:
    from .presets import make_config
    from .training import train

    config = make_config(args.dataset, args.model, args.method, args.cas, args.preset, cas_beta=args.cas_beta,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, eps=args.eps,
                         step_size=args.step_size, attack_steps=args.attack_steps, seed=args.seed,
                         device=args.device, data_root=args.data_root, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile, val_fraction=args.val_fraction)
    dataset = None if args.resume else data.load(config.dataset, root=config.data_root, download=args.download,
                                                 val_fraction=config.val_fraction)
    _, history = train(config, out_dir=args.out, dataset=dataset, resume=args.resume, progress=False if args.quiet else None)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        last = history[-1]
        natural, robust = last["val_natural_accuracy"], last["val_robust_accuracy"]
        trained = (f"trained {config.model} ({config.method}{' + CAS' if config.cas else ''}) on {config.dataset} "
                   f"for {last['epoch']} epochs")
        if natural is None:
            print(f"{trained} on the whole training set (no validation split, --val-fraction 0): best.pt is the "
                  f"last epoch -> {Path(args.out) / 'checkpoint.pt'}")
        else:
            print(f"{trained}: val natural {natural:.2%}"
                  + (f", val PGD-{config.val_attack_steps} {robust:.2%}" if robust is not None else "")
                  + f" -> {Path(args.out) / 'checkpoint.pt'}")
    return 0


def _load_run(args: argparse.Namespace):
    from .checkpoint import model_from_payload
    from .runtime import resolve_device

    payload = read_checkpoint(args.run)
    config = TrainConfig.from_dict(payload.get("config", {}))
    dataset = data.load(args.dataset or config.dataset, root=args.data_root or config.data_root)
    spec = payload["model_spec"]
    if dataset.input_shape[0] != spec["in_channels"] or len(dataset.classes) != spec["num_classes"]:
        raise ValueError(f"{dataset.name} images are {dataset.input_shape} with {len(dataset.classes)} classes, but the "
                         f"model expects {spec['in_channels']} channels and {spec['num_classes']} classes.")
    model = model_from_payload(payload).to(resolve_device(args.device)).eval()
    eps = args.eps if args.eps is not None else config.eps
    return model, dataset, eps


def _subset(split: data.Split, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    return split.x[:n], split.y[:n]


def _command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    model, dataset, eps = _load_run(args)
    x, y = _subset(dataset.test if args.split == "test" else dataset.val, args.n)
    from .attacks import has_cas

    attacks = default_attacks(has_cas(model)) if args.attacks is None else \
        [a.strip() for a in args.attacks.split(",") if a.strip()]
    report = evaluate(model, x, y, eps, attacks=attacks, objective=args.objective, batch_size=args.batch_size,
                      seed=args.seed, progress=not args.json and sys.stderr.isatty(), subset_n=args.subset_n)
    report.checkpoint = str(checkpoint_file(args.run))
    if args.output:
        write_json(Path(args.output), report.to_dict())
    elif Path(args.run).is_dir():
        write_json(Path(args.run) / "eval.json", report.to_dict())
    print(report.to_json() if args.json else report.table())
    return 0


def _command_activations(args: argparse.Namespace) -> int:
    from .activations import compare_activations
    from .runtime import seed_everything

    model, dataset, eps = _load_run(args)
    x, y = _subset(dataset.test, args.n)
    seed_everything(args.seed)
    comparison = compare_activations(model, x, y, eps, layer=args.layer, class_id=args.class_id)
    attack = comparison.attack
    summary = {"layer": comparison.layer, "class_id": args.class_id,
               "attack": f"{attack['name']} ({attack['objective']}, step {attack['step_size']:.4g}, random start)",
               **comparison.summary()}
    if args.json:
        print(json.dumps({**summary, "natural_counts": comparison.natural_counts.tolist(),
                          "adversarial_counts": comparison.adversarial_counts.tolist(),
                          "natural_magnitudes": comparison.natural_magnitudes.tolist(),
                          "adversarial_magnitudes": comparison.adversarial_magnitudes.tolist()}, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    return 0


COMMANDS = {"train": _command_train, "evaluate": _command_evaluate, "activations": _command_activations}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input exits with code 2 and one line on stderr."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except torch.OutOfMemoryError:
        print("error: out of memory on the device; rerun with a smaller --batch-size "
              "(add --resume to continue from the last good checkpoint).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
