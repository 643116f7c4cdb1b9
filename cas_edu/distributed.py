"""Multi-process training with DistributedDataParallel, set up from the variables ``torchrun`` exports.

Each process holds the whole (device-resident) training set and draws the same global batch from the
same seeded generator; :meth:`Group.shard` keeps this rank's share. Only the training forward goes
through DDP; attacks run on the unwrapped model in evaluation mode, so no weight gradients are
synchronised for them. Rank 0 writes checkpoints and logs.

This module owns the process group (:class:`Group`, :func:`from_environment`, :func:`world_size`) and the
DDP-wrapped training forward (:func:`training_forward`); it imports :mod:`cas_edu.models` only.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from .models import CASClassifier, ModelOutput


@dataclass
class Group:
    """This process's place among ``world_size`` training processes (rank 0 of 1 when not distributed).

    ``shard`` keeps this rank's examples of a global batch, ``global_mean_loss`` weights this rank's loss so DDP's
    gradient average is the global batch's, ``sum`` all-reduces, ``close`` leaves the process group.
    Raises: nothing of its own (``sum`` and ``close`` raise what ``torch.distributed`` raises).
    """

    rank: int = 0
    world_size: int = 1
    owns_process_group: bool = False
    ddp_module: nn.Module | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's examples of a global batch: every ``world_size``-th one, starting at ``rank`` (shard sizes
        differ by at most one; :func:`cas_edu.training.epoch_batches` merges a short last global batch that would
        leave some rank a single example, which a train-mode BatchNorm cannot normalise, into the one before)."""
        return batch[self.rank::self.world_size] if self.is_distributed else batch

    def global_mean_loss(self, loss: torch.Tensor, shard_size: int, batch_size: int) -> torch.Tensor:
        """Weight this rank's mean loss by its shard's share, so that DDP's average of the ranks' gradients
        is the gradient of the global batch's mean loss, also when the shards differ in size."""
        return loss * (shard_size * self.world_size / batch_size) if self.is_distributed else loss

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over all ranks (unchanged when not distributed)."""
        if self.is_distributed:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def close(self, wait_for_others: bool = True) -> None:
        """Leave the process group we joined; after a failure without waiting for the other ranks, which may
        be blocked in a collective (torchrun then stops them)."""
        if self.ddp_module is not None:  # DDP holds the process group: free it now, not at interpreter exit
            self.ddp_module = None
            gc.collect()
        if self.owns_process_group and dist.is_initialized():
            if wait_for_others:
                dist.barrier()
            dist.destroy_process_group()


def world_size() -> int:
    """How many training processes there are: the initialised process group's size, else ``torchrun``'s
    ``WORLD_SIZE`` (1 without either); known before :func:`from_environment` joins the group.

    Raises: ``ValueError`` when ``WORLD_SIZE`` is set but is not an integer.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def from_environment(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE, RANK, LOCAL_RANK) and pick this
    rank's device: ``cuda:LOCAL_RANK`` on GPUs (NCCL), the CPU otherwise (gloo).

    Returns ``(Group(), device)`` unchanged when ``WORLD_SIZE`` is 1 or unset.
    Raises: ``ValueError`` for a device other than CUDA or the CPU when distributed, or for a ``WORLD_SIZE`` /
    ``LOCAL_RANK`` that is not an integer; what ``torch.distributed.init_process_group`` raises.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Group(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"Distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device.type}.")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Group(rank=dist.get_rank(), world_size=dist.get_world_size(), owns_process_group=owns), device


class _DetailsForward(nn.Module):
    """``forward_details`` as a module forward returning a tuple of tensors, which DDP can wrap."""

    def __init__(self, model: CASClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_details(x, y)
        return (out.logits, *out.aux_logits)


def training_forward(model: CASClassifier, group: Group, device: torch.device) -> Callable[..., ModelOutput]:
    """The forward used for the training loss: ``model.forward_details`` itself, or through DDP when
    distributed (on GPUs BatchNorm is synchronised, so N processes normalise over the same global batch
    as one; gloo on the CPU has no synchronised BatchNorm, so there each process normalises its shard).

    The returned callable takes ``(x, y)`` and returns a :class:`~cas_edu.models.ModelOutput` (logits and
    auxiliary logits; no activations when distributed). On GPUs ``model``'s BatchNorm layers are converted in place.
    Raises: nothing of its own (what DDP raises for a model it cannot wrap).
    """
    if not group.is_distributed:
        return model.forward_details
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    wrapped = nn.parallel.DistributedDataParallel(
        _DetailsForward(model), device_ids=[device.index] if device.type == "cuda" else None)
    group.ddp_module = wrapped

    def forward(x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        logits, *aux = group.ddp_module(x, y)
        return ModelOutput(logits=logits, aux_logits=aux)

    return forward
