"""Command line: ``python -m cas_edu train | evaluate | activations | notebooks``.

:func:`build_parser` is the one definition of the flags: :func:`main` parses with it, :func:`train_options` and
:func:`config_from_args` read it, and :func:`cas_edu.pipeline.cli_command` writes commands from it. The attacks
``evaluate`` runs by default come from the registry of :mod:`cas_edu.evaluation` (:func:`default_attacks`).

Imports: the library modules (data, models, presets, activations, evaluation, training, checkpoint,
run_folder); nothing imports it but :mod:`cas_edu.__main__` and :mod:`cas_edu.pipeline`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from . import data, run_folder
from .activations import DEFAULT_THRESHOLD, SATURATED_SHARE
from .checkpoint import CheckpointWriteError, checkpoint_file, read_checkpoint
from .evaluation import ATTACKS, COSTLY, REPORT_ATTACKS, STRAIGHT_THROUGH, report_attacks
from .models import MODELS
from .presets import METHODS, PRESETS, TrainConfig, make_config
from .runtime import AMP_MODES, CHANNELS_LAST_MODES, DEFAULT_AMP, progress_style
from .training import NonFiniteLossError
from .validation import MAX_SEED


#: What ``evaluate RUN`` runs without ``--attacks``: ``REPORT_ATTACKS`` (the paper's attacks plus standard
#: AutoAttack), plus the straight-through attacks for CAS models; both from :mod:`cas_edu.evaluation`.
default_attacks = report_attacks


#: Exit code when a checkpoint or report could not be written (disk full, no permission): sysexits' EX_IOERR.
#: What was there before is intact; a report that could not be saved has been printed.
EXIT_WRITE_FAILED = 74


class UsageError(Exception):
    """Bad arguments: reported as one line with exit code 2.

    Raises: nothing of its own (an exception class, raised by the parser).
    """


def _remember_given(parser: argparse.ArgumentParser) -> None:
    """Make ``parser``'s ``store`` and ``store_true`` options add their ``dest`` to ``namespace.given`` when the
    command line names them, so that ``--resume`` compares only the settings the user gave."""
    for name in (None, "store", "store_true"):  # None: an option without action= ("store")
        base = parser._registry_get("action", name)

        class Remembering(base):  # type: ignore[misc, valid-type]
            def __call__(self, parser, namespace, values, option_string=None):
                super().__call__(parser, namespace, values, option_string)
                namespace.given = {*getattr(namespace, "given", ()), self.dest}

        parser.register("action", name, Remembering)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message} (see --help)")


#: Exit codes, for ``main``'s docstring and every ``--help``.
EXIT_CODES = ("exit codes: 0 success; 1 the machine or the run failed, not the input (no network for --download, "
              "permission denied or disk full outside the run's own files, out of memory, a non-finite loss); "
              "2 bad input: arguments, paths, data or checkpoint files, checked before any work starts; "
              f"{EXIT_WRITE_FAILED} a checkpoint or report could not be written (what was there before is intact); "
              "130 interrupted. Every failure prints one line on stderr, never a traceback.")


def _number(text: str, kind: type) -> float | int:
    """``text`` as ``kind`` (int or float), or ``ArgumentTypeError`` naming it."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None


def _at_least(minimum: int, maximum: int | None = None, why: str = ""):
    """argparse type: a whole number >= ``minimum`` (and <= ``maximum`` when given); ``why`` follows the rule."""
    top = "2**63 - 1" if maximum == MAX_SEED else maximum

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < minimum or (maximum is not None and value > maximum):
            rule = f"at least {minimum}" if maximum is None else f"from {minimum} to {top}"
            raise argparse.ArgumentTypeError(f"must be {rule}{why}, got {text}")
        return value
    parse.__name__ = f"whole number >= {minimum}" if maximum is None else f"whole number from {minimum} to {top}"
    return parse


_seed = _at_least(0, MAX_SEED)


