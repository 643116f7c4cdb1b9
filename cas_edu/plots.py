"""Static plotly figures of already computed data, and the palette and traces the widgets share.

Nothing here attacks or trains: every function draws what :mod:`cas_edu.evaluation`, :mod:`cas_edu.activations`,
:mod:`cas_edu.training` or :mod:`cas_edu.widgets` computed. Every figure has a title, axis labels and a legend.

- Palette: :data:`KIND_COLORS` (natural blue, adversarial red), :data:`RUN_COLORS` (one per model or run; CAS
  runs dashed in their method's colour), :data:`MASK_COLORS` (kept / suppressed channels), :data:`DIVERGING`
  (perturbations: blue −, white 0, red +).
- Traces: :func:`image_trace` (one image), :func:`magnitude_traces` (Figure 1), :func:`count_traces` (Figure 2);
  :func:`count_axis_title` names the threshold a count used (e.g. "> 1 % of the image's max").
- Figures: accuracy against ε (:func:`accuracy_vs_eps_figure`), images (:func:`image_grid_figure`), the paper's
  Figures 1 and 2 (:func:`magnitude_figure`, :func:`count_figure`, both for one model: :func:`activation_figure`),
  training curves, accuracy under each attack, what the next layer sees (:func:`suppression_figure`), and the
  widgets' figures (:func:`epsilon_figure`, :func:`channel_mask_figure`); :func:`summary_table` as text.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .activations import ActivationComparison, ChannelData, class_mean_activations, is_saturated
from .evaluation import ATTACKS, attack_accuracy, attack_entry, attack_interval, column_label, wilson_interval
from .evaluation import robustness_curve  # deprecated alias (moved to cas_edu.evaluation), kept for one release
from .tables import text_table

__all__ = ["DIVERGING", "KIND_COLORS", "MASK_COLORS", "RUN_COLORS", "accuracy_vs_eps_figure", "activation_figure",
           "channel_mask_figure", "count_axis_title", "count_figure", "count_traces", "epsilon_figure",
           "image_grid_figure", "image_trace", "magnitude_figure", "magnitude_traces", "mask_bars",
           "robustness_comparison_figure", "robustness_curve", "summary_table", "suppression_figure",
           "training_curves_figure"]

#: Natural examples blue, adversarial examples red (every figure and widget).
KIND_COLORS = {"natural": "#1f77b4", "adversarial": "#d62728"}
#: One colour per model or run, in order.
RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
#: Channels a CAS mask keeps (green) and suppresses (grey).
MASK_COLORS = {"kept": "#2ca02c", "suppressed": "#7f7f7f"}
#: Blue for negative, white for 0, red for positive values (perturbations).
DIVERGING = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]

_FIGURE1_AXES = ("channel rank (each curve sorted)", "magnitude (Σ activation ÷ activated count)")
_FIGURE2_X = "channel (sorted by natural count)"


def count_axis_title(threshold: float) -> str:
    """The y-axis title of a Figure 2 count: what activating a channel means at ``threshold`` (a fraction of each
    image's largest channel), e.g. "examples activating the channel (> 1 % of the image's max)".

    Raises: nothing of its own.
    """
    return f"examples activating the channel (> {100 * threshold:.3g} % of the image's max)"


def image_trace(image: np.ndarray, name: str, bound: float | None = None) -> go.BaseTraceType:
    """One image as a trace: H×W gray values in [0, 1] (white 0, black 1), H×W×3 uint8 RGB, or, with ``bound``,
    signed H×W values (a perturbation) on :data:`DIVERGING` from −bound to +bound.

    Raises: nothing of its own.
    """
    if image.ndim == 3:
        return go.Image(z=image, name=name, hoverinfo="x+y+z")
    scale = dict(zmin=0, zmax=1, colorscale="gray_r") if bound is None else \
        dict(zmin=-bound, zmax=bound, colorscale=DIVERGING)
    return go.Heatmap(z=image, showscale=False, name=name, **scale,
                      hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra>" + name + "</extra>")


def magnitude_traces(rank: Sequence[int], natural: Sequence[float], adversarial: Sequence[float],
                     showlegend: bool = True) -> list[go.Scatter]:
    """The two curves of the paper's Figure 1: per-channel magnitude of natural and adversarial examples.

    Raises: nothing of its own.
    """
    return [go.Scatter(x=rank, y=values, mode="lines", name=kind, legendgroup=kind, showlegend=showlegend,
                       line=dict(color=KIND_COLORS[kind]))
            for kind, values in (("natural", natural), ("adversarial", adversarial))]


def count_traces(rank: Sequence[int], natural: Sequence[float], adversarial: Sequence[float],
                 showlegend: bool = True) -> list[go.Bar]:
    """The two overlaid bar series of the paper's Figure 2: how many natural / adversarial examples activate each
    channel (draw with ``barmode="overlay"``).

    Raises: nothing of its own.
    """
    return [go.Bar(x=rank, y=values, name=kind, legendgroup=kind, showlegend=showlegend, opacity=0.6,
                   marker_color=KIND_COLORS[kind], marker_line_width=0)
            for kind, values in (("natural", natural), ("adversarial", adversarial))]


def _error_bars(accuracies: Sequence[float], counts: Sequence[int] | None, n: int | None) -> dict | None:
    """Plotly ``error_y`` (in %) of the 95 % Wilson intervals of ``counts`` correct of ``n`` examples each; None
    without counts (a curve computed before they were recorded)."""
    if counts is None or not n:
        return None
    intervals = [wilson_interval(c, n) for c in counts]
    return dict(type="data", symmetric=False, thickness=1, width=3,
                array=[100 * (ci.high - a) for ci, a in zip(intervals, accuracies)],
                arrayminus=[100 * (a - ci.low) for ci, a in zip(intervals, accuracies)])


def accuracy_vs_eps_figure(curves: Mapping[str, dict] | dict, title: str = "Accuracy as the L∞ budget ε grows") -> go.Figure:
    """Accuracy (%) against ε: a dashed natural line and one line per attack, for one curve or a ``{model: curve}``
    map of :func:`cas_edu.evaluation.robustness_curve` results, with 95 % Wilson error bars
    (:func:`cas_edu.evaluation.wilson_interval`) when the curve has its counts (``n_correct``).

    Raises: nothing of its own (a curve without ``eps`` or ``natural`` raises KeyError).
    """
    if "eps" in curves:
        curves = {"": curves}
    fig = go.Figure()
    dashes = {"fgsm": "dot", "pgd": "solid"}
    for i, (model_name, curve) in enumerate(curves.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        prefix = f"{model_name} · " if model_name else ""
        eps = curve["eps"]
        counts = curve.get("n_correct", {})
        natural_counts = None if "natural" not in counts else [counts["natural"]] * 2
        fig.add_trace(go.Scatter(x=[min(eps), max(eps)], y=[100 * curve["natural"]] * 2, mode="lines",
                                 name=f"{prefix}natural", line=dict(color=color, dash="dash", width=1),
                                 error_y=_error_bars([curve["natural"]] * 2, natural_counts, curve.get("n"))))
        for attack in ("fgsm", "pgd"):
            if attack in curve:
                label = "FGSM" if attack == "fgsm" else f"PGD-{curve.get('steps', 10)}"
                fig.add_trace(go.Scatter(x=eps, y=[100 * a for a in curve[attack]], mode="lines+markers",
                                         name=f"{prefix}{label}", line=dict(color=color, dash=dashes[attack]),
                                         error_y=_error_bars(curve[attack], counts.get(attack), curve.get("n"))))
    fig.update_layout(title=title, xaxis_title="ε (L∞ budget, pixel values in [0, 1])", yaxis_title="accuracy (%)",
                      yaxis_range=[0, 101], legend_title="model · attack", height=420, width=760)
    return fig


def image_grid_figure(rows: Mapping[str, torch.Tensor], column_titles: Sequence[str] | None = None,
                      title: str = "Images", diverging: Sequence[str] = ()) -> go.Figure:
    """A grid of gray-scale images, one row per entry of ``rows`` (the first channel of each image); rows named in
    ``diverging`` (e.g. perturbations) use a red-blue scale symmetric around 0.

    Shape: each row (N, C, H, W) or (N, H, W); rows may differ in N.
    Raises: nothing of its own.
    """
    names = list(rows)
    n = max(len(v) for v in rows.values())
    titles = [(column_titles[j] if column_titles and r == 0 else "") for r in range(len(names)) for j in range(n)]
    fig = make_subplots(rows=len(names), cols=n, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.06, row_titles=names)
    for r, name in enumerate(names, start=1):
        images = rows[name].detach().cpu().float()
        images = images[:, 0] if images.dim() == 4 else images
        bound = (float(images.abs().max()) or 1.0) if name in diverging else None
        for j in range(len(images)):
            fig.add_trace(image_trace(images[j].numpy(), name, bound), row=r, col=j + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_xaxes(title_text="pixel column", row=len(names), col=1)
    fig.update_yaxes(title_text="pixel row", row=1, col=1)
    fig.update_layout(title=title, height=130 * len(names) + 110, width=max(110 * n, 500), showlegend=False,
                      margin=dict(l=60, r=40, t=90, b=50))
    return fig


def _comparison_panels(comparisons: Mapping[str, ActivationComparison], title: str, counts: bool) -> go.Figure:
    names = list(comparisons)
    first = next(iter(comparisons.values()))
    # a count panel names its saturation: a saturated count cannot show quiet channels
    panel_titles = [f"{name} (saturated)" if counts and is_saturated(c.natural, c.threshold) else name
                    for name, c in comparisons.items()]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=panel_titles, horizontal_spacing=0.08,
                        shared_yaxes=not counts)
    traces = count_traces if counts else magnitude_traces
    for j, name in enumerate(names, start=1):
        c = comparisons[name]
        rank = np.arange(1, c.natural.shape[1] + 1)
        curves = (c.natural_counts, c.adversarial_counts) if counts else (c.natural_magnitudes,
                                                                           c.adversarial_magnitudes)
        for trace in traces(rank, *(v.numpy() for v in curves), showlegend=j == 1):
            fig.add_trace(trace, row=1, col=j)
        fig.update_xaxes(title_text=_FIGURE2_X if counts else _FIGURE1_AXES[0], row=1, col=j)
        if counts and (j == 1 or c.threshold != first.threshold):
            fig.update_yaxes(title_text=count_axis_title(c.threshold), row=1, col=j)
    if not counts:
        fig.update_yaxes(title_text=_FIGURE1_AXES[1], row=1, col=1)
    cls = "all classes" if first.class_id is None else f"class {first.class_id}"
    fig.update_layout(title=f"{title}<br><sup>{cls}, {first.n_examples} test images, PGD ε = {first.eps:.3g}, "
                            f"layer {first.layer}, activated at > {100 * first.threshold:.3g} % of the image's "
                            "max</sup>",
                      barmode="overlay", bargap=0, legend_title="examples", height=420, width=480 * len(names) + 80)
    return fig


def magnitude_figure(comparisons: Mapping[str, ActivationComparison],
                     title: str = "Figure 1: channel activation magnitude, natural vs adversarial") -> go.Figure:
    """The paper's Figure 1 for each model: per-channel magnitude, natural and adversarial curves each sorted
    descending (one panel per :class:`cas_edu.activations.ActivationComparison`).

    Raises: StopIteration when ``comparisons`` is empty.
    """
    return _comparison_panels(comparisons, title, counts=False)


def count_figure(comparisons: Mapping[str, ActivationComparison],
                 title: str = "Figure 2: how many examples activate each channel") -> go.Figure:
    """The paper's Figure 2 for each model: per-channel activation counts, channels sorted by the natural count
    (one panel per :class:`cas_edu.activations.ActivationComparison`). Each comparison's threshold is named in the
    y-axis title (:func:`count_axis_title`) and a panel whose count is saturated says so in its title
    (:func:`cas_edu.activations.is_saturated`).

    Raises: StopIteration when ``comparisons`` is empty.
    """
    return _comparison_panels(comparisons, title, counts=True)


def activation_figure(comparison: ActivationComparison, title: str = "") -> go.Figure:
    """The paper's Figures 1 and 2 side by side for one model: traces 0-1 the magnitude curves (natural,
    adversarial), traces 2-3 the count bars (the activation explorer writes its views into them). The count's
    y-axis (``yaxis2``) names the comparison's threshold (:func:`count_axis_title`).

    Raises: nothing of its own.
    """
    rank = np.arange(1, comparison.natural.shape[1] + 1)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Figure 1: magnitude per channel (each curve sorted)",
                                        "Figure 2: activation count (sorted by natural)"))
    for trace in magnitude_traces(rank, comparison.natural_magnitudes.numpy(),
                                  comparison.adversarial_magnitudes.numpy()):
        fig.add_trace(trace, row=1, col=1)
    for trace in count_traces(rank, comparison.natural_counts.numpy(), comparison.adversarial_counts.numpy(),
                              showlegend=False):
        fig.add_trace(trace, row=1, col=2)
    for col, (x_title, y_title) in enumerate((_FIGURE1_AXES, (_FIGURE2_X, count_axis_title(comparison.threshold))),
                                             start=1):
        fig.update_xaxes(title_text=x_title, row=1, col=col)
        fig.update_yaxes(title_text=y_title, row=1, col=col)
    fig.update_layout(height=380, width=1000, barmode="overlay", bargap=0, margin=dict(l=60, r=20, t=80, b=50),
                      legend=dict(title="examples", x=1.0, y=1.0), title=dict(text=title, x=0.01))
    return fig


def summary_table(comparisons: Mapping[str, ActivationComparison], digits: int = 3) -> str:
    """A plain-text table of ``ActivationComparison.summary()`` per model (rows: quantities, columns: models),
    ending with the activation threshold and whether the count is saturated at it (yes / no).

    Raises: nothing of its own.
    """
    summaries = {name: c.summary() for name, c in comparisons.items()}
    rows = [("examples", "n_examples", 0), ("mean activation adv ÷ nat", "magnitude_ratio", digits),
            ("channel entropy, natural", "natural_entropy", digits),
            ("channel entropy, adversarial", "adversarial_entropy", digits),
            ("fraction activated, natural", "natural_fraction_activated", digits),
            ("fraction activated, adversarial", "adversarial_fraction_activated", digits),
            ("threshold t (share of the image's max)", "threshold", digits)]
    body = [[label] + [f"{s[key]:.{nd}f}" for s in summaries.values()] for label, key, nd in rows]
    body.append(["count saturated at t"] + ["yes" if s["saturated"] else "no" for s in summaries.values()])
    return text_table(["quantity", *summaries], body, gap=2, rule=False, min_widths=[0] + [8] * len(summaries))


_CURVES = (("train_loss", "training loss", "loss"), ("train_accuracy", "training accuracy (on the attacked batches)", "accuracy"),
           ("val_natural_accuracy", "validation accuracy, natural", "accuracy"),
           ("val_robust_accuracy", "validation accuracy under PGD", "accuracy"))


def _run_style(name: str, index: int) -> dict:
    """CAS runs dashed, in the colour of their method's run without CAS."""
    return dict(color=RUN_COLORS[index % len(RUN_COLORS)], dash="dash" if name.lower().endswith("+cas") else "solid")


