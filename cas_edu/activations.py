"""A layer's channel activations under attack: capture them, compute the paper's statistics, see what CAS does.

- Layers: :func:`resolve_layer` is the one layer lookup (aliases, the default layer, a CAS model's first CAS
  layer), for bare and wrapped models (``nn.Sequential``, DDP, ``torch.compile``).
- Capture: :func:`channel_activations` gives every example's spatially averaged pre-mask channel activations
  (N×C, what the paper's figures show); :func:`masked_channel_activations` adds the activations after a CAS mask
  (what the next layer receives) and the class each mask came from.
- The paper's statistics (arXiv 2103.08307 §3, Figures 1-2, as the official ``ActivationAnalysis`` scripts compute
  them): a channel is *activated* by an example when its value exceeds ``threshold`` (1 %) of that example's
  largest channel value. Figure 2 counts, per channel, the examples that activate it (:func:`activation_counts`);
  Figure 1 divides, per channel, the sum of its values over examples by that count (:func:`channel_magnitudes`).
  :func:`compare_activations` computes both for natural and PGD examples crafted on the same model
  (:class:`ActivationComparison`); :func:`class_comparison` keeps one class of it.
- What a CAS module does to a layer (§4): :func:`suppressed_channels` of a class's mask weights;
  :func:`channel_data` precomputes natural and PGD activations before and after the mask for a grid of ε
  (:class:`ChannelData`); :func:`class_mean_activations` and :func:`suppression_summary` read one class out of it.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from numbers import Integral
from typing import Sequence

import torch
from torch import nn

from .attacks import pgd, validate_attack_inputs
from .models import classifier_details, eval_mode, find_classifier, has_cas, model_device, num_classes
from .runtime import seeded
from .validation import check_batch_size, check_inputs, check_seed

DEFAULT_THRESHOLD = 0.01
#: The attack of the official Figures 1-2 (ActivationAnalysis scripts): PGD-20, step 0.003 at ε = 8/255, random start.
FIGURE_STEPS = 20
FIGURE_STEP_FRACTION = 0.003 / (8 / 255)
#: A layer whose natural images activate at least this share of their channels is reported as saturated: almost
#: no channel can then be quiet, and the activation count cannot show observation 2.
SATURATED_SHARE = 0.9
#: A weight at most this fraction of the row's largest |weight| (or negative) counts as suppressing its channel.
SUPPRESS_FRACTION = 0.05


def figure_step_size(eps: float) -> float:
    """The official figures' PGD step at budget ``eps``: 0.003 at ε = 8/255, scaled in proportion (ε · 0.003/(8/255)).

    Units: ε and the returned step in pixel units of [0, 1] (L∞).
    Raises: nothing of its own.
    Source: ActivationAnalysis/freq_dis_resnet18_base.py (``--alpha 0.003`` at ``--epsilon 8/255``).
    """
    return eps * FIGURE_STEP_FRACTION


def default_objective(model: nn.Module) -> str:
    """The objective the official evaluation attacks a model with: ``ce+cas`` with CAS modules, else ``ce``.

    Raises: nothing of its own.
    Source: Standard_Adv_Training/attack/reg_attack.py (the adaptive attack on CAS models, arXiv 2103.08307 §5).
    """
    return "ce+cas" if has_cas(model) else "ce"


# --------------------------------------------------------------------------- layers and capture


def _classifier(model: nn.Module) -> nn.Module:
    classifier = find_classifier(model)
    if classifier is None:
        raise ValueError(f"{type(model).__name__} holds no cas_edu classifier with named layers; pass a model built "
                         "by cas_edu.models, bare or wrapped (nn.Sequential, DDP, torch.compile).")
    return classifier


def resolve_layer(model: nn.Module, layer: str | None = None, cas_first: bool = False) -> str:
    """The name, inside the classifier of ``model``, of the layer to inspect: ``layer`` with aliases resolved
    (``layer4`` → ``layer4_1``); for ``None`` the model's first CAS layer when ``cas_first`` and it has one, else
    its default activation layer.

    ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``); the names are those of the classifier
    inside it. An unknown name is returned as given: the capture functions refuse it with the list of layers.

    Raises: ValueError when ``model`` holds no cas_edu classifier.
    Source: this package (no paper).
    """
    classifier = _classifier(model)
    if layer is None and cas_first and getattr(classifier, "cas_layers", None):
        return classifier.cas_layers[0]
    resolve = getattr(classifier, "resolve_layer", None)
    return resolve(layer) if resolve is not None else layer


def cas_layer(model: nn.Module, layer: str | None = None) -> str:
    """The layer whose CAS mask to inspect: ``layer`` if given, else the model's first CAS layer, else its default
    activation layer (:func:`resolve_layer` with ``cas_first=True``).

    Raises: ValueError when ``model`` holds no cas_edu classifier.
    Source: this package (no paper).
    """
    return resolve_layer(model, layer, cas_first=True)


def _cas_module(model: nn.Module, name: str) -> nn.Module | None:
    cas = getattr(_classifier(model), "cas", None)
    return cas[name] if cas is not None and name in cas else None


def _spatial_mean(features: torch.Tensor) -> torch.Tensor:
    return features.flatten(2).mean(dim=2) if features.dim() > 2 else features


@torch.no_grad()
def _capture(model: nn.Module, x: torch.Tensor, layer: str | None, name: str, batch_size: int,
             mask: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(pre, post, mask classes, predictions)`` of ``x`` at layer ``name``, on the CPU, in eval mode; without
    ``mask`` (or a CAS module at the layer) ``post`` is ``pre`` and the mask classes are None."""
    x, _ = check_inputs(model, x, None, labels_required=False)
    if x.shape[0] < 1:
        raise ValueError("x must be a non-empty floating-point tensor of images shaped N×C×H×W.")
    batch_size = check_batch_size(batch_size)
    module = _cas_module(model, name) if mask else None
    device = model_device(model)
    pre, post, classes, preds = [], [], [], []
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            classifier, details = classifier_details(model, x[start:start + batch_size].to(device))
            features = details.activations.get(name)
            if features is None:
                aliases = getattr(classifier, "layer_aliases", {})
                hint = f" (aliases: {', '.join(f'{a}→{t}' for a, t in aliases.items())})" if aliases else ""
                raise ValueError(
                    f"Unknown layer {layer!r} for {type(classifier).__name__}; choose one of "
                    f"{', '.join(details.activations)}{hint}, or None for the default layer."
                )
            pre.append(_spatial_mean(features).detach().to("cpu", torch.float32))
            preds.append(details.logits.argmax(1).cpu())
            if module is None:
                post.append(pre[-1])
            else:
                masked, aux = module(features)
                post.append(_spatial_mean(masked).to("cpu", torch.float32))
                classes.append(aux.argmax(1).cpu())
    return torch.cat(pre), torch.cat(post), (torch.cat(classes) if classes else None), torch.cat(preds)