def _path(text: str) -> str:
    """argparse type for a path: not empty or blank, ``~`` expanded here once, so that the path checked is the
    path used (``--out=~/run`` reaches the program unexpanded by the shell)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a path, got {text!r}")
    return os.path.expanduser(text)


_path.__name__ = "path"


def _finite(low: float = 0.0, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
            why: str = ""):
    """argparse type: a finite float from ``low`` to ``high`` (open ends as flagged)."""
    if high == math.inf:
        rule = f"a finite number {'above' if low_open else 'of at least'} {low:g}"
    else:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _number(text, float)
        if (not math.isfinite(value) or value < low or (low_open and value == low) or value > high
                or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"must be {rule}{why}, got {text}")
        return value
    parse.__name__ = rule
    return parse


_eps = _finite(0.0, 1.0, why=" (images are in [0, 1]; 8/255 is about 0.031)")
_threshold = _finite(0.0, 1.0, why=" (a fraction of each image's largest channel; the paper's is 0.01)")


def _attack_list(text: str) -> str:
    """argparse type for ``--attacks``: a comma list of known attacks, at least one, normalised."""
    names = list(dict.fromkeys(a.strip().lower() for a in text.split(",") if a.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"needs at least one attack, a comma list from {','.join(ATTACKS)}")
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {', '.join(unknown)}; choose from {','.join(ATTACKS)}")
    return ",".join(names)


#: How usage lines and errors name the program unless it was started as a console script (:func:`_invoked_as`).
DEFAULT_PROG = "python -m cas_edu"


def _invoked_as(argv0: str | None = None) -> str:
    """The program name for usage lines and errors: the console script's name as typed (``cas-edu``), or
    :data:`DEFAULT_PROG` when started as a module (``python -m cas_edu``: ``argv0`` is a ``.py`` file) or when
    there is no command line. ``argv0`` defaults to ``sys.argv[0]``.

    Raises: nothing of its own.
    """
    argv0 = sys.argv[0] if argv0 is None and sys.argv else argv0
    name = Path(argv0).name if argv0 else ""
    return name if name and not name.endswith(".py") and name != "-c" else DEFAULT_PROG


def build_parser(prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    """The argument parser of ``python -m cas_edu`` (named ``prog`` in usage lines and errors): the ``train``,
    ``evaluate``, ``activations`` and ``notebooks`` sub-commands and every flag, each with its type check (a bad
    value is a :class:`UsageError`, exit code 2).

    Raises: nothing of its own; ``parse_args`` raises :class:`UsageError` for bad arguments.
    """
    parser = _Parser(prog=prog, description="Channel-wise Activation Suppressing: train, attack, inspect.",
                     epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model (digits small CNN with PGD-AT by default)", epilog=EXIT_CODES)
    _remember_given(train)
    train.add_argument("--dataset", default="digits", help=f"one of {', '.join(data.DATASETS)} or npz:PATH")
    train.add_argument("--model", default="small_cnn", choices=MODELS)
    train.add_argument("--method", default="pgd_at", choices=METHODS)
    train.add_argument("--cas", action="store_true", help="add CAS modules at the official default places")
    train.add_argument("--cas-beta", type=_finite(), default=None, help="weight β of the auxiliary CAS losses (2)")
    train.add_argument("--preset", default="fast", choices=PRESETS, help="fast: one-cycle short schedule; paper: official")
    train.add_argument("--epochs", type=_at_least(1))
    train.add_argument("--batch-size", type=_at_least(2, why=" (a train-mode BatchNorm needs 2 examples per batch)"))
    train.add_argument("--lr", type=_finite(low_open=True))
    train.add_argument("--eps", type=_eps, help="L∞ budget (default per dataset: digits 0.1, CIFAR-10 8/255)")
    train.add_argument("--step-size", type=_eps)
    train.add_argument("--attack-steps", type=_at_least(1))
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--val-fraction", type=_finite(0.0, 1.0, high_open=True,
                                                      why=" (val_fraction held out for validation; 0: none)"),
                       help="share of the training set held out to choose best.pt (default 0.1); 0 trains on all "
                            "of it like the official scripts, and best.pt is then the last epoch")
    train.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    train.add_argument("--data-root", type=_path,
                       help="dataset folder (default: $CAS_EDU_DATA, else ~/.cache/cas_edu)")
    train.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    train.add_argument("--amp", default=DEFAULT_AMP, choices=AMP_MODES,
                       help="bf16 autocast of the attack and training forwards: off (default, fp32 as the official "
                            "code), bf16 (everywhere), auto (on CUDA only); bf16 changes the training attack")
    train.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_MODES,
                       help="channels_last memory format: auto = on CUDA only")
    train.add_argument("--compile", action="store_true", help="torch.compile each block (small_cnn, resnet18)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint with its saved settings (flags that "
                            "differ are refused, except more --epochs with --preset paper)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in --out: its checkpoints, history and reports (eval/, eval.json) are "
                            "deleted before the first epoch (without it a folder holding a run is refused)")
    train.add_argument("--quiet", action="store_true",
                       help="no progress bar (a bad CAS_EDU_PROGRESS is refused all the same, before any file is "
                            "written)")
    train.add_argument("--json", action="store_true", help="print the history as JSON")
    train.add_argument("--out", required=True, type=_path,
                       help="run folder: checkpoint.pt, best.pt, history.json; one training at a time (it holds "
                            "OUT/.lock)")

    evaluate = sub.add_parser("evaluate", help="accuracy under natural, FGSM, PGD-20, CW∞, Square, AutoAttack, "
                                               "straight-through (BPDA) attacks; per-example worst case",
                              epilog=EXIT_CODES)
    evaluate.add_argument("run", type=_path, help="run folder (uses best.pt, else checkpoint.pt) or a .pt file")
    evaluate.add_argument("--attacks", default=None, type=_attack_list,
                          help=f"comma list from {','.join(ATTACKS)} (default: {','.join(REPORT_ATTACKS)}, "
                               f"plus {','.join(STRAIGHT_THROUGH)} for CAS models)")
    evaluate.add_argument("--objective", default="both", choices=["ce", "ce+cas", "both"])
    evaluate.add_argument("--eps", type=_eps, help="default: the training eps")
    evaluate.add_argument("--dataset", help="default: the training dataset")
    evaluate.add_argument("--split", default="test", choices=["test", "val"])
    evaluate.add_argument("--n", type=_at_least(1), help="only the first N examples of the split (a larger N uses "
                                                         "them all and says so on stderr)")
    evaluate.add_argument("--subset-n", type=_at_least(1),
                          help="run Square, AutoAttack and the straight-through attacks on a seeded, class-balanced "
                               "subset of N of the examples (default: all; a larger N uses them all and says so on "
                               "stderr)")
    evaluate.add_argument("--batch-size", type=_at_least(1), default=256)
    evaluate.add_argument("--seed", type=_seed, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--data-root", type=_path)
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--output", type=_path,
                          help="a new file for the JSON report (never replaced; default for a run folder: "
                               "RUN/eval/<UTC time>-<attacks>-n<N>.json, named by RUN/eval/latest.json)")

    acts = sub.add_parser("activations", help="channel activation statistics, natural vs PGD-20 adversarial "
                                              "(the official figures' attack; adaptive ce+cas on CAS models)",
                          description="Channel activation statistics of one layer (the paper's Figures 1-2), "
                                      "natural vs PGD-20 adversarial test images. A channel counts as activated by "
                                      "an image when its spatially averaged value exceeds --threshold times the "
                                      "image's largest channel (the paper: 0.01). The output reports the threshold, "
                                      "the saturation (share of channels active for natural images) and whether "
                                      f"the count is saturated (at least {SATURATED_SHARE:.0%} active: it cannot "
                                      "show quiet channels; raise --threshold).",
                          epilog=EXIT_CODES)
    acts.add_argument("run", type=_path, help="run folder or .pt file")
    acts.add_argument("--layer", help="layer name (default: the model's penultimate CAS-able layer)")
    acts.add_argument("--eps", type=_eps)
    acts.add_argument("--class-id", type=_at_least(0), help="only examples of this class (the paper uses class 0)")
    acts.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                      help="a channel is activated by an image above THRESHOLD times the image's largest channel "
                           f"(default {DEFAULT_THRESHOLD:g}, the paper's; raise it when the count is saturated)")
    acts.add_argument("--dataset")
    acts.add_argument("--n", type=_at_least(1), help="only the first N examples of the test split (a larger N uses "
                                                     "them all and says so on stderr)")
    acts.add_argument("--seed", type=_seed, default=0)
    acts.add_argument("--device", default="auto")
    acts.add_argument("--data-root", type=_path)
    acts.add_argument("--json", action="store_true")

    course = sub.add_parser("notebooks", help="copy the course (the four notebooks, their student edition and the "
                            "README) into a folder", epilog=EXIT_CODES)
    course.add_argument("dir", type=_path, help="the folder to copy into (created if missing)")
    course.add_argument("--overwrite", action="store_true", help="replace course files that already exist there")
    return parser


#: ``train`` options that set a config field of the same name (the others say where or how to run).
CONFIG_OPTIONS = ("dataset", "model", "method", "cas", "cas_beta", "preset", "epochs", "batch_size", "lr", "eps",
                  "step_size", "attack_steps", "seed", "val_fraction", "device", "data_root", "amp",
                  "channels_last", "compile")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` in ``parser`` (built by :func:`build_parser`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise ValueError(f"{parser.prog} has no sub-command {command!r}.")


def train_options(parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """Each ``train`` flag by the name it stores (its ``dest``, e.g. ``attack_steps``) → its long option string
    (``--attack-steps``), read from the parser :func:`build_parser` defines (a new parser when None).

    Raises: nothing of its own.
    """
    train = _subparser(parser or build_parser(), "train")
    return {a.dest: next(o for o in a.option_strings if o.startswith("--"))
            for a in train._actions if a.option_strings and a.dest != "help"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The training config ``python -m cas_edu train`` builds from parsed arguments (without ``--resume``): the
    preset's defaults for the dataset and method, with every flag given winning.

    Raises: ``ValueError`` naming the field for a value that cannot train (:func:`cas_edu.presets.make_config`).
    """
    return make_config(args.dataset, args.model, args.method, args.cas, args.preset, cas_beta=args.cas_beta,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, eps=args.eps,
                       step_size=args.step_size, attack_steps=args.attack_steps, seed=args.seed,
                       device=args.device, data_root=args.data_root, amp=args.amp,
                       channels_last=args.channels_last, compile=args.compile, val_fraction=args.val_fraction)


