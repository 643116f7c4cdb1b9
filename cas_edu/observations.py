"""The paper's two observations, measured with intervals: are adversarial activations larger, and do attacks
wake channels that natural images of a class leave quiet?

Definitions (used by the library, the benchmark and the notebooks):

- *active*: at threshold t, channel c is active in an image when its spatially averaged value exceeds t × that
  image's largest channel (:func:`cas_edu.activations.activated`; the paper's t is 1 %).
- *quiet*: for a class, a channel active in fewer than ``quiet_fraction`` (20 %) of the class's natural images.
- *woken*: a quiet channel active in more than ``woken_fraction`` (50 %) of the class's adversarial images.
- *saturation*: the share of channels active in a natural image, averaged over images. Near 1 every channel
  counts as active and no channel can be quiet: the count then says nothing about observation 2.
- Observation 1 is summarised by the magnitude ratio (mean adversarial / mean natural activation).
- The null for observation 2 is not zero: images perturbed by random ±ε sign noise also move activations, so the
  attack's woken count is compared with the noise's (``woken_excess`` = attack − noise, paired).
- Intervals: 95 % percentile bootstrap over images, resampled within class (each class keeps its size); the
  natural, adversarial and noise activations of an image are resampled together (paired). The counts cut
  per-class shares at 20 % and 50 %; a resample repeats some images, which spreads those shares, so the resampled
  counts lean upward and an interval can sit partly above its point estimate. Read the interval as the spread,
  and judge observation 2 by the paired excess over the noise, which shares that lean.

Pure statistics on activations (:func:`observe`, testable with synthetic activations) are kept apart from the
measurement on a model (:func:`measure_observations`: crafts the figures' PGD and the sign noise, captures the
layer, calls :func:`observe`).

Imports: activations, attacks (through activations), models, runtime, tables, validation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from .activations import (DEFAULT_THRESHOLD, FIGURE_STEPS, SATURATED_SHARE, _check_acts, _check_threshold,
                          _figure_attack, activated, channel_activations, default_objective, figure_step_size,
                          is_saturated, resolve_layer, saturation)
from .attacks import validate_attack_inputs
from .models import model_device
from .runtime import seeded
from .tables import markdown_table
from .validation import check_batch_size, check_images, check_seed

#: A channel is quiet for a class when fewer than this share of the class's natural images activate it.
QUIET_FRACTION = 0.2
#: A quiet channel is woken when more than this share of the class's adversarial images activate it.
WOKEN_FRACTION = 0.5
#: The thresholds of the observation table (1 % is the paper's).
TABLE_THRESHOLDS = (0.01, 0.1, 0.2)
N_RESAMPLES = 1000
LEVEL = 0.95

__all__ = ["Estimate", "N_RESAMPLES", "ObservationRow", "Observations", "QUIET_FRACTION", "SATURATED_SHARE",
           "TABLE_THRESHOLDS", "WOKEN_FRACTION", "bootstrap", "class_blocks", "is_saturated", "measure_observations", "observe",
           "observation_table", "quiet_channels", "saturation", "sign_noise", "stratified_resamples",
           "woken_channels", "woken_per_class"]


# --------------------------------------------------------------------------- definitions on one class


def _check_fraction(value: float, name: str) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} is a share of a class's images and must lie in [0, 1], got {value}.")


def quiet_channels(natural: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                   quiet_fraction: float = QUIET_FRACTION) -> torch.Tensor:
    """Channels that natural images of one class leave quiet: active in fewer than ``quiet_fraction`` of them.

    Shape: natural (N, C), the spatially averaged activations of one class's N ≥ 1 images; returns (C,) bool.
    Raises: ValueError when natural is not N×C with N ≥ 1, or threshold / quiet_fraction is outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 2 (channels natural examples of a class rarely activate); the 20 % cut is
    this package's.
    """
    _check_fraction(quiet_fraction, "quiet_fraction")
    _check_nonempty(natural, "natural")
    return activated(natural, threshold).double().mean(dim=0) < quiet_fraction


def woken_channels(natural: torch.Tensor, adversarial: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                   quiet_fraction: float = QUIET_FRACTION, woken_fraction: float = WOKEN_FRACTION) -> torch.Tensor:
    """Quiet channels of one class (:func:`quiet_channels`) that more than ``woken_fraction`` of its adversarial
    images activate.

    Shape: natural (N, C) and adversarial (M, C), one class's images, N, M ≥ 1; returns (C,) bool.
    Raises: ValueError for activations that are not N×C (N ≥ 1) with the same C, or a threshold or fraction
    outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 2 (adversarial examples activate channels natural ones leave quiet); the
    20 % / 50 % cuts are this package's.
    """
    _check_fraction(woken_fraction, "woken_fraction")
    _check_nonempty(adversarial, "adversarial")
    if natural.dim() == 2 and adversarial.shape[1] != natural.shape[1]:
        raise ValueError(f"natural and adversarial must have the same channels, got {natural.shape[1]} and "
                         f"{adversarial.shape[1]}.")
    quiet = quiet_channels(natural, threshold, quiet_fraction)
    return quiet & (activated(adversarial, threshold).double().mean(dim=0) > woken_fraction)


def woken_per_class(natural: torch.Tensor, adversarial: torch.Tensor, y: torch.Tensor,
                    threshold: float = DEFAULT_THRESHOLD, quiet_fraction: float = QUIET_FRACTION,
                    woken_fraction: float = WOKEN_FRACTION) -> dict[int, int]:
    """For every class present in ``y``, the number of its woken channels (:func:`woken_channels`).

    Shape: natural (N, C) and adversarial (N, C), row n the same image; y (N,) integer labels.
    Raises: ValueError for mismatched shapes or a threshold or fraction outside [0, 1].
    Source: arXiv 2103.08307 §3, Figure 2, per class (the paper shows class 0).
    """
    y = _check_paired(y, natural, adversarial)
    return {int(k): int(woken_channels(natural[y == k], adversarial[y == k], threshold, quiet_fraction,
                                       woken_fraction).sum()) for k in y.unique().tolist()}


def _check_nonempty(acts: torch.Tensor, name: str) -> None:
    _check_acts(acts, name)
    if acts.shape[0] < 1:
        raise ValueError(f"{name} holds no image; a class needs at least one.")


def _check_labels(y: torch.Tensor) -> torch.Tensor:
    if (not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] < 1 or y.dtype.is_floating_point
            or y.dtype.is_complex or y.dtype == torch.bool):
        raise ValueError("y must be a non-empty vector of integer class labels, one per image.")
    return y.cpu()


def _check_paired(y: torch.Tensor, *acts: torch.Tensor) -> torch.Tensor:
    for i, a in enumerate(acts):
        _check_acts(a, f"activations[{i}]")
    _check_labels(y)
    shapes = {tuple(a.shape) for a in acts}
    if len(shapes) != 1 or acts[0].shape[0] != y.shape[0] or y.shape[0] < 1:
        raise ValueError(f"the activations must share one shape N×C with N = len(y) ≥ 1, got "
                         f"{sorted(shapes)} and {tuple(y.shape)} labels.")
    return y.cpu()


# --------------------------------------------------------------------------- the bootstrap


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval [low, high].

    Raises: nothing of its own.
    Source: this package (no paper): percentile bootstrap (Efron & Tibshirani 1993, §13).
    """

    value: float
    low: float
    high: float

    def excludes(self, null: float) -> bool:
        """Whether the interval lies entirely above or below ``null`` (the effect is resolved)."""
        return self.low > null or self.high < null

    def format(self, digits: int = 2) -> str:
        """``value [low, high]`` with ``digits`` decimals."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.format()


def _check_n_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer ≥ 1, got {n_resamples!r}.")


def stratified_resamples(y: torch.Tensor, n_resamples: int = N_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """Bootstrap resamples of the images, drawn with replacement within each class (each class keeps its size).

    Row 0 is the original sample; rows 1..n_resamples are resamples. Columns are grouped by class in ascending
    class order, so column block k always holds images of the k-th class present (see :func:`class_blocks`).

    Shape: y (N,) integer labels; returns (n_resamples + 1, N) int64 image indices.
    Raises: ValueError for empty or non-integer labels, n_resamples < 1 or a bad seed.
    Source: this package (no paper): the stratified bootstrap (Davison & Hinkley 1997, §3.2).
    """
    _check_n_resamples(n_resamples)
    seed = check_seed(seed)
    y = _check_labels(y)
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for k in y.unique().tolist():
        members = torch.nonzero(y == k).flatten()
        draws = torch.randint(len(members), (n_resamples, len(members)), generator=generator)
        blocks.append(torch.cat([members[None], members[draws]]))
    return torch.cat(blocks, dim=1)


def class_blocks(y: torch.Tensor) -> list[tuple[int, slice]]:
    """``(class, columns)`` of each class present in ``y``, in the column order of :func:`stratified_resamples`.

    Shape: y (N,) integer labels.
    Raises: nothing of its own.
    Source: this package (no paper).
    """
    blocks, start = [], 0
    for k, n in zip(*[t.tolist() for t in y.cpu().unique(return_counts=True)]):
        blocks.append((int(k), slice(start, start + n)))
        start += n
    return blocks


def bootstrap(statistic: Callable[[torch.Tensor], torch.Tensor], resamples: torch.Tensor,
              level: float = LEVEL) -> Estimate:
    """The statistic on the original sample and its percentile interval over the resamples.

    ``statistic`` maps a (R, N) batch of index rows to R values; it is called on all rows of ``resamples`` at once
    (row 0 the original sample, as :func:`stratified_resamples` makes them). Resamples where the statistic is NaN
    are left out of the interval.

    Shape: resamples (R + 1, N) int64.
    Raises: ValueError when level is not in (0, 1) or fewer than 2 rows are given.
    Source: this package (no paper): percentile bootstrap (Efron & Tibshirani 1993, §13).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95, got {level}.")
    if resamples.dim() != 2 or resamples.shape[0] < 2:
        raise ValueError("resamples must hold the original sample and at least one resample (see "
                         "stratified_resamples).")
    values = statistic(resamples).double()
    spread = values[1:][~values[1:].isnan()]
    if spread.numel() == 0:
        return Estimate(float(values[0]), math.nan, math.nan)
    low, high = torch.quantile(spread, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Estimate(float(values[0]), float(low), float(high))


# --------------------------------------------------------------------------- the statistics, batched over resamples


def _ratio_statistic(natural: torch.Tensor, adversarial: torch.Tensor):
    nat, adv = natural.double().mean(dim=1), adversarial.double().mean(dim=1)

    def statistic(index: torch.Tensor) -> torch.Tensor:
        denominator = nat[index].mean(dim=1)
        return torch.where(denominator != 0, adv[index].mean(dim=1) / denominator, torch.nan)
    return statistic


def _entropy_statistic(acts: torch.Tensor, blocks):
    """Mean over classes of the normalised entropy of the class's channel mass, for each index row."""
    acts = acts.double()
    channels = acts.shape[1]

    def statistic(index: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(index.shape[0], dtype=torch.float64)
        for _, columns in blocks:
            for start in range(0, index.shape[0], 64):
                mass = acts[index[start:start + 64, columns]].sum(dim=1)
                p = mass / mass.sum(dim=1, keepdim=True)
                h = -(p * p.clamp_min(1e-300).log()).sum(dim=1)
                total[start:start + mass.shape[0]] += h / math.log(channels) if channels > 1 else 1.0
        return total / len(blocks)
    return statistic


def _share_statistic(active: torch.Tensor):
    per_image = active.double().mean(dim=1)
    return lambda index: per_image[index].mean(dim=1)


def _woken_statistic(natural_active: torch.Tensor, other_active: torch.Tensor, blocks, quiet_fraction: float,
                     woken_fraction: float, count: str = "woken"):
    """Mean over classes of the woken (or quiet) channel count, for each index row."""
    def statistic(index: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(index.shape[0], dtype=torch.float64)
        for _, columns in blocks:
            rows = index[:, columns]
            for chunk_start in range(0, rows.shape[0], 64):
                chunk = rows[chunk_start:chunk_start + 64]
                quiet = natural_active[chunk].double().mean(dim=1) < quiet_fraction
                if count == "quiet":
                    hits = quiet
                else:
                    hits = quiet & (other_active[chunk].double().mean(dim=1) > woken_fraction)
                total[chunk_start:chunk_start + chunk.shape[0]] += hits.sum(dim=1)
        return total / len(blocks)
    return statistic


# --------------------------------------------------------------------------- the observation table


@dataclass
class ObservationRow:
    """The observations at one threshold. Counts are per class, averaged over the classes present.

    ``saturation``: share of channels active in a natural image; ``quiet``: quiet channels per class;
    ``woken_attack`` / ``woken_noise``: woken channels per class under the attack / under ±ε sign noise;
    ``woken_excess``: their paired difference (observation 2 is shown when its interval lies above 0).

    Raises: nothing of its own.
    Source: arXiv 2103.08307 §3, Figure 2; the definitions are this module's (see its docstring).
    """

    threshold: float
    saturation: Estimate
    quiet: Estimate
    woken_attack: Estimate
    woken_noise: Estimate
    woken_excess: Estimate
    woken_by_class: dict[int, int]

    @property
    def saturated(self) -> bool:
        """Whether natural images activate at least :data:`SATURATED_SHARE` of the channels."""
        return self.saturation.value >= SATURATED_SHARE


@dataclass
class Observations:
    """Both observations for one model and layer, with 95 % bootstrap intervals (resampled within class).

    ``magnitude_ratio`` (observation 1; shown when its interval lies above 1) and the entropies (per class, of the
    class's channel mass Σ_n a_nc, normalised by log C, averaged over classes) do not depend on the threshold; ``rows`` hold observation 2 at each threshold. ``attack`` records how the adversarial examples
    were made; ``n_examples`` and ``n_classes`` the sample.

    Units: eps in pixel units of [0, 1] (L∞).
    Raises: nothing of its own.
    Source: arXiv 2103.08307 §3, Figures 1-2.
    """

    layer: str
    channels: int
    eps: float
    n_examples: int
    n_classes: int
    magnitude_ratio: Estimate
    natural_entropy: Estimate
    adversarial_entropy: Estimate
    rows: list[ObservationRow]
    attack: dict = field(default_factory=dict)
    n_resamples: int = N_RESAMPLES

    def row(self, threshold: float) -> ObservationRow:
        """The row at ``threshold`` (ValueError when it was not measured)."""
        for row in self.rows:
            if math.isclose(row.threshold, threshold):
                return row
        raise ValueError(f"threshold {threshold} was not measured; measured: {[r.threshold for r in self.rows]}.")

    @property
    def observation_1(self) -> bool:
        """Adversarial activations are larger: the magnitude ratio's interval lies above 1."""
        return self.magnitude_ratio.low > 1

    def observation_2(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        """The attack wakes more quiet channels than sign noise: the paired excess's interval lies above 0."""
        return self.row(threshold).woken_excess.low > 0


def observe(natural: torch.Tensor, adversarial: torch.Tensor, noise: torch.Tensor, y: torch.Tensor,
            thresholds: Sequence[float] = TABLE_THRESHOLDS, quiet_fraction: float = QUIET_FRACTION,
            woken_fraction: float = WOKEN_FRACTION, n_resamples: int = N_RESAMPLES, seed: int = 0,
            level: float = LEVEL, layer: str = "", eps: float = math.nan, attack: dict | None = None) -> Observations:
    """Both observations from activations: magnitude ratio and entropies (observation 1), and at each threshold
    the saturation, quiet channels and woken channels under the attack and under sign noise (observation 2),
    each with a bootstrap interval over images resampled within class (paired across the three inputs).

    Shape: natural, adversarial, noise (N, C) non-negative activations, row n the same image (natural, attacked,
    sign-noised); y (N,) integer labels.
    Units: eps (recorded only) in pixel units of [0, 1] (L∞).
    Raises: ValueError for mismatched shapes, negative, NaN or infinite activations, thresholds that are not a
    non-empty sequence of values in [0, 1], a fraction outside [0, 1], or bad bootstrap settings.
    Source: arXiv 2103.08307 §3, Figures 1-2; the definitions and the null are this module's (its docstring).
    """
    y = _check_paired(y, natural, adversarial, noise)
    if any(not bool(a.isfinite().all()) for a in (natural, adversarial, noise)):
        raise ValueError("the activations hold NaN or infinite values; check the model and its inputs.")
    if any(bool((a < 0).any()) for a in (natural, adversarial, noise)):
        raise ValueError("the activations must be non-negative (take them after a ReLU).")
    thresholds = _check_settings(thresholds, quiet_fraction, woken_fraction, n_resamples)
    resamples = stratified_resamples(y, n_resamples, seed)
    blocks = class_blocks(y)
    rows = []
    for t in thresholds:
        nat, adv, noi = (activated(a, t) for a in (natural, adversarial, noise))
        attack_stat = _woken_statistic(nat, adv, blocks, quiet_fraction, woken_fraction)
        noise_stat = _woken_statistic(nat, noi, blocks, quiet_fraction, woken_fraction)
        rows.append(ObservationRow(
            threshold=float(t),
            saturation=bootstrap(_share_statistic(nat), resamples, level),
            quiet=bootstrap(_woken_statistic(nat, nat, blocks, quiet_fraction, woken_fraction, "quiet"),
                            resamples, level),
            woken_attack=bootstrap(attack_stat, resamples, level),
            woken_noise=bootstrap(noise_stat, resamples, level),
            woken_excess=bootstrap(lambda index: attack_stat(index) - noise_stat(index), resamples, level),
            woken_by_class=woken_per_class(natural, adversarial, y, t, quiet_fraction, woken_fraction)))
    return Observations(
        layer=layer, channels=natural.shape[1], eps=float(eps), n_examples=natural.shape[0],
        n_classes=len(blocks), magnitude_ratio=bootstrap(_ratio_statistic(natural, adversarial), resamples, level),
        natural_entropy=bootstrap(_entropy_statistic(natural, blocks), resamples, level),
        adversarial_entropy=bootstrap(_entropy_statistic(adversarial, blocks), resamples, level),
        rows=rows, attack=dict(attack or {}), n_resamples=n_resamples)


def _check_settings(thresholds: Sequence[float], quiet_fraction: float, woken_fraction: float,
                    n_resamples: int) -> tuple[float, ...]:
    """The thresholds as a tuple, after checking them, both fractions and the number of resamples."""
    if isinstance(thresholds, (int, float)) or not thresholds:
        raise ValueError(f"thresholds must be a non-empty sequence of fractions, e.g. (0.01, 0.1), got {thresholds!r}.")
    for t in thresholds:
        _check_threshold(t)
    _check_fraction(quiet_fraction, "quiet_fraction")
    _check_fraction(woken_fraction, "woken_fraction")
    _check_n_resamples(n_resamples)
    return tuple(float(t) for t in thresholds)


def sign_noise(x: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """``x`` plus random ±ε in every pixel (a fair coin per pixel), clipped to [0, 1]: the null perturbation that
    an attack's effect is compared with. Seeded; the caller's RNG is untouched.

    Shape: x (N, C, H, W) in [0, 1]; returns the same shape, dtype and device.
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError for images that break the input rule (:func:`cas_edu.validation.check_images`: floating
    point, finite, in [0, 1]), eps outside [0, 1] or a bad seed.
    Source: this package (no paper): a random-sign baseline at the attack's L∞ budget.
    """
    x = check_images(x)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] for images in [0, 1], got {eps}.")
    generator = torch.Generator().manual_seed(check_seed(seed))
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
    return (x + eps * signs).clamp(0, 1)


def measure_observations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, layer: str | None = None,
                         thresholds: Sequence[float] = TABLE_THRESHOLDS, steps: int = FIGURE_STEPS,
                         objective: str | None = None, quiet_fraction: float = QUIET_FRACTION,
                         woken_fraction: float = WOKEN_FRACTION, n_resamples: int = N_RESAMPLES, seed: int = 0,
                         batch_size: int = 256) -> Observations:
    """Both observations on ``model`` at ``layer`` (default: its activation layer; ResNet-18's ``layer4``): the
    images ``x``, PGD examples crafted on the same model as the official figures do (PGD-``steps``, step
    ε · 0.003/(8/255), random start, ``ce+cas`` on CAS models) and ±ε sign noise, all seeded by ``seed`` without
    touching the caller's RNG; then :func:`observe`.

    Shape: x (N, C, H, W) in [0, 1], y (N,) integer labels.
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError for bad images, labels, ε, layer, seed, batch size, thresholds or fractions.
    Source: arXiv 2103.08307 §3, Figures 1-2; ActivationAnalysis/freq_dis_resnet18_base.py (the attack).
    """
    if not 0 < eps <= 1:
        raise ValueError(f"eps must lie in (0, 1] for images in [0, 1] (8/255 ≈ 0.031 is the paper's), got {eps}.")
    seed, batch_size = check_seed(seed), check_batch_size(batch_size)
    thresholds = _check_settings(thresholds, quiet_fraction, woken_fraction, n_resamples)
    objective = default_objective(model) if objective is None else objective
    if y is None:
        raise ValueError("measure_observations needs the labels y of the images (an integer tensor of shape (N,)).")
    x, y = validate_attack_inputs(model, x, y, eps, objective)
    x, y = x.cpu(), y.cpu()
    name = resolve_layer(model, layer)
    natural = channel_activations(model, x, layer, batch_size)
    with seeded(seed, model_device(model)):
        x_adv = _figure_attack(model, x, y, eps, steps, figure_step_size(eps), objective, batch_size)
    adversarial = channel_activations(model, x_adv, layer, batch_size)
    noise = channel_activations(model, sign_noise(x, eps, seed), layer, batch_size)
    attack = {"name": f"PGD-{steps}", "steps": steps, "step_size": figure_step_size(eps), "objective": objective,
              "random_start": True}
    return observe(natural, adversarial, noise, y, thresholds, quiet_fraction, woken_fraction, n_resamples, seed,
                   layer=name, eps=eps, attack=attack)


def observation_table(results: Sequence[tuple[str, Observations]], digits: int = 2) -> str:
    """A markdown table, one row per ``(label, observations)``: magnitude ratio, natural → adversarial entropy,
    and at each threshold the saturation and the woken channels per class (attack / sign noise), with intervals.

    Raises: ValueError when the results were measured at different thresholds.
    Source: arXiv 2103.08307 §3, Figures 1-2 (what the columns summarise).
    """
    if not results:
        return ""
    thresholds = [r.threshold for r in results[0][1].rows]
    if any([r.threshold for r in obs.rows] != thresholds for _, obs in results):
        raise ValueError("all results must be measured at the same thresholds.")
    headers = ["model", "layer (C)", "adv/nat magnitude", "entropy nat", "entropy adv"]
    for t in thresholds:
        headers += [f"saturation @{100 * t:g}%", f"woken/class @{100 * t:g}%: attack", "noise"]
    rows = []
    for label, obs in results:
        row = [label, f"{obs.layer} ({obs.channels})", obs.magnitude_ratio.format(digits),
               obs.natural_entropy.format(digits), obs.adversarial_entropy.format(digits)]
        for r in obs.rows:
            row += [r.saturation.format(digits), r.woken_attack.format(1), r.woken_noise.format(1)]
        rows.append(row)
    return markdown_table(headers, rows)