def channel_activations(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                        batch_size: int = 256) -> torch.Tensor:
    """Spatially averaged pre-mask activations of ``layer`` (default: the model's activation layer) for images
    ``x``, in eval mode (each module's mode restored afterwards).

    ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``): the activations are those of the
    classifier inside it, on the input it receives.

    Shape: x (N, C, H, W) in [0, 1], N ≥ 1 (input rule: :mod:`cas_edu.validation`); returns (N, C_layer) float32
    on the CPU.
    Raises: ValueError for bad images or batch size, an unknown layer, or a model without a cas_edu classifier.
    Source: arXiv 2103.08307 §3; ActivationAnalysis/freq_dis_resnet18_base.py (forward hook, mean over H×W).
    """
    name = resolve_layer(model, layer)
    return _capture(model, x, layer, name, batch_size, mask=False)[0]


def masked_channel_activations(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Spatially averaged activations of ``layer`` (default: :func:`cas_layer`) before and after its CAS mask, in
    eval mode, and the class each example's mask came from (the auxiliary head's prediction).

    For a layer without CAS, ``post`` equals ``pre`` and ``classes`` is None. ``model`` may be wrapped.

    Shape: x (N, C, H, W) in [0, 1], N ≥ 1; returns ``(pre (N, C_layer) float32, post (N, C_layer) float32,
    classes (N,) int64 or None)``, all on the CPU.
    Raises: ValueError for bad images or batch size, an unknown layer, or a model without a cas_edu classifier.
    Source: arXiv 2103.08307 §4, Eq. 3 (the mask f̃ = f ⊗ M_k, k the auxiliary prediction at test time).
    """
    pre, post, classes, _ = _capture(model, x, layer, cas_layer(model, layer), batch_size, mask=True)
    return pre, post, classes


# --------------------------------------------------------------------------- the paper's statistics


def _check_acts(acts: torch.Tensor, name: str = "acts") -> None:
    if not isinstance(acts, torch.Tensor) or acts.dim() != 2 or acts.shape[1] < 1:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"{name} must be an N×C tensor of channel activations (see channel_activations), got {shape}.")


def _check_threshold(threshold: float) -> None:
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a fraction of each example's largest channel and must lie in [0, 1], got {threshold}.")


def activated(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Which channels each example activates: value > ``threshold`` × that example's largest channel value.

    Shape: acts (N, C); returns (N, C) bool.
    Raises: ValueError when acts is not N×C or threshold is outside [0, 1].
    Source: arXiv 2103.08307 §3 (the 1 % threshold); ActivationAnalysis/freq_dis_resnet18_base.py.
    """
    _check_acts(acts)
    _check_threshold(threshold)
    return acts > threshold * acts.amax(dim=1, keepdim=True)


