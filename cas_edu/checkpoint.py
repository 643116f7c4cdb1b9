"""Checkpoints: plain dicts of tensors and config, written atomically, read with ``weights_only=True``.

This module owns the checkpoint format (:data:`FORMAT`), atomic writes of checkpoints and JSON files
(:func:`save_checkpoint`, :func:`write_json`), safe reading (:func:`read_checkpoint`, :func:`load_weights`)
and rebuilding a model from what a checkpoint records (:func:`model_from_payload`, :func:`load_checkpoint`).
It imports :mod:`cas_edu.models` and :mod:`cas_edu.runtime` (and :mod:`cas_edu.presets` lazily, for the config).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import MODELS, CASClassifier, build
from .runtime import resolve_device

FORMAT = "cas_edu.checkpoint/1"
#: Suffix of the temporary files the atomic writer names ``.<name>.<random>.tmp``.
TMP_SUFFIX = ".tmp"


class CheckpointWriteError(OSError):
    """A checkpoint or JSON file could not be written (disk full, no permission, a folder in the way): nothing
    was replaced -- the previous file at that path, if any, is intact -- and no temporary file is left.

    Raises: nothing of its own (it is what :func:`save_checkpoint` and :func:`write_json` raise).
    """


def _one_line(err: BaseException) -> str:
    """Why a write failed, in a few words: the OS error's text, else the exception's message on one line."""
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    text = " ".join(str(err).split()) or type(err).__name__
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"the write failed, the disk may be full: {text}" if isinstance(err, RuntimeError) else text


def _publish(tmp: str, path: Path, replace: bool) -> None:
    """Move the finished temporary file to ``path``: a rename, or with ``replace=False`` a hard link that fails
    with ``FileExistsError`` when ``path`` exists (where links are unsupported: a check, then the rename)."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except (OSError, AttributeError) as err:
        if isinstance(err, OSError) and err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                                          errno.ENOSYS, errno.EMLINK, errno.EXDEV):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
    else:
        with contextlib.suppress(OSError):  # published: a leftover name for the same data is harmless
            os.unlink(tmp)


def _atomic_write(path: Path, write, replace: bool = True) -> None:
    """Write ``path`` through ``.<name>.<random>.tmp`` in the same folder, fsync it, then rename it into place.

    A failure (OSError, or the RuntimeError ``torch.save`` raises when the disk fills) leaves the previous
    file untouched and removes the temporary file, and is raised as :class:`CheckpointWriteError`; an
    interruption (KeyboardInterrupt) also removes it and propagates. With ``replace=False`` an existing
    ``path`` raises ``FileExistsError`` and is never replaced.
    """
    existed, tmp = False, None
    try:
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path, replace)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, FileExistsError) and not replace and tmp is not None:
            raise
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, CheckpointWriteError):
            state = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
            raise CheckpointWriteError(f"could not write {path} ({_one_line(err)}); {state}.") from err
        raise


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file.

    Raises: :class:`CheckpointWriteError` (one sentence; the previous file is intact) when the write fails.
    """
    _atomic_write(Path(path), lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def write_json(path: str | os.PathLike, data: Any, *, replace: bool = True) -> None:
    """Write JSON atomically (as :func:`save_checkpoint`); with ``replace=False`` an existing ``path`` is never
    replaced.

    Raises: ``FileExistsError`` when ``replace=False`` and ``path`` exists; :class:`CheckpointWriteError` when the
    write fails; ``TypeError`` for data JSON cannot hold.
    """
    _atomic_write(Path(path), lambda handle: handle.write(json.dumps(data, indent=2).encode()), replace=replace)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file a run folder is loaded from: ``best.pt``, else ``checkpoint.pt``; a file path (or a folder
    holding neither) is returned unchanged.

    Raises: nothing of its own.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (a run folder: :func:`checkpoint_file`); refuse files that need arbitrary
    pickled code.

    Raises: ``FileNotFoundError`` when there is no checkpoint; ``ValueError`` for a file that needs pickled code,
    is not a readable PyTorch checkpoint, or has no cas_edu format tag.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; train one with `python -m cas_edu train --out DIR`.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise ValueError(
                f"Refusing to load {path}: it needs arbitrary pickled code, which could run anything. "
                "Only load checkpoints written by cas_edu (tensors and plain config)."
            ) from err
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format).") from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err.__class__.__name__}).") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cas_edu checkpoint (no '{FORMAT}' format tag).")
    return payload


#: Largest head and input a checkpoint's ``model_spec`` may ask for; anything bigger is damage, not a model.
_MAX_SPEC_CLASSES, _MAX_SPEC_CHANNELS = 100_000, 1024


def _shown(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _dtype_problem(saved: torch.Tensor, wanted: torch.Tensor) -> str | None:
    """Why a saved tensor cannot be loaded into a model tensor of ``wanted``'s kind, or None when it can:
    floating-point weights (any width: float16 weights load into a float32 model) for floating-point parameters
    and buffers; a real number (integer, or floating-point as a model cast to half precision stores it) for
    integer buffers such as BatchNorm's step count. Complex and bool tensors fit neither; integer weights are
    refused rather than silently cast."""
    kind = str(saved.dtype).replace("torch.", "")
    if saved.is_complex() or saved.dtype == torch.bool:
        return f"{kind}, which no model tensor can hold"
    if wanted.is_floating_point() and not saved.is_floating_point():
        return f"{kind} where floating-point weights belong"
    return None


def load_weights(model: torch.nn.Module, state: Any, source: str | os.PathLike = "checkpoint") -> None:
    """``model.load_state_dict(state)`` (strict), but a state that does not fit ``model`` raises ``ValueError``
    with one line naming the first mismatches and ``source``, instead of PyTorch's multi-line error or a silent
    cast: missing or unexpected keys, wrong shapes, not a dict of tensors, a tensor of the wrong kind (complex,
    integer or bool weights for floating-point parameters; :func:`_dtype_problem`), or NaN or infinite values
    (a model with them is damaged, not trained; the first such key is named).

    Raises: ``ValueError`` (one line, naming ``source``) for any of those mismatches; ``model`` is unchanged then.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{source}: model_state is not a dict of named tensors; the checkpoint is damaged.")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        problems = ([f"{len(missing)} missing ({_shown(missing)})"] if missing else []) \
            + ([f"{len(unexpected)} unexpected ({_shown(unexpected)})"] if unexpected else []) \
            + ([f"{len(wrong)} of another shape (checkpoint vs model: {_shown(wrong)})"] if wrong else [])
        raise ValueError(f"{source}: the weights do not fit the model it records ({type(model).__name__}): "
                         f"{'; '.join(problems)}. It was written by another cas_edu version or for another model; "
                         "retrain it, or load it with the code that wrote it.")
    kinds = [f"{k} is {why}" for k, v in expected.items() if (why := _dtype_problem(state[k], v)) is not None]
    if kinds:
        raise ValueError(f"{source}: {_shown(kinds, 2)}; the checkpoint is damaged or was not written by cas_edu.")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{source}: the weights hold NaN or infinite values (first in {key}); the checkpoint is "
                             "damaged, or training diverged before it was saved: use an earlier checkpoint or "
                             "retrain.")
    model.load_state_dict(state)


