"""The public boundary: the one check of the images and labels that every public function takes, and the
caller's model run in evaluation mode with gradients on, its state left as it was found.

**The input rule** (stated here once; the README's "Failure modes" and the public docstrings refer to it):

* images ``x``: a ``torch.Tensor`` shaped N×C×H×W (at least N×D) of finite values in [0, 1] (pixel units).
  Any floating-point dtype (float16, bfloat16, float32, float64) is accepted and cast to the model's dtype
  (that of its first floating-point parameter or buffer); uint8, other integer, bool and complex images are
  refused with their dtype named.
* labels ``y``: a 1-D ``torch.Tensor`` of N class indices in [0, K), K the model's number of classes.
  Integer labels of any width (int8 … int64, uint8) are cast to int64 after the range check; bool,
  floating-point and complex labels are refused with their dtype named.

* tensors on the ``meta`` device (shapes without values), images, labels or the model's parameters, are refused.
* a ``batch_size`` is a whole number ≥ 1 (:func:`check_batch_size`), a ``seed`` a whole number in
  [0, 2**63 − 1] (:func:`check_seed`); Python or numpy integers, never bool or float.

Anything else raises ``ValueError`` with a sentence that names the argument and what to do. Attacks return
adversarial images in the dtype the caller passed (within ε of the caller's ``x`` in that dtype).

:func:`check_inputs` lives here, not in :mod:`cas_edu.attacks`, because evaluation, the activation and channel
statistics, the explorers and the training accuracies use it too; :func:`eval_mode` and :func:`gradients_on`
are the model-state half of the same boundary (re-exported by :mod:`cas_edu.attacks`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from numbers import Integral
from typing import Iterator

import torch
from torch import nn

from .cas import modules_through_wrappers, unwrap_parallel

#: Pointer used in error messages and docstrings.
RULE = "see cas_edu.validation for the input rule"

#: Largest seed accepted anywhere (training, evaluation, the command line): the int64 maximum, which
#: ``torch.manual_seed`` and ``torch.Generator.manual_seed`` take and a checkpoint stores exactly.
MAX_SEED = 2**63 - 1


def check_whole_number(value: int, name: str, minimum: int = 0, maximum: int | None = None, what: str = "") -> int:
    """``value`` as a Python ``int`` from ``minimum`` to ``maximum`` (no upper bound when None); a Python or numpy
    integer is accepted, anything else (bool, float, tensor, text) raises ``ValueError`` naming ``name``, with
    ``what`` (e.g. ``" (examples per batch)"``) after the rule."""
    rule = f"a whole number of at least {minimum}" if maximum is None else \
        f"a whole number from {minimum} to {'2**63 - 1' if maximum == MAX_SEED else maximum}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be {rule}{what}, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {rule}{what}, got {int(value)}.")
    return int(value)


def check_batch_size(batch_size: int, name: str = "batch_size") -> int:
    """``batch_size`` as a Python ``int``: a whole number of at least 1 (:func:`check_whole_number`; bool and
    float are refused). Every public function that takes a batch size calls it."""
    return check_whole_number(batch_size, name, 1, what=" (examples per batch)")


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` as a Python ``int`` in [0, :data:`MAX_SEED`] (:func:`check_whole_number`); every public function
    that takes a seed calls it, so a seed torch cannot take is refused before any work."""
    return check_whole_number(seed, name, 0, MAX_SEED)


def _refuse_meta(t: torch.Tensor, name: str) -> None:
    """``ValueError`` for a tensor on the ``meta`` device (a shape without values: nothing to check or attack)."""
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no values; create or load it on a "
                         "real device (cpu, cuda, mps).")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and every module inside it (also inside wrappers, :func:`cas_edu.cas.modules_through_wrappers`)
    in evaluation mode for the block, then give *each* module back its own previous mode, also after an error.

    Restoring each module's flag (not ``model.train(was_training)``, which would overwrite every submodule)
    keeps set-ups such as frozen BatchNorm layers (eval) inside a model that trains.
    """
    modules = modules_through_wrappers(model)
    modes = [(m, m.training) for m in modules]
    try:
        model.eval()
        for m in modules:  # modules held outside _modules (e.g. an unregistered .module) are not reached by eval()
            if m.training:
                m.eval()
        yield model
    finally:
        for m, was in modes:
            m.training = was


@contextmanager
def gradients_on() -> Iterator[None]:
    """Within the block autograd records, also when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()``; tensors made inside ``inference_mode`` must pass :func:`autograd_ready`."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_ready(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a normal copy of it when it is an inference tensor (call inside :func:`gradients_on`)."""
    return t.clone() if t is not None and t.is_inference() else t


def refuse_inference_parameters(model: nn.Module) -> None:
    """Raise ``ValueError`` when ``model``'s parameters were made inside ``torch.inference_mode()``: no gradient
    can flow through them, so no gradient attack can run on it."""
    if any(p.is_inference() for m in modules_through_wrappers(model) for p in m.parameters(recurse=False)):
        raise ValueError("the model's parameters were created or loaded inside torch.inference_mode(), so no input "
                         "gradient can flow through them; build or load the model outside inference_mode "
                         "(calling the attack inside it is fine).")


