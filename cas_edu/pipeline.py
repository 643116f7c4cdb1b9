"""The full comparison of notebook 04: AT, TRADES and MART, each with and without CAS, trained and evaluated alike.

A *profile* fixes everything that decides the cost: ``cpu`` (digits, small CNN, a few short epochs, a
reduced evaluation budget; the default, finishes on a laptop) and ``gpu`` (CIFAR-10, ResNet-18, the
official CAS settings, the full evaluation). :func:`run_suite` trains the six runs into
``runs_dir/<profile>/<method>[+cas]`` and reuses any run there that finished with exactly the same
configuration -- including runs made by ``python -m cas_edu train`` (see :func:`cli_command`).
:func:`evaluate_suite` evaluates every run's ``best.pt`` (chosen on the validation split) on the same test
examples -- the white-box attacks on the profile's test images, the costly ones (Square, AutoAttack, the
straight-through attacks) on a seeded, class-balanced subset; :func:`results_table` prints the comparison
with the example count of every column and the *per-example worst case* (correct naturally and under every
attack) as the honest robust accuracy; :func:`cas_gain_intervals` gives the gain of CAS with a paired 95 %
interval.

The profiles live in :mod:`cas_edu.presets`, the attacks and the report in :mod:`cas_edu.evaluation`, the table
layout in :mod:`cas_edu.tables`, the exercise checker in :mod:`cas_edu.exercises`. The suite calls only public
functions: :mod:`cas_edu.training` (``train_or_load``, ``finished_run``), :mod:`cas_edu.checkpoint`,
:mod:`cas_edu.run_folder`, and :mod:`cas_edu.cli`'s parser for the commands it prints.
"""
from __future__ import annotations

import shlex
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from . import cli, data, evaluation, run_folder, training
from .checkpoint import CheckpointWriteError, checkpoint_file, load_checkpoint, read_checkpoint
from .evaluation import EvaluationReport, PairedDifference
from .presets import DEFAULT_EPS, METHODS, Profile, TrainConfig, get_profile, make_config
from .presets import PROFILES, SUITE_METHODS  # deprecated alias (moved to cas_edu.presets), kept for one release
from .runtime import progress_bar, resolve_device, show_progress
from .tables import markdown_table

METHOD_LABELS = {"standard": "Standard", "pgd_at": "AT", "trades": "TRADES", "mart": "MART"}


