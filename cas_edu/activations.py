"""Channel-wise activation statistics: the quantities behind the paper's Figures 1 and 2.

For a layer of a model, every example is reduced to one vector of spatially averaged,
pre-mask channel activations (N×C). A channel is *activated* by an example when its value
exceeds ``threshold`` (1%) of that example's largest channel value, as in the official
``ActivationAnalysis`` scripts. Figure 2 counts, per channel, the examples that activate it;
Figure 1 divides, per channel, the sum of its values over examples by that count.
:func:`compare_activations` computes both for natural examples and PGD adversarial examples
crafted on the same model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral

import torch
from torch import nn

from .attacks import classifier_details, eval_mode, find_classifier, has_cas, pgd, validate_attack_inputs
from .validation import check_batch_size, check_inputs, model_device, num_classes

DEFAULT_THRESHOLD = 0.01
#: The attack of the official Figures 1-2 (ActivationAnalysis scripts): PGD-20, step 0.003 at ε = 8/255, random start.
FIGURE_STEPS = 20
FIGURE_STEP_FRACTION = 0.003 / (8 / 255)


def figure_step_size(eps: float) -> float:
    """The official figures' PGD step at budget ``eps``: 0.003 at ε = 8/255, scaled in proportion (ε · 0.003/(8/255))."""
    return eps * FIGURE_STEP_FRACTION


def default_objective(model: nn.Module) -> str:
    """The objective the official evaluation attacks a model with: ``ce+cas`` with CAS modules, else ``ce``."""
    return "ce+cas" if has_cas(model) else "ce"


def _check_acts(acts: torch.Tensor, name: str = "acts") -> None:
    if not isinstance(acts, torch.Tensor) or acts.dim() != 2 or acts.shape[1] < 1:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"{name} must be an N×C tensor of channel activations (see channel_activations), got {shape}.")


def _check_threshold(threshold: float) -> None:
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a fraction of each example's largest channel and must lie in [0, 1], got {threshold}.")


def _resolve_layer(model: nn.Module, layer: str | None) -> str | None:
    """``layer`` as the name the classifier inside ``model`` uses (``None`` → its default layer, aliases resolved)."""
    resolve = getattr(find_classifier(model), "resolve_layer", None)
    return resolve(layer) if resolve is not None else layer


def channel_activations(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                        batch_size: int = 256) -> torch.Tensor:
    """Spatially averaged pre-mask activations (N×C, CPU float32) of ``layer`` for images ``x``, in eval mode.

    ``x``: N ≥ 1 images (input rule: :mod:`cas_edu.validation`); ``model`` may be wrapped (``nn.Sequential``,
    DDP, ``torch.compile``): the activations are those of the classifier inside it, on the input it receives.
    Raises ``ValueError`` for bad images, an unknown layer or a model without named layers.
    """
    x, _ = check_inputs(model, x, None, labels_required=False)
    if x.shape[0] < 1:
        raise ValueError("x must be a non-empty floating-point tensor of images shaped N×C×H×W.")
    batch_size = check_batch_size(batch_size)
    name = _resolve_layer(model, layer)
    device = model_device(model)
    chunks = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            classifier, details = classifier_details(model, x[start:start + batch_size].to(device))
            activations = details.activations
            if name not in activations:
                aliases = getattr(classifier, "layer_aliases", {})
                hint = f" (aliases: {', '.join(f'{a}→{t}' for a, t in aliases.items())})" if aliases else ""
                raise ValueError(
                    f"Unknown layer {layer!r} for {type(classifier).__name__}; choose one of "
                    f"{', '.join(activations)}{hint}, or None for the default layer."
                )
            features = activations[name]
            if features.dim() > 2:
                features = features.flatten(2).mean(dim=2)
            chunks.append(features.detach().to("cpu", torch.float32))
    return torch.cat(chunks)


