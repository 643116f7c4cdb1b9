"""Interactive explorers for the notebooks: a pure function computes each view, a small class wires it to
ipywidgets 8 controls and one plotly ``go.FigureWidget``, so tests can drive every widget headlessly."""
from __future__ import annotations

import plotly.graph_objects as go

# --- notebooks 01-02 ---
import math  # noqa: F401 - also used by the notebooks 03-04 section below
from contextlib import contextmanager
from numbers import Integral
from typing import Any, Iterator, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from plotly.subplots import make_subplots
from torch import nn

from . import activations as _activations
from . import attacks as _attacks
from .validation import check_inputs, check_seed, model_device, num_classes

#: Attacks the ε explorer offers: value -> button label.
EPSILON_ATTACKS = {"fgsm": "FGSM", "pgd": "PGD-10"}
#: Blue for negative, white for 0, red for positive values (perturbations).
DIVERGING = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run tiny CPU work (one 8×8 image) on one intra-op thread: more threads only add synchronisation,
    which on a busy machine can cost 100× the work itself. The previous thread count is restored."""
    before = torch.get_num_threads()
    if device.type == "cpu" and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _device_of(model: nn.Module) -> torch.device:
    return model_device(model)


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


def craft_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: str = "fgsm",
                      steps: int = 10, seed: int = 0) -> torch.Tensor:
    """FGSM (no random start) or seeded PGD-``steps`` adversarial images for ``x`` on the model's device, in the
    dtype of ``x``. ``x``, ``y``: images and labels by the input rule of :mod:`cas_edu.validation` (also checked
    at ε = 0).
    Raises ``ValueError`` for an unknown attack and bad inputs.
    """
    if attack not in EPSILON_ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(EPSILON_ATTACKS)}.")
    _, y = check_inputs(model, x, y)  # the attacks cast x themselves and answer in its dtype
    seed = check_seed(seed)
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    if eps == 0:
        return x.clone()
    if attack == "fgsm":
        return _attacks.fgsm(model, x, y, eps, random_start=False)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _attacks.pgd(model, x, y, eps, steps=steps)


def epsilon_view(model: nn.Module, x: torch.Tensor, y: torch.Tensor | int, eps: float, attack: str = "fgsm",
                 steps: int = 10, seed: int = 0) -> dict[str, Any]:
    """Everything the ε explorer draws for one image ``x`` (C×H×W or 1×C×H×W) attacked with budget ``eps``.

    Returns numpy arrays ``clean`` / ``adversarial`` (H×W gray or H×W×3 uint8 RGB), ``perturbation``
    (δ = x_adv − x, channel mean, H×W, raw values), ``probs_clean`` / ``probs_adversarial`` (K), and
    ``label``, ``pred_clean``, ``pred_adversarial``, ``linf`` (‖δ‖∞), ``l2`` (‖δ‖₂), ``eps``, ``attack``.
    ``y`` is its label: an int or a one-element integer tensor (input rule: :mod:`cas_edu.validation`).
    Raises ``ValueError`` for bad inputs.
    """
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    if isinstance(x, torch.Tensor) and x.dim() >= 2 and (x.dim() != 4 or x.shape[0] != 1):
        raise ValueError(f"epsilon_view shows one image; pass x shaped C×H×W or 1×C×H×W, got {tuple(x.shape)}.")
    if isinstance(y, Integral) and not isinstance(y, bool):
        y = torch.tensor([int(y)])
    elif isinstance(y, torch.Tensor) and y.numel() == 1:
        y = y.reshape(1)
    x, y = check_inputs(model, x, y)  # images and labels by the input rule (cas_edu.validation)
    device = _device_of(model)
    with _one_thread(device):
        x_adv = craft_adversarial(model, x, y, eps, attack, steps, seed)
        with torch.no_grad(), _attacks.eval_mode(model):
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


def _image_trace(sample: np.ndarray, name: str) -> go.BaseTraceType:
    if sample.ndim == 3:
        return go.Image(z=sample, name=name, hoverinfo="x+y+z")
    return go.Heatmap(z=sample, zmin=0, zmax=1, colorscale="gray_r", showscale=False, name=name,
                      hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra>" + name + "</extra>")


class EpsilonExplorer:
    """ε slider, attack choice and example picker driving one figure: clean image, perturbation, adversarial
    image and class probabilities. ``update()`` redraws from the controls (cached per example/attack/ε).
    ``x``, ``y`` follow the input rule of :mod:`cas_edu.validation`; ``classes`` names every class of the model.
    Raises ``ValueError`` for bad inputs."""

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
        self.figure = self._build_figure()
        self.last_view: dict[str, Any] = {}
        self.update()
        for control in (self.eps_slider, self.attack_picker, self.example_picker):
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.eps_slider, self.attack_picker]), self.example_picker,
                                    self.figure])

    def _build_figure(self) -> go.FigureWidget:
        first = epsilon_view(self.model, self.x[0], self.y[0], 0.0)
        fig = make_subplots(rows=1, cols=4, column_widths=[0.19, 0.19, 0.19, 0.43], horizontal_spacing=0.06,
                            subplot_titles=("clean x", "perturbation δ = x_adv − x", "adversarial x_adv",
                                            "class probabilities"))
        fig.add_trace(_image_trace(first["clean"], "clean"), row=1, col=1)
        fig.add_trace(go.Heatmap(z=first["perturbation"], zmin=-self.eps_max, zmax=self.eps_max, colorscale=DIVERGING,
                                 name="δ", colorbar=dict(title="δ", orientation="h", x=0.294, xanchor="center", y=-0.06,
                                               yanchor="top", len=0.16, thickness=8),
                                 hovertemplate="row %{y}, col %{x}: δ = %{z:.3f}<extra></extra>"), row=1, col=2)
        fig.add_trace(_image_trace(first["adversarial"], "adversarial"), row=1, col=3)
        fig.add_trace(go.Bar(x=self.classes, y=first["probs_clean"], name="clean", marker_color="#1f77b4"), row=1, col=4)
        fig.add_trace(go.Bar(x=self.classes, y=first["probs_adversarial"], name="adversarial",
                             marker_color="#d62728"), row=1, col=4)
        for col in (1, 2, 3):
            fig.update_xaxes(showticklabels=False, title_text="pixel column" if col == 1 else None, row=1, col=col)
            fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{col if col > 1 else ''}",
                             title_text="pixel row" if col == 1 else None, row=1, col=col)
        fig.update_xaxes(title_text="class", type="category", row=1, col=4)
        fig.update_yaxes(title_text="probability", range=[0, 1.02], row=1, col=4)
        fig.update_layout(height=380, width=1000, barmode="group", margin=dict(l=40, r=20, t=80, b=90),
                          legend=dict(title="input", orientation="h", x=0.65, y=-0.25), title=dict(text="", x=0.01))
        return go.FigureWidget(fig)

    def view(self) -> dict[str, Any]:
        """The view for the controls' current values (computed once per example/attack/ε)."""
        index, attack, eps = int(self.example_picker.value), self.attack_picker.value, float(self.eps_slider.value)
        key = (index, attack, round(eps, 6))
        if key not in self._cache:
            self._cache[key] = epsilon_view(self.model, self.x[index], self.y[index], eps, attack, self.steps, self.seed)
        return self._cache[key]

    def _on_change(self, _change: dict) -> None:
        self.update()

    def update(self) -> dict[str, Any]:
        """Recompute the view from the controls and write it into the figure; returns the view."""
        v = self.view()
        name = self.classes
        verdict = "still correct" if v["pred_adversarial"] == v["label"] else "fooled"
        title = (f"{EPSILON_ATTACKS[v['attack']]}, ε = {v['eps']:.3f}: true {name[v['label']]}, predicted "
                 f"{name[v['pred_clean']]} → {name[v['pred_adversarial']]} ({verdict}); ‖δ‖∞ = {v['linf']:.3f}")
        with self.figure.batch_update():
            self.figure.data[0].z = v["clean"]
            self.figure.data[1].z = v["perturbation"]
            self.figure.data[2].z = v["adversarial"]
            self.figure.data[3].y = v["probs_clean"]
            self.figure.data[4].y = v["probs_adversarial"]
            self.figure.layout.title.text = title
        self.last_view = v
        return v


