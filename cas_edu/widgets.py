"""Interactive explorers for the notebooks: thin ipywidgets 8 controls over library functions.

Each explorer has a plain view function that computes what it shows by calling the library
(:func:`epsilon_view` → :func:`cas_edu.evaluation.craft`; :func:`activation_view` →
:func:`cas_edu.activations.compare_activations`; :func:`channel_view` →
:func:`cas_edu.activations.suppression_summary`),
a figure drawn by :mod:`cas_edu.plots`, and a small class on :class:`Explorer`: moving a control calls ``update()``,
which computes ``view()`` and writes it into the ``go.FigureWidget``. The activation explorer's threshold slider
re-counts cached activations (no new attack) and its summary says when the count is saturated. Tests drive every
widget headlessly by setting a control's value and reading the figure's data.
"""
from __future__ import annotations

from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any, Iterator, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn

from . import plots
from .activations import (DEFAULT_THRESHOLD, ActivationComparison, ChannelData, compare_activations,
                          suppression_summary)
from .activations import class_comparison  # deprecated alias (moved to cas_edu.activations), kept for one release
from .evaluation import CURVE_ATTACKS, LABELS, craft, curve_options
from .models import eval_mode, model_device, num_classes
from .plots import DIVERGING  # deprecated alias (moved to cas_edu.plots), kept for one release
from .runtime import progress_bar
from .validation import check_inputs, check_seed

__all__ = ["ACTIVATION_THRESHOLDS", "ActivationExplorer", "ChannelExplorer", "EPSILON_ATTACKS", "EpsilonExplorer",
           "Explorer", "activation_view", "channel_view", "craft_adversarial", "epsilon_view", "summary_html"]

#: Attacks the ε explorer offers: value -> button label (:data:`cas_edu.evaluation.CURVE_ATTACKS`).
EPSILON_ATTACKS = {name: LABELS[name] for name in CURVE_ATTACKS}
#: Activation thresholds the activation explorer offers (fractions of each image's largest channel; the paper: 1 %).
ACTIVATION_THRESHOLDS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)


#: The height a snapshot's figure gains for the title line saying it is a snapshot (plotly title font, 17 px).
_TITLE_LINE_PX = 30


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run tiny CPU work (one 8×8 image, a few dozen rows of statistics) on one intra-op thread: more threads only
    add synchronisation, which on a busy machine can cost 100× the work itself. The thread count is restored."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class _ExplorerBox(widgets.VBox):
    """An explorer's rows of controls and figure. Its text form, which a viewer without a kernel shows in place of
    the widget, says what it is instead of listing every child widget (``VBox(children=(HBox(...``)."""

    def __init__(self, children: list[widgets.Widget], explorer_name: str) -> None:
        super().__init__(children)
        self._explorer_name = explorer_name

    def __repr__(self) -> str:
        return f"[{self._explorer_name}: interactive, run the notebook to use it]"


