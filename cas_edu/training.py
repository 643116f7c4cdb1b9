"""Standard, PGD-AT, TRADES and MART training, each with or without CAS, resumable from a checkpoint."""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import attacks, data, distributed, run_folder
from .cas import DEFAULT_CAS_BETA, auxiliary_loss, unwrap_parallel
from .checkpoint import (CheckpointWriteError, load_weights, model_spec, read_checkpoint, recorded_config,
                         save_checkpoint, write_json)
from .models import CASClassifier, ModelOutput, build
from .presets import TrainConfig, validate_config
from .runtime import autocast, memory_format, resolve_device, seed_everything
from .validation import check_batch_size, check_inputs, model_device


def learning_rate_factor(config: TrainConfig, progress: float) -> float:
    """Multiplier of ``config.lr`` after ``progress`` epochs: step drops (paper) or one-cycle (fast)."""
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
    """Random crop with zero padding and random horizontal flip, for a whole batch on its own device."""
    n, c, h, w = x.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding,) * 4)
    rows = (shifts[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    cropped = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def epoch_batches(n: int, batch_size: int, world_size: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of each global batch of one epoch over ``n`` shuffled training examples: batches of
    ``batch_size``, except that a short last batch which would leave some process (of ``world_size``, each
    taking every ``world_size``-th example) fewer than 2 examples is merged into the batch before it. A
    train-mode BatchNorm cannot normalise a single example whose feature map is 1×1 (ResNet-18's layer4 on
    8×8 digits), so such a batch would crash at the end of an epoch; merging keeps every example in every
    epoch (the merged batch has at most ``batch_size + 2·world_size − 1`` examples). Raises ``ValueError``
    when ``n`` is smaller than ``2 · world_size``."""
    if n < 2 * world_size:
        raise ValueError(f"the training split has {n} example(s); training needs at least 2 per process "
                         f"({2 * world_size} for {world_size} process(es)).")
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    last = bounds[-1][1] - bounds[-1][0]
    if len(bounds) > 1 and last < batch_size and last < 2 * world_size:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (bf16 autocast outputs are widened before softmax and losses)."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def kl_per_example(natural_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) ‖ p(x′)) per example (shape N) from N×K logits (bf16 widened to float32).

    Computed from log-probabilities (``log_target=True``) so that a natural probability that underflows
    to 0 (logit gaps beyond ~104 in float32) contributes 0 with a finite gradient; the usual
    ``kl_div(log q, p)`` form gives NaN gradients there.
    """
    return F.kl_div(_full(adv_logits).log_softmax(dim=1), _full(natural_logits).log_softmax(dim=1),
                    reduction="none", log_target=True).sum(dim=1)


def _mean_over_heads(terms: list[torch.Tensor]) -> torch.Tensor | float:
    """The mean of per-head scalars (the official ``/ len(extra_outputs)``); 0 without CAS heads."""
    return torch.stack(terms).mean() if terms else 0.0


def _check_heads(adv_aux: list[torch.Tensor], natural_aux: list[torch.Tensor]) -> None:
    if len(adv_aux) != len(natural_aux):
        raise ValueError(f"got {len(adv_aux)} adversarial and {len(natural_aux)} natural auxiliary logits; "
                         "pass one per CAS module for both inputs.")


def trades_loss(adv_logits: torch.Tensor, natural_logits: torch.Tensor, y: torch.Tensor, beta: float,
                adv_aux: list[torch.Tensor] = (), natural_aux: list[torch.Tensor] = (),
                cas_beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""TRADES (Zhang et al., 2019) + CAS exactly as the official ``Trades/trades_reg.py`` computes it:

    :math:`[CE(f(x), y) + β_c · mean_s CE(aux_s(x), y)] + β · [(1/B) KL(p(x) ‖ p(x′))
    + β_c · mean_s (1/B) KL(p_{aux_s}(x) ‖ p_{aux_s}(x′))]`.

    Logits are N×K (main and every auxiliary head), natural ones from x and adversarial ones from x′,
    all from train-mode forwards with true-label masks; ``beta`` is TRADES' 1/λ, ``cas_beta`` CAS' β.
    Without auxiliary heads this is plain TRADES. Gradients flow through both the natural and the
    adversarial logits, as in the official code. Returns a scalar.
    """
    _check_heads(adv_aux, natural_aux)
    natural = F.cross_entropy(_full(natural_logits), y) + cas_beta * _mean_over_heads(
        [F.cross_entropy(_full(a), y) for a in natural_aux])
    robust = kl_per_example(natural_logits, adv_logits).mean() + cas_beta * _mean_over_heads(
        [kl_per_example(n, a).mean() for a, n in zip(adv_aux, natural_aux)])
    return natural + beta * robust


def boosted_cross_entropy(adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MART's boosted CE (Wang et al., 2020): CE(p(x′), y) − log(1.0001 − p_r(x′)), r the most likely wrong
    class, batch mean (``MART/mart_reg.py``); finite with finite gradients for any finite N×K logits."""
    logits = _full(adv_logits)
    probs = logits.softmax(dim=1)
    wrong = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), -1.0)
    runner_up = wrong.max(dim=1).values
    return F.cross_entropy(logits, y) - torch.log(1.0001 - runner_up + 1e-12).mean()


def mart_loss(adv_logits: torch.Tensor, natural_logits: torch.Tensor, y: torch.Tensor, beta: float,
              adv_aux: list[torch.Tensor] = (), natural_aux: list[torch.Tensor] = (),
              cas_beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""MART (Wang et al., 2020) + CAS exactly as the official ``MART/mart_reg.py`` computes it:

    :math:`[BCE(f(x′), y) + β_c · mean_s BCE(aux_s(x′), y)] + β · [(1/B) Σ KL(p(x) ‖ p(x′)) · (1 − p_y(x))
    + β_c · mean_s (1/B) Σ KL(p_{aux_s}(x) ‖ p_{aux_s}(x′)) · (1 − p_y(x))]`

    with BCE the boosted CE (:func:`boosted_cross_entropy`) and p_y(x) the *main* head's natural
    probability of the true class in every term, auxiliary ones included (a quirk of the official code,
    kept); the official 1.0000001 − p_y is used for 1 − p_y. Logits are N×K from train-mode forwards
    with true-label masks. Without auxiliary heads this is plain MART. Returns a scalar.
    """
    _check_heads(adv_aux, natural_aux)
    true_prob = _full(natural_logits).softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    weight = 1.0000001 - true_prob

    def robust(natural: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        return (kl_per_example(natural, adversarial) * weight).mean()

    adversarial = boosted_cross_entropy(adv_logits, y) + cas_beta * _mean_over_heads(
        [boosted_cross_entropy(a, y) for a in adv_aux])
    regulariser = robust(natural_logits, adv_logits) + cas_beta * _mean_over_heads(
        [robust(n, a) for a, n in zip(adv_aux, natural_aux)])
    return adversarial + beta * regulariser


def training_attack(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The method's training adversarial examples x′ (model in eval mode, adaptive objective with CAS):
    PGD-AT — PGD on CE(main) + β_c · mean CE(aux) from a uniform start (``Standard_Adv_Training/train.py``);
    MART — the same objective from x + 0.001·N(0, 1) (``MART/mart_reg.py``); TRADES — the KL attack
    (``Trades/trades_reg.py``); standard training returns ``x`` unchanged."""
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
    """The method's training loss on natural ``x`` and adversarial ``x_adv`` (N×C×H×W, labels ``y``), with the
    model in train mode and true-label CAS masks; returns ``(loss, logits)``, the logits those of the input the
    method trains on (x′; x for standard training). Standard / PGD-AT: CE(main) + β_c · mean_s CE(aux_s)
    on x resp. x′ (``Standard_Adv_Training/train.py``); TRADES: :func:`trades_loss`; MART: :func:`mart_loss`.
    ``forward`` (default ``model.forward_details``) is the training forward, e.g. through DDP."""
    forward = forward or model.forward_details
    model.train()
    if config.method in ("standard", "pgd_at"):
        out = forward(x_adv if config.method == "pgd_at" else x, y)
        return F.cross_entropy(_full(out.logits), y) + auxiliary_loss([_full(a) for a in out.aux_logits], y,
                                                                         config.cas_beta), out.logits
    natural = forward(x, y)  # the official scripts forward x first, then x′ (BatchNorm statistics in that order)
    adversarial = forward(x_adv, y)
    loss_fn = trades_loss if config.method == "trades" else mart_loss
    loss = loss_fn(adversarial.logits, natural.logits, y, config.method_beta, adversarial.aux_logits,
                   natural.aux_logits, config.cas_beta)
    return loss, adversarial.logits


def training_loss(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  forward: Callable[..., ModelOutput] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Craft the method's adversarial examples (:func:`training_attack`, model in eval mode), then return
    :func:`method_loss`'s ``(loss, logits)`` in train mode; ``forward`` is the training forward, e.g. through DDP."""
    x_attack = training_attack(model, x, y, config)
    return method_loss(model, x, x_attack, y, config, forward=forward)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy (a fraction; 0 for no examples) of ``model`` in eval mode on images ``x`` with labels ``y``
    (input rule: :mod:`cas_edu.validation`); every submodule's mode is restored afterwards. Raises ``ValueError``
    for bad images or labels or a ``batch_size`` that is not a whole number ≥ 1."""
    batch_size = check_batch_size(batch_size)
    model = unwrap_parallel(model)
    x, y = check_inputs(model, x, y)
    with attacks.eval_mode(model):
        device = model_device(model)
        correct = sum((model(x[i:i + batch_size].to(device)).argmax(1) == y[i:i + batch_size].to(device)).sum().item()
                      for i in range(0, len(x), batch_size))
    return correct / max(len(x), 1)


def robust_accuracy(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    batch_size: int = 512) -> float:
    """Accuracy (a fraction) under L∞ PGD-``steps`` at ``eps`` with the adaptive objective for CAS models (masks
    from auxiliary predictions), also when the CAS model is wrapped; images, labels and ``batch_size`` as
    :func:`accuracy`."""
    batch_size = check_batch_size(batch_size)
    model = unwrap_parallel(model)
    x, y = check_inputs(model, x, y)
    device = model_device(model)
    objective = "ce+cas" if attacks.has_cas(model) else "ce"
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        x_adv = attacks.pgd(model, xb, yb, eps, steps=steps, objective=objective)
        with torch.no_grad(), attacks.eval_mode(model):
            correct += (model(x_adv).argmax(1) == yb).sum().item()
    return correct / max(len(x), 1)


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def compile_blocks(model: CASClassifier) -> None:
    """``torch.compile`` each block's forward in place; CAS modules, losses and the attacks' input
    gradients stay outside the compiled regions (a block is recompiled once per train/eval mode)."""
    for module in [getattr(model, "stem", None), *model.blocks.values(), model.fc]:
        if module is not None:
            module.compile()


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """SGD parameter groups: weight decay ``config.weight_decay`` on every parameter when
    ``config.decay_1d_params`` (as ``model.parameters()`` in all three official training scripts), else on the
    ≥2-D weights only, with 1-D parameters (biases, BatchNorm weights) in a second group without decay."""
    if config.decay_1d_params:
        return [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    decay = [p for p in model.parameters() if p.dim() != 1]
    no_decay = [p for p in model.parameters() if p.dim() == 1]
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def selection_rule(has_val: bool, config: TrainConfig) -> str:
    """How ``best.pt`` is chosen, in words (recorded in ``history.json``)."""
    if not has_val:
        return "last epoch (no validation split, e.g. val_fraction 0)"
    return ("best validation accuracy (natural)" if config.method == "standard"
            else f"best validation robust accuracy (PGD-{config.val_attack_steps})")


#: Config fields that say where a run executes, not what it trains: a resumed run may change them (they are
#: applied and recorded), and a finished run is reused whatever they say.
RUNTIME_FIELDS = ("device", "data_root")


class ResumeMismatchError(ValueError):
    """``resume`` was asked with settings that differ from the saved run's (:func:`resume_differences`)."""

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
    Raises ``ValueError`` for a name that is not a config field."""
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
    (:func:`resume_differences`); any other difference raises :class:`ResumeMismatchError` naming them
    (as command-line flags with ``flags``)."""
    differences = resume_differences(saved, given)
    if differences:
        raise ResumeMismatchError(out_dir, differences, flags=flags)
    return TrainConfig.from_dict({**saved.to_dict(), **given})


def saved_config(out_dir: str | Path) -> tuple[TrainConfig, int]:
    """The config and the number of finished epochs of the run in ``out_dir`` (its ``checkpoint.pt``);
    ``FileNotFoundError`` when there is nothing to resume, ``ValueError`` for an unreadable checkpoint."""
    run_folder.check_can_start(out_dir, resume=True)
    saved = read_resumable(Path(out_dir) / "checkpoint.pt")
    return recorded_config(saved, Path(out_dir) / "checkpoint.pt"), int(saved["epoch"])


#: What a ``checkpoint.pt`` holds beyond the model, so that a run can continue from it.
RESUME_KEYS = ("config", "model_spec", "model_state", "optimizer_state", "scheduler_state", "epoch", "best_robust",
               "history", "rng")


def read_resumable(path: str | Path) -> dict:
    """The payload of a run's ``checkpoint.pt``; ``ValueError`` naming the file when it is unreadable or lacks
    what resuming needs (:data:`RESUME_KEYS`), e.g. a ``best.pt`` copied in its place."""
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
    """Raise ``ValueError`` unless ``config`` can train on ``world_size`` processes (default: as many as
    ``torchrun`` started, :func:`cas_edu.distributed.world_size`): a global batch of at least 2 examples per
    process (a train-mode BatchNorm cannot normalise a single example) and a device several processes can share
    (CUDA or the CPU). Nothing to check for one process (``TrainConfig`` already asks for a batch of 2)."""
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
    """Train a model as ``config`` says; with ``out_dir``, write ``checkpoint.pt`` (every epoch, atomically),
    ``best.pt`` (best robust validation accuracy; the last epoch when the dataset has no validation split,
    ``config.val_fraction == 0``, whose history then has ``None`` validation fields) and ``history.json``
    (with ``best_pt``: how best.pt is chosen). Returns ``(model, history)``.

    The run folder (:mod:`cas_edu.run_folder`) is held with a lock for the whole training; a folder that
    another training holds raises :class:`~cas_edu.run_folder.RunLockedError`, one that already holds a run
    raises :class:`~cas_edu.run_folder.RunExistsError` unless ``resume`` (continue it from ``checkpoint.pt``)
    or ``overwrite`` (delete its files and reports, then train anew). ``resume`` compares ``config`` with the
    saved one and raises :class:`ResumeMismatchError` for any difference except :data:`RUNTIME_FIELDS` and
    more epochs on a step schedule (:func:`resume_differences`). Half-written temporaries of a killed run
    are removed once the lock is held. Every refusal that does not need the lock (an empty ``out_dir``, a
    folder holding a run or held by another training, a checkpoint that cannot be resumed, data that cannot
    be loaded, a training split or batch too small for BatchNorm, :func:`check_processes`) is raised before
    the folder or its lock file is created. Each epoch writes ``checkpoint.pt`` before ``best.pt``, so a
    ``best.pt`` never exists without the ``checkpoint.pt`` of its run. A failed write raises
    :class:`~cas_edu.checkpoint.CheckpointWriteError` saying what is intact: the last ``checkpoint.pt``
    (continue with ``resume=True``, which also rewrites a ``best.pt`` that failed after it), or, in the first
    epoch, nothing (start again).

    Launched by ``torchrun`` with several processes, it trains with DistributedDataParallel: the same
    global batches as one process, split across ranks; rank 0 takes the lock, validates and writes the run folder.
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
           dataset: data.Dataset | None, on_epoch_end: Callable[[dict], None] | None,
           group: distributed.Group, device: torch.device, overwrite: bool = False) -> tuple[CASClassifier, list[dict]]:
    seed_everything(config.seed)
    dataset = _training_data(config, dataset, group.world_size)  # checked before the lock by train()
    model = build(config.model, num_classes=len(dataset.classes), in_channels=dataset.input_shape[0], cas=config.cas)
    layout = memory_format(config.channels_last, device)
    model.to(device=device, memory_format=layout)
    if saved is not None:  # ValueError naming the mismatch when the weights do not fit (another dataset/version)
        load_weights(model, saved.get("model_state"), out_dir / "checkpoint.pt" if out_dir is not None else "checkpoint")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if config.compile:
        compile_blocks(model)
    forward = distributed.training_forward(model, group, device)
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum)
    steps_per_epoch = len(epoch_batches(len(dataset.train), config.batch_size, group.world_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step / steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    start_epoch, best_robust, best_epoch = 0, -1.0, 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer_state"])
        scheduler.load_state_dict(saved["scheduler_state"])
        history = list(saved["history"])
        start_epoch, best_robust = int(saved["epoch"]), float(saved["best_robust"])
        best_epoch = int(saved.get("best_epoch", 0))  # 0: written before best_epoch was recorded
        _restore_rng(saved["rng"], generator)

    x_train, y_train = dataset.train.x.to(device), dataset.train.y.to(device)
    x_val, y_val = dataset.val.x[:config.val_examples], dataset.val.y[:config.val_examples]
    has_val = len(y_val) > 0  # without a validation split (val_fraction 0) best.pt is the last epoch
    spec = model_spec(config.model, len(dataset.classes), dataset.input_shape[0], model)
    writes = out_dir is not None and group.is_main
    if writes and overwrite:  # set-up done: only now delete the run being replaced, and its reports
        run_folder.clear_run(out_dir)
    if writes and saved is not None:  # a resumed run's history.json matches its checkpoint again
        if best_epoch == start_epoch:  # its last epoch is the best: best.pt may have failed after checkpoint.pt
            _write_run_files(lambda: save_checkpoint(out_dir / "best.pt", {
                "config": config.to_dict(), "model_spec": spec, "model_state": saved["model_state"],
                "epoch": start_epoch}), start_epoch)
        _write_run_files(lambda: write_json(out_dir / "history.json", {
            "config": config.to_dict(), "best_pt": selection_rule(has_val, config), "history": history}), start_epoch)
    show = _show_progress(progress) and group.is_main
    for epoch in tqdm(range(start_epoch, config.epochs), desc=f"{config.method}{'+cas' if config.cas else ''}",
                      initial=start_epoch, total=config.epochs, disable=not show):
        started = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen (this rank)
        lr_used = optimizer.param_groups[0]["lr"]
        for start, stop in epoch_batches(len(order), config.batch_size, group.world_size):
            index = order[start:stop]  # a short last batch is merged into the one before (epoch_batches)
            xb, yb = x_train[index], y_train[index]
            if config.augment:
                xb = random_crop_flip(xb, generator)
            xb, yb = group.shard(xb).contiguous(memory_format=layout), group.shard(yb)
            with autocast(config.amp, device):
                loss, logits = training_loss(model, xb, yb, config, forward=forward)
            optimizer.zero_grad(set_to_none=True)
            group.global_mean_loss(loss, len(yb), len(index)).backward()
            optimizer.step()
            lr_used = optimizer.param_groups[0]["lr"]
            scheduler.step()
            totals[0] += loss.detach().double() * len(yb)
            totals[1] += (logits.argmax(1) == yb).sum()
            totals[2] += len(yb)
        loss_sum, correct, seen = group.sum(totals).tolist()
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(
                f"loss became {loss_sum / seen} at epoch {epoch + 1} (the last good checkpoint is intact); "
                "start a fresh run with a lower --lr or a smaller --batch-size.")
        validate = group.is_main and has_val
        record = {
            "epoch": epoch + 1,
            "lr": lr_used,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_natural_accuracy": accuracy(model, x_val, y_val) if validate else None,
            "val_robust_accuracy": robust_accuracy(model, x_val, y_val, config.eps, config.val_attack_steps)
            if validate and config.method != "standard" else None,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        score = record["val_robust_accuracy"] if record["val_robust_accuracy"] is not None else record["val_natural_accuracy"]
        if writes:
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            is_best = not has_val or score > best_robust
            if is_best:
                best_robust, best_epoch = score if has_val else best_robust, epoch + 1
            # checkpoint.pt first, then best.pt: best.pt never exists without the checkpoint.pt of its run, and
            # a best.pt that fails to write is rewritten from checkpoint.pt on resume (best_epoch == epoch)
            _write_run_files(lambda: save_checkpoint(out_dir / "checkpoint.pt", {
                "config": config.to_dict(), "model_spec": spec, "model_state": weights,
                "optimizer_state": optimizer.state_dict(), "scheduler_state": scheduler.state_dict(),
                "epoch": epoch + 1, "best_robust": best_robust, "best_epoch": best_epoch, "history": history,
                "rng": _rng_state(generator)}), epoch)
            if is_best:
                _write_run_files(lambda: save_checkpoint(out_dir / "best.pt", {
                    "config": config.to_dict(), "model_spec": spec, "model_state": weights, "epoch": epoch + 1}),
                    epoch + 1)
            _write_run_files(lambda: write_json(out_dir / "history.json", {
                "config": config.to_dict(), "best_pt": selection_rule(has_val, config), "history": history}), epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return model, history


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
    field except :data:`RUNTIME_FIELDS`: where it ran does not change what it is), else None."""
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