def training_curves_figure(histories: Mapping[str, Sequence[Mapping]], title: str = "Training curves") -> go.Figure:
    """Loss, training accuracy, validation natural and PGD accuracy per epoch, one line per run (CAS runs dashed).

    Raises: ValueError when ``histories`` is empty.
    """
    if not histories:
        raise ValueError("histories is empty; pass {run name: history list} from training.train_or_load.")
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t, _ in _CURVES], horizontal_spacing=0.1,
                        vertical_spacing=0.14)
    methods: list[str] = []
    for name, history in histories.items():
        base = name.lower().split("+")[0]
        if base not in methods:
            methods.append(base)
        style = _run_style(name, methods.index(base))
        epochs = [r["epoch"] for r in history]
        for i, (key, _, _) in enumerate(_CURVES):
            values = [r.get(key) for r in history]
            if all(v is None for v in values):
                continue
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=i == 0, line=style, marker=dict(size=4)),
                          row=i // 2 + 1, col=i % 2 + 1)
    for i, (_, _, axis) in enumerate(_CURVES):
        fig.update_xaxes(title_text="epoch", row=i // 2 + 1, col=i % 2 + 1)
        fig.update_yaxes(title_text=axis, row=i // 2 + 1, col=i % 2 + 1)
    fig.update_layout(title=title, legend_title="run", height=620, width=980)
    return fig


def robustness_comparison_figure(reports: Mapping[str, object], title: str = "Accuracy under each attack") -> go.Figure:
    """Grouped bars: one group per attack of :data:`cas_edu.evaluation.ATTACKS` that some report ran (white-box
    attacks once per objective, labelled by :func:`cas_edu.evaluation.column_label`), one bar per model; accepts
    EvaluationReports or their ``accuracy`` dicts. A model without CAS has no separate adaptive attack, so its
    main-head value stands in (:func:`cas_edu.evaluation.attack_accuracy`). Bars of EvaluationReports carry
    95 % Wilson error bars (:meth:`cas_edu.evaluation.EvaluationReport.interval`).

    Raises: ValueError when ``reports`` is empty.
    """
    if not reports:
        raise ValueError("reports is empty; pass {model name: evaluation report}.")
    accuracy = {name: getattr(r, "accuracy", r) for name, r in reports.items()}
    bars = [(attack, objective) for attack in ATTACKS for objective in
            (("ce", "ce+cas") if attack_entry(attack).white_box else (attack_entry(attack).cas_objective,))
            if any(objective in acc.get(attack, {}) or (acc.get(attack) and not attack_entry(attack).white_box)
                   for acc in accuracy.values())]
    labels = [column_label(attack, objective) for attack, objective in bars]
    fig = go.Figure()
    for i, (name, acc) in enumerate(accuracy.items()):
        values = [attack_accuracy(acc, attack, objective) for attack, objective in bars]
        values = [None if v is None else 100 * v for v in values]
        intervals = [attack_interval(reports[name], attack, objective) for attack, objective in bars]
        error_y = None
        if any(ci is not None for ci in intervals):
            error_y = dict(type="data", symmetric=False, thickness=1, width=3,
                           array=[None if ci is None or v is None else 100 * ci.high - v
                                  for ci, v in zip(intervals, values)],
                           arrayminus=[None if ci is None or v is None else v - 100 * ci.low
                                       for ci, v in zip(intervals, values)])
        fig.add_trace(go.Bar(x=labels, y=values, name=name, marker_color=RUN_COLORS[i % len(RUN_COLORS)],
                             text=[None if v is None else f"{v:.0f}" for v in values], textposition="outside",
                             error_y=error_y))
    fig.update_layout(title=title, barmode="group", xaxis_title="attack (objective)", yaxis_title="accuracy (%)",
                      yaxis_range=[0, 105], legend_title="model", height=460, width=980)
    return fig


def suppression_figure(data: Mapping[str, ChannelData], class_id: int, eps: float,
                       title: str = "What the next layer sees: natural vs adversarial channel activations") -> go.Figure:
    """Per model, the mean channel activations of class ``class_id`` (natural vs PGD at the precomputed ε nearest
    to ``eps``) as the next layer receives them; CAS models get two panels, before and after the mask. Channels
    sorted by the natural value (:func:`cas_edu.activations.class_mean_activations`).

    Units: eps in pixel units of [0, 1] (L∞).
    Raises: nothing of its own.
    """
    panels = []
    for name, d in data.items():
        if d.has_cas:
            panels += [(f"{name}: before the mask", d, "pre"), (f"{name}: after the mask", d, "post")]
        else:
            panels.append((f"{name}: block output (no mask)", d, "pre"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.06)
    n_examples = 0
    for j, (_, d, stage) in enumerate(panels, start=1):
        means = class_mean_activations(d, class_id, eps)
        n_examples = means["n_examples"]
        natural, adversarial = means[f"natural_{stage}"], means[f"adversarial_{stage}"]
        order = torch.argsort(natural, descending=True)
        rank = list(range(1, len(order) + 1))
        for trace in count_traces(rank, natural[order].numpy(), adversarial[order].numpy(), showlegend=j == 1):
            fig.add_trace(trace.update(name=f"{trace.name} examples"), row=1, col=j)
        fig.update_xaxes(title_text="channel (sorted by natural activation)", row=1, col=j)
    fig.update_yaxes(title_text="mean activation (after the mask: × w)", row=1, col=1)
    fig.update_layout(title=f"{title}<br><sup>class {class_id}, {n_examples} test images, PGD ε = {eps:.3g}</sup>",
                      barmode="overlay", bargap=0, legend_title="examples", height=420, width=330 * len(panels) + 120)
    return fig


def epsilon_figure(view: Mapping[str, Any], classes: Sequence[str], eps_max: float, title: str = "") -> go.Figure:
    """The ε explorer's figure for one view of :func:`cas_edu.widgets.epsilon_view`: clean image, perturbation δ
    (on :data:`DIVERGING`, ±``eps_max``), adversarial image, and both class-probability bars (traces 0-4 in that
    order).

    Raises: nothing of its own (a view missing a key raises KeyError).
    """
    fig = make_subplots(rows=1, cols=4, column_widths=[0.19, 0.19, 0.19, 0.43], horizontal_spacing=0.06,
                        subplot_titles=("clean x", "perturbation δ = x_adv − x", "adversarial x_adv",
                                        "class probabilities"))
    fig.add_trace(image_trace(view["clean"], "clean"), row=1, col=1)
    fig.add_trace(image_trace(view["perturbation"], "δ", bound=eps_max).update(
        showscale=True, colorbar=dict(title="δ", orientation="h", x=0.294, xanchor="center", y=-0.06, yanchor="top",
                                      len=0.16, thickness=8)), row=1, col=2)
    fig.add_trace(image_trace(view["adversarial"], "adversarial"), row=1, col=3)
    for name, key, kind in (("clean", "probs_clean", "natural"), ("adversarial", "probs_adversarial", "adversarial")):
        fig.add_trace(go.Bar(x=list(classes), y=view[key], name=name, marker_color=KIND_COLORS[kind]), row=1, col=4)
    for col in (1, 2, 3):
        fig.update_xaxes(showticklabels=False, title_text="pixel column" if col == 1 else None, row=1, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{col if col > 1 else ''}",
                         title_text="pixel row" if col == 1 else None, row=1, col=col)
    fig.update_xaxes(title_text="class", type="category", row=1, col=4)
    fig.update_yaxes(title_text="probability", range=[0, 1.02], row=1, col=4)
    fig.update_layout(height=380, width=1000, barmode="group", margin=dict(l=40, r=20, t=80, b=90),
                      legend=dict(title="input", orientation="h", x=0.65, y=-0.25), title=dict(text=title, x=0.01))
    return fig


def mask_bars(mask: Sequence[float], suppressed: Sequence[bool]) -> tuple[list, list]:
    """The y values of the kept and of the suppressed mask-weight bars of :func:`channel_mask_figure`:
    ``(kept, suppressed)``, each None where the other series has the channel.

    Raises: nothing of its own.
    """
    return ([None if f else float(v) for v, f in zip(mask, suppressed)],
            [float(v) if f else None for v, f in zip(mask, suppressed)])


def channel_mask_figure(view: Mapping[str, Any], title: str = "") -> go.Figure:
    """The channel explorer's figure for one class (:func:`cas_edu.activations.suppression_summary`): its CAS mask
    weights per channel (suppressed channels grey), then its mean natural and adversarial activations before and
    after the mask, channels sorted by the weight. Traces: 0 kept bars, 1 suppressed bars, 2-3 before the mask
    (natural, adversarial), 4-5 after it.

    Raises: nothing of its own (a view missing a key raises KeyError).
    """
    rank = list(range(1, len(view["mask"]) + 1))
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("mask weights W[k] of the class (the CAS mask)",
                                        "mean activation before the mask (what the block computes)",
                                        "mean activation after the mask (what the next layer sees)"))
    kept, suppressed = mask_bars(view["mask"], view["suppressed"])
    fig.add_trace(go.Bar(x=rank, y=kept, name="kept channel (w > 5% of max)", marker_color=MASK_COLORS["kept"],
                         legendgroup="mask"), row=1, col=1)
    fig.add_trace(go.Bar(x=rank, y=suppressed, name="suppressed channel (w ≤ 5% of max)",
                         marker_color=MASK_COLORS["suppressed"], legendgroup="mask"), row=1, col=1)
    for r, stage in ((2, "pre"), (3, "post")):
        for kind in ("natural", "adversarial"):
            fig.add_trace(go.Scatter(x=rank, y=np.asarray(view[f"{kind}_{stage}"]), mode="lines",
                                     name=f"{kind} examples", legendgroup=kind, showlegend=r == 2,
                                     line=dict(color=KIND_COLORS[kind], width=1.5)), row=r, col=1)
    fig.update_yaxes(title_text="weight", row=1, col=1)
    fig.update_yaxes(title_text="activation", row=2, col=1)
    fig.update_yaxes(title_text="activation × w", row=3, col=1)
    fig.update_xaxes(title_text="channel, sorted by the class's mask weight (largest first)", row=3, col=1)
    fig.update_layout(height=640, width=950, barmode="overlay", bargap=0.1, legend_title="channels / examples",
                      margin=dict(l=60, r=20, t=90, b=50), title=dict(text=title, x=0.01))
    return fig