def _floating_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    for m in modules_through_wrappers(model):
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            if t.is_floating_point():
                yield t


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (or buffer); None when it has none."""
    return next((t.dtype for t in _floating_tensors(model)), None)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (also inside wrappers); the CPU when it has none."""
    for m in modules_through_wrappers(model):
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            return t.device
    return torch.device("cpu")


def num_classes(model: nn.Module, x: torch.Tensor | None = None) -> int | None:
    """K, the number of classes of ``model``: its ``num_classes`` (also inside wrappers), else the width of the
    logits of one forward of ``x[:1]`` (eval mode, no gradients); None when neither is available."""
    for m in modules_through_wrappers(unwrap_parallel(model)):
        k = m.__dict__.get("num_classes")
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
    if x is None or len(x) == 0:
        return None
    dtype = model_dtype(model)
    with torch.no_grad(), eval_mode(model):
        logits = model(x[:1].to(model_device(model), dtype or x.dtype))
    return int(logits.shape[-1]) if isinstance(logits, torch.Tensor) and logits.dim() >= 1 else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_images(x: torch.Tensor, dtype: torch.dtype | None = None, name: str = "x") -> torch.Tensor:
    """``x`` checked by the input rule (module docstring) and cast to ``dtype`` (kept when None).

    Raises ``ValueError`` for a non-tensor, a non-floating dtype, fewer than 2 dimensions, NaN or infinite
    values, or values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of images shaped N×C×H×W, got {type(x).__name__}; "
                         "convert it with torch.as_tensor(...).")
    _refuse_meta(x, name)
    if not x.is_floating_point():
        hint = " (divide uint8 images by 255)" if x.dtype == torch.uint8 else ""
        raise ValueError(f"{name} has dtype {_dtype_name(x.dtype)}; images must be floating point with values in "
                         f"[0, 1]{hint} ({RULE}).")
    if x.dim() < 2:
        raise ValueError(f"{name} must be a floating-point tensor of images shaped N×C×H×W, got shape {tuple(x.shape)}.")
    if x.numel() and bool((~((x >= 0) & (x <= 1))).any()):  # one pass, one device sync; NaN fails both tests
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            example = int((~finite).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"{name} holds {bad} NaN or infinite value(s) (first in example {example}); images must "
                             "be finite values in [0, 1].")
        low, high = float(x.min()), float(x.max())
        raise ValueError(f"{name} must hold images scaled to [0, 1], got values from {low!r} to {high!r}; "
                         f"{_range_hint(low, high)}.")
    return x if dtype is None or x.dtype == dtype else x.to(dtype)


def _range_hint(low: float, high: float) -> str:
    """What to do about images outside [0, 1] with extremes ``low`` and ``high`` (written with ``repr``, so that
    1.0000001 is not printed as 1)."""
    if low >= -0.01 and high <= 1.01:
        return "clamp them into range with x.clamp(0, 1) (rounding can push a value just past 0 or 1)"
    if low >= 0 and high > 1.5:
        return "images in 0..255 must be divided by 255"
    return ("these look normalised or shifted (e.g. by a mean and std); pass images in [0, 1] and put any "
            "normalisation inside the model")


def check_labels(y: torch.Tensor, n: int, classes: int | None, name: str = "y") -> torch.Tensor:
    """``y`` checked by the input rule (module docstring) for ``n`` examples and ``classes`` classes (the upper
    bound is not checked when None), returned as int64. Raises ``ValueError`` naming the shape, dtype or range."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer labels of shape ({n},), got {type(y).__name__}; "
                         "convert it with torch.as_tensor(...).")
    _refuse_meta(y, name)
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be an integer label tensor of shape ({n},), got {tuple(y.shape)}.")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must be an integer label tensor (class indices), got dtype {_dtype_name(y.dtype)} "
                         f"({RULE}).")
    if y.numel() and bool(((y < 0) | (y >= (classes if classes is not None else math.inf))).any()):
        where = f"[0, {classes})" if classes is not None else "[0, K)"
        raise ValueError(f"{name} must hold class indices in {where} for this model, got labels from {int(y.min())} "
                         f"to {int(y.max())}.")
    return y if y.dtype == torch.int64 else y.to(torch.int64)


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                 labels_required: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` checked and cast by the input rule (module docstring) for ``model``: x in the model's dtype,
    y int64 in [0, K) on x's device. ``y`` may be None only when ``labels_required`` is False. Raises
    ``ValueError``."""
    if model_device(model).type == "meta":
        raise ValueError("the model's parameters are on the meta device (shapes without values); load real "
                         "weights first, e.g. model.to_empty(device='cpu') then load_state_dict(...).")
    x = check_images(x, model_dtype(model))
    if y is None:
        if labels_required:
            raise ValueError(f"the true labels y are missing; pass an integer tensor of shape ({x.shape[0]},).")
        return x, None
    return x, check_labels(y, x.shape[0], num_classes(model, x)).to(x.device)


__all__ = ["MAX_SEED", "RULE", "autograd_ready", "check_batch_size", "check_images", "check_inputs", "check_labels",
           "check_seed", "check_whole_number", "eval_mode", "gradients_on",
           "model_device", "model_dtype", "num_classes", "refuse_inference_parameters"]
