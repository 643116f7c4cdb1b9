"""What a CAS module does to the channels of one layer: pre-mask and after-mask activations, natural and adversarial.

``activations.channel_activations`` gives the pre-mask features (what the paper's figures show).
Here we also take the features *after* the mask -- what the next layer actually receives -- and the
class each example's mask came from (in evaluation mode: the auxiliary head's prediction).
:func:`channel_data` computes all of it once for a grid of ε values, so the channel explorer
(``widgets.ChannelExplorer``) only indexes precomputed tensors when a control moves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .activations import FIGURE_STEPS, default_objective, figure_step_size
from .attacks import classifier_details, eval_mode, find_classifier, has_cas, pgd, validate_attack_inputs
from .validation import check_batch_size, check_inputs, check_seed, model_device

#: A weight at most this fraction of the row's largest |weight| (or negative) counts as suppressing its channel.
SUPPRESS_FRACTION = 0.05


def _classifier(model: nn.Module) -> nn.Module:
    """The cas_edu classifier inside ``model`` (``model`` itself when bare; see :func:`cas_edu.attacks.find_classifier`)."""
    classifier = find_classifier(model)
    if classifier is None:
        raise ValueError(f"{type(model).__name__} holds no cas_edu classifier with named layers; pass a model built "
                         "by cas_edu.models, bare or wrapped (nn.Sequential, DDP, torch.compile).")
    return classifier


def _cas_module(classifier: nn.Module, name: str) -> nn.Module | None:
    cas = getattr(classifier, "cas", None)
    return cas[name] if cas is not None and name in cas else None


def cas_layer(model: nn.Module, layer: str | None = None) -> str:
    """The layer to inspect: ``layer`` if given, else the model's first CAS layer, else its default activation layer.
    ``model`` may be wrapped; the names are those of the classifier inside it."""
    classifier = _classifier(model)
    if layer is not None:
        return classifier.resolve_layer(layer) if hasattr(classifier, "resolve_layer") else layer
    if has_cas(classifier):
        return classifier.cas_layers[0]
    return classifier.resolve_layer(None)


@torch.no_grad()
def masked_channel_activations(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Spatially averaged activations of ``layer`` before and after its CAS mask (eval mode), and the mask classes.

    Returns ``(pre N×C, post N×C, classes N)``; for a layer without CAS, ``post`` equals ``pre`` and
    ``classes`` is None. All tensors are on the CPU. ``x``: N ≥ 1 images (input rule: :mod:`cas_edu.validation`);
    ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``). Raises ``ValueError`` for bad images or
    an unknown layer.
    """
    x, _ = check_inputs(model, x, None, labels_required=False)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError("x must be a non-empty N×C×H×W image tensor.")
    batch_size = check_batch_size(batch_size)
    classifier = _classifier(model)
    name = cas_layer(model, layer)
    module = _cas_module(classifier, name)
    device = model_device(model)
    pre, post, classes = [], [], []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            features = classifier_details(model, x[i:i + batch_size].to(device))[1].activations.get(name)
            if features is None:
                raise ValueError(f"Unknown layer {layer!r}; CAS layers of this model: "
                                 f"{getattr(classifier, 'cas_layers', [])}.")
            pre.append(features.mean(dim=(2, 3)).float().cpu())
            if module is None:
                post.append(pre[-1])
            else:
                masked, aux = module(features)
                post.append(masked.mean(dim=(2, 3)).float().cpu())
                classes.append(aux.argmax(1).cpu())
    return torch.cat(pre), torch.cat(post), (torch.cat(classes) if classes else None)


def suppressed_channels(weight_row: torch.Tensor, fraction: float = SUPPRESS_FRACTION) -> torch.Tensor:
    """Boolean mask of channels a class's weight row suppresses: negative or at most ``fraction`` of its largest |w|."""
    if weight_row.dim() != 1:
        raise ValueError(f"weight_row must be a vector of C weights, got shape {tuple(weight_row.shape)}.")
    return weight_row <= fraction * weight_row.abs().max()


@dataclass
class ChannelData:
    """Per-example channel activations of one layer for natural images and PGD examples at several ε."""

    layer: str
    eps_values: list[float]
    y: torch.Tensor
    weight: torch.Tensor | None  # K×C auxiliary weights (None without CAS)
    natural_pre: torch.Tensor
    natural_post: torch.Tensor
    natural_mask_class: torch.Tensor | None
    natural_pred: torch.Tensor
    adversarial_pre: dict[float, torch.Tensor] = field(default_factory=dict)
    adversarial_post: dict[float, torch.Tensor] = field(default_factory=dict)
    adversarial_mask_class: dict[float, torch.Tensor | None] = field(default_factory=dict)
    adversarial_pred: dict[float, torch.Tensor] = field(default_factory=dict)
    objective: str = "ce"
    steps: int = FIGURE_STEPS

    @property
    def has_cas(self) -> bool:
        return self.weight is not None

    def nearest_eps(self, eps: float) -> float:
        """The precomputed ε closest to ``eps``."""
        return min(self.eps_values, key=lambda e: abs(e - eps))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def channel_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
                 layer: str | None = None, steps: int = FIGURE_STEPS, objective: str | None = None, seed: int = 0,
                 batch_size: int = 256) -> ChannelData:
    """Precompute natural and PGD-``steps`` activations (pre- and after-mask) for every ε in ``eps_values``.

    The attack defaults to the official Figures 1-2 attack, as the official evaluation runs it: PGD-20 from
    a uniform random start with step ε · 0.003/(8/255) (:func:`cas_edu.activations.figure_step_size`) and
    the adaptive ``ce+cas`` objective for CAS models (``ce`` otherwise). The random start is seeded with
    ``seed`` without touching the global random state. ``x``, ``y``: images and labels (input rule:
    :mod:`cas_edu.validation`); ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``).
    Raises ``ValueError`` for bad images, labels, ε values or layers.
    """
    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    eps_values = sorted({float(e) for e in eps_values})
    if not eps_values:
        raise ValueError("eps_values is empty; give at least one ε, e.g. [0.0, 0.1].")
    objective = objective or default_objective(model)
    if y is None:
        raise ValueError("channel_data needs the labels y of the images (an integer tensor of shape (N,)).")
    for eps in eps_values:
        checked = validate_attack_inputs(model, x, y, eps, objective)
    x, y = checked
    name = cas_layer(model, layer)
    x, y = x.cpu(), y.cpu()
    module = _cas_module(_classifier(model), name)
    weight = module.classifier.weight.detach().float().cpu().clone() if module is not None else None
    pre, post, classes = masked_channel_activations(model, x, name, batch_size)
    out = ChannelData(layer=name, eps_values=eps_values, y=y, weight=weight, natural_pre=pre, natural_post=post,
                      natural_mask_class=classes, natural_pred=_predict(model, x, batch_size), objective=objective,
                      steps=steps)
    device = model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for eps in eps_values:
            if eps == 0:
                x_adv = x
            else:
                x_adv = torch.cat([pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps,
                                       step_size=figure_step_size(eps), steps=steps, random_start=True,
                                       objective=objective).cpu() for i in range(0, len(x), batch_size)])
            a_pre, a_post, a_classes = masked_channel_activations(model, x_adv, name, batch_size)
            out.adversarial_pre[eps], out.adversarial_post[eps] = a_pre, a_post
            out.adversarial_mask_class[eps] = a_classes
            out.adversarial_pred[eps] = _predict(model, x_adv, batch_size)
    return out


__all__ = ["ChannelData", "SUPPRESS_FRACTION", "cas_layer", "channel_data", "masked_channel_activations",
           "suppressed_channels"]
