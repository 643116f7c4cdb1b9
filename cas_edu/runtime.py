"""Device selection and seeding: the only process-wide state the library touches."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA, then MPS, then CPU; pass anything else through ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'.") from err


def seed_everything(seed: int) -> None:
    """Seed Python's and PyTorch's generators (all devices) so a run can be repeated."""
    random.seed(seed)
    torch.manual_seed(seed)


#: ``amp``: bf16 autocast never ("off", the default: fp32 as the official code), everywhere ("bf16"), on
#: CUDA only ("auto"). bf16 is asked for, never implied: it changes the training attack (README, "GPU training").
AMP_MODES = ("auto", "bf16", "off")
DEFAULT_AMP = "off"
#: ``channels_last``: on CUDA only ("auto"), always ("on"), never ("off").
CHANNELS_LAST_MODES = ("auto", "on", "off")


def uses_bf16(amp: str, device: torch.device) -> bool:
    """Whether the ``amp`` setting turns bf16 autocast on for ``device``."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(amp: str, device: torch.device) -> torch.autocast:
    """The autocast context for ``amp`` on ``device`` (disabled unless bf16 applies)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(amp, device))


def memory_format(channels_last: str, device: torch.device) -> torch.memory_format:
    """``torch.channels_last`` when the setting asks for it on this device, else contiguous."""
    use = channels_last == "on" or (channels_last == "auto" and device.type == "cuda")
    return torch.channels_last if use else torch.contiguous_format


@contextmanager
def flag_set(modules: Sequence[torch.nn.Module], name: str, value: bool) -> Iterator[None]:
    """Within the block, attribute ``name`` of every module in ``modules`` is ``value``; each module's previous
    value is restored on exit, also after an error."""
    previous = [getattr(m, name) for m in modules]
    for m in modules:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, was in zip(modules, previous):
            setattr(m, name, was)
