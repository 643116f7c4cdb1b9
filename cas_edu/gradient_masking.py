r"""A toy defence that masks gradients on purpose, and the BPDA attack that sees through it.

:class:`InputQuantization` rounds every pixel to one of a few levels before the classifier sees it.
Rounding is piecewise constant, so the input gradient of the defended model is exactly zero almost
everywhere: PGD takes no step beyond its random start and reports a robust accuracy close to the
natural one, while the black-box Square attack, which never looks at gradients, finds adversarial
examples. That gap is the signature of gradient masking ("shattered gradients"), and
:func:`bpda` removes it: inside the block the quantiser's backward pass is the identity (Backward
Pass Differentiable Approximation, Athalye, Carlini & Wagner, ICML 2018, §4.1; input quantisation
is one of the defences they break), so PGD attacks the model behind it.

This is a lesson in how to *recognise* a broken evaluation, not a defence to use. The module owns the toy
defence (:class:`InputQuantization`, :func:`quantized_model`) and its BPDA switch (:func:`bpda`); it imports
only :mod:`cas_edu.cas` (the wrapper walk) and :mod:`cas_edu.runtime`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .cas import modules_through_wrappers
from .runtime import flag_set


class InputQuantization(nn.Module):
    r"""Round pixels in [0, 1] to ``levels`` evenly spaced values: :math:`\mathrm{round}(x (L-1)) / (L-1)`.

    Input and output are images of any shape with values in [0, 1] (pixel units). With ``bpda`` set,
    the forward values are the same but the backward pass is the identity (straight-through), so
    attacks see the gradient of the model behind the quantiser.

    Shape: forward takes x of any shape, values in [0, 1], and returns x's shape and dtype.
    Raises: ``ValueError`` when ``levels`` is not a whole number of at least 2.
    Source: input quantisation as a gradient-masking defence, Athalye, Carlini & Wagner 2018 (§4.1);
    the BPDA identity backward is theirs.
    """

    def __init__(self, levels: int = 2) -> None:
        super().__init__()
        if int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer of at least 2, got {levels}.")
        self.levels = int(levels)
        #: Use the identity as the backward pass (BPDA); see :func:`bpda`.
        self.bpda = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        quantized = torch.round(x * steps) / steps
        if self.bpda:
            return x + (quantized - x).detach()
        return quantized

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def quantized_model(model: nn.Module, levels: int = 2) -> nn.Sequential:
    """``model`` behind :class:`InputQuantization`: ``nn.Sequential(InputQuantization(levels), model)``.

    Attacks treat the result as a model (``forward(x)`` returns ``model``'s logits, N×K); its
    gradient is zero almost everywhere.

    Raises: ``ValueError`` when ``levels`` is not a whole number of at least 2.
    Source: Athalye, Carlini & Wagner 2018 (shattered gradients of input quantisation); this package's toy.
    """
    return nn.Sequential(InputQuantization(levels), model)


@contextmanager
def bpda(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every :class:`InputQuantization` inside ``model`` back-propagates as the identity.

    Forward outputs are unchanged; the previous setting is restored on exit, also after an error.

    Raises: ``ValueError`` when ``model`` holds no :class:`InputQuantization` (or is not an ``nn.Module``).
    Source: Athalye, Carlini & Wagner (ICML 2018), "Obfuscated gradients give a false sense of security", §4.1.
    """
    layers = [m for m in modules_through_wrappers(model) if isinstance(m, InputQuantization)]
    if not layers:
        raise ValueError("bpda needs a model with an InputQuantization layer; wrap it with quantized_model first.")
    with flag_set(layers, "bpda", True):
        yield model