def activated(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Boolean N×C: channel value > ``threshold`` × that example's largest channel value (official rule)."""
    _check_acts(acts)
    _check_threshold(threshold)
    return acts > threshold * acts.amax(dim=1, keepdim=True)


def activation_counts(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Per channel (C, int64), the number of examples that activate it (Figure 2)."""
    return activated(acts, threshold).sum(dim=0)


def channel_magnitudes(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Per channel (C), the sum of its values over all examples divided by its activated count (Figure 1).

    As in the official script the numerator sums every example (sub-threshold values included);
    channels never activated get 0. The official script averages batch results as a running
    ``(old + new) / 2``, which weights late batches more; we compute the true mean over all examples.
    """
    counts = activation_counts(acts, threshold)
    sums = acts.sum(dim=0)
    return torch.where(counts > 0, sums / counts.clamp_min(1).to(sums.dtype), torch.zeros_like(sums))


def sorted_magnitudes(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Channel magnitudes sorted in descending order (one Figure 1 curve)."""
    return channel_magnitudes(acts, threshold).sort(descending=True).values


def counts_sorted_by(natural_counts: torch.Tensor, other_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both count vectors reordered by descending natural count (Figure 2); ties keep channel order."""
    if natural_counts.dim() != 1 or natural_counts.shape != other_counts.shape:
        raise ValueError(
            f"counts must be two vectors of the same length C, got {tuple(natural_counts.shape)} and {tuple(other_counts.shape)}."
        )
    order = torch.sort(natural_counts, descending=True, stable=True).indices
    return natural_counts[order], other_counts[order]


def magnitude_ratio(natural_acts: torch.Tensor, adversarial_acts: torch.Tensor) -> float:
    """Mean adversarial activation / mean natural activation (> 1: adversarial examples activate more); NaN if natural is all zero."""
    _check_acts(natural_acts, "natural_acts")
    _check_acts(adversarial_acts, "adversarial_acts")
    natural = natural_acts.double().mean().item()
    return adversarial_acts.double().mean().item() / natural if natural != 0 else math.nan


def channel_entropy(acts: torch.Tensor) -> float:
    """Normalised entropy H(p)/log C of the channel mass p_c = Σ_n acts[n, c] / Σ acts: 1 = uniform, 0 = one channel."""
    _check_acts(acts)
    if (acts < 0).any():
        raise ValueError("channel_entropy needs non-negative activations (take them after a ReLU).")
    mass = acts.double().sum(dim=0)
    total = mass.sum()
    if total == 0:
        return math.nan
    if mass.numel() == 1:
        return 1.0
    p = mass / total
    entropy = -(p * p.clamp_min(1e-300).log()).sum()
    return float(entropy / math.log(mass.numel()))


def fraction_activated(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Mean over examples of the fraction of channels each one activates."""
    return activated(acts, threshold).double().mean().item()


@dataclass
class ActivationComparison:
    """Natural vs adversarial channel activations at one layer, with the Figure 1/2 curves derived from them."""

    layer: str
    class_id: int | None
    eps: float
    natural: torch.Tensor
    adversarial: torch.Tensor
    threshold: float = DEFAULT_THRESHOLD
    attack: dict = field(default_factory=dict)  # how the adversarial examples were made (steps, step_size, objective)
    natural_magnitudes: torch.Tensor = field(init=False)
    adversarial_magnitudes: torch.Tensor = field(init=False)
    natural_counts: torch.Tensor = field(init=False)
    adversarial_counts: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        _check_acts(self.natural, "natural")
        _check_acts(self.adversarial, "adversarial")
        if self.natural.shape != self.adversarial.shape:
            raise ValueError(
                f"natural and adversarial activations must have the same shape, got "
                f"{tuple(self.natural.shape)} and {tuple(self.adversarial.shape)}."
            )
        self.natural_magnitudes = sorted_magnitudes(self.natural, self.threshold)
        self.adversarial_magnitudes = sorted_magnitudes(self.adversarial, self.threshold)
        self.natural_counts, self.adversarial_counts = counts_sorted_by(
            activation_counts(self.natural, self.threshold), activation_counts(self.adversarial, self.threshold)
        )

    @property
    def n_examples(self) -> int:
        return self.natural.shape[0]

    def summary(self) -> dict[str, float]:
        """Scalar summaries: magnitude ratio, channel entropies, activated fractions, number of examples."""
        return {
            "n_examples": float(self.n_examples),
            "eps": float(self.eps),
            "magnitude_ratio": magnitude_ratio(self.natural, self.adversarial),
            "natural_entropy": channel_entropy(self.natural),
            "adversarial_entropy": channel_entropy(self.adversarial),
            "natural_fraction_activated": fraction_activated(self.natural, self.threshold),
            "adversarial_fraction_activated": fraction_activated(self.adversarial, self.threshold),
        }


def compare_activations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, layer: str | None = None,
                        class_id: int | None = None, steps: int = FIGURE_STEPS, step_size: float | None = None,
                        objective: str | None = None, batch_size: int = 256,
                        threshold: float = DEFAULT_THRESHOLD) -> ActivationComparison:
    """Channel activations of ``x`` (optionally only class ``class_id``) and of L∞ PGD examples on the same model.

    By default the attack is the one of the official Figures 1-2 (ActivationAnalysis scripts, as the
    official evaluation runs it): PGD-20 from a uniform random start with step ε · 0.003/(8/255)
    (:func:`figure_step_size`: 0.003 at ε = 8/255), and on CAS models the adaptive objective ``ce+cas``
    (CE(main) + β · mean CE(aux), :func:`default_objective`); ``ce`` otherwise. The random start draws
    from the global RNG (no reseeding). PGD runs in batches of ``batch_size``; ``eps = 0`` uses the
    natural images unchanged. ``comparison.attack`` records steps, step size and objective. ``x``, ``y``: images
    and labels by the input rule of :mod:`cas_edu.validation`; ``model`` may be wrapped (``nn.Sequential``, DDP,
    ``torch.compile``). Raises ``ValueError`` for bad inputs, ε outside [0, 1] or an absent ``class_id``.
    """
    objective = default_objective(model) if objective is None else objective
    if step_size is None:
        step_size = figure_step_size(eps)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] for images in [0, 1] (8/255 ≈ 0.031 is the paper's), got {eps}.")
    batch_size = check_batch_size(batch_size)
    _check_threshold(threshold)
    if y is None:
        raise ValueError("compare_activations needs the labels y of the images (an integer tensor of shape (N,)).")
    x, y = validate_attack_inputs(model, x, y, eps, objective)
    if x.shape[0] < 1:
        raise ValueError("compare_activations needs at least one image and its labels y.")
    if class_id is not None:
        classes = num_classes(model, x)
        if isinstance(class_id, bool) or not isinstance(class_id, Integral) or class_id < 0 or (
                classes is not None and class_id >= classes):
            raise ValueError(f"class_id must be a class index in [0, {classes}), got {class_id!r}.")
        keep = (y == class_id).to(x.device)
        if not keep.any():
            raise ValueError(f"No example has label {class_id}; pick a class present in y or class_id=None.")
        x, y = x[keep], y.to(x.device)[keep]
    name = _resolve_layer(model, layer)
    natural = channel_activations(model, x, layer, batch_size)
    if eps == 0:
        adversarial = natural.clone()
    else:
        device = model_device(model)
        x_adv = torch.cat([
            pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps,
                step_size=step_size, steps=steps, random_start=True, objective=objective).cpu()
            for i in range(0, x.shape[0], batch_size)
        ])
        adversarial = channel_activations(model, x_adv, layer, batch_size)
    return ActivationComparison(layer=name, class_id=class_id, eps=float(eps), natural=natural,
                                adversarial=adversarial, threshold=threshold,
                                attack={"name": f"PGD-{steps}", "steps": steps, "step_size": float(step_size),
                                        "objective": objective, "random_start": True})
