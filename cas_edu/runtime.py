"""The process-wide state the library touches, in one place: devices (:func:`resolve_device`), seeding
(:func:`seed_everything`, the forked :func:`seeded` block, :func:`rng_state` / :func:`restore_rng` for resume),
bf16 autocast and channels-last, module flags (:func:`flag_set`), ``torch.compile`` (:func:`compile_blocks`)
whether to draw progress bars (:func:`show_progress`) and how (:func:`progress_bar`). Imports torch only (tqdm
when a bar is made)."""
from __future__ import annotations

import os
import random
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import torch


#: The device types cas_edu runs on (``"auto"`` picks among them).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def device_name(device: str | torch.device) -> str:
    """Check how a device is spelled, without asking whether this machine has it; return it normalised.

    Accepts ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (any case, surrounding spaces ignored) or a
    ``torch.device`` of those types.

    Raises: ValueError for anything else (``"gpu"``, ``"cuda:x"``, ``"meta"``).
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

    Raises: ValueError (one sentence) for an unknown spelling (:func:`device_name`), for ``cuda`` / ``mps``
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
    """Seed Python's and PyTorch's generators (all devices) so a run can be repeated.

    Raises: ValueError unless ``seed`` is a whole number in [0, 2**63 - 1] (:func:`cas_edu.validation.check_seed`).
    """
    from .validation import check_seed  # here, not at the top: validation imports cas, which imports runtime

    seed = check_seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int, device: str | torch.device | None = None) -> Iterator[None]:
    """Within the block, PyTorch draws random numbers from ``torch.manual_seed(seed)``; afterwards the caller's
    generators are exactly as they were.

    The CPU generator is always forked; the generator of ``device`` too when it is a CUDA device (the random
    starts of attacks on a GPU draw from it). Python's ``random`` and NumPy are not touched. ``seed`` is passed
    to ``torch.manual_seed`` as given: callers check it first (:func:`cas_edu.validation.check_seed`).

    Raises: nothing of its own (``torch.manual_seed`` rejects a seed outside its range with RuntimeError).
    """
    device = torch.device(device) if device is not None else None
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def rng_state(generator: torch.Generator) -> dict:
    """Everything a resumed run needs to draw the same random numbers: PyTorch's CPU generator (and every CUDA
    generator when CUDA is available), Python's ``random`` and ``generator`` (the trainer's data generator).

    Stored in ``checkpoint.pt`` as plain tensors and tuples; :func:`restore_rng` puts it back.
    Raises: nothing of its own.
    """
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    """Put back the generators saved by :func:`rng_state` (``generator`` is set in place); the CUDA states are
    restored when both the saved state and this machine have them.

    Raises: KeyError for a ``state`` that lacks the CPU, Python or data entry; PyTorch's RuntimeError for a
    state of another generator kind.
    """
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: ``progress`` when given, else when someone watches (stderr is a terminal,
    or the code runs in a Jupyter kernel).

    Raises: nothing of its own.
    """
    if progress is not None:
        return progress
    return sys.stderr.isatty() or "ipykernel" in sys.modules


#: The environment variable that chooses how :func:`progress_bar` draws: unset or ``auto`` (``tqdm.auto``: a widget
#: in Jupyter, text in a terminal) or ``text`` (plain-text tqdm, set by the notebook build so that the saved output
#: of a cell is the bar's final line; see nbconvert_execute.py).
PROGRESS_ENV = "CAS_EDU_PROGRESS"
PROGRESS_STYLES = ("auto", "text")


def progress_style() -> str:
    """The progress style the environment variable ``CAS_EDU_PROGRESS`` asks for: ``auto`` (also when unset or
    empty) or ``text``. Checked up front by the CLI and :func:`cas_edu.training.train`, so that a bad value is
    refused before any file is written (also when no bar is drawn: a bad setting is bad input all the same).

    Raises: ValueError when ``CAS_EDU_PROGRESS`` is set to anything but ``auto`` or ``text``.
    """
    style = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
    if style not in PROGRESS_STYLES:
        raise ValueError(f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r} is not a progress style; set it to "
                         f"{' or '.join(map(repr, PROGRESS_STYLES))}, or unset it.")
    return style


def progress_bar(iterable: Iterable | None = None, **options: Any) -> Any:
    """A tqdm progress bar over ``iterable`` (``options`` go to tqdm: ``desc``, ``total``, ``disable``, ...):
    ``tqdm.auto`` by default, plain-text ``tqdm`` when the environment variable ``CAS_EDU_PROGRESS`` is ``text``
    (:func:`progress_style`).

    Raises: ValueError when ``CAS_EDU_PROGRESS`` is set to anything but ``auto`` or ``text``.
    """
    if progress_style() == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, **options)


def compile_blocks(model: torch.nn.Module) -> None:
    """``torch.compile`` each block's forward in place (the model's ``stem``, every module of ``blocks`` and
    ``fc``, as :class:`cas_edu.models.CASClassifier` names them); CAS modules, losses and the attacks' input
    gradients stay outside the compiled regions (a block is recompiled once per train/eval mode).

    Raises: AttributeError for a model without ``blocks`` and ``fc``.
    """
    for module in [getattr(model, "stem", None), *model.blocks.values(), model.fc]:
        if module is not None:
            module.compile()


#: ``amp``: bf16 autocast never ("off", the default: fp32 as the official code), everywhere ("bf16"), on
#: CUDA only ("auto"). bf16 is asked for, never implied: it changes the training attack (README, "GPU training").
AMP_MODES = ("auto", "bf16", "off")
DEFAULT_AMP = "off"
#: ``channels_last``: on CUDA only ("auto"), always ("on"), never ("off").
CHANNELS_LAST_MODES = ("auto", "on", "off")


def uses_bf16(amp: str, device: torch.device) -> bool:
    """Whether the ``amp`` setting (:data:`AMP_MODES`) turns bf16 autocast on for ``device``.

    Raises: nothing of its own (an unknown setting answers False; :class:`cas_edu.presets.TrainConfig` checks it).
    """
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(amp: str, device: torch.device) -> torch.autocast:
    """The autocast context for ``amp`` on ``device`` (disabled unless bf16 applies, :func:`uses_bf16`).

    Raises: nothing of its own.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(amp, device))


def memory_format(channels_last: str, device: torch.device) -> torch.memory_format:
    """``torch.channels_last`` when the ``channels_last`` setting (:data:`CHANNELS_LAST_MODES`) asks for it on
    this device, else ``torch.contiguous_format``.

    Raises: nothing of its own.
    """
    use = channels_last == "on" or (channels_last == "auto" and device.type == "cuda")
    return torch.channels_last if use else torch.contiguous_format


@contextmanager
def flag_set(modules: Sequence[torch.nn.Module], name: str, value: bool) -> Iterator[None]:
    """Within the block, attribute ``name`` of every module in ``modules`` is ``value``; each module's previous
    value is restored on exit, also after an error.

    Raises: AttributeError when a module has no attribute ``name`` (before anything is changed).
    """
    previous = [getattr(m, name) for m in modules]
    for m in modules:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, was in zip(modules, previous):
            setattr(m, name, was)