def recorded_config(payload: dict[str, Any], source: str | os.PathLike = "checkpoint"):
    """The :class:`~cas_edu.presets.TrainConfig` a checkpoint payload records under ``config``.

    Raises: ``ValueError`` naming ``source`` when there is none (never silent defaults: the evaluation budget, the
    dataset and its split all come from it) or when it is not a valid config.
    """
    from .presets import TrainConfig

    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"{source} has no recorded training config (the 'config' entry cas_edu's train writes); "
                         "it was not written by cas_edu's train, or it is damaged.")
    try:
        return TrainConfig.from_dict(payload["config"])
    except ValueError as err:
        raise ValueError(f"{source}: its recorded training config is invalid ({err}); the checkpoint is damaged "
                         "or from another version.") from None


def model_from_payload(payload: dict[str, Any], source: str | os.PathLike = "checkpoint") -> CASClassifier:
    """Rebuild the model a checkpoint describes (``model_spec``) and load its weights (``model_state``).

    Raises: ``ValueError`` with one line naming ``source`` when the spec is missing or nonsense, or when the
    weights do not fit the model it describes (:func:`load_weights`).
    """
    spec = payload.get("model_spec") if isinstance(payload, dict) else None
    if spec is None:
        raise ValueError(f"{source} has no model_spec (the model description cas_edu writes); it was not written "
                         "by cas_edu's train, or it is damaged.")
    if not isinstance(spec, dict):
        raise ValueError(f"{source}: model_spec must be a dict describing the model, got {type(spec).__name__}; "
                         "the checkpoint is damaged.")
    name, num_classes, in_channels, cas_layers = (spec.get(k) for k in ("name", "num_classes", "in_channels",
                                                                          "cas_layers"))
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"{source}: model_spec names an unknown model {name!r} (this version builds "
                         f"{', '.join(MODELS)}); the checkpoint is damaged or from another version.")
    for key, value, most in (("num_classes", num_classes, _MAX_SPEC_CLASSES), ("in_channels", in_channels,
                                                                              _MAX_SPEC_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError(f"{source}: model_spec {key} must be a whole number from 1 to {most}, got {value!r}; "
                             "the checkpoint is damaged.")
    if cas_layers is None:
        cas_layers = []
    if not isinstance(cas_layers, list) or not all(isinstance(layer, str) for layer in cas_layers):
        raise ValueError(f"{source}: model_spec cas_layers must be a list of layer names, got {cas_layers!r}.")
    try:
        model = build(name, num_classes=num_classes, in_channels=in_channels, cas=bool(cas_layers),
                      cas_layers=cas_layers or None)
    except ValueError as err:
        raise ValueError(f"{source}: model_spec does not describe a model this version can build ({err})") from None
    load_weights(model, payload.get("model_state"), source)
    return model


def model_spec(name: str, num_classes: int, in_channels: int, model: CASClassifier) -> dict[str, Any]:
    """The plain description ``model_from_payload`` needs to rebuild ``model``.

    Raises: nothing of its own.
    """
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels, "cas_layers": model.cas_layers}


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> CASClassifier:
    """Load a trained model (a run folder or a ``.pt`` file) in eval mode; ``forward(x)`` returns logits.

    Raises: ``FileNotFoundError`` when there is no checkpoint, ``ValueError`` (one line) for a file that is not a
    cas_edu checkpoint, needs pickled code, or whose weights do not fit its recorded model, or for a device this
    machine does not have.
    """
    device = resolve_device(device)
    model = model_from_payload(read_checkpoint(path), source=checkpoint_file(path))
    return model.to(device).eval()
