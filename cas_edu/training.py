"""Standard, PGD-AT, TRADES and MART training, each with or without CAS, resumable from a checkpoint."""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import attacks, data, distributed
from .cas import DEFAULT_CAS_BETA, auxiliary_loss
from .checkpoint import model_spec, read_checkpoint, save_checkpoint, write_json
from .models import CASClassifier, ModelOutput, build
from .presets import TrainConfig, validate_config
from .runtime import autocast, memory_format, resolve_device, seed_everything


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
    """Top-1 accuracy of ``model`` (in eval mode) on ``x``; the model's mode is restored afterwards."""
    with attacks.eval_mode(model):
        device = next(model.parameters()).device
        correct = sum((model(x[i:i + batch_size].to(device)).argmax(1) == y[i:i + batch_size].to(device)).sum().item()
                      for i in range(0, len(x), batch_size))
    return correct / max(len(x), 1)


def robust_accuracy(model: CASClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    batch_size: int = 512) -> float:
    """Accuracy under PGD with the adaptive objective for CAS models (masks from auxiliary predictions)."""
    device = next(model.parameters()).device
    objective = "ce+cas" if getattr(model, "has_cas", False) else "ce"
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


def train(config: TrainConfig, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool | None = None, dataset: data.Dataset | None = None,
          on_epoch_end: Callable[[dict], None] | None = None) -> tuple[CASClassifier, list[dict]]:
    """Train a model as ``config`` says; with ``out_dir``, write ``checkpoint.pt`` (every epoch, atomically),
    ``best.pt`` (best robust validation accuracy; the last epoch when the dataset has no validation split,
    ``config.val_fraction == 0``, whose history then has ``None`` validation fields) and ``history.json``
    (with ``best_pt``: how best.pt is chosen). Returns ``(model, history)``.

    Launched by ``torchrun`` with several processes, it trains with DistributedDataParallel: the same
    global batches as one process, split across ranks; rank 0 validates and writes the run folder.
    """
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume:
        if out_dir is None or not (out_dir / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"Nothing to resume: no checkpoint.pt in {out_dir}. Start without --resume.")
        saved = read_checkpoint(out_dir / "checkpoint.pt")
        config = TrainConfig.from_dict(saved["config"])
    validate_config(config)
    group, device = distributed.from_environment(resolve_device(config.device))
    try:
        result = _train(config, out_dir, saved if resume else None, progress, dataset, on_epoch_end, group, device)
    except BaseException:
        group.close(wait_for_others=False)
        raise
    group.close()
    return result


def _train(config: TrainConfig, out_dir: Path | None, saved: dict | None, progress: bool | None,
           dataset: data.Dataset | None, on_epoch_end: Callable[[dict], None] | None,
           group: distributed.Group, device: torch.device) -> tuple[CASClassifier, list[dict]]:
    seed_everything(config.seed)
    dataset = dataset if dataset is not None else data.load(config.dataset, root=config.data_root,
                                                           val_fraction=config.val_fraction)
    if group.is_distributed and config.batch_size < group.world_size:
        raise ValueError(f"batch_size {config.batch_size} is smaller than the {group.world_size} processes; "
                         "use a global batch of at least one example per process.")
    model = build(config.model, num_classes=len(dataset.classes), in_channels=dataset.input_shape[0], cas=config.cas)
    layout = memory_format(config.channels_last, device)
    model.to(device=device, memory_format=layout)
    if saved is not None:
        model.load_state_dict(saved["model_state"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if config.compile:
        compile_blocks(model)
    forward = distributed.training_forward(model, group, device)
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum)
    steps_per_epoch = math.ceil(len(dataset.train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step / steps_per_epoch))
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    start_epoch, best_robust = 0, -1.0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer_state"])
        scheduler.load_state_dict(saved["scheduler_state"])
        history = list(saved["history"])
        start_epoch, best_robust = int(saved["epoch"]), float(saved["best_robust"])
        _restore_rng(saved["rng"], generator)

    x_train, y_train = dataset.train.x.to(device), dataset.train.y.to(device)
    x_val, y_val = dataset.val.x[:config.val_examples], dataset.val.y[:config.val_examples]
    has_val = len(y_val) > 0  # without a validation split (val_fraction 0) best.pt is the last epoch
    spec = model_spec(config.model, len(dataset.classes), dataset.input_shape[0], model)
    show = _show_progress(progress) and group.is_main
    for epoch in tqdm(range(start_epoch, config.epochs), desc=f"{config.method}{'+cas' if config.cas else ''}",
                      initial=start_epoch, total=config.epochs, disable=not show):
        started = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen (this rank)
        lr_used = optimizer.param_groups[0]["lr"]
        for i in range(0, len(order), config.batch_size):
            index = order[i:i + config.batch_size]
            if len(index) < group.world_size:
                continue  # a last batch too small to give every process an example
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
        if out_dir is not None and group.is_main:
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            if not has_val or score > best_robust:
                best_robust = score if has_val else best_robust
                save_checkpoint(out_dir / "best.pt", {"config": config.to_dict(), "model_spec": spec,
                                                     "model_state": weights, "epoch": epoch + 1})
            save_checkpoint(out_dir / "checkpoint.pt", {
                "config": config.to_dict(), "model_spec": spec, "model_state": weights,
                "optimizer_state": optimizer.state_dict(), "scheduler_state": scheduler.state_dict(),
                "epoch": epoch + 1, "best_robust": best_robust, "history": history, "rng": _rng_state(generator)})
            write_json(out_dir / "history.json", {"config": config.to_dict(), "best_pt": selection_rule(has_val, config),
                                                  "history": history})
        if on_epoch_end is not None:
            on_epoch_end(record)
    model.eval()
    return model, history


def finished_run(config: TrainConfig, out_dir: str | Path) -> dict | None:
    """The last checkpoint in ``out_dir`` when that run was trained to the end with exactly ``config``, else None."""
    checkpoint = Path(out_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        return None
    saved = read_checkpoint(checkpoint)
    return saved if saved["config"] == config.to_dict() and int(saved["epoch"]) >= config.epochs else None


def train_or_load(config: TrainConfig, out_dir: str | Path, progress: bool | None = None,
                  dataset: data.Dataset | None = None) -> tuple[CASClassifier, list[dict]]:
    """Reuse the finished run in ``out_dir`` when it was trained with exactly ``config``; otherwise train it there.

    The returned model is the final-epoch model (``checkpoint.pt``); ``best.pt`` stays on disk for evaluation.
    """
    from .checkpoint import model_from_payload

    saved = finished_run(config, out_dir)
    if saved is not None:
        model = model_from_payload(saved).to(resolve_device(config.device)).eval()
        return model, list(saved["history"])
    return train(config, out_dir=out_dir, progress=progress, dataset=dataset)