def _command_train(args: argparse.Namespace) -> int:
    from .training import resume_config, saved_config, train

    out = Path(args.out)
    if run_folder.is_main_process():  # refuse before loading the data; train() checks again under the lock
        run_folder.check_unlocked(out)
        run_folder.check_can_start(out, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        given = {name: getattr(args, name) for name in CONFIG_OPTIONS if name in getattr(args, "given", ())}
        if "dataset" in given:
            given["dataset"] = data.dataset_key(given["dataset"])
        saved, done = saved_config(out)
        config = resume_config(saved, given, out, flags=True)  # ResumeMismatchError (a ValueError) names the flags
    else:
        config, done = config_from_args(args), 0
    dataset = _load_data(args, config.dataset, root=config.data_root, val_fraction=config.val_fraction)
    _, history = train(config, out_dir=out, dataset=dataset, resume=args.resume, overwrite=args.overwrite,
                       progress=False if args.quiet else None)
    if not run_folder.is_main_process():  # under torchrun, rank 0 reports
        return 0
    if args.json:
        print(json.dumps(history, indent=2))
    else:
        last = history[-1]
        natural, robust = last["val_natural_accuracy"], last["val_robust_accuracy"]
        what = f"{config.model} ({config.method}{' + CAS' if config.cas else ''}) on {config.dataset}"
        if done >= last["epoch"]:  # --resume of a finished run: train() had nothing to do
            trained = f"{out} had already finished its {_epochs(last['epoch'])}, so nothing was trained; {what}"
        else:
            trained = f"trained {what} for {_epochs(last['epoch'])}" + (f" (resumed after epoch {done})" if done
                                                                          else "")
        if natural is None:
            print(f"{trained} on the whole training set (no validation split, --val-fraction 0): best.pt is the "
                  f"last epoch -> {out / 'checkpoint.pt'}")
        else:
            print(f"{trained}: val natural {natural:.2%}"
                  + (f", val PGD-{config.val_attack_steps} {robust:.2%}" if robust is not None else "")
                  + f" -> {out / 'checkpoint.pt'}")
    return 0


def _epochs(n: int) -> str:
    """``n`` epoch(s) in words: ``1 epoch``, ``12 epochs``."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def _load_data(args: argparse.Namespace, name: str, **options) -> data.Dataset:
    """``data.load(name, **options)`` for a command: a missing dataset's one line names the CLI's flags
    (``--download``, ``--data-root``), not the Python arguments of :func:`cas_edu.data.load`'s own message.

    Raises: as :func:`cas_edu.data.load`; ``FileNotFoundError`` with the CLI's wording for a missing dataset.
    """
    download = getattr(args, "download", False)  # only train has --download
    try:
        return data.load(name, download=download, **options)
    except data.DatasetNotFoundError as err:
        fix = ("add --download on a machine with internet, or pass --data-root (or set CAS_EDU_DATA)" if
               args.command == "train" else "pass --data-root (or set CAS_EDU_DATA)")
        note = "" if args.command == "train" else f" ({args.command} does not download; train --download does)"
        raise FileNotFoundError(f"{err.dataset} not found in {err.folder}: {fix} to a folder holding "
                                f"{err.layout}{note}.") from None


def _recorded_config(payload: dict, source: Path) -> TrainConfig:
    """The training config a checkpoint records (:func:`cas_edu.checkpoint.recorded_config`); ``ValueError``
    naming the file when it has none or an invalid one (never silent defaults)."""
    from .checkpoint import recorded_config

    return recorded_config(payload, source)


def _load_run(args: argparse.Namespace):
    from .checkpoint import model_from_payload
    from .runtime import resolve_device

    if getattr(args, "loaded", None) is not None:  # read and checked by _check_args
        config, model, spec = args.loaded
    else:
        payload = read_checkpoint(args.run)
        config = _recorded_config(payload, checkpoint_file(args.run))
        model = model_from_payload(payload, source=checkpoint_file(args.run))
        spec = payload["model_spec"]
    name = data.dataset_key(args.dataset) if args.dataset is not None else config.dataset
    # the training dataset is split as in training, so that --split val is the run's own validation split
    dataset = _load_data(args, name, root=args.data_root or config.data_root,
                         val_fraction=config.val_fraction if name == config.dataset else 0.1)
    if dataset.input_shape[0] != spec["in_channels"] or len(dataset.classes) != spec["num_classes"]:
        raise ValueError(f"{dataset.name} images are {dataset.input_shape} with {len(dataset.classes)} classes, but the "
                         f"model expects {spec['in_channels']} channels and {spec['num_classes']} classes.")
    model = model.to(resolve_device(args.device)).eval()
    eps = args.eps if args.eps is not None else config.eps
    return model, dataset, eps


def _subset(split: data.Split, n: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of ``split`` (all when None); an ``n`` above the split's size takes them all and
    says so in one ``note:`` line on stderr (``what`` names the split), never silently."""
    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    if n is not None and n > len(split):
        print(f"note: --n {n} is more than the {len(split)} examples of {what}; using all {len(split)}.",
              file=sys.stderr)
    return split.x[:n], split.y[:n]


def _command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    # Where the report goes is checked before any attack runs, so that no report is computed only to be lost.
    save_in_run = args.output is None and Path(args.run).is_dir()
    if args.output is not None:
        run_folder.check_report_destination(args.output)
    elif save_in_run:
        run_folder.check_writable_folder(Path(args.run) / run_folder.REPORTS_DIR)
    model, dataset, eps = _load_run(args)
    x, y = _subset(dataset.test if args.split == "test" else dataset.val, args.n,
                   f"the {args.split} split of {dataset.name}")
    from .models import has_cas

    attacks = default_attacks(has_cas(model)) if args.attacks is None else \
        [a.strip() for a in args.attacks.split(",") if a.strip()]
    costly = [a for a in attacks if a in COSTLY]
    if args.subset_n is not None and args.subset_n > len(y) and costly:
        print(f"note: --subset-n {args.subset_n} is more than the {len(y)} examples evaluated; "
              f"{', '.join(costly)} run on all of them.", file=sys.stderr)
    report = evaluate(model, x, y, eps, attacks=attacks, objective=args.objective, batch_size=args.batch_size,
                      seed=args.seed, progress=not args.json and sys.stderr.isatty(), subset_n=args.subset_n)
    report.checkpoint = str(checkpoint_file(args.run))
    print(report.to_json() if args.json else report.table(), flush=True)  # printed first: a failed write loses nothing
    try:
        path = run_folder.write_report(args.output, report) if args.output is not None else \
            run_folder.save_report(args.run, report) if save_in_run else None
    except FileExistsError:
        raise CheckpointWriteError(f"{args.output} appeared while the attacks ran and is not replaced; the report "
                                   "above was not saved.") from None
    except CheckpointWriteError as err:
        if getattr(err, "report_path", None) is not None:  # the report was kept; only latest.json is stale
            raise
        raise CheckpointWriteError(f"{err} The report above was not saved.") from err
    if path is not None and not args.json:
        print(f"report saved to {path}")
    return 0


def _command_activations(args: argparse.Namespace) -> int:
    from .activations import compare_activations
    from .runtime import seed_everything

    model, dataset, eps = _load_run(args)
    x, y = _subset(dataset.test, args.n, f"the test split of {dataset.name}")
    seed_everything(args.seed)
    comparison = compare_activations(model, x, y, eps, layer=args.layer, class_id=args.class_id,
                                     threshold=args.threshold)
    attack = comparison.attack
    summary = {"layer": comparison.layer, "class_id": args.class_id,
               "attack": f"{attack['name']} ({attack['objective']}, step {attack['step_size']:.4g}, random start)",
               **comparison.summary()}  # with threshold, saturation and saturated
    summary["n_examples"] = int(summary["n_examples"])  # a count (the library's summary holds floats)
    if args.json:
        print(json.dumps({**summary, "natural_counts": comparison.natural_counts.tolist(),
                          "adversarial_counts": comparison.adversarial_counts.tolist(),
                          "natural_magnitudes": comparison.natural_magnitudes.tolist(),
                          "adversarial_magnitudes": comparison.adversarial_magnitudes.tolist()}, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():  # class_id None: every class
            value = "all" if value is None else f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key.ljust(width)}  {value}")
        print(comparison.saturation_note())
    return 0


def _check_out(path: str) -> None:
    """``train --out`` (already ``~``-expanded by :func:`_path`): a folder, or a path where one can be created, in
    which a file can really be written (:func:`cas_edu.run_folder.write_problem`; nothing is left behind)."""
    if not str(path).strip():
        raise ValueError("--out must name a run folder, got an empty path (it would train into the current folder).")
    _check_writable_folder(path, f"--out {path}", "choose another --out")


def _check_course_folder(path: str) -> None:
    """``notebooks DIR``: as :func:`_check_out`, before anything is copied."""
    _check_writable_folder(path, f"the folder {path}", "choose another folder")


def _check_writable_folder(path: str, name: str, fix: str) -> None:
    """``path`` is a folder, or a path where one can be created, in which a file can really be written
    (:func:`cas_edu.run_folder.write_problem`); else ``ValueError`` with one line that starts with ``name`` (how the
    command calls the folder) and ends with ``fix``."""
    folder = Path(path)
    try:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{name} is a file, not a folder; {fix}.")
        existing = folder.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{name} cannot be created: {existing} is a file, not a folder.")
    except OSError as err:  # e.g. a parent folder that may not be listed
        raise ValueError(f"{name} cannot be used: {err.strerror or err}.") from None
    problem = run_folder.write_problem(existing)
    if problem is not None:
        raise ValueError(f"{name} cannot be written: creating a file in {existing} failed ({problem}); {fix}.")


def _check_dataset(name: str) -> str:
    """A dataset argument's canonical name; an ``npz:PATH`` must exist (the others are found by ``data.load``)."""
    key = data.dataset_key(name)
    if key.startswith("npz:") and not Path(key[4:]).expanduser().exists():
        raise FileNotFoundError(f"npz dataset not found: {key[4:]} is neither a folder of .npz files nor an .npz file.")
    return key


def _layer_names(model) -> list[str]:
    """The layer names ``activations --layer`` accepts for ``model`` (its blocks, default layer and aliases)."""
    names = [*getattr(model, "blocks", {}), getattr(model, "default_activation_layer", "")]
    return [n for n in dict.fromkeys([*names, *getattr(model, "layer_aliases", {})]) if n]


def _check_args(args: argparse.Namespace) -> None:
    """Every flag checked before any work starts (no data loaded, nothing trained, no folder created): raises
    ``ValueError`` / ``FileNotFoundError`` (exit code 2). For evaluate and activations it reads the checkpoint and
    rebuilds its model (kept in ``args.loaded`` for :func:`_load_run`), so flags that depend on the model
    (``--class-id``, ``--layer``, ``--objective``, ``--split``) are checked too."""
    from .checkpoint import model_from_payload
    from .runtime import resolve_device

    if args.command == "notebooks":
        _check_course_folder(args.dir)
        return
    progress_style()  # a bad CAS_EDU_PROGRESS, also with --quiet or --json: refused before anything is written
    resolve_device(args.device)
    if args.data_root is not None and Path(args.data_root).expanduser().exists() \
            and not Path(args.data_root).expanduser().is_dir():
        raise ValueError(f"--data-root {args.data_root} is a file, not a folder; pass the folder that holds the data.")
    if args.command == "train":
        _check_out(args.out)
        config = config_from_args(args)  # every hyper-parameter's own check
        if not args.resume:  # a resumed run's batch size and data are the saved ones, checked by train()
            from .training import check_processes

            check_processes(config)  # under torchrun: a batch of at least 2 per process
            _check_dataset(args.dataset)
        return
    dataset = _check_dataset(args.dataset) if args.dataset is not None else None
    source = checkpoint_file(args.run)
    payload = read_checkpoint(source)
    config = _recorded_config(payload, source)
    model = model_from_payload(payload, source=source)
    same_data = dataset is None or dataset == config.dataset
    if args.command == "evaluate":
        if args.objective == "ce+cas" and not model.has_cas:
            raise ValueError(f"--objective ce+cas needs a model with CAS modules and {source} has none; use "
                             "--objective ce.")
        if args.split == "val" and same_data and config.val_fraction == 0:
            raise ValueError(f"{source} was trained on the whole training set (val_fraction 0), so it has no "
                             "validation split; use --split test.")
    if args.command == "activations":
        if args.class_id is not None and args.class_id >= model.num_classes:
            raise ValueError(f"--class-id {args.class_id} does not exist: the model has {model.num_classes} classes "
                             f"(0 to {model.num_classes - 1}).")
        names = _layer_names(model)
        if args.layer is not None and args.layer not in names:
            raise ValueError(f"--layer {args.layer!r} is not a layer of {type(model).__name__}; choose one of "
                             f"{', '.join(names)}.")
    args.loaded = (config, model, payload["model_spec"])


def _command_notebooks(args: argparse.Namespace) -> int:
    from .course import copy_notebooks

    try:
        written = copy_notebooks(args.dir, overwrite=args.overwrite)
    except FileExistsError as err:  # bad input (exit 2), not a failing machine
        raise ValueError(str(err)) from None
    except OSError as err:  # the machine, after the checks passed (disk full, ...): exit 1, naming the folder
        where = f" ({err.filename})" if err.filename else ""
        raise OSError(f"could not copy the course into {args.dir}: {err.strerror or err}{where}.") from None
    print(f"copied {len(written)} course files into {args.dir}; open them with: jupyter lab {args.dir}")
    return 0


COMMANDS = {"train": _command_train, "evaluate": _command_evaluate, "activations": _command_activations,
            "notebooks": _command_notebooks}


def _fail(err: BaseException | str, code: int) -> int:
    """Print ``err`` as one ``error: ...`` line on stderr and return ``code``."""
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {text}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; never prints a traceback for bad input or a failing machine.

    Every flag is checked before any work starts (:func:`_check_args`). Exit codes: 0 success; 1 the machine or
    the run failed, not the input (``OSError`` such as no network for ``--download``, permission denied or disk
    full outside the run's own files; out of memory; a non-finite loss); 2 bad input (arguments, paths, data
    files, checkpoints: ``ValueError``, ``FileNotFoundError``); ``EXIT_WRITE_FAILED`` (74) a checkpoint or report
    could not be written; 130 interrupted. Each failure prints one line on stderr (``error: ...`` for 1, 2, 74).

    Raises: nothing for failures it can name (each becomes an exit code); ``SystemExit`` (code 0) after
    ``--help``; anything else (a bug) propagates with its traceback.
    """
    args = None
    try:
        args = build_parser(_invoked_as() if argv is None else DEFAULT_PROG).parse_args(argv)
        _check_args(args)
        return COMMANDS[args.command](args)
    except CheckpointWriteError as err:
        return _fail(err, EXIT_WRITE_FAILED)
    except (UsageError, ValueError, FileNotFoundError) as err:
        return _fail(err, 2)
    except NonFiniteLossError as err:
        return _fail(err, 1)
    except torch.OutOfMemoryError:
        return _fail(_out_of_memory(args), 1)
    except OSError as err:  # the environment: no network, permission denied, disk full, ...
        return _fail(err, 1)
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130


def _saved_epoch(args: argparse.Namespace | None) -> bool:
    """Whether the training ``args`` describe has a ``checkpoint.pt`` to continue from."""
    return getattr(args, "command", None) == "train" and (Path(args.out) / "checkpoint.pt").is_file()


def _out_of_memory(args: argparse.Namespace | None) -> str:
    """The one line for running out of device memory: the flag that lowers memory use for this command, and
    ``--resume`` only for a training with a saved epoch."""
    command = getattr(args, "command", None)
    if command == "activations":
        return "out of memory on the device; rerun with a smaller --n (fewer examples at once)."
    if _saved_epoch(args):
        return ("out of memory on the device; rerun with a smaller --batch-size (add --resume to continue from "
                "the last saved epoch).")
    return "out of memory on the device; rerun with a smaller --batch-size."


def _interrupted(args: argparse.Namespace | None) -> str:
    """The one line for an interruption: only a training that saved an epoch can be continued (``--resume``)."""
    command = getattr(args, "command", None)
    if command == "train":
        if _saved_epoch(args):
            return (f"interrupted; the last finished epoch is saved in {Path(args.out) / 'checkpoint.pt'}: continue "
                    "with --resume")
        return "interrupted before the first epoch was saved; start the training again"
    if command == "evaluate":
        return "interrupted; no report was written"
    return "interrupted"


if __name__ == "__main__":
    sys.exit(main())