class Explorer:
    """The skeleton every explorer shares: controls whose changes call :meth:`update`, which computes
    :meth:`view` (on one CPU thread) and writes it into :attr:`figure` (a ``go.FigureWidget``) in one batch
    update: the properties :meth:`traces` gives, trace by trace, and the :meth:`title`. :attr:`last_view` keeps
    the view drawn, :attr:`widget` shows controls and figure.

    A subclass builds its controls and ``self.figure`` (from a :mod:`cas_edu.plots` figure), then calls
    :meth:`_connect`; it implements :meth:`view`, :meth:`traces` and :meth:`title`. :meth:`snapshot` copies the
    figure for viewers without a kernel.

    Raises: nothing of its own.
    """

    figure: go.FigureWidget
    widget: widgets.VBox
    last_view: dict[str, Any]

    def _connect(self, controls: Sequence[widgets.Widget], rows: Sequence[widgets.Widget]) -> None:
        self.last_view = {}
        self._controls = list(controls)
        self._initial_values = [control.value for control in self._controls]
        self.update()
        for control in controls:
            control.observe(self._on_change, names="value")
        self.widget = _ExplorerBox(list(rows), type(self).__name__)

    def view(self) -> dict[str, Any]:
        """The view for the controls' current values."""
        raise NotImplementedError

    def traces(self, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        """For each trace of the figure, in order, the properties ``view`` gives it (e.g. ``{"y": ...}``)."""
        raise NotImplementedError

    def title(self, view: Mapping[str, Any]) -> str:
        """The figure's title for ``view``."""
        raise NotImplementedError

    def update(self) -> dict[str, Any]:
        """Recompute the view from the controls and write it into the figure; returns the view."""
        with _one_thread():
            v = self.view()
        with self.figure.batch_update():
            for trace, properties in zip(self.figure.data, self.traces(v)):
                trace.update(properties)
            self.figure.layout.title.text = self.title(v)
        self.last_view = v
        return v

    def _on_change(self, _change: dict) -> None:
        self.update()

    def snapshot(self) -> go.Figure:
        """A plain ``go.Figure`` copy of the figure as the controls now set it, for a static view of the notebook
        (GitHub, nbviewer, an HTML export show no widget): its title says it is a static snapshot of the initial
        view (of the current view once a control has moved); data, axis titles and legend are kept.

        Raises: nothing of its own.
        """
        moved = [control.value for control in self._controls] != self._initial_values
        figure = go.Figure(self.figure)
        note = "current" if moved else "initial"
        layout = figure.layout
        # one more title line: the plot keeps its height, the figure grows by it
        layout.margin.t = (layout.margin.t if layout.margin.t is not None else 100) + _TITLE_LINE_PX
        layout.height = (layout.height or 500) + _TITLE_LINE_PX
        layout.title.text = (f"Static snapshot of the explorer's {note} view (run the notebook to move its "
                             f"controls)<br>{self.figure.layout.title.text}")
        return figure


def _check_explorer_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` on the CPU, checked and cast by the input rule (:mod:`cas_edu.validation`), with one class name
    per class of ``model``. Raises ``ValueError``."""
    x, y = check_inputs(model, x, y)
    k = num_classes(model, x)
    if k is not None and len(classes) != k:
        raise ValueError(f"classes names {len(classes)} classes but the model has {k}; pass one name per class "
                         "(e.g. dataset.classes).")
    return x.cpu(), y.cpu()


def _image_array(image: torch.Tensor) -> np.ndarray:
    """One image C×H×W in [0, 1] -> H×W (gray, float) or H×W×3 (RGB, uint8) for plotly."""
    image = image.detach().cpu().float()
    if image.shape[0] == 1:
        return image[0].numpy()
    return (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------- the ε explorer


def craft_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: str = "fgsm",
                      steps: int = 10, seed: int = 0) -> torch.Tensor:
    """FGSM (no random start) or PGD-``steps`` adversarial images for ``x`` on the model's device, in the dtype of
    ``x``; the random start draws from ``torch.manual_seed(seed)`` without touching the caller's RNG
    (:func:`cas_edu.evaluation.craft` with :func:`cas_edu.evaluation.curve_options`).

    Shape: x (N, C, H, W) in [0, 1], y (N,) integer labels (input rule of :mod:`cas_edu.validation`, also checked
    at ε = 0); returns (N, C, H, W).
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError for an attack other than ``fgsm`` / ``pgd``, bad inputs, ε, steps or seed.
    """
    if attack not in EPSILON_ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(EPSILON_ATTACKS)}.")
    return craft(model, x, y, attack, eps=eps, seed=check_seed(seed), **curve_options(attack, steps))


def epsilon_view(model: nn.Module, x: torch.Tensor, y: torch.Tensor | int, eps: float, attack: str = "fgsm",
                 steps: int = 10, seed: int = 0) -> dict[str, Any]:
    """Everything the ε explorer draws for one image ``x`` attacked with budget ``eps`` (:func:`craft_adversarial`).

    Returns numpy arrays ``clean`` / ``adversarial`` (H×W gray or H×W×3 uint8 RGB), ``perturbation``
    (δ = x_adv − x, channel mean, H×W, raw values), ``probs_clean`` / ``probs_adversarial`` (K), and
    ``label``, ``pred_clean``, ``pred_adversarial``, ``linf`` (‖δ‖∞), ``l2`` (‖δ‖₂), ``eps``, ``attack``.

    Shape: x (C, H, W) or (1, C, H, W) in [0, 1]; y an int or a one-element integer tensor (input rule of
    :mod:`cas_edu.validation`).
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError for more than one image, bad inputs, an unknown attack, ε, steps or seed.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    if isinstance(x, torch.Tensor) and x.dim() >= 2 and (x.dim() != 4 or x.shape[0] != 1):
        raise ValueError(f"epsilon_view shows one image; pass x shaped C×H×W or 1×C×H×W, got {tuple(x.shape)}.")
    if isinstance(y, Integral) and not isinstance(y, bool):
        y = torch.tensor([int(y)])
    elif isinstance(y, torch.Tensor) and y.numel() == 1:
        y = y.reshape(1)
    x, y = check_inputs(model, x, y)
    device = model_device(model)
    with _one_thread():
        x_adv = craft_adversarial(model, x, y, eps, attack, steps, seed)
        with torch.no_grad(), eval_mode(model):
            probs = model(torch.cat([x.to(device), x_adv])).softmax(dim=1).cpu()
    delta = (x_adv.cpu() - x.cpu())[0]
    return {
        "clean": _image_array(x[0]),
        "adversarial": _image_array(x_adv[0]),
        "perturbation": delta.mean(dim=0).numpy(),
        "probs_clean": probs[0].numpy(),
        "probs_adversarial": probs[1].numpy(),
        "label": int(y.item()),
        "pred_clean": int(probs[0].argmax()),
        "pred_adversarial": int(probs[1].argmax()),
        "linf": float(delta.abs().max()),
        "l2": float(delta.norm()),
        "eps": float(eps),
        "attack": attack,
    }


class EpsilonExplorer(Explorer):
    """ε slider, attack choice and example picker driving one figure (:func:`cas_edu.plots.epsilon_figure`): clean
    image, perturbation, adversarial image and class probabilities. Views are cached per example/attack/ε.

    Shape: x (N, C, H, W) in [0, 1], N ≥ 1; y (N,) integer labels (input rule of :mod:`cas_edu.validation`);
    ``classes`` names every class of the model.
    Units: eps, eps_max and eps_step in pixel units of [0, 1] (L∞).
    Raises: ValueError for bad inputs, class names, ``0 ≤ eps ≤ eps_max ≤ 1`` broken, or an unknown attack.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
                 eps: float = 0.1, eps_max: float = 0.3, eps_step: float = 0.01, attack: str = "fgsm",
                 index: int = 0, steps: int = 10, seed: int = 0) -> None:
        x, y = _check_explorer_inputs(model, x, y, classes)
        if x.dim() != 4 or len(x) == 0:
            raise ValueError(f"x must be N×C×H×W with N = len(y) > 0, got {tuple(x.shape)} and {len(y)} labels.")
        if not 0 < eps_max <= 1 or not 0 <= eps <= eps_max:
            raise ValueError(f"need 0 <= eps <= eps_max <= 1, got eps={eps}, eps_max={eps_max}.")
        self.model, self.x, self.y, self.classes = model, x, y, [str(c) for c in classes]
        self.steps, self.seed, self.eps_max = steps, seed, eps_max
        self._cache: dict[tuple, dict[str, Any]] = {}
        self.eps_slider = widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_step, description="ε",
                                              readout_format=".3f", continuous_update=True)
        self.attack_picker = widgets.ToggleButtons(options=[(label, key) for key, label in EPSILON_ATTACKS.items()],
                                                   value=attack, description="attack")
        self.example_picker = widgets.IntSlider(value=index, min=0, max=len(x) - 1, description="example")
        self.figure = go.FigureWidget(plots.epsilon_figure(self.view(), self.classes, eps_max))
        self._connect([self.eps_slider, self.attack_picker, self.example_picker],
                      [widgets.HBox([self.eps_slider, self.attack_picker]), self.example_picker, self.figure])

    def view(self) -> dict[str, Any]:
        """The view for the controls' current values (computed once per example/attack/ε)."""
        index, attack, eps = int(self.example_picker.value), self.attack_picker.value, float(self.eps_slider.value)
        key = (index, attack, round(eps, 6))
        if key not in self._cache:
            self._cache[key] = epsilon_view(self.model, self.x[index], self.y[index], eps, attack, self.steps,
                                            self.seed)
        return self._cache[key]

    def traces(self, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Clean image, perturbation, adversarial image, then both probability bars."""
        return [{"z": view["clean"]}, {"z": view["perturbation"]}, {"z": view["adversarial"]},
                {"y": view["probs_clean"]}, {"y": view["probs_adversarial"]}]

    def title(self, view: Mapping[str, Any]) -> str:
        """Attack, ε, true and predicted classes and the verdict."""
        name = self.classes
        verdict = "still correct" if view["pred_adversarial"] == view["label"] else "fooled"
        return (f"{EPSILON_ATTACKS[view['attack']]}, ε = {view['eps']:.3f}: true {name[view['label']]}, predicted "
                f"{name[view['pred_clean']]} → {name[view['pred_adversarial']]} ({verdict}); "
                f"‖δ‖∞ = {view['linf']:.3f}")


# --------------------------------------------------------------------------- the activation explorer


def _full_comparison(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, model_name: str,
                     layer: str | None, steps: int, seed: int, cache: dict) -> ActivationComparison:
    """The every-example comparison of one model at ε, from ``cache`` or computed once (seeded) and cached."""
    if model_name not in models:
        raise ValueError(f"Unknown model {model_name!r}; choose one of {', '.join(models)}.")
    key = (model_name, round(float(eps), 6), layer, steps, seed)
    if key not in cache:
        cache[key] = compare_activations(models[model_name], x, y, float(eps), layer=layer, steps=steps, seed=seed)
    return cache[key]


def activation_view(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, class_id: int,
                    model_name: str, layer: str | None = None, steps: int = 20, seed: int = 0,
                    cache: dict | None = None, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Figure 1 / Figure 2 curves and scalar summaries for one model, class, ε and activation threshold.

    PGD-``steps`` (the official figures' attack, :func:`cas_edu.activations.compare_activations`, seeded with
    ``seed``) runs once per (model, ε) on all of ``x``; ``cache`` (a dict) keeps those comparisons so that
    changing the class or the threshold, or returning to an ε, costs only the statistics
    (:func:`cas_edu.activations.class_comparison` re-counts the cached activations at ``threshold``). A channel
    counts as activated by an image when it exceeds ``threshold`` × the image's largest channel (the paper: 1 %).
    Returns numpy ``rank`` (1..C), ``natural_magnitudes`` / ``adversarial_magnitudes`` (each sorted descending,
    Figure 1), ``natural_counts`` / ``adversarial_counts`` (sorted by the natural count, Figure 2), ``summary``
    (``ActivationComparison.summary()``: with ``threshold``, ``saturation`` and ``saturated``),
    ``saturation_note`` (one sentence, ``ActivationComparison.saturation_note()``), ``model_name``,
    ``class_id``, ``eps``, ``threshold``, ``layer``.

    Shape: x (N, C, H, W) in [0, 1], y (N,) integer labels (input rule of :mod:`cas_edu.validation`).
    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError for an unknown model, bad inputs, seed or ε, a threshold outside [0, 1], or a class
    without examples in y.
    """
    cache = {} if cache is None else cache
    full = _full_comparison(models, x, y, eps, model_name, layer, steps, seed, cache)
    with _one_thread():
        comparison = class_comparison(full, y, class_id, threshold)
        summary = comparison.summary()
    return {
        "rank": np.arange(1, comparison.natural.shape[1] + 1),
        "natural_magnitudes": comparison.natural_magnitudes.numpy(),
        "adversarial_magnitudes": comparison.adversarial_magnitudes.numpy(),
        "natural_counts": comparison.natural_counts.numpy(),
        "adversarial_counts": comparison.adversarial_counts.numpy(),
        "summary": summary,
        "saturation_note": comparison.saturation_note(),
        "model_name": model_name,
        "class_id": int(class_id),
        "eps": float(eps),
        "threshold": float(threshold),
        "layer": comparison.layer,
    }


def summary_html(view: Mapping[str, Any]) -> str:
    """A small HTML table of an activation view's scalar summaries, then one plain sentence on the count's
    saturation at the view's threshold (bold when saturated: the count cannot show quiet channels).

    Raises: nothing of its own (a view without ``summary`` or ``saturation_note`` raises KeyError).
    """
    s = view["summary"]
    rows = [("examples", f"{int(s['n_examples'])}", ""),
            ("mean activation (adv ÷ nat)", f"{s['magnitude_ratio']:.3f}", ""),
            ("channel entropy (1 = uniform)", f"{s['natural_entropy']:.3f}", f"{s['adversarial_entropy']:.3f}"),
            (f"fraction of channels activated (t = {100 * s['threshold']:.3g} %)",
             f"{s['natural_fraction_activated']:.3f}", f"{s['adversarial_fraction_activated']:.3f}")]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    note = view["saturation_note"]
    note = f"<b>{note}</b>" if s["saturated"] else note
    return ("<table style='font-family:monospace'><tr><th></th><th>natural</th><th>adversarial</th></tr>"
            + body + f"</table><p style='font-family:monospace'>{note}</p>")


class ActivationExplorer(Explorer):
    """ε slider, class picker, model toggle and activation-threshold slider driving Figure 1 (magnitudes) and
    Figure 2 (counts) (:func:`cas_edu.plots.activation_figure`) plus a summary table. ``precompute()`` crafts PGD
    examples for every (model, ε on the slider's grid) once.

    The threshold t (:data:`ACTIVATION_THRESHOLDS`, plus ``threshold`` if it is not one of them) decides when a
    channel counts as activated by an image: above t × the image's largest channel (the paper: 1 %). Moving it
    re-counts the cached activations and never attacks again. On a dense layer almost every channel passes 1 %:
    the count is then *saturated* and cannot show quiet channels; the summary under the figure says how many
    channels natural images activate at t and says plainly when the count is saturated
    (``ActivationComparison.saturation_note()``), and the count's axis names t.

    Shape: x (N, C, H, W) in [0, 1], N ≥ 1; y (N,) integer labels (input rule of :mod:`cas_edu.validation`, for
    every model); ``classes`` names every class and ``class_id`` must have an example in ``y``.
    Units: eps, eps_max and eps_step in pixel units of [0, 1] (L∞); threshold a fraction in [0, 1] of each
    image's largest channel.
    Raises: ValueError for no models, bad inputs or class names, a bad ε grid, a threshold outside [0, 1], or an
    absent ``class_id``.
    """

    def __init__(self, models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
                 eps: float = 0.1, eps_max: float = 0.2, eps_step: float = 0.025, class_id: int = 0,
                 model_name: str | None = None, layer: str | None = None, steps: int = 20, seed: int = 0,
                 precompute: bool = True, progress: bool | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> None:
        if not models:
            raise ValueError("ActivationExplorer needs at least one model, e.g. {'STD': std_model, 'AT': at_model}.")
        if not 0 < eps_step <= eps_max <= 1 or not 0 <= eps <= eps_max:
            raise ValueError(f"need 0 < eps_step <= eps_max <= 1 and 0 <= eps <= eps_max, got {eps}, {eps_max}, {eps_step}.")
        if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0 <= threshold <= 1:
            raise ValueError(f"threshold is a fraction of each image's largest channel and must lie in [0, 1] "
                             f"(the paper's is 0.01), got {threshold!r}.")
        for model in models.values():
            checked = _check_explorer_inputs(model, x, y, classes)
        x, y = checked
        if len(x) == 0:
            raise ValueError("x holds no images; pass at least one image and its label.")
        self.models, self.x, self.y = dict(models), x, y
        self.classes = [str(c) for c in classes]
        self.layer, self.steps, self.seed = layer, steps, seed
        self.cache: dict = {}
        self.eps_slider = widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=eps_step, description="ε",
                                              readout_format=".3f", continuous_update=True)
        present = sorted(set(self.y.tolist()))
        if class_id not in present:
            raise ValueError(f"class_id {class_id!r} has no example in y; choose one of {present}.")
        self.class_picker = widgets.Dropdown(options=[(f"{c}: {self.classes[c]}", c) for c in present],
                                             value=class_id, description="class")
        self.model_toggle = widgets.ToggleButtons(options=list(self.models), value=model_name or next(iter(self.models)),
                                                  description="model")
        thresholds = sorted({*ACTIVATION_THRESHOLDS, float(threshold)})
        self.threshold_slider = widgets.SelectionSlider(options=[(f"{100 * t:g} %", t) for t in thresholds],
                                                        value=float(threshold), description="threshold t",
                                                        continuous_update=True)
        self.summary = widgets.HTML()
        if precompute:
            self.precompute(progress)
        first = self.comparison(self.model_toggle.value, float(self.eps_slider.value), int(self.class_picker.value))
        self.figure = go.FigureWidget(plots.activation_figure(first))
        self._connect([self.eps_slider, self.class_picker, self.model_toggle, self.threshold_slider],
                      [widgets.HBox([self.eps_slider, self.class_picker]),
                       widgets.HBox([self.model_toggle, self.threshold_slider]), self.figure, self.summary])

    @property
    def eps_grid(self) -> list[float]:
        """The ε values the slider can take."""
        s = self.eps_slider
        return [round(i * s.step, 6) for i in range(int(round(s.max / s.step)) + 1)]

    def precompute(self, progress: bool | None = None) -> None:
        """Craft adversarial examples and activations for every model and slider ε (a progress bar shows it)."""
        jobs = [(name, eps) for name in self.models for eps in self.eps_grid]
        for name, eps in progress_bar(jobs, desc="PGD + activations", disable=progress is False):
            _full_comparison(self.models, self.x, self.y, eps, name, self.layer, self.steps, self.seed, self.cache)

    def comparison(self, model_name: str, eps: float, class_id: int | None = None,
                   threshold: float | None = None) -> ActivationComparison:
        """The (cached) natural-vs-PGD comparison for one model and ε: every example, or one class, counted at
        ``threshold`` (None: the threshold slider's value; a new threshold re-counts, it never attacks again)."""
        threshold = float(self.threshold_slider.value) if threshold is None else threshold
        full = _full_comparison(self.models, self.x, self.y, eps, model_name, self.layer, self.steps, self.seed,
                                self.cache)
        if class_id is None:
            return full if threshold == full.threshold else full.at_threshold(threshold)
        return class_comparison(full, self.y, class_id, threshold)

    def view(self) -> dict[str, Any]:
        """The activation view for the controls' current values."""
        return activation_view(self.models, self.x, self.y, float(self.eps_slider.value), int(self.class_picker.value),
                               self.model_toggle.value, self.layer, self.steps, self.seed, self.cache,
                               float(self.threshold_slider.value))

    def traces(self, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Figure 1 curves, then the Figure 2 bars (natural, adversarial)."""
        return [{"x": view["rank"], "y": view[key]} for key in
                ("natural_magnitudes", "adversarial_magnitudes", "natural_counts", "adversarial_counts")]

    def title(self, view: Mapping[str, Any]) -> str:
        """Model, class, attack, layer, the threshold and the mean-activation ratio; "count saturated" when it is."""
        s = view["summary"]
        saturated = " (count saturated)" if s["saturated"] else ""
        return (f"{view['model_name']}, class {self.classes[view['class_id']]} ({int(s['n_examples'])} test images), "
                f"PGD-{self.steps} ε = {view['eps']:.3f}, layer {view['layer']}, t = {100 * view['threshold']:g} %"
                f"{saturated}: mean activation ×{s['magnitude_ratio']:.2f}")

    def update(self) -> dict[str, Any]:
        """Recompute the view, write it into the figure, the count axis' threshold and the summary table; returns
        the view."""
        view = super().update()
        self.figure.layout.yaxis2.title.text = plots.count_axis_title(view["threshold"])
        self.summary.value = summary_html(view)
        return view


# --------------------------------------------------------------------------- the channel explorer


def channel_view(data: ChannelData, class_id: int, eps: float) -> dict[str, Any]:
    """The channel explorer's view of class ``class_id`` at (the precomputed ε nearest to) ``eps``: the class's
    :func:`cas_edu.activations.suppression_summary` with its tensors as numpy arrays (``order`` as a list).

    Channels are ordered by the class's mask weight W[k] (largest first). The view holds the mask weights, which
    channels are suppressed (negative or ≤ 5% of the largest |w|), the class's mean natural and adversarial
    activations before and after the mask (in that order), and summaries: accuracies, how often the
    auxiliary head picked the right mask, the share of activation on suppressed channels, and the relative
    change of the pre-mask activations under attack.

    Units: eps in pixel units of [0, 1] (L∞).
    Raises: ValueError when ``data`` has no CAS module, ``class_id`` is outside [0, K), or the class has no
    precomputed image.
    """
    summary = suppression_summary(data, class_id, eps)
    view = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in summary.items()}
    view["order"] = summary["order"].tolist()
    return view


class ChannelExplorer(Explorer):
    """Class picker and ε slider driving one figure (:func:`cas_edu.plots.channel_mask_figure`): the class's CAS
    mask weights per channel (suppressed channels in grey) and its mean natural vs adversarial channel activations
    before and after the mask.

    All activations are precomputed by :func:`cas_edu.activations.channel_data` for the ε grid, so an update only
    indexes tensors and rewrites the figure (:func:`channel_view` holds the logic).

    Units: eps in pixel units of [0, 1] (L∞); the nearest precomputed ε is used (default: the largest).
    Raises: ValueError when ``data`` has no CAS module, or as :func:`channel_view` for the first view.
    """

    def __init__(self, data: ChannelData, classes: Sequence[str], class_id: int = 0, eps: float | None = None) -> None:
        if not data.has_cas:
            raise ValueError("ChannelExplorer needs a model with CAS modules; train one with cas=True.")
        self.data, self.classes = data, [str(c) for c in classes]
        eps = data.eps_values[-1] if eps is None else data.nearest_eps(eps)
        self.class_picker = widgets.Dropdown(options=[(f"{i}: {c}", i) for i, c in enumerate(self.classes)],
                                             value=int(class_id), description="class")
        self.eps_slider = widgets.SelectionSlider(options=[(f"{e:.3g}", e) for e in data.eps_values], value=eps,
                                                  description="PGD ε", continuous_update=True)
        self.figure = go.FigureWidget(plots.channel_mask_figure(self.view()))
        self._connect([self.class_picker, self.eps_slider],
                      [widgets.HBox([self.class_picker, self.eps_slider]), self.figure])

    def view(self) -> dict[str, Any]:
        """The channel view for the controls' current values."""
        return channel_view(self.data, self.class_picker.value, self.eps_slider.value)

    def traces(self, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The kept and suppressed mask bars, then the activations before and after the mask."""
        kept, suppressed = plots.mask_bars(view["mask"], view["suppressed"])
        return [{"y": kept}, {"y": suppressed}] + [{"y": view[f"{kind}_{stage}"]} for stage in ("pre", "post")
                                                    for kind in ("natural", "adversarial")]

    def title(self, view: Mapping[str, Any]) -> str:
        """Class, ε, suppressed channels, accuracy and right-mask rates, and the suppressed share."""
        return (
            f"class {self.classes[view['class_id']]}, PGD ε = {view['eps']:.3g} ({view['n_examples']} images): "
            f"{int(view['suppressed'].sum())} of {len(view['mask'])} channels suppressed; accuracy "
            f"{view['accuracy_natural']:.0%} → {view['accuracy_adversarial']:.0%}, right mask "
            f"{view['right_mask_natural']:.0%} → {view['right_mask_adversarial']:.0%}<br><sup>share of pre-mask "
            f"activation on suppressed channels: natural {view['suppressed_share_natural']:.0%}, adversarial "
            f"{view['suppressed_share_adversarial']:.0%}</sup>")
