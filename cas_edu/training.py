"""Standard, PGD-AT, TRADES and MART training, each with or without CAS, resumable from a checkpoint.

How a training runs (:func:`train`): the refusals first (arguments, config, run folder, data), then, with the
run folder locked, four steps a reader can follow one by one —

1. :func:`set_up`    the seeded model, optimizer, learning-rate schedule and data generator, continued from
                     ``checkpoint.pt`` when resuming (a :class:`TrainingRun`);
2. :func:`run_epoch` one shuffled pass over the training split: craft x′ (:func:`training_attack`), take the
                     method's loss (:func:`method_loss`, the objectives of :mod:`cas_edu.losses`), step;
3. :func:`validate`  natural and PGD accuracy on the validation split;
4. :func:`save`      ``checkpoint.pt``, then ``best.pt`` when the epoch is the best so far, then ``history.json``.

Resume rules (:func:`resume_differences`, :func:`resume_config`) and the reuse of finished runs
(:func:`finished_run`, :func:`train_or_load`) close the module.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks, data, distributed, evaluation, losses, run_folder
from .checkpoint import (CheckpointWriteError, load_weights, model_spec, read_checkpoint, recorded_config,
                         save_checkpoint, write_json)
from .models import CASClassifier, ModelOutput, build, has_cas
from .presets import TrainConfig, validate_config
from .runtime import (autocast, compile_blocks, memory_format, progress_bar, progress_style, resolve_device,
                      restore_rng, rng_state, seed_everything, show_progress)

# deprecated aliases (moved to cas_edu.losses), kept for one release
kl_per_example = losses.kl_per_example
trades_loss = losses.trades_loss
boosted_cross_entropy = losses.boosted_cross_entropy
mart_loss = losses.mart_loss
# deprecated alias (moved to cas_edu.runtime as show_progress), kept for one release
_show_progress = show_progress
# compile_blocks: deprecated alias (moved to cas_edu.runtime), kept for one release; imported above


def learning_rate_factor(config: TrainConfig, progress: float) -> float:
    """Multiplier of ``config.lr`` after ``progress`` epochs (fractions count: the schedule steps every batch).

    With ``config.lr_drops`` (the paper preset) the factor of the last milestone reached, epochs counted from 1
    as the official code does; otherwise (fast) a one-cycle schedule rising linearly to 1 at 40 % of the
    epochs, then falling linearly to 0 at the end.

    Raises: nothing of its own.
    Source: the step schedules of ``Standard_Adv_Training/train.py``, ``Trades/trades_reg.py`` and
    ``MART/mart_reg.py`` (github.com/bymavis/CAS_ICLR2021); the one-cycle schedule is this package's (no paper).
    """
    if config.lr_drops:
        epoch = math.floor(progress) + 1  # the official code counts epochs from 1
        factor = 1.0
        for milestone, drop in sorted(config.lr_drops.items()):
            if epoch >= milestone:
                factor = drop
        return factor
    peak = 0.4 * config.epochs
    return progress / peak if progress < peak else max(0.0, (config.epochs - progress) / (config.epochs - peak))


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of every image, for a whole batch on its own
    device; the shifts and flips are drawn on the CPU from ``generator``.

    Shape: x (N, C, H, W) float; returns (N, C, H, W) in x's dtype and device.
    Raises: nothing of its own (PyTorch's error for an input that is not 4-D).
    Source: the ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` augmentation of the official CIFAR-10
    scripts (github.com/bymavis/CAS_ICLR2021), done on the tensor batch.
    """
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding,) * 4)
    rows = (shifts[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def epoch_batches(n: int, batch_size: int, world_size: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of each global batch of one epoch over ``n`` shuffled training examples.

    Batches of ``batch_size``, except that a short last batch which would leave some process (of
    ``world_size``, each taking every ``world_size``-th example) fewer than 2 examples is merged into the batch
    before it. A train-mode BatchNorm cannot normalise a single example whose feature map is 1×1 (ResNet-18's
    layer4 on 8×8 digits), so such a batch would crash at the end of an epoch; merging keeps every example in
    every epoch (the merged batch has at most ``batch_size + 2·world_size − 1`` examples).

    Raises: ValueError when ``n`` is smaller than ``2 · world_size``.
    Source: this package (no paper); the official scripts use a DataLoader without ``drop_last``.
    """
    if n < 2 * world_size:
        raise ValueError(f"the training split has {n} example(s); training needs at least 2 per process "
                         f"({2 * world_size} for {world_size} process(es)).")
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    last = bounds[-1][1] - bounds[-1][0]
    if len(bounds) > 1 and last < batch_size and last < 2 * world_size:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def training_attack(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The method's training adversarial examples x′ (model in eval mode, adaptive objective with CAS).

    PGD-AT — PGD on CE(main) + β_c · mean CE(aux) from a uniform start; MART — the same objective from
    x + 0.001·N(0, 1); TRADES — the KL attack; standard training returns ``x`` unchanged. ``config.eps`` and
    ``config.step_size`` are in pixel units of [0, 1] (L∞).

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) int64; returns (N, C, H, W) like x.
    Raises: nothing of its own (the attacks' ValueError for bad inputs).
    Source: ``Standard_Adv_Training/train.py``, ``MART/mart_reg.py``, ``Trades/trades_reg.py``
    (github.com/bymavis/CAS_ICLR2021); Madry et al. 2018 (PGD), Zhang et al. 2019, Wang et al. 2020.
    """
    objective = "ce+cas" if model.has_cas else "ce"
    if config.method in ("pgd_at", "mart"):
        return attacks.pgd(model, x, y, config.eps, config.step_size, config.attack_steps,
                           random_start="uniform" if config.method == "pgd_at" else "normal",
                           objective=objective, beta=config.cas_beta)
    if config.method == "trades":
        return attacks.trades_kl_attack(model, x, config.eps, config.step_size, config.attack_steps,
                                        objective=objective, beta=config.cas_beta)
    return x


def method_loss(model: CASClassifier, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                forward: Callable[..., ModelOutput] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's training loss on natural ``x`` and adversarial ``x_adv``, with the model in train mode and
    true-label CAS masks; returns ``(loss, logits)``, the logits those of the input the method trains on
    (x′; x for standard training).

    Standard / PGD-AT: :func:`cas_edu.losses.cross_entropy_loss` on x resp. x′; TRADES:
    :func:`cas_edu.losses.trades_loss`; MART: :func:`cas_edu.losses.mart_loss`. ``forward`` (default
    ``model.forward_details``) is the training forward, e.g. through DDP.

    Shape: x and x_adv (N, C, H, W) float in [0, 1]; y (N,) int64; returns a 0-d loss and (N, K) logits.
    Raises: nothing of its own.
    Source: ``Standard_Adv_Training/train.py``, ``Trades/trades_reg.py``, ``MART/mart_reg.py``
    (github.com/bymavis/CAS_ICLR2021); arXiv 2103.08307 §4 (the CAS training loss).
    """
    forward = forward or model.forward_details
    model.train()
    if config.method in ("standard", "pgd_at"):
        out = forward(x_adv if config.method == "pgd_at" else x, y)
        return losses.cross_entropy_loss(out.logits, y, out.aux_logits, config.cas_beta), out.logits
    natural = forward(x, y)  # the official scripts forward x first, then x′ (BatchNorm statistics in that order)
    adversarial = forward(x_adv, y)
    loss_fn = losses.trades_loss if config.method == "trades" else losses.mart_loss
    loss = loss_fn(adversarial.logits, natural.logits, y, config.method_beta, adversarial.aux_logits,
                   natural.aux_logits, config.cas_beta)
    return loss, adversarial.logits


def training_loss(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  forward: Callable[..., ModelOutput] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Craft the method's adversarial examples (:func:`training_attack`, model in eval mode), then return
    :func:`method_loss`'s ``(loss, logits)`` in train mode; ``forward`` is the training forward, e.g. through DDP.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) int64; returns a 0-d loss and (N, K) logits.
    Raises: nothing of its own.
    Source: as :func:`training_attack` and :func:`method_loss`.
    """
    x_attack = training_attack(model, x, y, config)
    return method_loss(model, x, x_attack, y, config, forward=forward)

def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy (a fraction; 0 for no examples) of ``model`` in eval mode on images ``x`` with labels ``y``;
    every submodule's mode is restored afterwards. The fraction of :func:`cas_edu.evaluation.accuracy`.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K).
    Raises: ValueError for bad images or labels (:mod:`cas_edu.validation`) or a ``batch_size`` that is not a
    whole number ≥ 1.
    Source: this package (no paper).
    """
    correct = evaluation.accuracy(model, x, y, batch_size=batch_size)
    return int(correct.sum()) / max(len(correct), 1)


def robust_accuracy(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    batch_size: int = 512) -> float:
    """Accuracy (a fraction; 0 for no examples) under L∞ PGD-``steps`` at ``eps`` (step 2.5·ε/steps, random
    start), with the adaptive objective for CAS models (masks from auxiliary predictions), also when the CAS model
    is wrapped. The fraction of :func:`cas_edu.evaluation.accuracy` with its ``"pgd"`` attack.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K).
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ValueError for bad images or labels, an ε outside [0, 1], a bad ``steps`` or a ``batch_size`` that
    is not a whole number ≥ 1.
    Source: Madry et al. 2018 (PGD); the adaptive objective is :func:`cas_edu.attacks.pgd`'s ``ce+cas``
    (arXiv 2103.08307 §4: the CAS model's masks come from its auxiliary predictions at test time).
    """
    objective = "ce+cas" if has_cas(model) else "ce"
    correct = evaluation.accuracy(model, x, y, "pgd", eps=eps, objective=objective, steps=steps,
                                  batch_size=batch_size)
    return int(correct.sum()) / max(len(correct), 1)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (raised at the end of the epoch, before it is saved).

    Raises: nothing of its own (it is the error :func:`run_epoch` raises).
    Source: this package (no paper).
    """


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """SGD parameter groups: weight decay ``config.weight_decay`` on every parameter when
    ``config.decay_1d_params`` (as ``model.parameters()`` in all three official training scripts), else on the
    ≥2-D weights only, with 1-D parameters (biases, BatchNorm weights) in a second group without decay.

    Raises: nothing of its own.
    Source: ``Standard_Adv_Training/train.py``, ``Trades/trades_reg.py``, ``MART/mart_reg.py``
    (github.com/bymavis/CAS_ICLR2021) for the decay on every parameter; the 1-D exemption is this package's.
    """
    if config.decay_1d_params:
        return [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    decay = [p for p in model.parameters() if p.dim() != 1]
    no_decay = [p for p in model.parameters() if p.dim() == 1]
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def selection_rule(has_val: bool, config: TrainConfig) -> str:
    """How ``best.pt`` is chosen, in words (recorded in ``history.json``).

    Raises: nothing of its own.
    Source: this package (no paper).
    """
    if not has_val:
        return "last epoch (no validation split, e.g. val_fraction 0)"
    return ("best validation accuracy (natural)" if config.method == "standard"
            else f"best validation robust accuracy (PGD-{config.val_attack_steps})")


#: Config fields that say where a run executes, not what it trains: a resumed run may change them (they are
#: applied and recorded), and a finished run is reused whatever they say.
RUNTIME_FIELDS = ("device", "data_root")


class ResumeMismatchError(ValueError):
    """``resume`` was asked with settings that differ from the saved run's (:func:`resume_differences`); the
    message names each difference, as ``name=value`` or (``flags``) as command-line flags.

    Raises: nothing of its own (it is the error :func:`resume_config` raises).
    Source: this package (no paper).
    """

    def __init__(self, out_dir: str | Path, differences: Mapping[str, tuple[Any, Any]], flags: bool = False):
        self.out_dir, self.differences = Path(out_dir), dict(differences)

        def given(name: str, value: Any) -> str:
            if flags:
                return f"--{name.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value}")
            return f"{name}={value!r}"

        parts = [f"{given(name, new)} (the run has {name.replace('_', '-') if flags else name} {old!r})"
                 for name, (new, old) in self.differences.items()]
        note = (" (only a step schedule, preset paper, continues to more epochs)" if "epochs" in self.differences
                else "")
        how = ("resume without those flags, or train a new run into another --out (--overwrite replaces this one)"
               if flags else "resume with the saved config, or train a new run into another out_dir "
                             "(overwrite=True replaces this one)")
        super().__init__(f"cannot resume {self.out_dir} with different settings: {', '.join(parts)}{note}; {how}.")


def resume_differences(saved: TrainConfig, given: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings in ``given`` (config field → value) that a resumed run cannot take, as
    ``{field: (given, saved)}``. Allowed: :data:`RUNTIME_FIELDS`, and more ``epochs`` on a step schedule
    (``lr_drops``, the paper preset), whose learning rate does not depend on the total; the one-cycle
    schedule (fast) does, so there a different ``epochs`` is refused like every other difference.

    Raises: ValueError for a name that is not a config field, or a value no config can take.
    Source: this package (no paper).
    """
    saved_values = saved.to_dict()
    unknown = [name for name in given if name not in saved_values]
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; choose from {', '.join(saved_values)}.")
    wanted = TrainConfig.from_dict({**saved_values, **given}).to_dict()  # the same normal form as the saved one
    differences = {}
    for name in given:
        if name in RUNTIME_FIELDS or wanted[name] == saved_values[name]:
            continue
        if name == "epochs" and saved.lr_drops and wanted[name] > saved.epochs:
            continue
        differences[name] = (wanted[name], saved_values[name])
    return differences


def resume_config(saved: TrainConfig, given: Mapping[str, Any], out_dir: str | Path, flags: bool = False) -> TrainConfig:
    """The config a resumed run continues with: ``saved`` with the allowed settings of ``given`` applied
    (:func:`resume_differences`).

    Raises: ResumeMismatchError naming every other difference (as command-line flags with ``flags``);
    ValueError for a name that is not a config field.
    Source: this package (no paper).
    """
    differences = resume_differences(saved, given)
    if differences:
        raise ResumeMismatchError(out_dir, differences, flags=flags)
    return TrainConfig.from_dict({**saved.to_dict(), **given})


def saved_config(out_dir: str | Path) -> tuple[TrainConfig, int]:
    """The config and the number of finished epochs of the run in ``out_dir`` (its ``checkpoint.pt``).

    Raises: FileNotFoundError when there is nothing to resume; ValueError for an unreadable checkpoint or one
    that lacks what resuming needs (:func:`read_resumable`).
    Source: this package (no paper).
    """
    run_folder.check_can_start(out_dir, resume=True)
    saved = read_resumable(Path(out_dir) / "checkpoint.pt")
    return recorded_config(saved, Path(out_dir) / "checkpoint.pt"), int(saved["epoch"])


#: What a ``checkpoint.pt`` holds beyond the model, so that a run can continue from it.
RESUME_KEYS = ("config", "model_spec", "model_state", "optimizer_state", "scheduler_state", "epoch", "best_robust",
               "history", "rng")


def read_resumable(path: str | Path) -> dict:
    """The payload of a run's ``checkpoint.pt``, checked to hold what resuming needs (:data:`RESUME_KEYS`).

    Raises: ValueError naming the file when it is unreadable or lacks a resume key (e.g. a ``best.pt`` copied in
    its place).
    Source: this package (no paper).
    """
    saved = read_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in saved]
    if missing:
        raise ValueError(f"{path} cannot be resumed: it lacks {', '.join(missing)} (a checkpoint.pt written by "
                         "cas_edu's train holds them); start a new run with --overwrite (overwrite=True).")
    return saved


def _resumed(config: TrainConfig, out_dir: Path) -> tuple[dict, TrainConfig, tuple]:
    """``(saved payload, config to continue with, file signature)`` of the run in ``out_dir``: its checkpoint
    read and ``config`` compared with the saved one (:func:`resume_config`); nothing is written."""
    path = out_dir / "checkpoint.pt"
    if not path.is_file():
        run_folder.check_can_start(out_dir, resume=True)  # the same FileNotFoundError on every rank
    signature = _signature(path)
    saved = read_resumable(path)
    resumed = resume_config(recorded_config(saved, path), config.to_dict(), out_dir)
    validate_config(resumed)
    return saved, resumed, signature


def _signature(path: Path) -> tuple:
    """What changes when a file is replaced (inode, size, modification time): to notice a rewrite."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return st.st_ino, st.st_size, st.st_mtime_ns
    return ()


def check_processes(config: TrainConfig, world_size: int | None = None) -> None:
    """Check that ``config`` can train on ``world_size`` processes (default: as many as ``torchrun`` started,
    :func:`cas_edu.distributed.world_size`): a global batch of at least 2 examples per process (a train-mode
    BatchNorm cannot normalise a single example) and a device several processes can share (CUDA or the CPU).
    Nothing to check for one process (``TrainConfig`` already asks for a batch of 2).

    Raises: ValueError for a global batch under 2 per process, or a device other than CUDA or the CPU with several
    processes (and :func:`cas_edu.runtime.resolve_device`'s ValueError for a device this machine lacks).
    Source: this package (no paper).
    """
    world_size = distributed.world_size() if world_size is None else world_size
    if world_size > 1:
        if config.batch_size < 2 * world_size:
            raise ValueError(f"batch_size {config.batch_size} leaves some of the {world_size} processes fewer than 2 "
                             f"examples per batch (a train-mode BatchNorm needs 2); use a global batch of at least "
                             f"{2 * world_size}.")
        kind = resolve_device(config.device).type
        if kind not in ("cuda", "cpu"):
            raise ValueError(f"Distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {kind}.")


def _training_data(config: TrainConfig, dataset: data.Dataset | None, world_size: int) -> data.Dataset:
    """The dataset ``config`` trains on (``dataset`` when given, else loaded), checked for what training needs
    (:func:`check_processes`, and at least 2 training examples per process), so that a run that cannot train is
    refused before its folder is created. Raises ``ValueError``."""
    check_processes(config, world_size)
    if dataset is None:
        dataset = data.load(config.dataset, root=config.data_root, val_fraction=config.val_fraction)
    n = len(dataset.train)
    if n < 2 * world_size:
        held = (f" after {len(dataset.val)} were held out for validation (val_fraction {config.val_fraction:g}; "
                "lower it)" if len(dataset.val) else "")
        raise ValueError(f"the training split of {dataset.name} has {n} example(s){held}; training needs at least "
                         f"2 per process ({2 * world_size} for {world_size} process(es)).")
    return dataset


def train(config: TrainConfig, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, dataset: data.Dataset | None = None,
          on_epoch_end: Callable[[dict], None] | None = None, overwrite: bool = False) -> tuple[CASClassifier, list[dict]]:
    """Train a model as ``config`` says and return ``(model, history)``: the final-epoch model in eval mode, and one
    record per epoch (``epoch``, ``lr``, ``train_loss``, ``train_accuracy``, ``val_natural_accuracy``,
    ``val_robust_accuracy``, ``seconds``).

    With ``out_dir`` it writes, every epoch and in this order, ``checkpoint.pt`` (weights, optimizer, schedule,
    history and random-generator states: what ``resume=True`` continues from), ``best.pt`` (the weights of the
    best epoch by validation robust accuracy, natural for standard training; the last epoch when the dataset has
    no validation split, ``config.val_fraction == 0``, whose history then has ``None`` validation fields) and
    ``history.json`` (the config, the history and ``best_pt``: how best.pt is chosen). Files are written
    atomically, and ``best.pt`` never exists without the ``checkpoint.pt`` of its run. Without ``out_dir`` it
    writes nothing. The steps are :func:`set_up`, then per epoch :func:`run_epoch`, :func:`validate`,
    :func:`save`; ``on_epoch_end`` gets each epoch's record. ``dataset`` replaces the one ``config`` names.

    The run folder (:mod:`cas_edu.run_folder`) is held with a lock for the whole training. ``resume`` continues
    the run from ``checkpoint.pt``, ``overwrite`` deletes the run's files and reports and trains anew.
    Half-written temporaries of a killed run are removed once the lock is held. Every refusal that does not
    need the lock is raised before the folder or its lock file is created, so a refused run leaves nothing.
    Launched by ``torchrun`` with several processes, it trains with DistributedDataParallel: the same global
    batches as one process, split across ranks; rank 0 takes the lock, validates and writes the run folder.

    Raises: ValueError for an empty or non-path ``out_dir``, ``overwrite`` without ``out_dir``, ``resume`` with
    ``overwrite``, a config that cannot train, a bad ``CAS_EDU_PROGRESS`` (:func:`cas_edu.runtime.progress_style`;
    also with ``progress=False``), a corrupt dataset, a training split or batch too small for
    BatchNorm or the processes (:func:`check_processes`), or saved weights that do not fit the model;
    FileNotFoundError for ``resume`` with nothing to resume or missing data (:func:`cas_edu.data.load`);
    :class:`~cas_edu.run_folder.RunExistsError` for a folder that already holds a run (neither ``resume`` nor
    ``overwrite``); :class:`~cas_edu.run_folder.RunLockedError` for a folder another training holds;
    :class:`ResumeMismatchError` when ``resume`` is asked with a config that differs from the saved one except in
    :data:`RUNTIME_FIELDS` and more epochs on a step schedule (:func:`resume_differences`);
    :class:`~cas_edu.checkpoint.CheckpointWriteError` when a file cannot be written, saying what is intact (the
    last ``checkpoint.pt``: continue with ``resume=True``, which also rewrites a ``best.pt`` that failed after it;
    or, in the first epoch, nothing: start again); :class:`NonFiniteLossError` when the loss becomes NaN or
    infinite.
    Source: PGD-AT (Madry et al. 2018; ``Standard_Adv_Training/train.py``), TRADES (Zhang et al. 2019;
    ``Trades/trades_reg.py``), MART (Wang et al. 2020; ``MART/mart_reg.py``), each with CAS as arXiv 2103.08307
    §4 and the official scripts (github.com/bymavis/CAS_ICLR2021) train it.
    """
    if out_dir is not None and (not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir).strip()):
        raise ValueError(f"out_dir must be a run folder path (None: write nothing), got {out_dir!r}; an empty path "
                         "would train into the current folder.")
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise FileNotFoundError("Nothing to resume: no out_dir given. Start without --resume.")
    if overwrite and out_dir is None:
        raise ValueError("overwrite=True replaces the run in out_dir; pass out_dir too.")
    validate_config(config)
    progress_style()  # a bad CAS_EDU_PROGRESS is refused here, not after the run folder is prepared
    resolve_device(config.device)  # a device this machine lacks, likewise (it is resolved again under the lock)
    main = out_dir is not None and run_folder.is_main_process()
    # Everything that can refuse runs before the run folder (and its lock) is created: a refused run leaves nothing.
    if main:
        run_folder.check_unlocked(out_dir)
        run_folder.check_can_start(out_dir, resume=resume, overwrite=overwrite)
    requested, given = config, dataset
    saved, signature = None, ()
    if resume:
        saved, config, signature = _resumed(requested, out_dir)
    world_size = distributed.world_size()
    dataset = _training_data(config, given, world_size)
    with run_folder.locked(out_dir) if main else contextlib.nullcontext():
        if main:  # again under the lock: another training may have started or finished meanwhile
            run_folder.check_can_start(out_dir, resume=resume, overwrite=overwrite)
            run_folder.remove_temporaries(out_dir)
        if resume and _signature(out_dir / "checkpoint.pt") != signature:  # rewritten meanwhile: read it again
            loaded = config
            saved, config, signature = _resumed(requested, out_dir)
            if given is None and (config.dataset, config.data_root, config.val_fraction) != \
                    (loaded.dataset, loaded.data_root, loaded.val_fraction):
                dataset = _training_data(config, None, world_size)
        group, device = distributed.from_environment(resolve_device(config.device))
        try:
            result = _train(config, out_dir, saved, progress, dataset, on_epoch_end, group, device, overwrite)
        except BaseException:
            group.close(wait_for_others=False)
            raise
        group.close()
    return result


def _train(config: TrainConfig, out_dir: Path | None, saved: dict | None, progress: bool | None,
           dataset: data.Dataset, on_epoch_end: Callable[[dict], None] | None,
           group: distributed.Group, device: torch.device, overwrite: bool = False) -> tuple[CASClassifier, list[dict]]:
    """The epoch loop of :func:`train`, run under the lock on a dataset already checked."""
    run = set_up(config, dataset, saved, group=group, device=device,
                 checkpoint=out_dir / "checkpoint.pt" if out_dir is not None else "checkpoint")
    writes = out_dir is not None and group.is_main
    if writes:
        _prepare_run_folder(run, out_dir, saved, overwrite)
    show = show_progress(progress) and group.is_main
    for epoch in progress_bar(range(run.start_epoch, config.epochs),
                              desc=f"{config.method}{'+cas' if config.cas else ''}", initial=run.start_epoch,
                              total=config.epochs, disable=not show):
        started = time.perf_counter()
        record = {"epoch": epoch + 1, **run_epoch(run, epoch), **validate(run)}
        record["seconds"] = time.perf_counter() - started
        run.history.append(record)
        if writes:
            save(run, out_dir)
        if on_epoch_end is not None:
            on_epoch_end(record)
    run.model.eval()
    return run.model, run.history


@dataclass
class TrainingRun:
    """What one training holds from its set-up to its last epoch (built by :func:`set_up`, advanced one epoch
    at a time by :func:`run_epoch`, :func:`validate` and :func:`save`).

    ``model`` is the plain model and ``forward`` its training forward (through DistributedDataParallel with
    several processes); ``generator`` draws the shuffling and augmentation (the attacks' random starts draw
    from PyTorch's global generator); ``history`` holds one record per finished epoch; ``start_epoch`` is the
    number of epochs already trained (0, or the resumed checkpoint's); ``best_score`` / ``best_epoch`` describe
    the epoch ``best.pt`` holds (-1.0 / 0 before the first one).

    Shape: x_train (N, C, H, W) float in [0, 1] and y_train (N,) int64 on ``device``; x_val (M, C, H, W) and
    y_val (M,) int64 on the CPU, M ≤ ``config.val_examples`` (0 without a validation split).
    Raises: nothing of its own.
    Source: this package (no paper).
    """

    config: TrainConfig
    model: CASClassifier
    forward: Callable[..., ModelOutput]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    group: distributed.Group
    device: torch.device
    layout: torch.memory_format
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    spec: dict
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best_score: float = -1.0
    best_epoch: int = 0

    @property
    def has_val(self) -> bool:
        """Whether the run validates; without a validation split (val_fraction 0) best.pt is the last epoch."""
        return len(self.y_val) > 0


def set_up(config: TrainConfig, dataset: data.Dataset, saved: dict | None = None, *,
           group: distributed.Group | None = None, device: torch.device | None = None,
           checkpoint: str | Path = "checkpoint.pt") -> TrainingRun:
    """Everything a training needs before its first epoch, each made once: the seeded generators, the model (on
    ``device`` in ``config``'s memory layout, compiled when asked, wrapped for DDP), the SGD optimizer, the
    learning-rate schedule (:func:`learning_rate_factor`, stepped every batch) and the data on the device.

    ``saved`` (a ``checkpoint.pt`` payload, :func:`read_resumable`) continues a run: its weights, optimizer and
    schedule states, history, best epoch and random-generator states are loaded. ``dataset`` is used as given
    (:func:`train` loads and checks it); ``group`` is the process group (default: this process alone),
    ``device`` defaults to ``config.device``; ``checkpoint`` only names the file in error messages.

    Raises: ValueError naming the mismatch when the saved weights do not fit the model (another dataset or
    version, :func:`cas_edu.checkpoint.load_weights`), when the training split is too small
    (:func:`epoch_batches`), or for a device this machine lacks (:func:`cas_edu.runtime.resolve_device`).
    Source: SGD with momentum and weight decay as the official scripts (github.com/bymavis/CAS_ICLR2021);
    the resume logic is this package's.
    """
    group = group if group is not None else distributed.Group()
    device = device if device is not None else resolve_device(config.device)
    seed_everything(config.seed)
    model = build(config.model, num_classes=len(dataset.classes), in_channels=dataset.input_shape[0], cas=config.cas)
    layout = memory_format(config.channels_last, device)
    model.to(device=device, memory_format=layout)
    if saved is not None:
        load_weights(model, saved.get("model_state"), checkpoint)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if config.compile:
        compile_blocks(model)
    forward = distributed.training_forward(model, group, device)
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum)
    steps_per_epoch = len(epoch_batches(len(dataset.train), config.batch_size, group.world_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step / steps_per_epoch))
    run = TrainingRun(
        config=config, model=model, forward=forward, optimizer=optimizer, scheduler=scheduler,
        generator=torch.Generator().manual_seed(config.seed), group=group, device=device, layout=layout,
        x_train=dataset.train.x.to(device), y_train=dataset.train.y.to(device),
        x_val=dataset.val.x[:config.val_examples], y_val=dataset.val.y[:config.val_examples],
        spec=model_spec(config.model, len(dataset.classes), dataset.input_shape[0], model))
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer_state"])
        scheduler.load_state_dict(saved["scheduler_state"])
        run.history = list(saved["history"])
        run.start_epoch, run.best_score = int(saved["epoch"]), float(saved["best_robust"])
        run.best_epoch = int(saved.get("best_epoch", 0))  # 0: written before best_epoch was recorded
        restore_rng(saved["rng"], run.generator)
    return run


def run_epoch(run: TrainingRun, epoch: int) -> dict:
    """Train one epoch (``epoch`` counts from 0): shuffle the training split with the run's generator, then for
    every batch (:func:`epoch_batches`) augment when ``config.augment``, craft x′ and take the method's loss
    (:func:`training_loss`, under the run's autocast setting), and take one SGD step and one schedule step.

    Returns ``{"lr", "train_loss", "train_accuracy"}``: the learning rate of the epoch's last step, and the
    mean loss and accuracy on the inputs trained on (x′; x for standard training), summed over all processes.

    Raises: NonFiniteLossError when the epoch's loss is NaN or infinite (the last checkpoint stays intact).
    Source: the training loops of ``Standard_Adv_Training/train.py``, ``Trades/trades_reg.py`` and
    ``MART/mart_reg.py`` (github.com/bymavis/CAS_ICLR2021); Madry et al. 2018, Zhang et al. 2019, Wang et al. 2020.
    """
    order = torch.randperm(len(run.x_train), generator=run.generator).to(run.device)
    totals = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss sum, correct, seen (this rank)
    lr_used = run.optimizer.param_groups[0]["lr"]
    for start, stop in epoch_batches(len(order), run.config.batch_size, run.group.world_size):
        index = order[start:stop]  # a short last batch is merged into the one before (epoch_batches)
        xb, yb = run.x_train[index], run.y_train[index]
        if run.config.augment:
            xb = random_crop_flip(xb, run.generator)
        xb, yb = run.group.shard(xb).contiguous(memory_format=run.layout), run.group.shard(yb)
        loss, logits = _step(run, xb, yb, len(index))
        lr_used = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        totals[0] += loss.detach().double() * len(yb)
        totals[1] += (logits.argmax(1) == yb).sum()
        totals[2] += len(yb)
    loss_sum, correct, seen = run.group.sum(totals).tolist()
    if not math.isfinite(loss_sum):
        raise NonFiniteLossError(
            f"loss became {loss_sum / seen} at epoch {epoch + 1} (the last good checkpoint is intact); "
            "start a fresh run with a lower --lr or a smaller --batch-size.")
    return {"lr": lr_used, "train_loss": loss_sum / seen, "train_accuracy": correct / seen}


def _step(run: TrainingRun, xb: torch.Tensor, yb: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on this process's share of a global batch; returns the method's ``(loss, logits)``."""
    with autocast(run.config.amp, run.device):
        loss, logits = training_loss(run.model, xb, yb, run.config, forward=run.forward)
    run.optimizer.zero_grad(set_to_none=True)
    run.group.global_mean_loss(loss, len(yb), global_batch).backward()
    run.optimizer.step()
    return loss, logits


def validate(run: TrainingRun) -> dict:
    """Validation accuracies of the run's model now: ``{"val_natural_accuracy", "val_robust_accuracy"}``,
    natural accuracy (:func:`accuracy`) and accuracy under L∞ PGD-``config.val_attack_steps`` at ``config.eps``
    (:func:`robust_accuracy`) on the first ``config.val_examples`` validation examples.

    A value is None where it is not measured: both without a validation split or on a process other than the
    main one, the robust one for standard training (its best.pt is chosen by natural accuracy).

    Raises: nothing of its own.
    Source: this package's checkpoint selection; PGD: Madry et al. 2018.
    """
    config = run.config
    measured = run.group.is_main and run.has_val
    return {
        "val_natural_accuracy": accuracy(run.model, run.x_val, run.y_val) if measured else None,
        "val_robust_accuracy": robust_accuracy(run.model, run.x_val, run.y_val, config.eps, config.val_attack_steps)
        if measured and config.method != "standard" else None,
    }


def save(run: TrainingRun, out_dir: Path) -> None:
    """Write the run's last epoch (``run.history[-1]``) to ``out_dir``: ``checkpoint.pt`` (weights, optimizer,
    schedule, history, random-generator states: everything :func:`train` needs to resume), then ``best.pt``
    (the weights alone) when this epoch is the best so far, then ``history.json``.

    The best epoch has the highest validation robust accuracy (natural for standard training), the earliest on
    a tie; without a validation split every epoch replaces it. ``run.best_score`` and ``run.best_epoch`` are
    updated. ``checkpoint.pt`` comes first, so ``best.pt`` never exists without the ``checkpoint.pt`` of its
    run, and a ``best.pt`` that fails to write is rewritten from ``checkpoint.pt`` on resume.

    Raises: CheckpointWriteError (:class:`cas_edu.checkpoint.CheckpointWriteError`) when a file cannot be
    written, saying what is intact.
    Source: this package (no paper).
    """
    config, record = run.config, run.history[-1]
    epoch = record["epoch"]
    score = record["val_robust_accuracy"] if record["val_robust_accuracy"] is not None else record["val_natural_accuracy"]
    weights = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    is_best = not run.has_val or score > run.best_score
    if is_best:
        run.best_score, run.best_epoch = score if run.has_val else run.best_score, epoch
    _write_run_files(lambda: save_checkpoint(out_dir / "checkpoint.pt", {
        "config": config.to_dict(), "model_spec": run.spec, "model_state": weights,
        "optimizer_state": run.optimizer.state_dict(), "scheduler_state": run.scheduler.state_dict(),
        "epoch": epoch, "best_robust": run.best_score, "best_epoch": run.best_epoch, "history": run.history,
        "rng": rng_state(run.generator)}), epoch - 1)
    if is_best:
        _write_best(run, out_dir, weights, epoch)
    _write_history(run, out_dir, epoch)


def _prepare_run_folder(run: TrainingRun, out_dir: Path, saved: dict | None, overwrite: bool) -> None:
    """Set-up done, before the first epoch: delete the run being replaced (``overwrite``), or bring a resumed
    run's files in line with its checkpoint (``best.pt`` when its last epoch is the best: it may have failed
    after ``checkpoint.pt``; ``history.json``)."""
    if overwrite:
        run_folder.clear_run(out_dir)
    if saved is not None:
        if run.best_epoch == run.start_epoch:
            _write_best(run, out_dir, saved["model_state"], run.start_epoch)
        _write_history(run, out_dir, run.start_epoch)


def _write_best(run: TrainingRun, out_dir: Path, weights: dict, epoch: int) -> None:
    _write_run_files(lambda: save_checkpoint(out_dir / "best.pt", {
        "config": run.config.to_dict(), "model_spec": run.spec, "model_state": weights, "epoch": epoch}), epoch)


def _write_history(run: TrainingRun, out_dir: Path, epoch: int) -> None:
    _write_run_files(lambda: write_json(out_dir / "history.json", {
        "config": run.config.to_dict(), "best_pt": selection_rule(run.has_val, run.config), "history": run.history}),
        epoch)


def _write_run_files(write: Callable[[], None], saved_epoch: int) -> None:
    """Run one write of the run folder; a failure stops training with one sentence saying what is intact."""
    try:
        write()
    except CheckpointWriteError as err:
        if saved_epoch:
            raise CheckpointWriteError(f"{err} Training stopped; checkpoint.pt is complete (epoch {saved_epoch}): "
                                       "free disk space, then continue with --resume (resume=True).") from err
        raise CheckpointWriteError(f"{err} Training stopped before any epoch was saved, so the folder holds no run: "
                                   "free disk space, then start the training again (without --resume).") from err


def finished_run(config: TrainConfig, out_dir: str | Path) -> dict | None:
    """The last checkpoint in ``out_dir`` when that run was trained to the end with ``config`` (the same in every
    field except :data:`RUNTIME_FIELDS`: where it ran does not change what it is), else None.

    Raises: ValueError when ``checkpoint.pt`` exists but cannot be resumed or records no valid config
    (:func:`read_resumable`).
    Source: this package (no paper).
    """
    checkpoint = Path(out_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        return None
    saved = read_resumable(checkpoint)
    same = _same_training(recorded_config(saved, checkpoint), config)
    return saved if same and int(saved["epoch"]) >= config.epochs else None


def _same_training(saved: TrainConfig, config: TrainConfig) -> bool:
    ignore = dict.fromkeys(RUNTIME_FIELDS)
    return {**saved.to_dict(), **ignore} == {**config.to_dict(), **ignore}


def train_or_load(config: TrainConfig, out_dir: str | Path, progress: bool | None = None,
                  dataset: data.Dataset | None = None, overwrite: bool = False) -> tuple[CASClassifier, list[dict]]:
    """Reuse the finished run in ``out_dir`` when it was trained with ``config`` (:func:`finished_run`); resume
    it when it stopped early with the same config; train into an empty folder. A folder holding a run with
    another config raises :class:`~cas_edu.run_folder.RunExistsError` (naming the differences) unless
    ``overwrite``, which replaces it (:func:`train`).

    The returned model is the final-epoch model (``checkpoint.pt``); ``best.pt`` stays on disk for evaluation.

    Raises: :class:`~cas_edu.run_folder.RunExistsError` for a run with another config (without ``overwrite``);
    ValueError for a checkpoint that cannot be read; everything :func:`train` raises.
    Source: as :func:`train`.
    """
    from .checkpoint import model_from_payload

    saved = finished_run(config, out_dir)
    if saved is not None:
        model = model_from_payload(saved, Path(out_dir) / "checkpoint.pt").to(resolve_device(config.device)).eval()
        return model, list(saved["history"])
    checkpoint = Path(out_dir) / "checkpoint.pt"
    if checkpoint.is_file() and not overwrite:
        previous = recorded_config(read_checkpoint(checkpoint), checkpoint)
        differences = resume_differences(previous, config.to_dict())
        if not differences:
            return train(config, out_dir=out_dir, resume=True, progress=progress, dataset=dataset)
        changed = ", ".join(f"{name} {old!r} -> {new!r}" for name, (new, old) in differences.items())
        raise run_folder.RunExistsError(
            f"{out_dir} holds a run trained with another config ({changed}); pass overwrite=True to replace it "
            "(its files and reports are deleted), or choose another folder.")
    return train(config, out_dir=out_dir, progress=progress, dataset=dataset, overwrite=overwrite)
