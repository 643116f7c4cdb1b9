"""Small helpers shared by several test files (imported as ``from helpers import ...``); the shared fixtures are in
``conftest.py``."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cas_edu import data
from cas_edu.cas import auxiliary_loss
from cas_edu.checkpoint import model_spec, save_checkpoint
from cas_edu.models import SmallCNN, build
from cas_edu.presets import TrainConfig, make_config


def subset(dataset: data.Dataset, n_train: int, n_val: int = 16) -> data.Dataset:
    """The same dataset with only the first ``n_train`` training and ``n_val`` validation examples (test untouched)."""
    return data.Dataset(dataset.name, data.Split(dataset.train.x[:n_train], dataset.train.y[:n_train]),
                        data.Split(dataset.val.x[:n_val], dataset.val.y[:n_val]), dataset.test, dataset.classes)


def tiny_config(method: str = "pgd_at", cas: bool = False, **overrides) -> TrainConfig:
    """The cheapest digits run of ``method``: one epoch on the CPU, one-step attacks, 16 validation examples."""
    values = dict(epochs=1, device="cpu", val_examples=16, attack_steps=1, val_attack_steps=1, batch_size=64)
    values.update(overrides)
    return make_config("digits", method=method, cas=cas, **values)


def tiny_cnn(seed: int = 0, cas_layers: list[str] | None = None) -> SmallCNN:
    """An untrained narrow small CNN for 8×8 digits (widths 8, 16, 16), weights from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 16), cas_layers=cas_layers).eval()


def untrained_checkpoint(cas: bool = False, init_seed: int = 0, **config) -> tuple[dict, nn.Module]:
    """The payload of a digits run's best.pt holding an untrained small CNN (weights drawn after
    ``torch.manual_seed(init_seed)``), and that model: a run to evaluate or to damage, without any training.
    ``config``: make_config overrides."""
    torch.manual_seed(init_seed)
    model = build("small_cnn", num_classes=10, in_channels=1, cas=cas).eval()
    payload = {"config": make_config("digits", cas=cas, **config).to_dict(),
               "model_spec": model_spec("small_cnn", 10, 1, model), "model_state": model.state_dict(), "epoch": 1}
    return payload, model


def save_untrained_run(folder: Path, cas: bool = False, init_seed: int = 0, **config) -> Path:
    """A run folder whose best.pt is :func:`untrained_checkpoint`; returns the folder."""
    save_checkpoint(Path(folder) / "best.pt", untrained_checkpoint(cas, init_seed, **config)[0])
    return Path(folder)


def one_training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Loss and weight gradients (flattened, on the CPU, float32) of one train-mode forward and backward on a
    fixed batch, CAS masks from the true labels. Comparing settings on one step from the same weights isolates
    the kernels; comparing whole adversarial training runs would measure the machine's rounding, amplified."""
    model.train()
    model.zero_grad()
    out = model.forward_details(x, y)
    loss = torch.nn.functional.cross_entropy(out.logits.float(), y) + auxiliary_loss(
        [a.float() for a in out.aux_logits], y, beta=2.0)
    loss.backward()
    return loss.item(), torch.cat([p.grad.float().flatten().cpu() for p in model.parameters()])


class DDPLike(nn.Module):
    """What DistributedDataParallel looks like from outside: the model as ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


class Unregistered(nn.Module):
    """A wrapper that holds the model outside ``_modules`` (as some wrappers do via ``__dict__``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.__dict__["module"] = module

    def forward(self, x):
        return self.module(x)
