"""Device selection and seeding: the only process-wide state the library touches."""
from __future__ import annotations

import random

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
