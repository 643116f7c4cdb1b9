"""Small helpers shared by several test files (imported as ``from helpers import ...``)."""
from __future__ import annotations

import torch
from torch import nn

from cas_edu.cas import auxiliary_loss


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