def _compare_seeded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, layer: str | None,
                    steps: int, seed: int) -> _activations.ActivationComparison:
    device = _device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(check_seed(seed))
        return _activations.compare_activations(model, x, y, eps, layer=layer, steps=steps)  # official attack defaults


def class_comparison(full: _activations.ActivationComparison, y: torch.Tensor,
                     class_id: int) -> _activations.ActivationComparison:
    """The comparison restricted to the examples of class ``class_id`` (``full`` holds every example of ``y``)."""
    keep = y.cpu() == class_id
    if not keep.any():
        raise ValueError(f"No example has label {class_id}; pick a class present in y.")
    return _activations.ActivationComparison(layer=full.layer, class_id=class_id, eps=full.eps,
                                             natural=full.natural[keep], adversarial=full.adversarial[keep],
                                             threshold=full.threshold, attack=full.attack)


def activation_view(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, eps: float, class_id: int,
                    model_name: str, layer: str | None = None, steps: int = 20, seed: int = 0,
                    cache: dict | None = None) -> dict[str, Any]:
    """Figure 1 / Figure 2 curves and scalar summaries for one model, class and ε.

    PGD-``steps`` (seeded) runs once per (model, ε) on all of ``x``; ``cache`` (a dict) keeps those
    comparisons so that changing the class or returning to an ε costs only the statistics.
    Returns numpy ``rank`` (1..C), ``natural_magnitudes`` / ``adversarial_magnitudes`` (each sorted
    descending, Figure 1), ``natural_counts`` / ``adversarial_counts`` (sorted by the natural count,
    Figure 2), ``summary`` (``ActivationComparison.summary()``), ``model_name``, ``class_id``, ``eps``.
    """
    if model_name not in models:
        raise ValueError(f"Unknown model {model_name!r}; choose one of {', '.join(models)}.")
    cache = {} if cache is None else cache
    key = (model_name, round(float(eps), 6), layer, steps, seed)
    if key not in cache:
        cache[key] = _compare_seeded(models[model_name], x, y, float(eps), layer, steps, seed)
    with _one_thread(torch.device("cpu")):  # statistics of a few dozen rows: tiny work
        comparison = class_comparison(cache[key], y, class_id)
        summary = comparison.summary()
    channels = comparison.natural.shape[1]
    return {
        "rank": np.arange(1, channels + 1),
        "natural_magnitudes": comparison.natural_magnitudes.numpy(),
        "adversarial_magnitudes": comparison.adversarial_magnitudes.numpy(),
        "natural_counts": comparison.natural_counts.numpy(),
        "adversarial_counts": comparison.adversarial_counts.numpy(),
        "summary": summary,
        "model_name": model_name,
        "class_id": int(class_id),
        "eps": float(eps),
        "layer": comparison.layer,
    }


