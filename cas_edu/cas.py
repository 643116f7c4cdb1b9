r"""The Channel-wise Activation Suppressing (CAS) module and its loss (Bai et al., ICLR 2021, arXiv 2103.08307).

This module owns :class:`CASModule`, its training loss (:func:`cas_loss`, :func:`auxiliary_loss`), the
straight-through backward pass (:func:`straight_through`) and the one lookup of CAS modules inside a model
(:func:`find_cas_modules`, through wrappers: :func:`modules_through_wrappers`, :func:`unwrap_parallel`).
It imports only :mod:`cas_edu.runtime`; :mod:`cas_edu.models` and everything above import from here.

Given a feature map :math:`f \in \mathbb{R}^{N\times C\times H\times W}` taken after a ReLU,
CAS pools it to :math:`\bar f \in \mathbb{R}^{N\times C}`, classifies it with an auxiliary
linear head :math:`p = W\bar f + b` and multiplies every channel of :math:`f` by the weight row
:math:`W_k` of one class :math:`k`: the true label during training, the auxiliary head's
prediction at evaluation. The weights are raw and signed, the bias never enters the mask,
exactly as in the official code.

The evaluation-time choice ``k = argmax`` is invisible to gradients, so a white-box attack sees
only part of the model (gradient masking). :func:`straight_through` switches every CAS module of
a model to a straight-through (BPDA) backward pass for attacks: the forward pass is unchanged, the
backward pass differentiates the softmax-weighted mask instead (Athalye, Carlini & Wagner, ICML
2018, "Obfuscated gradients give a false sense of security", §4.1; Tramèr et al., NeurIPS 2020,
"On adaptive attacks to adversarial example defenses"). :func:`find_cas_modules` finds the
modules also inside wrappers (``nn.Sequential``, DDP, ``torch.compile``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import flag_set

DEFAULT_CAS_BETA = 2.0


class CASModule(nn.Module):
    """Auxiliary classifier on pooled channels plus the class-weight channel mask it induces.

    ``forward(features, y)`` returns ``(masked features, auxiliary logits)``: the features (N, C, H, W) times the
    weight row of the true class (training) or of the auxiliary prediction (evaluation).
    Raises: ``ValueError`` when ``channels`` < 1 or ``num_classes`` < 2; ``forward`` raises ``ValueError`` for
    features not shaped (N, channels, H, W) and for training mode without labels.
    Source: arXiv 2103.08307 §4 (the CAS module); the official ``CASBlock`` (github.com/bymavis/CAS_ICLR2021,
    Standard_Adv_Training/models/resnet_cas.py): raw signed weights, no bias in the mask.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        if channels < 1 or num_classes < 2:
            raise ValueError(f"CASModule needs channels >= 1 and num_classes >= 2, got {channels}, {num_classes}.")
        self.classifier = nn.Linear(channels, num_classes)
        #: In evaluation mode, differentiate the soft mask in the backward pass (see :func:`straight_through`).
        self.straight_through = False

    def auxiliary_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Auxiliary logits from the globally average-pooled, unmasked features."""
        return self.classifier(features.mean(dim=(2, 3)))

    def mask_for(self, classes: torch.Tensor) -> torch.Tensor:
        """Channel masks (N×C): the auxiliary classifier's weight row of each class."""
        return self.classifier.weight[classes]

    def soft_mask(self, aux_logits: torch.Tensor) -> torch.Tensor:
        r"""The softmax-weighted mask :math:`\sum_k p_k W_k` (N×C), :math:`p = \mathrm{softmax}(aux\_logits)`;
        a differentiable stand-in for :math:`W_{\arg\max p}` used by the straight-through backward pass."""
        return aux_logits.softmax(dim=1) @ self.classifier.weight

    def forward(self, features: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(masked features, auxiliary logits)``.

        In training mode the mask uses the true labels ``y`` (required); in evaluation mode
        ``y`` is ignored and the mask uses the auxiliary head's own prediction. With
        ``straight_through`` set (evaluation mode only) the forward values are the same, bit for bit,
        but gradients flow through :meth:`soft_mask` as if it were the mask (BPDA).
        """
        if features.dim() != 4 or features.shape[1] != self.classifier.in_features:
            raise ValueError(
                f"CASModule expects features of shape N×{self.classifier.in_features}×H×W, got {tuple(features.shape)}."
            )
        aux_logits = self.auxiliary_logits(features)
        if self.training:
            if y is None:
                raise ValueError("CASModule in training mode picks its mask by the true labels y, and none were "
                                 "given: call model.eval() for inference (the mask then comes from the auxiliary "
                                 "prediction), or pass the labels while training: model.forward_details(x, y).")
            classes = y
        else:
            classes = aux_logits.argmax(dim=1)
        mask = self.mask_for(classes)
        if self.straight_through and not self.training:
            soft = self.soft_mask(aux_logits)
            mask = mask + (soft - soft.detach())  # value: the hard mask (+ an exact zero); gradient: the soft mask's
        return features * mask[:, :, None, None], aux_logits


def modules_through_wrappers(model: nn.Module) -> list[nn.Module]:
    """Every module inside ``model`` (``model`` first, then in registration order), each once, looking through
    wrappers: ``nn.Sequential``, DDP and any module that holds the model as ``.module``, and ``torch.compile``'s
    ``OptimizedModule`` (``._orig_mod``), also when such an attribute was set without registering it as a
    submodule.

    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``.
    Source: this package (no paper).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected an nn.Module (a model), got {type(model).__name__}.")
    found: list[nn.Module] = []
    seen: set[int] = set()
    pending = [model]
    while pending:
        root = pending.pop(0)
        for module in root.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            found.append(module)
            for name in ("module", "_orig_mod"):  # wrappers that hold the model outside _modules
                inner = module.__dict__.get(name)
                if isinstance(inner, nn.Module) and id(inner) not in seen:
                    pending.append(inner)
    return found


def find_cas_modules(model: nn.Module) -> list[CASModule]:
    """Every :class:`CASModule` inside ``model``, in registration order, each once.

    Looks through wrappers: ``nn.Sequential`` (e.g. preprocessing + model), DDP and any module that
    holds the model as a submodule (``.module``), and ``torch.compile``'s ``OptimizedModule``
    (``._orig_mod``), also when such an attribute was set without registering it as a submodule
    (:func:`modules_through_wrappers`). This is the package's one CAS-module lookup.

    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``.
    Source: this package (no paper); the modules are those of arXiv 2103.08307 §4.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"find_cas_modules needs an nn.Module, got {type(model).__name__}.")
    return [m for m in modules_through_wrappers(model) if isinstance(m, CASModule)]


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers (``model`` itself otherwise).

    Attacks and evaluation run on it: the same function, bit for bit, without DDP's per-forward buffer
    broadcast (a collective every rank would have to join) or DataParallel's replicas (which would run the
    CAS hooks once per device).

    Raises: nothing of its own.
    Source: this package (no paper).
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@contextmanager
def straight_through(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, every CAS module of ``model`` uses the straight-through (BPDA) backward pass.

    Forward outputs are unchanged, bit for bit (the mask is still ``W[argmax aux]``); input gradients
    differentiate the softmax-weighted mask :meth:`CASModule.soft_mask` in place of the argmax, so any
    gradient attack called inside the block (PGD, CW∞, APGD-CE/T, FAB-T through ``model(x)``) sees how
    moving the auxiliary prediction changes the mask. Only evaluation mode is affected: training masks
    stay the true labels'. The previous setting of each module is restored on exit, also after an error.

    Raises: ``ValueError`` when ``model`` holds no CAS module (or is not an ``nn.Module``).
    Source: BPDA, Athalye, Carlini & Wagner (ICML 2018), §4.1.
    """
    modules = find_cas_modules(model)
    if not modules:
        raise ValueError("straight_through needs a model with CAS modules; this model has none.")
    with flag_set(modules, "straight_through", enabled):
        yield model


def cas_loss(
    logits: torch.Tensor,
    aux_logits: list[torch.Tensor],
    y: torch.Tensor,
    beta: float = DEFAULT_CAS_BETA,
) -> torch.Tensor:
    r"""The CAS training loss :math:`CE(main) + \beta/S \sum_s CE(aux_s, y)` (mean over the batch).

    Shape: logits (N, K); aux_logits a list of S tensors (N, K) (may be empty); y (N,) int64 in [0, K);
    returns a scalar (0-dim) tensor.
    Raises: nothing of its own (torch's errors for mismatched shapes or labels out of range).
    Source: arXiv 2103.08307 §4 (the CAS loss averaged over the S modules, weight β); the official
    Standard_Adv_Training/train.py (github.com/bymavis/CAS_ICLR2021).
    """
    return F.cross_entropy(logits, y) + auxiliary_loss(aux_logits, y, beta)


def auxiliary_loss(aux_logits: list[torch.Tensor], y: torch.Tensor, beta: float = DEFAULT_CAS_BETA) -> torch.Tensor | float:
    r""":math:`\beta/S \sum_s CE(aux_s, y)`; zero when the model has no CAS modules.

    Shape: aux_logits a list of S tensors (N, K); y (N,) int64 in [0, K); returns a scalar (0-dim) tensor, or the
    float 0.0 when the list is empty.
    Raises: nothing of its own (torch's errors for mismatched shapes or labels out of range).
    Source: arXiv 2103.08307 §4 (the CAS term of the training loss); as the official trainers average the
    auxiliary CEs (github.com/bymavis/CAS_ICLR2021, Standard_Adv_Training/train.py, Trades/trades_reg.py).
    """
    if not aux_logits:
        return 0.0
    return beta * torch.stack([F.cross_entropy(a, y) for a in aux_logits]).mean()