def activation_counts(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Per channel, the number of examples that activate it (Figure 2).

    Shape: acts (N, C); returns (C,) int64.
    Raises: ValueError when acts is not N×C or threshold is outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 2; ActivationAnalysis/freq_dis_resnet18_base.py (``count_activate``).
    """
    return activated(acts, threshold).sum(dim=0)


def channel_magnitudes(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Per channel, the sum of its values over all examples divided by its activated count (Figure 1).

    As in the official script the numerator sums every example (sub-threshold values included);
    channels never activated get 0. The official script averages batch results as a running
    ``(old + new) / 2``, which weights late batches more; we compute the true mean over all examples.

    Shape: acts (N, C); returns (C,) in acts' dtype.
    Raises: ValueError when acts is not N×C or threshold is outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 1; ActivationAnalysis/freq_dis_resnet18_base.py (``feat_mean_magnitude``).
    """
    counts = activation_counts(acts, threshold)
    sums = acts.sum(dim=0)
    return torch.where(counts > 0, sums / counts.clamp_min(1).to(sums.dtype), torch.zeros_like(sums))


def sorted_magnitudes(acts: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Channel magnitudes sorted in descending order (one Figure 1 curve).

    Shape: acts (N, C); returns (C,) in acts' dtype.
    Raises: ValueError when acts is not N×C or threshold is outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 1; ActivationAnalysis/plot_figure1.py (each curve sorted).
    """
    return channel_magnitudes(acts, threshold).sort(descending=True).values


def counts_sorted_by(natural_counts: torch.Tensor, other_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both count vectors reordered by descending natural count (Figure 2); ties keep channel order.

    Shape: natural_counts (C,), other_counts (C,); returns two (C,) tensors.
    Raises: ValueError when the two are not vectors of the same length.
    Source: arXiv 2103.08307 §3, Figure 2; ActivationAnalysis/plot_figure2.py (channels sorted by the natural count).
    """
    if natural_counts.dim() != 1 or natural_counts.shape != other_counts.shape:
        raise ValueError(
            f"counts must be two vectors of the same length C, got {tuple(natural_counts.shape)} and {tuple(other_counts.shape)}."
        )
    order = torch.sort(natural_counts, descending=True, stable=True).indices
    return natural_counts[order], other_counts[order]


def magnitude_ratio(natural_acts: torch.Tensor, adversarial_acts: torch.Tensor) -> float:
    """Mean adversarial activation / mean natural activation (> 1: adversarial examples activate more).

    NaN when the natural activations are all zero.

    Shape: natural_acts (N, C), adversarial_acts (M, C).
    Raises: ValueError when either is not N×C.
    Source: arXiv 2103.08307 §3 (adversarial examples raise activation magnitudes, Figure 1); this summary is
    this package's.
    """
    _check_acts(natural_acts, "natural_acts")
    _check_acts(adversarial_acts, "adversarial_acts")
    natural = natural_acts.double().mean().item()
    return adversarial_acts.double().mean().item() / natural if natural != 0 else math.nan


def channel_entropy(acts: torch.Tensor) -> float:
    """Normalised entropy H(p)/log C of the channel mass p_c = Σ_n acts[n, c] / Σ acts: 1 = uniform, 0 = one channel.

    NaN when every activation is zero; 1 for a single channel.

    Shape: acts (N, C), non-negative.
    Raises: ValueError when acts is not N×C or holds a negative value.
    Source: this package (no paper): a one-number summary of how evenly Figure 1's mass spreads over channels.
    """
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
    """Mean over examples of the fraction of channels each one activates.

    Shape: acts (N, C).
    Raises: ValueError when acts is not N×C or threshold is outside [0, 1].
    Source: arXiv 2103.08307 §3 (the 1 % threshold of Figure 2); the average is this package's.
    """
    return activated(acts, threshold).double().mean().item()


def saturation(natural: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The share of channels active in a natural image, averaged over images (1 = every channel counts as active).

    Shape: natural (N, C).
    Raises: ValueError when natural is not N×C or threshold is outside [0, 1].
    Source: this package (no paper): how saturated the 1 % count of arXiv 2103.08307 Figure 2 is.
    """
    return activated(natural, threshold).double().mean().item()


def is_saturated(natural: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                 share: float = SATURATED_SHARE) -> bool:
    """Whether natural images activate at least ``share`` of the channels (:func:`saturation`), so that almost no
    channel can be quiet and the activation count cannot show observation 2.

    Shape: natural (N, C).
    Raises: ValueError when natural is not N×C or threshold / share is outside [0, 1].
    Source: this package (no paper).
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share must lie in [0, 1], got {share}.")
    return saturation(natural, threshold) >= share


@dataclass
class ActivationComparison:
    """Natural vs adversarial channel activations at one layer, with the Figure 1/2 curves derived from them.

    ``natural_magnitudes`` / ``adversarial_magnitudes`` are each sorted descending (Figure 1);
    ``natural_counts`` / ``adversarial_counts`` are sorted by the natural count (Figure 2); both count a channel
    as activated when it exceeds ``threshold`` × the example's largest channel (the paper's 1 %).
    :meth:`at_threshold` gives the same activations counted at another threshold, without attacking again;
    :meth:`summary` reports how saturated the count is (:func:`saturation`). ``attack`` records how the
    adversarial examples were made (name, steps, step_size, objective, random_start).

    Shape: natural (N, C) and adversarial (N, C) on the CPU; the four curves (C,).
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError when natural or adversarial is not N×C, their shapes differ, or threshold is outside
    [0, 1].
    Source: arXiv 2103.08307 §3, Figures 1-2; ActivationAnalysis/freq_dis_resnet18_base.py.
    """

    layer: str
    class_id: int | None
    eps: float
    natural: torch.Tensor
    adversarial: torch.Tensor
    threshold: float = DEFAULT_THRESHOLD
    attack: dict = field(default_factory=dict)
    natural_magnitudes: torch.Tensor = field(init=False)
    adversarial_magnitudes: torch.Tensor = field(init=False)
    natural_counts: torch.Tensor = field(init=False)
    adversarial_counts: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        _check_threshold(self.threshold)
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
        """The number of examples N."""
        return self.natural.shape[0]

    def at_threshold(self, threshold: float) -> "ActivationComparison":
        """The same activations (no new attack) with the curves and summaries counted at ``threshold``."""
        return ActivationComparison(layer=self.layer, class_id=self.class_id, eps=self.eps, natural=self.natural,
                                    adversarial=self.adversarial, threshold=threshold, attack=self.attack)

    def summary(self) -> dict[str, float | bool]:
        """Scalar summaries: magnitude ratio, channel entropies, activated fractions, number of examples, ε, the
        threshold, ``saturation`` (share of channels active in a natural image, :func:`saturation`) and
        ``saturated`` (a bool, :func:`is_saturated`: the count cannot show quiet channels at this threshold)."""
        return {
            "n_examples": float(self.n_examples),
            "eps": float(self.eps),
            "threshold": float(self.threshold),
            "magnitude_ratio": magnitude_ratio(self.natural, self.adversarial),
            "natural_entropy": channel_entropy(self.natural),
            "adversarial_entropy": channel_entropy(self.adversarial),
            "natural_fraction_activated": fraction_activated(self.natural, self.threshold),
            "adversarial_fraction_activated": fraction_activated(self.adversarial, self.threshold),
            "saturation": saturation(self.natural, self.threshold),
            "saturated": is_saturated(self.natural, self.threshold),
        }

    def saturation_note(self) -> str:
        """One plain sentence on how saturated the count is at this threshold (saturated or not)."""
        share = saturation(self.natural, self.threshold)
        active = f"{100 * share:.3g} % of channels active for natural images at t = {100 * self.threshold:.3g} %"
        if is_saturated(self.natural, self.threshold):
            return f"saturated: {active} — the count cannot show quiet channels; raise the threshold"
        return f"not saturated: {active}"


def _figure_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
                   objective: str, batch_size: int) -> torch.Tensor:
    """L∞ PGD examples of ``x`` (CPU) from a uniform random start, in batches; ``x`` itself at ε = 0."""
    if eps == 0:
        return x.cpu()
    device = model_device(model)
    return torch.cat([
        pgd(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device), eps,
            step_size=step_size, steps=steps, random_start=True, objective=objective).cpu()
        for i in range(0, x.shape[0], batch_size)
    ])


def compare_activations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, layer: str | None = None,
                        class_id: int | None = None, steps: int = FIGURE_STEPS, step_size: float | None = None,
                        objective: str | None = None, batch_size: int = 256,
                        threshold: float = DEFAULT_THRESHOLD, seed: int | None = None) -> ActivationComparison:
    """Channel activations of ``x`` (optionally only class ``class_id``) and of L∞ PGD examples on the same model.

    By default the attack is the one of the official Figures 1-2 (ActivationAnalysis scripts, as the
    official evaluation runs it): PGD-20 from a uniform random start with step ε · 0.003/(8/255)
    (:func:`figure_step_size`: 0.003 at ε = 8/255), and on CAS models the adaptive objective ``ce+cas``
    (CE(main) + β · mean CE(aux), :func:`default_objective`); ``ce`` otherwise. With ``seed=None`` the random
    start draws from the global RNG (no reseeding); with a seed it draws from ``torch.manual_seed(seed)`` and
    the caller's RNG is left untouched (:func:`cas_edu.runtime.seeded`). PGD runs in batches of
    ``batch_size``; ``eps = 0`` uses the natural images unchanged. ``comparison.attack`` records steps, step
    size and objective. ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``).

    Shape: x (N, C, H, W) in [0, 1], y (N,) integer labels (input rule: :mod:`cas_edu.validation`); the
    comparison holds (N', C_layer) activations, N' the examples kept.
    Units: eps and step_size in pixel units of [0, 1] (L∞).
    Raises: ValueError for bad inputs, ε outside [0, 1], an absent or out-of-range ``class_id``, a bad seed or
    batch size, or an unknown layer.
    Source: arXiv 2103.08307 §3, Figures 1-2; ActivationAnalysis/freq_dis_resnet18_base.py (``_pgd_whitebox``).
    """
    objective = default_objective(model) if objective is None else objective
    if step_size is None:
        step_size = figure_step_size(eps)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] for images in [0, 1] (8/255 ≈ 0.031 is the paper's), got {eps}.")
    batch_size = check_batch_size(batch_size)
    seed = None if seed is None else check_seed(seed)
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
    name = resolve_layer(model, layer)
    natural = channel_activations(model, x, layer, batch_size)
    if eps == 0:
        adversarial = natural.clone()
    else:
        with seeded(seed, model_device(model)) if seed is not None else nullcontext():
            x_adv = _figure_attack(model, x, y, eps, steps, step_size, objective, batch_size)
        adversarial = channel_activations(model, x_adv, layer, batch_size)
    return ActivationComparison(layer=name, class_id=class_id, eps=float(eps), natural=natural,
                                adversarial=adversarial, threshold=threshold,
                                attack={"name": f"PGD-{steps}", "steps": steps, "step_size": float(step_size),
                                        "objective": objective, "random_start": True})


def class_comparison(full: ActivationComparison, y: torch.Tensor, class_id: int,
                     threshold: float | None = None) -> ActivationComparison:
    """The comparison restricted to the examples of class ``class_id`` (``full`` holds every example of ``y``),
    counted at ``threshold`` (None: ``full``'s threshold; no attack runs again).

    Shape: y (N,) integer labels of the N examples in ``full``.
    Raises: ValueError when no example has label ``class_id`` or threshold is outside [0, 1].
    Source: ActivationAnalysis/freq_dis_resnet18_base.py (the figures keep one class: ``label == 0``).
    """
    keep = y.cpu() == class_id
    if not keep.any():
        raise ValueError(f"No example has label {class_id}; pick a class present in y.")
    return ActivationComparison(layer=full.layer, class_id=class_id, eps=full.eps, natural=full.natural[keep],
                                adversarial=full.adversarial[keep],
                                threshold=full.threshold if threshold is None else threshold, attack=full.attack)


# --------------------------------------------------------------------------- what a CAS module does to a layer


def suppressed_channels(weight_row: torch.Tensor, fraction: float = SUPPRESS_FRACTION) -> torch.Tensor:
    """Which channels a class's mask weight row suppresses: negative or at most ``fraction`` of its largest |w|.

    Shape: weight_row (C,); returns (C,) bool.
    Raises: ValueError when weight_row is not a vector.
    Source: arXiv 2103.08307 §4, Eq. 3 (the mask M_k is the k-th row of the auxiliary weights); the 5 % cut is
    this package's.
    """
    if weight_row.dim() != 1:
        raise ValueError(f"weight_row must be a vector of C weights, got shape {tuple(weight_row.shape)}.")
    return weight_row <= fraction * weight_row.abs().max()


@dataclass
class ChannelData:
    """Per-example channel activations of one layer for natural images and PGD examples at several ε.

    ``*_pre`` are the block's activations (before the mask), ``*_post`` what the next layer receives (after it);
    ``*_mask_class`` the class each mask came from (None without CAS); ``*_pred`` the model's predictions. The
    ``adversarial_*`` dicts are keyed by the ε of ``eps_values``. Built by :func:`channel_data`.

    Shape: y (N,) int64; weight (K, C) auxiliary weights or None without CAS; natural_pre / natural_post and
    each adversarial_pre[ε] / adversarial_post[ε] (N, C) float32; *_mask_class and *_pred (N,) int64; all CPU.
    Units: eps_values in pixel units of [0, 1] (L∞).
    Raises: nothing of its own.
    Source: arXiv 2103.08307 §4, Eq. 3 (the mask) and §3 (its attack: the official figures' PGD).
    """

    layer: str
    eps_values: list[float]
    y: torch.Tensor
    weight: torch.Tensor | None
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
        """Whether the layer has a CAS module (mask weights)."""
        return self.weight is not None

    def nearest_eps(self, eps: float) -> float:
        """The precomputed ε closest to ``eps``."""
        return min(self.eps_values, key=lambda e: abs(e - eps))


def channel_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
                 layer: str | None = None, steps: int = FIGURE_STEPS, objective: str | None = None, seed: int = 0,
                 batch_size: int = 256) -> ChannelData:
    """Natural and PGD-``steps`` activations (before and after the mask) and predictions for every ε in
    ``eps_values``, computed once, so that a view only indexes them.

    The attack defaults to the official Figures 1-2 attack, as the official evaluation runs it: PGD-20 from
    a uniform random start with step ε · 0.003/(8/255) (:func:`figure_step_size`) and the adaptive ``ce+cas``
    objective for CAS models (``ce`` otherwise). The random starts draw from ``torch.manual_seed(seed)``
    (one stream over the sorted ε values) without touching the caller's RNG. ``layer`` defaults to
    :func:`cas_layer`. ``model`` may be wrapped (``nn.Sequential``, DDP, ``torch.compile``).

    Shape: x (N, C, H, W) in [0, 1], y (N,) integer labels (input rule: :mod:`cas_edu.validation`); see
    :class:`ChannelData` for the result.
    Units: eps_values in pixel units of [0, 1] (L∞).
    Raises: ValueError for bad images, labels, ε values, seed, batch size or layer, or an empty ``eps_values``.
    Source: arXiv 2103.08307 §4, Eq. 3; ActivationAnalysis/freq_dis_resnet18_reg.py (the CAS model's figures).
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
    x, y = (t.cpu() for t in checked)
    name = cas_layer(model, layer)
    module = _cas_module(model, name)
    weight = module.classifier.weight.detach().float().cpu().clone() if module is not None else None
    pre, post, classes, pred = _capture(model, x, layer, name, batch_size, mask=True)
    out = ChannelData(layer=name, eps_values=eps_values, y=y, weight=weight, natural_pre=pre, natural_post=post,
                      natural_mask_class=classes, natural_pred=pred, objective=objective, steps=steps)
    with seeded(seed, model_device(model)):
        for eps in eps_values:
            x_adv = _figure_attack(model, x, y, eps, steps, figure_step_size(eps), objective, batch_size)
            (out.adversarial_pre[eps], out.adversarial_post[eps], out.adversarial_mask_class[eps],
             out.adversarial_pred[eps]) = _capture(model, x_adv, layer, name, batch_size, mask=True)
    return out


def class_mean_activations(data: ChannelData, class_id: int, eps: float) -> dict[str, torch.Tensor | int]:
    """The mean activation per channel over the examples of class ``class_id``, natural and adversarial (at the
    precomputed ε nearest to ``eps``), before and after the mask, in channel order.

    Returns ``natural_pre``, ``adversarial_pre``, ``natural_post``, ``adversarial_post`` (each (C,)),
    ``n_examples`` and ``eps`` (the precomputed ε used). Empty classes give NaN means.

    Shape: each mean (C,) float32 on the CPU, C the layer's channels.
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: nothing of its own.
    Source: arXiv 2103.08307 §4 (what the next layer receives: the masked features), this package's averaging.
    """
    eps = data.nearest_eps(float(eps))
    keep = data.y == int(class_id)
    return {"natural_pre": data.natural_pre[keep].mean(dim=0),
            "adversarial_pre": data.adversarial_pre[eps][keep].mean(dim=0),
            "natural_post": data.natural_post[keep].mean(dim=0),
            "adversarial_post": data.adversarial_post[eps][keep].mean(dim=0),
            "n_examples": int(keep.sum()), "eps": eps}


def suppression_summary(data: ChannelData, class_id: int, eps: float) -> dict:
    """One class's channels at (the precomputed ε nearest to) ``eps``, ordered by the class's mask weight W[k]
    (largest first): the weights, which are suppressed, the mean activations, and summaries.

    Returns tensors ``order`` (channel indices), ``mask`` (W[k] in that order), ``suppressed`` (bool,
    :func:`suppressed_channels`), ``natural_pre`` / ``adversarial_pre`` / ``natural_post`` / ``adversarial_post``
    (class means, that order); floats ``accuracy_natural`` / ``accuracy_adversarial``, ``right_mask_natural`` /
    ``right_mask_adversarial`` (how often the auxiliary head picked the class's own mask),
    ``suppressed_share_natural`` / ``suppressed_share_adversarial`` (share of |pre-mask activation| on suppressed
    channels), ``pre_mask_change`` (Σ|adv − nat| / Σ|nat| of the pre-mask means; NaN when nat is all zero);
    and ``class_id``, ``eps``, ``layer``, ``n_examples``.

    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError when ``data`` has no CAS module, ``class_id`` is outside [0, K), or no precomputed image
    has that class.
    Source: arXiv 2103.08307 §4, Eq. 3 and Figure 4 (suppression of the channels adversarial examples activate).
    """
    if not data.has_cas:
        raise ValueError("suppression_summary (the channel view) needs a model with CAS modules (its mask weights); "
                         "train one with cas=True.")
    classes = data.weight.shape[0]
    if not 0 <= int(class_id) < classes:
        raise ValueError(f"class_id must lie in [0, {classes}), got {class_id}.")
    class_id = int(class_id)
    means = class_mean_activations(data, class_id, eps)
    eps, keep = means["eps"], data.y == class_id
    if not keep.any():
        raise ValueError(f"No example of class {class_id} among the precomputed images; use more images.")
    row = data.weight[class_id]
    order = torch.argsort(row, descending=True)
    suppressed = suppressed_channels(row)[order]
    natural_pre, adversarial_pre = means["natural_pre"][order], means["adversarial_pre"][order]
    y = data.y[keep]

    def share(acts: torch.Tensor) -> float:
        total = float(acts.abs().sum())
        return float(acts[suppressed].abs().sum() / total) if total > 0 else math.nan

    def rate(hits: torch.Tensor) -> float:
        return float((hits[keep] == y).float().mean())

    natural_total = float(natural_pre.abs().sum())
    return {
        "class_id": class_id, "eps": eps, "layer": data.layer, "n_examples": int(keep.sum()),
        "order": order, "mask": row[order], "suppressed": suppressed,
        "natural_pre": natural_pre, "adversarial_pre": adversarial_pre,
        "natural_post": means["natural_post"][order], "adversarial_post": means["adversarial_post"][order],
        "accuracy_natural": rate(data.natural_pred), "accuracy_adversarial": rate(data.adversarial_pred[eps]),
        "right_mask_natural": rate(data.natural_mask_class),
        "right_mask_adversarial": rate(data.adversarial_mask_class[eps]),
        "suppressed_share_natural": share(natural_pre), "suppressed_share_adversarial": share(adversarial_pre),
        "pre_mask_change": (float((adversarial_pre - natural_pre).abs().sum() / natural_total)
                            if natural_total > 0 else math.nan),
    }


__all__ = ["ActivationComparison", "ChannelData", "DEFAULT_THRESHOLD", "FIGURE_STEPS", "FIGURE_STEP_FRACTION",
           "SATURATED_SHARE", "SUPPRESS_FRACTION", "activated", "activation_counts", "cas_layer",
           "channel_activations", "channel_data", "channel_entropy", "channel_magnitudes", "class_comparison",
           "class_mean_activations", "compare_activations", "counts_sorted_by", "default_objective",
           "figure_step_size", "fraction_activated", "is_saturated", "magnitude_ratio", "masked_channel_activations",
           "resolve_layer", "saturation", "sorted_magnitudes", "suppressed_channels", "suppression_summary"]