def summary_html(view: Mapping[str, Any]) -> str:
    """A small HTML table of an activation view's scalar summaries."""
    s = view["summary"]
    rows = [("examples", f"{int(s['n_examples'])}", ""),
            ("mean activation (adv ÷ nat)", f"{s['magnitude_ratio']:.3f}", ""),
            ("channel entropy (1 = uniform)", f"{s['natural_entropy']:.3f}", f"{s['adversarial_entropy']:.3f}"),
            ("fraction of channels activated", f"{s['natural_fraction_activated']:.3f}",
             f"{s['adversarial_fraction_activated']:.3f}")]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return ("<table style='font-family:monospace'><tr><th></th><th>natural</th><th>adversarial</th></tr>"
            + body + "</table>")


class ActivationExplorer:
    """ε slider, class picker and model toggle driving Figure 1 (magnitudes) and Figure 2 (counts) plus a
    summary table. ``precompute()`` crafts PGD examples for every (model, ε on the slider's grid) once.
    ``x``, ``y`` follow the input rule of :mod:`cas_edu.validation` for every model; ``classes`` names every class
    and ``class_id`` must have an example in ``y``. Raises ``ValueError`` for bad inputs."""

    def __init__(self, models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
                 eps: float = 0.1, eps_max: float = 0.2, eps_step: float = 0.025, class_id: int = 0,
                 model_name: str | None = None, layer: str | None = None, steps: int = 20, seed: int = 0,
                 precompute: bool = True, progress: bool | None = None) -> None:
        if not models:
            raise ValueError("ActivationExplorer needs at least one model, e.g. {'STD': std_model, 'AT': at_model}.")
        if not 0 < eps_step <= eps_max <= 1 or not 0 <= eps <= eps_max:
            raise ValueError(f"need 0 < eps_step <= eps_max <= 1 and 0 <= eps <= eps_max, got {eps}, {eps_max}, {eps_step}.")
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
        self.summary = widgets.HTML()
        if precompute:
            self.precompute(progress)
        self.figure = self._build_figure()
        self.last_view: dict[str, Any] = {}
        self.update()
        for control in (self.eps_slider, self.class_picker, self.model_toggle):
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.eps_slider, self.class_picker]), self.model_toggle,
                                    self.figure, self.summary])

    @property
    def eps_grid(self) -> list[float]:
        """The ε values the slider can take."""
        s = self.eps_slider
        return [round(i * s.step, 6) for i in range(int(round(s.max / s.step)) + 1)]

    def precompute(self, progress: bool | None = None) -> None:
        """Craft adversarial examples and activations for every model and slider ε (a progress bar shows it)."""
        from tqdm.auto import tqdm

        jobs = [(name, eps) for name in self.models for eps in self.eps_grid]
        for name, eps in tqdm(jobs, desc="PGD + activations", disable=progress is False):
            activation_view(self.models, self.x, self.y, eps, int(self.class_picker.value), name, self.layer,
                            self.steps, self.seed, self.cache)

    def comparison(self, model_name: str, eps: float, class_id: int | None = None) -> _activations.ActivationComparison:
        """The (cached) natural-vs-PGD comparison for one model and ε: every example, or one class."""
        activation_view(self.models, self.x, self.y, eps, int(self.y[0]), model_name, self.layer, self.steps,
                        self.seed, self.cache)
        full = self.cache[(model_name, round(float(eps), 6), self.layer, self.steps, self.seed)]
        return full if class_id is None else class_comparison(full, self.y, class_id)

    def _build_figure(self) -> go.FigureWidget:
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                            subplot_titles=("Figure 1: magnitude per channel (each curve sorted)",
                                            "Figure 2: activation count (sorted by natural)"))
        colors = {"natural": "#1f77b4", "adversarial": "#d62728"}
        for kind in ("natural", "adversarial"):
            fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name=kind, legendgroup=kind,
                                     line=dict(color=colors[kind])), row=1, col=1)
        for kind in ("natural", "adversarial"):
            fig.add_trace(go.Bar(x=[], y=[], name=kind, legendgroup=kind, showlegend=False, opacity=0.6,
                                 marker_color=colors[kind], marker_line_width=0), row=1, col=2)
        fig.update_xaxes(title_text="channel rank (by its own magnitude)", row=1, col=1)
        fig.update_yaxes(title_text="magnitude (Σ activation ÷ activated count)", row=1, col=1)
        fig.update_xaxes(title_text="channel (sorted by natural count)", row=1, col=2)
        fig.update_yaxes(title_text="number of examples activating it", row=1, col=2)
        fig.update_layout(height=380, width=1000, barmode="overlay", bargap=0, margin=dict(l=60, r=20, t=80, b=50),
                          legend=dict(title="examples", x=1.0, y=1.0), title=dict(text="", x=0.01))
        return go.FigureWidget(fig)

    def view(self) -> dict[str, Any]:
        """The activation view for the controls' current values."""
        return activation_view(self.models, self.x, self.y, float(self.eps_slider.value), int(self.class_picker.value),
                               self.model_toggle.value, self.layer, self.steps, self.seed, self.cache)

    def _on_change(self, _change: dict) -> None:
        self.update()

    def update(self) -> dict[str, Any]:
        """Recompute the view from the controls and write it into the figure and summary; returns the view."""
        v = self.view()
        s = v["summary"]
        title = (f"{v['model_name']}, class {self.classes[v['class_id']]} ({int(s['n_examples'])} test images), "
                 f"PGD-{self.steps} ε = {v['eps']:.3f}, layer {v['layer']}: mean activation ×{s['magnitude_ratio']:.2f}")
        with self.figure.batch_update():
            self.figure.data[0].update(x=v["rank"], y=v["natural_magnitudes"])
            self.figure.data[1].update(x=v["rank"], y=v["adversarial_magnitudes"])
            self.figure.data[2].update(x=v["rank"], y=v["natural_counts"])
            self.figure.data[3].update(x=v["rank"], y=v["adversarial_counts"])
            self.figure.layout.title.text = title
        self.summary.value = summary_html(v)
        self.last_view = v
        return v


