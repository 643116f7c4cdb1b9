"""The public boundary: the one check of the images, labels, batch sizes and seeds that every public function
takes, and autograd switched on for attacks whatever the caller's grad mode.

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
statistics, the explorers and the training accuracies use it too. The facts it asks of the model (device,
dtype, number of classes) and the model-state half of the boundary (:func:`cas_edu.models.eval_mode`,
:func:`cas_edu.models.refuse_inference_parameters`) live in :mod:`cas_edu.models`; :func:`gradients_on` and
:func:`autograd_ready` stay here.

Imports: :mod:`cas_edu.models` (and through it :mod:`cas_edu.cas`, :mod:`cas_edu.runtime`); everything above
(attacks, evaluation, training, activations, the CLI) imports from here.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from numbers import Integral
from typing import Iterator

import torch
from torch import nn

from .models import model_device, model_dtype, num_classes
from .models import eval_mode, refuse_inference_parameters  # deprecated alias (moved to cas_edu.models), kept for one release

#: Pointer used in error messages and docstrings.
RULE = "see cas_edu.validation for the input rule"

#: Largest seed accepted anywhere (training, evaluation, the command line): the int64 maximum, which
#: ``torch.manual_seed`` and ``torch.Generator.manual_seed`` take and a checkpoint stores exactly.
MAX_SEED = 2**63 - 1


def check_whole_number(value: int, name: str, minimum: int = 0, maximum: int | None = None, what: str = "") -> int:
    """``value`` as a Python ``int`` from ``minimum`` to ``maximum`` (no upper bound when None); a Python or numpy
    integer is accepted, with ``what`` (e.g. ``" (examples per batch)"``) after the rule in the message.

    Raises: ``ValueError`` naming ``name`` for anything else (bool, float, tensor, text) or a value out of range.
    """
    rule = f"a whole number of at least {minimum}" if maximum is None else \
        f"a whole number from {minimum} to {'2**63 - 1' if maximum == MAX_SEED else maximum}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be {rule}{what}, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {rule}{what}, got {int(value)}.")
    return int(value)


def check_batch_size(batch_size: int, name: str = "batch_size") -> int:
    """``batch_size`` as a Python ``int``: a whole number of at least 1 (:func:`check_whole_number`; bool and
    float are refused). Every public function that takes a batch size calls it.

    Raises: ``ValueError`` naming ``name`` for anything but a whole number ≥ 1.
    """
    return check_whole_number(batch_size, name, 1, what=" (examples per batch)")


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` as a Python ``int`` in [0, :data:`MAX_SEED`] (:func:`check_whole_number`); every public function
    that takes a seed calls it, so a seed torch cannot take is refused before any work.

    Raises: ``ValueError`` naming ``name`` for anything but a whole number in [0, 2**63 − 1].
    """
    return check_whole_number(seed, name, 0, MAX_SEED)


def _refuse_meta(t: torch.Tensor, name: str) -> None:
    """``ValueError`` for a tensor on the ``meta`` device (a shape without values: nothing to check or attack)."""
    if t.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no values; create or load it on a "
                         "real device (cpu, cuda, mps).")


@contextmanager
def gradients_on() -> Iterator[None]:
    """Within the block autograd records, also when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()``; tensors made inside ``inference_mode`` must pass :func:`autograd_ready`.

    Raises: nothing of its own; errors inside the block propagate, the caller's grad mode restored.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_ready(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a normal copy of it when it is an inference tensor (call inside :func:`gradients_on`).

    Shape: any; the result has ``t``'s shape, dtype and device (None stays None).
    Raises: nothing of its own.
    """
    return t.clone() if t is not None and t.is_inference() else t


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_images(x: torch.Tensor, dtype: torch.dtype | None = None, name: str = "x") -> torch.Tensor:
    """``x`` checked by the input rule (module docstring) and cast to ``dtype`` (kept when None).

    Shape: x (N, C, H, W) (at least 2 dimensions) float in [0, 1]; returns the same shape in ``dtype``.
    Raises: ``ValueError`` naming ``name`` for a non-tensor, a tensor on the meta device, a non-floating dtype,
    fewer than 2 dimensions, NaN or infinite values, or values outside [0, 1].
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
    bound is not checked when None), returned as int64.

    Shape: y (n,) of any integer dtype; returns (n,) int64 on y's device.
    Raises: ``ValueError`` naming ``name`` for a non-tensor, a tensor on the meta device, another shape, a bool,
    floating-point or complex dtype, or a label outside [0, classes).
    """
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
    y int64 in [0, K) on x's device. ``y`` may be None only when ``labels_required`` is False.

    K comes from :func:`cas_edu.models.num_classes` (one forward of ``x[:1]`` when the model does not say).
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer; returns x (N, C, H, W) in the model's dtype and
    y (N,) int64 (or None).
    Raises: ``ValueError`` for a model on the meta device, images or labels that break the input rule, or
    missing labels when ``labels_required``.
    """
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
           "check_seed", "check_whole_number", "gradients_on"]
