"""Static plotly figures for the notebooks: every builder returns a ``go.Figure`` with a title, axis labels and a legend."""
from __future__ import annotations

import plotly.graph_objects as go

# --- notebooks 01-02 ---
from typing import Mapping, Sequence

import torch
from plotly.subplots import make_subplots
from torch import nn

from . import attacks as _attacks
from .activations import ActivationComparison

_KIND_COLORS = {"natural": "#1f77b4", "adversarial": "#d62728"}
#: Blue for negative, white for 0, red for positive values (perturbations).
DIVERGING = [[0.0, "#2166ac"], [0.5, "#f7f7f7"], [1.0, "#b2182b"]]


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with _attacks.eval_mode(model):
        return int((model(x).argmax(1) == y).sum())


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
                     attacks: Sequence[str] = ("fgsm", "pgd"), steps: int = 10, batch_size: int = 512,
                     seed: int = 0, progress: bool | None = None) -> dict:
    """Accuracy (fractions) under FGSM (no random start) and seeded PGD-``steps`` for every ε in ``eps_values``.

    Returns ``{"eps": [...], "natural": float, "fgsm": [...], "pgd": [...], "steps": steps, "n": N}``;
    the data behind :func:`accuracy_vs_eps_figure`.
    """
    from tqdm.auto import tqdm

    from .validation import check_batch_size, check_seed

    unknown = [a for a in attacks if a not in ("fgsm", "pgd")]
    if unknown:
        raise ValueError(f"Unknown attack(s) {unknown}; choose 'fgsm' and/or 'pgd'.")
    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    device = next(model.parameters()).device
    batches = [(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    curve: dict = {"eps": [float(e) for e in eps_values], "steps": steps, "n": len(x),
                   "natural": sum(_correct(model, xb, yb) for xb, yb in batches) / len(x)}
    jobs = [(a, float(e)) for a in attacks for e in eps_values]
    results: dict[str, list[float]] = {a: [] for a in attacks}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for attack, eps in tqdm(jobs, desc="accuracy vs ε", disable=progress is False):
            correct = 0
            for xb, yb in batches:
                if eps == 0:
                    x_adv = xb
                elif attack == "fgsm":
                    x_adv = _attacks.fgsm(model, xb, yb, eps, random_start=False)
                else:
                    x_adv = _attacks.pgd(model, xb, yb, eps, steps=steps)
                correct += _correct(model, x_adv, yb)
            results[attack].append(correct / len(x))
    curve.update(results)
    return curve


def accuracy_vs_eps_figure(curves: Mapping[str, dict] | dict, title: str = "Accuracy as the L∞ budget ε grows") -> go.Figure:
    """Accuracy (%) against ε: a dashed natural line and one line per attack, for one curve or a ``{model: curve}`` map."""
    if "eps" in curves:
        curves = {"": curves}
    fig = go.Figure()
    dashes = {"fgsm": "dot", "pgd": "solid"}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    for i, (model_name, curve) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        prefix = f"{model_name} · " if model_name else ""
        eps = curve["eps"]
        fig.add_trace(go.Scatter(x=[min(eps), max(eps)], y=[100 * curve["natural"]] * 2, mode="lines",
                                 name=f"{prefix}natural", line=dict(color=color, dash="dash", width=1)))
        for attack in ("fgsm", "pgd"):
            if attack in curve:
                label = "FGSM" if attack == "fgsm" else f"PGD-{curve.get('steps', 10)}"
                fig.add_trace(go.Scatter(x=eps, y=[100 * a for a in curve[attack]], mode="lines+markers",
                                         name=f"{prefix}{label}", line=dict(color=color, dash=dashes[attack])))
    fig.update_layout(title=title, xaxis_title="ε (L∞ budget, pixel values in [0, 1])", yaxis_title="accuracy (%)",
                      yaxis_range=[0, 101], legend_title="model · attack", height=420, width=760)
    return fig


def image_grid_figure(rows: Mapping[str, torch.Tensor], column_titles: Sequence[str] | None = None,
                      title: str = "Images", diverging: Sequence[str] = ()) -> go.Figure:
    """A grid of gray-scale images: one row per entry of ``rows`` (N×1×H×W or N×H×W); rows named in ``diverging``
    (e.g. perturbations) use a red-blue scale symmetric around 0."""
    names = list(rows)
    n = max(len(v) for v in rows.values())
    titles = [(column_titles[j] if column_titles and r == 0 else "") for r in range(len(names)) for j in range(n)]
    fig = make_subplots(rows=len(names), cols=n, subplot_titles=titles, horizontal_spacing=0.01,
                        vertical_spacing=0.06, row_titles=names)
    for r, name in enumerate(names, start=1):
        images = rows[name].detach().cpu().float()
        images = images[:, 0] if images.dim() == 4 else images
        bound = float(images.abs().max()) or 1.0
        for j in range(len(images)):
            if name in diverging:
                trace = go.Heatmap(z=images[j].numpy(), zmin=-bound, zmax=bound, colorscale=DIVERGING, showscale=False,
                                   name=name, hovertemplate="%{z:.3f}<extra>" + name + "</extra>")
            else:
                trace = go.Heatmap(z=images[j].numpy(), zmin=0, zmax=1, colorscale="gray_r", showscale=False,
                                   name=name, hovertemplate="%{z:.3f}<extra>" + name + "</extra>")
            fig.add_trace(trace, row=r, col=j + 1)
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
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08,
                        shared_yaxes=not counts)
    for j, name in enumerate(names, start=1):
        c = comparisons[name]
        rank = torch.arange(1, c.natural.shape[1] + 1).numpy()
        for kind in ("natural", "adversarial"):
            values = getattr(c, f"{kind}_counts" if counts else f"{kind}_magnitudes").numpy()
            common = dict(name=kind, legendgroup=kind, showlegend=j == 1, marker_color=_KIND_COLORS[kind])
            if counts:
                fig.add_trace(go.Bar(x=rank, y=values, opacity=0.6, marker_line_width=0, **common), row=1, col=j)
            else:
                fig.add_trace(go.Scatter(x=rank, y=values, mode="lines", line=dict(color=_KIND_COLORS[kind]), **common),
                              row=1, col=j)
        fig.update_xaxes(title_text="channel (sorted by natural count)" if counts else "channel rank (each curve sorted)",
                         row=1, col=j)
    fig.update_yaxes(title_text="examples activating the channel" if counts else
                     "magnitude (Σ activation ÷ activated count)", row=1, col=1)
    cls = "all classes" if first.class_id is None else f"class {first.class_id}"
    fig.update_layout(title=f"{title}<br><sup>{cls}, {first.n_examples} test images, PGD ε = {first.eps:.3g}, "
                            f"layer {first.layer}</sup>",
                      barmode="overlay", bargap=0, legend_title="examples", height=420, width=480 * len(names) + 80)
    return fig


def magnitude_figure(comparisons: Mapping[str, ActivationComparison],
                     title: str = "Figure 1: channel activation magnitude, natural vs adversarial") -> go.Figure:
    """The paper's Figure 1 for each model: per-channel magnitude, natural and adversarial curves each sorted descending."""
    return _comparison_panels(comparisons, title, counts=False)


def count_figure(comparisons: Mapping[str, ActivationComparison],
                 title: str = "Figure 2: how many examples activate each channel") -> go.Figure:
    """The paper's Figure 2 for each model: per-channel activation counts, channels sorted by the natural count."""
    return _comparison_panels(comparisons, title, counts=True)


def summary_table(comparisons: Mapping[str, ActivationComparison], digits: int = 3) -> str:
    """A plain-text table of ``ActivationComparison.summary()`` per model (rows: quantities, columns: models)."""
    summaries = {name: c.summary() for name, c in comparisons.items()}
    rows = [("examples", "n_examples", 0), ("mean activation adv ÷ nat", "magnitude_ratio", digits),
            ("channel entropy, natural", "natural_entropy", digits),
            ("channel entropy, adversarial", "adversarial_entropy", digits),
            ("fraction activated, natural", "natural_fraction_activated", digits),
            ("fraction activated, adversarial", "adversarial_fraction_activated", digits)]
    width = max(len(r[0]) for r in rows)
    columns = [max(10, len(name) + 2) for name in summaries]
    lines = ["quantity".ljust(width) + "".join(f"{name:>{w}}" for name, w in zip(summaries, columns))]
    for label, key, nd in rows:
        lines.append(label.ljust(width) + "".join(f"{s[key]:>{w}.{nd}f}" for s, w in zip(summaries.values(), columns)))
    return "\n".join(lines)


# --- notebooks 03-04 ---
from .channels import ChannelData as _ChannelData

_RUN_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
_CURVES = (("train_loss", "training loss", "loss"), ("train_accuracy", "training accuracy (on the attacked batches)", "accuracy"),
           ("val_natural_accuracy", "validation accuracy, natural", "accuracy"),
           ("val_robust_accuracy", "validation accuracy under PGD", "accuracy"))


def _run_style(name: str, index: int) -> dict:
    """CAS runs dashed, in the colour of their method's run without CAS."""
    return dict(color=_RUN_COLORS[index % len(_RUN_COLORS)], dash="dash" if name.lower().endswith("+cas") else "solid")


def training_curves_figure(histories: Mapping[str, Sequence[Mapping]], title: str = "Training curves") -> go.Figure:
    """Loss, training accuracy, validation natural and PGD accuracy per epoch, one line per run (CAS runs dashed)."""
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


#: Bars of the robustness comparison: (attack, objective, label).
_ROBUSTNESS_BARS = (("natural", "ce", "natural"), ("fgsm", "ce", "FGSM"), ("fgsm", "ce+cas", "FGSM adaptive"),
                    ("pgd20", "ce", "PGD-20 main head"), ("pgd20", "ce+cas", "PGD-20 adaptive (ce+cas)"),
                    ("cw", "ce", "CW∞ main head"), ("cw", "ce+cas", "CW∞ adaptive"),
                    ("square", "ce", "Square (black-box)"), ("autoattack", "ce", "AutoAttack"))


def robustness_comparison_figure(reports: Mapping[str, object], title: str = "Accuracy under each attack") -> go.Figure:
    """Grouped bars: one group per attack (and objective), one bar per model; accepts EvaluationReports or their
    ``accuracy`` dicts. A model without CAS has no separate adaptive attack, so its main-head value stands in."""
    if not reports:
        raise ValueError("reports is empty; pass {model name: evaluation report}.")
    accuracy = {name: getattr(r, "accuracy", r) for name, r in reports.items()}
    bars = [(a, o, label) for a, o, label in _ROBUSTNESS_BARS if any(o in acc.get(a, {}) for acc in accuracy.values())]
    fig = go.Figure()
    for i, (name, acc) in enumerate(accuracy.items()):
        values = []
        for attack, objective, _ in bars:
            by = acc.get(attack, {})
            value = by.get(objective, by.get("ce") if objective == "ce+cas" else None)
            values.append(None if value is None else 100 * value)
        fig.add_trace(go.Bar(x=[label for _, _, label in bars], y=values, name=name,
                             marker_color=_RUN_COLORS[i % len(_RUN_COLORS)],
                             text=[None if v is None else f"{v:.0f}" for v in values], textposition="outside"))
    fig.update_layout(title=title, barmode="group", xaxis_title="attack (objective)", yaxis_title="accuracy (%)",
                      yaxis_range=[0, 105], legend_title="model", height=460, width=980)
    return fig


def suppression_figure(data: Mapping[str, _ChannelData], class_id: int, eps: float,
                       title: str = "What the next layer sees: natural vs adversarial channel activations") -> go.Figure:
    """Per model, the mean channel activations of class ``class_id`` (natural vs PGD at ε) as the next layer
    receives them; CAS models get two panels, before and after the mask. Channels sorted by the natural value."""
    panels = []
    for name, d in data.items():
        if d.has_cas:
            panels += [(f"{name}: before the mask", d, "pre"), (f"{name}: after the mask", d, "post")]
        else:
            panels.append((f"{name}: block output (no mask)", d, "pre"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.06)
    colors = {"natural": "#1f77b4", "adversarial": "#d62728"}
    n_examples = 0
    for j, (_, d, stage) in enumerate(panels, start=1):
        e = d.nearest_eps(eps)
        keep = d.y == class_id
        n_examples = int(keep.sum())
        natural = (d.natural_pre if stage == "pre" else d.natural_post)[keep].mean(0)
        adversarial = (d.adversarial_pre[e] if stage == "pre" else d.adversarial_post[e])[keep].mean(0)
        order = torch.argsort(natural, descending=True)
        rank = list(range(1, len(order) + 1))
        for kind, values in (("natural", natural), ("adversarial", adversarial)):
            fig.add_trace(go.Bar(x=rank, y=values[order].numpy(), name=f"{kind} examples", legendgroup=kind,
                                 showlegend=j == 1, marker_color=colors[kind], opacity=0.6, marker_line_width=0),
                          row=1, col=j)
        fig.update_xaxes(title_text="channel (sorted by natural activation)", row=1, col=j)
    fig.update_yaxes(title_text="mean activation (after the mask: × w)", row=1, col=1)
    fig.update_layout(title=f"{title}<br><sup>class {class_id}, {n_examples} test images, PGD ε = {eps:.3g}</sup>",
                      barmode="overlay", bargap=0, legend_title="examples", height=420, width=330 * len(panels) + 120)
    return fig