def run_name(method: str, cas: bool) -> str:
    """Folder and key of one run: ``pgd_at``, ``pgd_at+cas``, ``trades`` ...

    Raises: ``ValueError`` for an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    return f"{method}+cas" if cas else method


def display_name(name: str) -> str:
    """``pgd_at+cas`` → ``AT+CAS``: the label figures and tables use (an unknown method is kept as written).

    Raises: nothing of its own.
    """
    method, _, cas = name.partition("+")
    return METHOD_LABELS.get(method, method) + ("+CAS" if cas else "")


def suite_configs(profile: str | Profile = "cpu", methods: Sequence[str] | None = None, seed: int = 0,
                  device: str = "auto", epochs: int | None = None, eps: float | None = None,
                  data_root: str | None = None) -> dict[str, TrainConfig]:
    """One training config per run of the suite, keyed by :func:`run_name`, each method without then with CAS.

    ``epochs`` and ``eps`` override the profile's and preset's values when given.

    Units: ε in pixel units of [0, 1] (L∞; None: the dataset's default).
    Raises: ``ValueError`` for an unknown profile or method, no methods, or values that cannot train.
    """
    p = get_profile(profile)
    methods = tuple(methods) if methods is not None else p.methods
    if not methods:
        raise ValueError("methods is empty; name at least one of " + ", ".join(METHODS) + ".")
    configs = {}
    for method in methods:
        for cas in (False, True):
            configs[run_name(method, cas)] = make_config(
                p.dataset, p.model, method, cas, p.preset, epochs=epochs if epochs is not None else p.epochs,
                attack_steps=p.attack_steps, eps=eps, seed=seed, device=device, data_root=data_root)
    return configs


def cli_command(config: TrainConfig, out_dir: str | Path) -> str:
    """The ``python -m cas_edu train`` command whose finished run :func:`run_suite` reuses for ``config``.

    Written from the CLI's own parser (:func:`cas_edu.cli.build_parser`, :func:`cas_edu.cli.train_options`):
    dataset, model, method, ``--cas`` and preset always, then each config flag (:data:`cas_edu.cli.CONFIG_OPTIONS`,
    in that order) whose value the command built so far would not already give, values quoted for the shell.

    Raises: ``ValueError`` when ``config`` sets a field the command line cannot (e.g. ``lr_drops`` or
    ``momentum`` differing from its preset), so that no printed command trains another config.
    """
    parser = cli.build_parser()
    option = cli.train_options(parser)

    def words(name: str, value) -> list[str]:
        if isinstance(value, bool):
            return [option[name]] if value else []
        return [option[name], repr(value) if isinstance(value, float) else str(value)]

    argv = ["train"]
    for name in ("dataset", "model", "method", "cas", "preset"):
        argv += words(name, getattr(config, name))
    out = words("out", str(out_dir))
    for name in cli.CONFIG_OPTIONS:
        given = cli.config_from_args(parser.parse_args(argv + out))
        if getattr(given, name) != getattr(config, name):
            argv += words(name, getattr(config, name))
    rebuilt = cli.config_from_args(parser.parse_args(argv + out))
    differ = [k for k, v in config.to_dict().items() if getattr(rebuilt, k) != v]
    if differ:
        raise ValueError(f"the command line cannot set {', '.join(differ)} as this config does; train it with "
                         "cas_edu.training.train instead.")
    return " ".join([parser.prog] + [shlex.quote(w) for w in argv + out])


def is_finished(config: TrainConfig, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a run trained to the end with ``config`` (what ``train_or_load`` reuses; where it
    ran, ``training.RUNTIME_FIELDS``, does not matter).

    Raises: nothing of its own (an unreadable checkpoint counts as not finished).
    """
    try:
        return training.finished_run(config, out_dir) is not None
    except ValueError:  # an unreadable checkpoint: not a finished run
        return False


@dataclass
class Suite:
    """The trained runs of one profile: models, histories, whether each run was reused, and where it lives.

    Raises: nothing of its own (a dataclass).
    """

    profile: Profile
    configs: dict[str, TrainConfig]
    models: dict[str, nn.Module] = field(default_factory=dict)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per run: reused or trained, time, final validation accuracies."""
        lines = []
        for name, history in self.histories.items():
            last = history[-1]
            robust = last.get("val_robust_accuracy")
            how = "reused" if self.reused[name] else f"trained in {self.seconds[name]:.0f} s"
            lines.append(f"{display_name(name):<11} {how:<18} epochs {last['epoch']:>3}  val natural "
                         f"{last['val_natural_accuracy']:.1%}" + (f"  val PGD {robust:.1%}" if robust is not None else ""))
        return "\n".join(lines)


def run_suite(profile: str | Profile = "cpu", runs_dir: str | Path = "runs", dataset: data.Dataset | None = None,
              methods: Sequence[str] | None = None, seed: int = 0, device: str = "auto", epochs: int | None = None,
              data_root: str | None = None, progress: bool | None = None, overwrite: bool = False) -> Suite:
    """Train (or reuse, or resume) every run of the profile into ``runs_dir/<profile>/<run>``
    (:func:`cas_edu.training.train_or_load`); returns a :class:`Suite`. A folder holding a run trained with
    another config raises :class:`cas_edu.run_folder.RunExistsError` unless ``overwrite``, which replaces it.

    Raises: :class:`cas_edu.run_folder.RunExistsError` as above; ``ValueError`` for an unknown profile or method
    or values that cannot train; what :func:`cas_edu.data.load` and :func:`cas_edu.training.train_or_load` raise
    (a missing dataset, a locked run folder, a failed write).
    """
    p = get_profile(profile)
    configs = suite_configs(p, methods, seed=seed, device=device, epochs=epochs, data_root=data_root)
    if dataset is None:
        dataset = data.load(p.dataset, root=data_root)
    suite = Suite(profile=p, configs=configs)
    return _train_runs(suite, dataset, lambda name: Path(runs_dir) / p.name / name, progress, overwrite)


def _train_runs(suite: Suite, dataset: data.Dataset, folder, progress: bool | None, overwrite: bool) -> Suite:
    for name, config in suite.configs.items():
        out_dir = folder(name)
        suite.run_dirs[name] = out_dir
        suite.reused[name] = is_finished(config, out_dir)
        started = time.perf_counter()
        model, history = training.train_or_load(config, out_dir, progress=progress, dataset=dataset,
                                                overwrite=overwrite)
        suite.seconds[name] = time.perf_counter() - started
        suite.models[name], suite.histories[name] = model.eval(), history
    return suite


#: The model notebooks 02-03 probe per profile: the smallest model whose standard version shows both of the
#: paper's observations on digits (benchmarks/observations.py), and the paper's own ResNet-18 on CIFAR-10.
OBSERVATION_MODELS = {"cpu": "resnet18_w32", "gpu": "resnet18"}
#: Profiles whose notebooks 02-03 run another profile's observation runs: on Colab, the cpu ones (digits).
OBSERVATION_PROFILE_OF = {"colab": "cpu"}
#: The runs notebooks 02-03 train: standard, PGD-AT and PGD-AT+CAS, schedule-matched.
OBSERVATION_RUNS = ("standard", "pgd_at", "pgd_at+cas")
#: The cpu profile's schedule for them: the fast preset's 12 epochs, a 3-step training attack (step 2.5·ε/3).
OBSERVATION_CPU_EPOCHS = 12
OBSERVATION_CPU_ATTACK_STEPS = 3


def observation_profile(profile: str | Profile) -> Profile:
    """The profile whose observation runs notebooks 02-03 use under ``profile``: itself, or for ``colab`` the
    ``cpu`` profile (:data:`OBSERVATION_PROFILE_OF`: a classroom-sized run; the paper's setting needs the gpu
    profile's 200-epoch runs).

    Raises: ``ValueError`` for an unknown profile.
    """
    p = get_profile(profile)
    return get_profile(OBSERVATION_PROFILE_OF.get(p.name, p.name))


def observation_configs(profile: str | Profile = "cpu", seed: int = 0, device: str = "auto",
                        data_root: str | None = None) -> dict[str, TrainConfig]:
    """The standard, PGD-AT and PGD-AT+CAS configs whose models notebooks 02-03 probe, keyed by :func:`run_name`
    (``standard``, ``pgd_at``, ``pgd_at+cas``); the three share epochs, training attack and seed.

    ``cpu`` (and ``colab``, see :func:`observation_profile`): digits, :data:`OBSERVATION_MODELS` ``["cpu"]``
    (ResNet-18 at half width, 256 channels in layer4), the fast preset, 12 epochs, PGD-3 training attacks with step 2.5·ε/3. ``gpu``: CIFAR-10, ResNet-18 and the official
    schedules; its PGD-AT and PGD-AT+CAS configs are notebook 04's (:func:`suite_configs`), so its runs are reused.

    Units: ε in pixel units of [0, 1] (L∞): the dataset's default (digits 0.1, CIFAR-10 8/255).
    Raises: ``ValueError`` for an unknown profile or values that cannot train.
    Source: arXiv 2103.08307 §3 (the observations are made on ResNet-18's layer4 on CIFAR-10).
    """
    p = observation_profile(profile)
    model = OBSERVATION_MODELS[p.name]
    if p.name == "gpu":
        at = suite_configs(p, ("pgd_at",), seed=seed, device=device, data_root=data_root)
        standard = make_config(p.dataset, model, "standard", False, p.preset, seed=seed, device=device,
                               data_root=data_root)
        return {"standard": standard, **at}
    eps, steps = DEFAULT_EPS[p.dataset], OBSERVATION_CPU_ATTACK_STEPS
    attack = dict(eps=eps, attack_steps=steps, step_size=2.5 * eps / steps)
    return {run_name(method, cas): make_config(p.dataset, model, method, cas, p.preset, epochs=OBSERVATION_CPU_EPOCHS,
                                               seed=seed, device=device, data_root=data_root,
                                               **(attack if method != "standard" else {}))
            for method, cas in (("standard", False), ("pgd_at", False), ("pgd_at", True))}


def observation_run_dir(runs_dir: str | Path, profile: str | Profile, name: str) -> Path:
    """Where a run of :func:`observation_configs` lives: ``runs_dir/<profile>/<run>`` when the profile's suite
    trains the same model (gpu: shared with notebook 04), else ``runs_dir/<profile>/<model>/<run>``.

    Raises: ``ValueError`` for an unknown profile.
    """
    p = observation_profile(profile)
    model = OBSERVATION_MODELS[p.name]
    return Path(runs_dir) / p.name / name if model == p.model else Path(runs_dir) / p.name / model / name


def observation_suite(profile: str | Profile = "cpu", runs_dir: str | Path = "runs",
                      dataset: data.Dataset | None = None, seed: int = 0, device: str = "auto",
                      data_root: str | None = None, progress: bool | None = None) -> Suite:
    """Train (or reuse) the runs of :func:`observation_configs` into :func:`observation_run_dir` folders.

    Raises: as :func:`run_suite`.
    """
    p = observation_profile(profile)
    suite = Suite(profile=p, configs=observation_configs(p, seed=seed, device=device, data_root=data_root))
    if dataset is None:
        dataset = data.load(p.dataset, root=data_root)
    return _train_runs(suite, dataset, lambda name: observation_run_dir(runs_dir, p, name), progress, False)


def eval_examples(dataset: data.Dataset, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test examples (all of them when ``n`` is None or the split is smaller).

    Shape: returns x (n, C, H, W) float in [0, 1] and y (n,) int64.
    Raises: ``ValueError`` when ``n < 1``.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1 (or None for the whole test split), got {n}.")
    return dataset.test.x[:n], dataset.test.y[:n]


def balanced_subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, class-balanced subset of ``n`` examples of ``(x, y)`` (see :func:`evaluation.balanced_indices`):
    the examples ``evaluate(..., subset_n=n, seed=seed)`` runs its costly attacks on.

    Shape: x (N, C, H, W); y (N,) int64; returns x (n, C, H, W) and y (n,) (all N when n >= N).
    Raises: ``ValueError`` as :func:`cas_edu.evaluation.balanced_indices` (n < 1, a class too small).
    """
    index = evaluation.balanced_indices(y, n, seed)
    return x[index], y[index]


def _run_eps(source, config: TrainConfig | None) -> float | None:
    if config is not None:
        return config.eps
    if isinstance(source, (str, Path)):
        return read_checkpoint(source).get("config", {}).get("eps")
    return None


def evaluate_suite(runs: "Suite | Mapping[str, nn.Module | str | Path]", dataset: data.Dataset | None = None,
                   eps: float | None = None, *, profile: str | Profile | None = None,
                   x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                   attacks: Sequence[str] | None = None, n: int | None = None, subset_n: int | None = None,
                   square_queries: int | None = None, seed: int = 0, batch_size: int = 256, device: str = "auto",
                   progress: bool | None = None, save: bool = True) -> dict[str, EvaluationReport]:
    """:func:`cas_edu.evaluation.evaluate` for every run on the same examples (CAS models: both objectives).

    ``runs`` is a :class:`Suite` (each run's ``best.pt``, selected on the validation split, is loaded with
    :func:`cas_edu.checkpoint.load_checkpoint` -- not the final-epoch model ``run_suite`` returns), or a
    mapping name → run folder / ``.pt`` file (loaded the same way) or → model (evaluated as given).
    The examples are ``x, y`` when given, else the first ``n`` test images of ``dataset`` (default: the
    profile's ``n_eval``; None = all); the costly attacks (Square, AutoAttack, straight-through) run on a
    seeded, class-balanced subset of ``subset_n`` of them (default: the profile's). ``attacks`` and
    ``square_queries`` default to the profile's; ``profile`` defaults to the suite's. ``eps`` defaults to the
    runs' training ε (they must agree). With ``save``, each run folder keeps its report beside the earlier ones
    (:func:`cas_edu.run_folder.save_report`: ``RUN/eval/<UTC time>-<attacks>-n<N>.json``, named by
    ``RUN/eval/latest.json``), after checking that every folder can take it before any attack runs.
    A report whose write fails anyway (a full disk) is still returned, with a ``RuntimeWarning`` naming it.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels.
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` when the examples or ε cannot be determined, a run folder cannot hold reports, or
    :func:`cas_edu.evaluation.evaluate` refuses its arguments; what loading a checkpoint raises.
    """
    if isinstance(dataset, torch.Tensor):
        raise ValueError("evaluate_suite takes (runs, dataset, eps); pass your own images as x=..., y=... keywords.")
    if profile is None and isinstance(runs, Suite):
        profile = runs.profile
    p = get_profile(profile) if profile is not None else None
    attacks = tuple(attacks) if attacks is not None else (p.attacks if p else evaluation.DEFAULT_ATTACKS)
    subset_n = subset_n if subset_n is not None else (p.subset_n if p else None)
    square_queries = square_queries if square_queries is not None else (p.square_queries if p else 5000)
    if x is None or y is None:
        if dataset is None:
            raise ValueError("pass the dataset (its test split is evaluated) or x=..., y=....")
        x, y = eval_examples(dataset, n if n is not None else (p.n_eval if p else None))
    sources: dict = dict(runs.run_dirs) if isinstance(runs, Suite) else dict(runs)
    configs = runs.configs if isinstance(runs, Suite) else {}
    if not sources:
        raise ValueError("runs is empty; pass a Suite or {name: run folder or model}.")
    if eps is None:
        found = {name: _run_eps(src, configs.get(name)) for name, src in sources.items()}
        values = {e for e in found.values() if e is not None}
        if len(values) != 1:
            raise ValueError(f"cannot tell one ε from the runs ({found}); pass eps=....")
        eps = values.pop()
    if save:  # before any attack: a folder that cannot hold reports fails now, not after the evaluation
        for source in sources.values():
            if isinstance(source, (str, Path)) and Path(source).is_dir():
                run_folder.check_writable_folder(Path(source) / run_folder.REPORTS_DIR)
    show = show_progress(progress)
    reports = {}
    for name, source in progress_bar(list(sources.items()), desc="evaluate", disable=not show):
        if isinstance(source, nn.Module):
            model, where = source, None
        else:
            model, where = load_checkpoint(source, device=resolve_device(device)), Path(source)
        report = evaluation.evaluate(model, x, y, eps, attacks=attacks, objective="both", seed=seed,
                                     batch_size=batch_size, square_queries=square_queries, subset_n=subset_n)
        if where is not None:
            report.checkpoint = str(checkpoint_file(where))
            if save and where.is_dir():
                try:
                    run_folder.save_report(where, report)
                except CheckpointWriteError as err:  # keep the computed report: return it and say it was not saved
                    warnings.warn(f"{name}: report not saved: {err}", RuntimeWarning, stacklevel=2)
        reports[name] = report
    return reports


#: Table columns: (attack, objective, header); headers from :func:`cas_edu.evaluation.column_label`.
COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (a, o, evaluation.column_label(a, o)) for a, o in (
        ("natural", "ce"), ("fgsm", "ce"), ("pgd20", "ce"), ("pgd20", "ce+cas"), ("cw", "ce"), ("cw", "ce+cas"),
        ("square", "ce"), ("autoattack", "ce"), ("pgd-st", "ce+cas"), ("autoattack-st", "ce")))


def worst_case(report: EvaluationReport) -> float | None:
    """The per-example worst case (:attr:`EvaluationReport.worst_case`): the fraction of examples classified
    correctly naturally and under every attack and objective -- the honest robust accuracy of the report.

    Raises: nothing of its own.
    """
    return report.worst_case


def _present(reports: Mapping[str, EvaluationReport]) -> list[tuple[str, str, str]]:
    """The columns some report fills (the straight-through PGD runs with ``ce+cas`` on CAS models, ``ce`` without)."""
    def filled(attack: str, objective: str, report: EvaluationReport) -> bool:
        by = report.accuracy.get(attack, {})
        return objective in by or (attack == "pgd-st" and "ce" in by)  # pgd-st: ce+cas with CAS, ce without

    return [(a, o, h) for a, o, h in COLUMNS if any(filled(a, o, r) for r in reports.values())]


def results_rows(reports: Mapping[str, EvaluationReport], intervals: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (accuracies in %) for the comparison table; a column appears when any report has it.

    A model without CAS has no adaptive attack, so its main-head value fills the adaptive columns
    (:func:`cas_edu.evaluation.attack_accuracy`). With ``intervals`` each accuracy is followed by its 95 % Wilson
    interval in brackets, ``60.0 [50.2, 69.1]`` (:meth:`cas_edu.evaluation.EvaluationReport.interval`, over the
    column's examples), where the report can count it; without, cells are plain numbers that ``float`` reads.

    Raises: nothing of its own.
    """
    present = _present(reports)
    headers = ["model"] + [h for _, _, h in present] + ["worst case"]
    rows = []
    for name, report in reports.items():
        cells = [display_name(name)]
        for attack, objective, _ in present:
            value = evaluation.attack_accuracy(report, attack, objective)
            interval = evaluation.attack_interval(report, attack, objective) if intervals and value is not None else None
            cells.append(_percent_cell(value, interval))
        worst = worst_case(report)
        cells.append(_percent_cell(worst, report.worst_case_interval if intervals else None))
        rows.append(cells)
    return headers, rows


def _percent_cell(value: float | None, interval: evaluation.AccuracyInterval | None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if interval is None else f"{100 * value:.1f} {interval.bounds(1)}"


def results_counts(reports: Mapping[str, EvaluationReport]) -> list[str]:
    """Per column of :func:`results_rows` (the model column first, as ``n``), the number of examples behind it;
    ``a/b`` when the reports differ.

    Raises: nothing of its own.
    """
    cells = ["n"]
    for attack, _, _ in _present(reports):
        counts = sorted({r.count(attack) for r in reports.values() if attack in r.accuracy})
        cells.append("/".join(str(c) for c in counts))
    counts = sorted({r.worst_case_n for r in reports.values()})
    cells.append("/".join(str(c) for c in counts))
    return cells


def results_table(reports: Mapping[str, EvaluationReport]) -> str:
    """The comparison as a markdown table (accuracy in %, higher is better, each with its 95 % Wilson interval in
    brackets: :func:`results_rows` with ``intervals``) whose first row gives each column's number of examples
    ``n``; masking warnings listed below it (:func:`cas_edu.tables.markdown_table`).

    Raises: nothing of its own.
    """
    headers, rows = results_rows(reports, intervals=True)
    lines = [markdown_table(headers, [results_counts(reports)] + rows)]
    lines.append("worst case: correct naturally and under every attack and objective, per example "
                 "(on the examples every attack ran on); [brackets]: 95 % Wilson score interval over the column's n "
                 "examples (cas_edu.evaluation.wilson_interval)")
    for name, report in reports.items():
        lines += [f"- {display_name(name)}: {w}" for w in report.warnings]
    return "\n".join(lines)


def cas_gains(reports: Mapping[str, EvaluationReport], column: str = "worst case") -> dict[str, float]:
    """Per method, accuracy with CAS minus without (percentage points) in one table column, e.g. ``worst case``.

    Raises: ``ValueError`` for a column the table does not have.
    """
    headers, rows = results_rows(reports)
    if column not in headers:
        raise ValueError(f"Unknown column {column!r}; choose one of {', '.join(headers[1:])}.")
    index = headers.index(column)
    by_name = {name: row[index] for name, row in zip(reports, rows)}
    gains = {}
    for name, value in by_name.items():
        if name.endswith("+cas") or f"{name}+cas" not in by_name:
            continue
        with_cas = by_name[f"{name}+cas"]
        if value != "–" and with_cas != "–":
            gains[display_name(name)] = round(float(with_cas) - float(value), 1)
    return gains


def cas_gain_intervals(reports: Mapping[str, EvaluationReport], attack: str = "worst_case",
                       confidence: float = 0.95) -> dict[str, PairedDifference]:
    """Per method, accuracy with CAS minus without under ``attack`` (default: the per-example worst case), with a
    paired ``confidence`` interval (:func:`cas_edu.evaluation.paired_difference`, Bonett & Price 2012) --
    both models saw the same test images. Methods whose reports lack per-example results are left out.

    Raises: ``ValueError`` as :func:`cas_edu.evaluation.paired_difference` (reports on different examples).
    """
    out = {}
    for name, report in reports.items():
        partner = reports.get(f"{name}+cas")
        if name.endswith("+cas") or partner is None or not report.correct or not partner.correct:
            continue
        out[display_name(name)] = evaluation.paired_difference(partner, report, attack=attack, confidence=confidence)
    return out


def __getattr__(name: str):
    if name == "check_cas_gains":  # deprecated alias (moved to cas_edu.exercises), kept for one release
        from . import exercises

        return exercises.check_cas_gains
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PROFILES", "Profile", "Suite", "SUITE_METHODS", "balanced_subset", "cas_gain_intervals", "cas_gains",
           "check_cas_gains", "cli_command", "display_name", "eval_examples", "evaluate_suite", "get_profile",
           "is_finished", "OBSERVATION_MODELS", "OBSERVATION_PROFILE_OF", "OBSERVATION_RUNS", "observation_configs",
           "observation_profile", "observation_run_dir", "observation_suite", "results_counts", "results_rows",
           "results_table", "run_name", "run_suite", "suite_configs", "worst_case"]
