"""Device selection and seeding: the only process-wide state the library touches."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch


#: The device types cas_edu runs on (``"auto"`` picks among them).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def device_name(device: str | torch.device) -> str:
    """Check how a device is spelled, without asking whether this machine has it; return it normalised.

    Accepts ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (any case, surrounding spaces ignored) or a
    ``torch.device`` of those types. Raises ``ValueError`` for anything else (``"gpu"``, ``"cuda:x"``, ``"meta"``).
    """
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        text = device.strip().lower()
        if text == "auto":
            return "auto"
        try:
            parsed = torch.device(text)
        except (RuntimeError, ValueError):
            raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'.") from None
    else:
        raise ValueError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'mps', got {device!r}.")
    if parsed.type not in DEVICE_TYPES:
        raise ValueError(f"Unsupported device {device!r}: cas_edu runs on 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return str(parsed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` to run on: ``"auto"`` picks CUDA, then MPS, then CPU; anything else must exist here.

    Raises ``ValueError`` (one sentence) for an unknown spelling (:func:`device_name`), for ``cuda`` / ``mps``
    on a machine without it, and for a CUDA index this machine does not have (``cuda:7`` on one GPU).
    """
    name = device_name(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    parsed = torch.device(name)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {name!r} is not available: this machine has no usable CUDA GPU (or PyTorch "
                             "was built without CUDA); use 'auto' or 'cpu'.")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"Device {name!r} does not exist: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}.")
    elif parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"Device {name!r} is not available: MPS needs an Apple-silicon Mac with a PyTorch "
                             "built for it; use 'auto' or 'cpu'.")
    return parsed


def seed_everything(seed: int) -> None:
    """Seed Python's and PyTorch's generators (all devices) so a run can be repeated; ``seed`` is a whole number
    in [0, 2**63 - 1] (``ValueError`` otherwise, :func:`cas_edu.validation.check_seed`)."""
    from .validation import check_seed  # here, not at the top: validation imports cas, which imports runtime

    seed = check_seed(seed)
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