# --- notebooks 03-04 ---
from .channels import ChannelData, suppressed_channels

_STAGE_COLORS = {"kept": "#2ca02c", "suppressed": "#7f7f7f"}
_EXAMPLE_COLORS = {"natural": "#1f77b4", "adversarial": "#d62728"}


def channel_view(data: ChannelData, class_id: int, eps: float) -> dict[str, Any]:
    """The channel explorer's view of class ``class_id`` at (the precomputed ε nearest to) ``eps``.

    Channels are ordered by the class's mask weight W[k] (largest first). Returns the mask weights, which
    channels are suppressed (negative or ≤ 5% of the largest |w|), the class's mean natural and adversarial
    activations before and after the mask (in that order), and summaries: accuracies, how often the
    auxiliary head picked the right mask, the share of activation on suppressed channels, and the relative
    change of the pre-mask activations under attack.
    """
    if not data.has_cas:
        raise ValueError("channel_view needs a model with CAS modules (its mask weights); train one with cas=True.")
    num_classes = data.weight.shape[0]
    if not 0 <= int(class_id) < num_classes:
        raise ValueError(f"class_id must lie in [0, {num_classes}), got {class_id}.")
    class_id, eps = int(class_id), data.nearest_eps(float(eps))
    keep = data.y == class_id
    if not keep.any():
        raise ValueError(f"No example of class {class_id} among the precomputed images; use more images.")
    row = data.weight[class_id]
    order = torch.argsort(row, descending=True)
    suppressed = suppressed_channels(row)[order]

    def mean(acts: torch.Tensor) -> np.ndarray:
        return acts[keep].mean(dim=0)[order].numpy()

    nat_pre, adv_pre = mean(data.natural_pre), mean(data.adversarial_pre[eps])
    y = data.y[keep]

    def share(acts: np.ndarray) -> float:
        total = float(np.abs(acts).sum())
        return float(np.abs(acts[suppressed.numpy()]).sum() / total) if total > 0 else math.nan

    nat_total = float(np.abs(nat_pre).sum())
    return {
        "class_id": class_id, "eps": eps, "layer": data.layer, "n_examples": int(keep.sum()),
        "order": order.tolist(), "mask": row[order].numpy(), "suppressed": suppressed.numpy(),
        "natural_pre": nat_pre, "adversarial_pre": adv_pre,
        "natural_post": mean(data.natural_post), "adversarial_post": mean(data.adversarial_post[eps]),
        "accuracy_natural": float((data.natural_pred[keep] == y).float().mean()),
        "accuracy_adversarial": float((data.adversarial_pred[eps][keep] == y).float().mean()),
        "right_mask_natural": float((data.natural_mask_class[keep] == y).float().mean()),
        "right_mask_adversarial": float((data.adversarial_mask_class[eps][keep] == y).float().mean()),
        "suppressed_share_natural": share(nat_pre), "suppressed_share_adversarial": share(adv_pre),
        "pre_mask_change": float(np.abs(adv_pre - nat_pre).sum() / nat_total) if nat_total > 0 else math.nan,
    }


def _split_by(values: np.ndarray, flags: np.ndarray) -> tuple[list, list]:
    """Two copies of ``values``: one with the flagged entries only, one with the others (None elsewhere)."""
    return ([float(v) if f else None for v, f in zip(values, flags)],
            [None if f else float(v) for v, f in zip(values, flags)])


class ChannelExplorer:
    """Class picker and ε slider driving one figure: the class's CAS mask weights per channel (suppressed channels
    in grey) and its mean natural vs adversarial channel activations before and after the mask.

    All activations are precomputed by :func:`cas_edu.channels.channel_data` for the ε grid, so an update only
    indexes tensors and rewrites the figure (:func:`channel_view` holds the logic; ``update()`` is the callback).
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
        self.figure = self._build_figure()
        self.last_view: dict[str, Any] = {}
        self.update()
        for control in (self.class_picker, self.eps_slider):
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.class_picker, self.eps_slider]), self.figure])

    def _build_figure(self) -> go.FigureWidget:
        channels = self.data.weight.shape[1]
        rank = list(range(1, channels + 1))
        fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                            subplot_titles=("mask weights W[k] of the class (the CAS mask)",
                                            "mean activation before the mask (what the block computes)",
                                            "mean activation after the mask (what the next layer sees)"))
        zeros = [0.0] * channels
        fig.add_trace(go.Bar(x=rank, y=zeros, name="kept channel (w > 5% of max)", marker_color=_STAGE_COLORS["kept"],
                             legendgroup="mask"), row=1, col=1)
        fig.add_trace(go.Bar(x=rank, y=zeros, name="suppressed channel (w ≤ 5% of max)",
                             marker_color=_STAGE_COLORS["suppressed"], legendgroup="mask"), row=1, col=1)
        for r in (2, 3):
            for kind in ("natural", "adversarial"):
                fig.add_trace(go.Scatter(x=rank, y=zeros, mode="lines", name=f"{kind} examples", legendgroup=kind,
                                         showlegend=r == 2, line=dict(color=_EXAMPLE_COLORS[kind], width=1.5)),
                              row=r, col=1)
        fig.update_yaxes(title_text="weight", row=1, col=1)
        fig.update_yaxes(title_text="activation", row=2, col=1)
        fig.update_yaxes(title_text="activation × w", row=3, col=1)
        fig.update_xaxes(title_text="channel, sorted by the class's mask weight (largest first)", row=3, col=1)
        fig.update_layout(height=640, width=950, barmode="overlay", bargap=0.1, legend_title="channels / examples",
                          margin=dict(l=60, r=20, t=90, b=50), title=dict(text="", x=0.01))
        return go.FigureWidget(fig)

    def _on_change(self, _change: dict) -> None:
        self.update()

    def update(self) -> dict[str, Any]:
        """Recompute the view from the controls and write it into the figure; returns the view."""
        v = channel_view(self.data, self.class_picker.value, self.eps_slider.value)
        suppressed, kept = _split_by(v["mask"], v["suppressed"])
        name = self.classes[v["class_id"]]
        title = (f"class {name}, PGD ε = {v['eps']:.3g} ({v['n_examples']} images): {int(v['suppressed'].sum())} of "
                 f"{len(v['mask'])} channels suppressed; accuracy {v['accuracy_natural']:.0%} → "
                 f"{v['accuracy_adversarial']:.0%}, right mask {v['right_mask_natural']:.0%} → "
                 f"{v['right_mask_adversarial']:.0%}<br><sup>share of pre-mask activation on suppressed channels: "
                 f"natural {v['suppressed_share_natural']:.0%}, adversarial {v['suppressed_share_adversarial']:.0%}"
                 "</sup>")
        with self.figure.batch_update():
            self.figure.data[0].y = kept
            self.figure.data[1].y = suppressed
            self.figure.data[2].y = v["natural_pre"]
            self.figure.data[3].y = v["adversarial_pre"]
            self.figure.data[4].y = v["natural_post"]
            self.figure.data[5].y = v["adversarial_post"]
            self.figure.layout.title.text = title
        self.last_view = v
        return v
