"""The notebooks' widgets and figures, driven headlessly: set a control's value, read the figure's data."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from helpers import tiny_cnn

from cas_edu import plots, widgets


@pytest.fixture(scope="module")
def examples(digits):
    """The first 60 test digits (conftest's ``digits``): images, labels, class names."""
    return digits.test.x[:60], digits.test.y[:60], digits.classes


@pytest.fixture(scope="module")
def models():
    return {"STD": tiny_cnn(seed=0), "AT": tiny_cnn(seed=1)}


# --------------------------------------------------------------------------- 01: ε explorer


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2])
def test_epsilon_view_respects_the_budget(examples, models, attack, eps):
    x, y, _ = examples
    v = widgets.epsilon_view(models["STD"], x[3], y[3], eps, attack)
    assert v["clean"].shape == v["adversarial"].shape == v["perturbation"].shape == (8, 8)
    assert v["linf"] <= eps + 1e-6 and 0 <= v["adversarial"].min() and v["adversarial"].max() <= 1
    np.testing.assert_allclose(v["adversarial"] - v["clean"], v["perturbation"], atol=1e-6)
    for key in ("probs_clean", "probs_adversarial"):
        assert v[key].shape == (10,) and abs(v[key].sum() - 1) < 1e-5
    if eps == 0:
        assert v["linf"] == 0 and np.allclose(v["probs_clean"], v["probs_adversarial"])
    if attack == "fgsm" and eps > 0:  # FGSM spends the whole budget
        assert v["linf"] == pytest.approx(eps, abs=1e-6)


def test_epsilon_view_is_seeded(examples, models):
    """The PGD random start follows ``seed``, whatever the caller's global RNG state."""
    x, y, _ = examples
    adversarial = {}
    for global_seed, seed in ((0, 3), (1, 3), (1, 4)):
        torch.manual_seed(global_seed)
        view = widgets.epsilon_view(models["STD"], x[0], y[0], 0.1, "pgd", seed=seed)
        adversarial[global_seed, seed] = view["adversarial"]
    np.testing.assert_array_equal(adversarial[0, 3], adversarial[1, 3])
    assert not np.array_equal(adversarial[1, 3], adversarial[1, 4])


def test_epsilon_view_rejects_bad_input(examples, models):
    x, y, _ = examples
    with pytest.raises(ValueError, match="one image"):
        widgets.epsilon_view(models["STD"], x[:2], y[:2], 0.1)
    with pytest.raises(ValueError, match="Unknown attack"):
        widgets.epsilon_view(models["STD"], x[0], y[0], 0.1, "cw")


def test_epsilon_explorer_slider_drives_the_figure(examples, models):
    x, y, classes = examples
    explorer = widgets.EpsilonExplorer(models["STD"], x[:5], y[:5], classes, eps=0.02, eps_max=0.3)
    fig = explorer.figure
    assert isinstance(fig, go.FigureWidget) and len(fig.data) == 5
    small = np.abs(np.asarray(fig.data[1].z)).max()
    adv_small = np.asarray(fig.data[2].z).copy()
    explorer.eps_slider.value = 0.25  # the observer fires update()
    large = np.abs(np.asarray(fig.data[1].z)).max()
    assert small == pytest.approx(0.02, abs=1e-6) and large == pytest.approx(0.25, abs=1e-6)
    assert not np.allclose(adv_small, np.asarray(fig.data[2].z))
    assert "ε = 0.250" in fig.layout.title.text and explorer.last_view["eps"] == pytest.approx(0.25)
    np.testing.assert_allclose(np.asarray(fig.data[4].y), explorer.last_view["probs_adversarial"])


def test_epsilon_explorer_attack_and_example_pickers(examples, models):
    x, y, classes = examples
    explorer = widgets.EpsilonExplorer(models["STD"], x[:5], y[:5], classes, eps=0.2)
    fgsm_delta = np.asarray(explorer.figure.data[1].z).copy()
    explorer.attack_picker.value = "pgd"
    assert explorer.last_view["attack"] == "pgd" and "PGD-10" in explorer.figure.layout.title.text
    assert not np.allclose(fgsm_delta, np.asarray(explorer.figure.data[1].z))
    explorer.example_picker.value = 3
    np.testing.assert_allclose(np.asarray(explorer.figure.data[0].z), x[3, 0].numpy())
    assert explorer.last_view["label"] == int(y[3])
    cached = len(explorer._cache)
    explorer.example_picker.value = 0
    explorer.example_picker.value = 3
    assert len(explorer._cache) == cached  # both views came from the cache


# --------------------------------------------------------------------------- 02: activation explorer


def test_activation_view_curves(examples, models):
    x, y, _ = examples
    v = widgets.activation_view(models, x, y, 0.1, class_id=int(y[0]), model_name="STD", steps=3)
    channels = 16
    for key in ("rank", "natural_magnitudes", "adversarial_magnitudes", "natural_counts", "adversarial_counts"):
        assert v[key].shape == (channels,)
    assert (np.diff(v["natural_magnitudes"]) <= 0).all() and (np.diff(v["adversarial_magnitudes"]) <= 0).all()
    assert (np.diff(v["natural_counts"]) <= 0).all()
    n = int((y == y[0]).sum())
    assert v["summary"]["n_examples"] == n and v["natural_counts"].max() <= n
    zero = widgets.activation_view(models, x, y, 0.0, class_id=int(y[0]), model_name="STD", steps=3)
    np.testing.assert_array_equal(zero["natural_counts"], zero["adversarial_counts"])
    np.testing.assert_allclose(zero["natural_magnitudes"], zero["adversarial_magnitudes"])


def test_activation_view_caches_per_model_and_eps(examples, models):
    x, y, _ = examples
    cache: dict = {}
    for class_id in (0, 1, 2):
        widgets.activation_view(models, x, y, 0.1, class_id, "AT", steps=2, cache=cache)
    assert len(cache) == 1
    with pytest.raises(ValueError, match="Unknown model"):
        widgets.activation_view(models, x, y, 0.1, 0, "CAS", cache=cache)
    with pytest.raises(ValueError, match="No example has label"):
        widgets.class_comparison(next(iter(cache.values())), torch.zeros_like(y), 3)


def test_activation_explorer_controls_drive_the_figure(examples, models):
    x, y, classes = examples
    explorer = widgets.ActivationExplorer(models, x, y, classes, eps=0.0, eps_max=0.1, eps_step=0.05, class_id=0,
                                          steps=3, progress=False)
    fig = explorer.figure
    assert explorer.eps_grid == [0.0, 0.05, 0.1] and len(explorer.cache) == 6  # precomputed: 2 models × 3 ε
    np.testing.assert_allclose(np.asarray(fig.data[0].y), np.asarray(fig.data[1].y))  # ε = 0: identical curves
    explorer.eps_slider.value = 0.1
    assert not np.allclose(np.asarray(fig.data[0].y), np.asarray(fig.data[1].y))
    assert "ε = 0.100" in fig.layout.title.text and len(explorer.cache) == 6  # served from the cache
    before_html, before_counts = explorer.summary.value, np.asarray(fig.data[2].y).copy()
    explorer.class_picker.value = 1
    assert explorer.last_view["summary"]["n_examples"] == int((y == 1).sum())
    assert "class 1" in fig.layout.title.text and explorer.summary.value != before_html
    np.testing.assert_array_equal(np.asarray(fig.data[2].y), explorer.last_view["natural_counts"])
    assert np.asarray(fig.data[2].y).max() <= int((y == 1).sum()) and before_counts.shape == (16,)
    magnitudes_std = np.asarray(fig.data[0].y).copy()
    explorer.model_toggle.value = "AT"
    assert fig.layout.title.text.startswith("AT") and not np.allclose(magnitudes_std, np.asarray(fig.data[0].y))
    whole = explorer.comparison("AT", 0.1)
    assert whole.n_examples == len(y) and explorer.comparison("AT", 0.1, class_id=1).n_examples == int((y == 1).sum())


# --------------------------------------------------------------------------- 02: the activation threshold


@pytest.mark.usefixtures("one_thread")  # tiny CPU work: more threads only add synchronisation
def test_activation_explorer_threshold_recounts_without_attacking(examples, models, monkeypatch):
    """Moving the threshold re-counts the cached activations: the counts, summary, title and count axis change,
    and no attack runs."""
    from cas_edu import activations

    x, y, classes = examples
    attacks = []
    real_attack = activations._figure_attack

    def counting_attack(*args, **kwargs):
        attacks.append(args[3])  # ε
        return real_attack(*args, **kwargs)

    monkeypatch.setattr(activations, "_figure_attack", counting_attack)
    explorer = widgets.ActivationExplorer(models, x, y, classes, eps=0.1, eps_max=0.1, eps_step=0.1, class_id=0,
                                          steps=2, progress=False)
    assert attacks == [0.1, 0.1]  # precomputed: one PGD per model at ε = 0.1 (ε = 0 needs none)
    assert explorer.threshold_slider.value == activations.DEFAULT_THRESHOLD
    fig = explorer.figure
    counts_at_1 = np.asarray(fig.data[2].y).copy()
    explorer.threshold_slider.value = 0.3  # the observer fires update()
    assert attacks == [0.1, 0.1], "changing the threshold must not attack again"
    counts_at_30 = np.asarray(fig.data[2].y)
    assert not np.array_equal(counts_at_1, counts_at_30)
    natural = explorer.comparison("STD", 0.1).natural[(y == 0).numpy()]
    expected = torch.sort(activations.activation_counts(natural, 0.3), descending=True, stable=True).values
    np.testing.assert_array_equal(counts_at_30, expected.numpy())
    view = explorer.last_view
    assert view["threshold"] == 0.3 and view["summary"]["threshold"] == 0.3
    assert view["summary"]["saturation"] == pytest.approx(activations.saturation(natural, 0.3))
    assert "t = 30 %" in fig.layout.title.text and "> 30 %" in fig.layout.yaxis2.title.text
    assert "t = 30 %" in explorer.summary.value and "channels active for natural images" in explorer.summary.value
    # comparison(): the slider's threshold by default, any other on request; still no attack
    assert explorer.comparison("AT", 0.1, class_id=0).threshold == 0.3
    assert explorer.comparison("AT", 0.1, threshold=0.5).threshold == 0.5
    explorer.model_toggle.value = "AT"
    assert attacks == [0.1, 0.1] and "t = 30 %" in fig.layout.title.text
    with pytest.raises(ValueError, match="threshold"):
        widgets.ActivationExplorer(models, x, y, classes, eps=0.1, eps_max=0.1, eps_step=0.1, threshold=1.5,
                                   precompute=False)


def _comparison(natural: torch.Tensor, threshold: float = 0.01):
    from cas_edu.activations import ActivationComparison

    return ActivationComparison(layer="block3", class_id=None, eps=0.1, natural=natural, adversarial=natural.flip(1),
                                threshold=threshold)


def test_summary_reports_a_saturated_and_a_sparse_layer():
    saturated = _comparison(torch.rand(12, 16, generator=torch.Generator().manual_seed(0)) + 0.5)  # all active
    summary = saturated.summary()
    assert summary["threshold"] == 0.01 and summary["saturation"] == 1.0 and summary["saturated"] is True
    assert saturated.saturation_note().startswith("saturated: 100 % of channels active for natural images at t = 1 %")
    sparse_acts = torch.zeros(12, 16)
    sparse_acts[torch.arange(12), torch.arange(12) % 16] = 1.0  # one active channel per image
    summary = _comparison(sparse_acts).summary()
    assert summary["saturation"] == pytest.approx(1 / 16) and summary["saturated"] is False
    assert _comparison(sparse_acts).saturation_note().startswith("not saturated: 6.25 %")
    # the explorer's summary says it plainly, in bold only when saturated
    for comparison, bold in ((saturated, True), (_comparison(sparse_acts), False)):
        html = widgets.summary_html({"summary": comparison.summary(), "saturation_note": comparison.saturation_note()})
        assert comparison.saturation_note() in html and ("<b>" in html) == bold


def test_at_threshold_recounts_the_same_activations():
    ramp = torch.arange(1, 21, dtype=torch.float32).repeat(6, 1) / 20  # channel c holds (c + 1) / 20
    comparison = _comparison(ramp)
    assert comparison.summary()["saturated"] is True
    half = comparison.at_threshold(0.5)
    assert half.natural is comparison.natural and half.adversarial is comparison.adversarial
    assert half.threshold == 0.5 and comparison.threshold == 0.01
    assert half.summary()["saturation"] == pytest.approx(0.5) and half.summary()["saturated"] is False
    assert int((half.natural_counts > 0).sum()) == 10 and int((comparison.natural_counts > 0).sum()) == 20
    with pytest.raises(ValueError, match="threshold"):
        comparison.at_threshold(1.5)


def test_count_figures_name_the_threshold_and_saturation():
    ramp = torch.arange(1, 21, dtype=torch.float32).repeat(6, 1) / 20
    comparisons = {"dense": _comparison(ramp), "sparse": _comparison(ramp, threshold=0.5)}
    fig = plots.count_figure(comparisons)
    assert fig.layout.yaxis.title.text == "examples activating the channel (> 1 % of the image's max)"
    assert "> 50 % of the image's max" in fig.layout.yaxis2.title.text
    assert [a.text for a in fig.layout.annotations] == ["dense (saturated)", "sparse"]
    assert "activated at > 1 % of the image's max" in fig.layout.title.text
    single = plots.activation_figure(comparisons["sparse"])
    assert single.layout.yaxis2.title.text == plots.count_axis_title(0.5)


# --------------------------------------------------------------------------- static figures


def _has_labels(fig: go.Figure) -> None:
    assert fig.layout.title.text
    layout = fig.layout.to_plotly_json()
    assert any(v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("xaxis"))
    assert any(v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("yaxis"))


def test_robustness_curve_and_figure(examples, models):
    x, y, _ = examples
    curve = plots.robustness_curve(models["STD"], x, y, [0.0, 0.1], steps=2, progress=False)
    assert curve["eps"] == [0.0, 0.1] and curve["n"] == len(x)
    assert curve["fgsm"][0] == curve["pgd"][0] == curve["natural"]
    assert all(0 <= a <= 1 for a in curve["fgsm"] + curve["pgd"])
    fig = plots.accuracy_vs_eps_figure({"STD": curve, "AT": curve})
    _has_labels(fig)
    assert [t.name for t in fig.data] == ["STD · natural", "STD · FGSM", "STD · PGD-2", "AT · natural", "AT · FGSM",
                                          "AT · PGD-2"]
    with pytest.raises(ValueError, match="Unknown attack"):
        plots.robustness_curve(models["STD"], x, y, [0.1], attacks=("cw",))


def test_activation_figures_and_table(examples, models):
    x, y, _ = examples
    explorer = widgets.ActivationExplorer(models, x, y, [str(i) for i in range(10)], eps=0.05, eps_max=0.05,
                                          eps_step=0.05, steps=2, progress=False)
    comparisons = {name: explorer.comparison(name, 0.05, class_id=0) for name in models}
    for fig in (plots.magnitude_figure(comparisons), plots.count_figure(comparisons)):
        _has_labels(fig)
        assert len(fig.data) == 4 and {t.name for t in fig.data} == {"natural", "adversarial"}
        assert sum(bool(t.showlegend) for t in fig.data) == 2
    table = plots.summary_table(comparisons)
    assert table.splitlines()[0].split() == ["quantity", "STD", "AT"] and len(table.splitlines()) == 9
    assert table.splitlines()[-2].split()[-2:] == ["0.010", "0.010"]  # the threshold row
    long_names = plots.summary_table({"AT": comparisons["AT"], "AT+CAS (before the mask)": comparisons["AT"]})
    assert long_names.splitlines()[0].split()[:3] == ["quantity", "AT", "AT+CAS"]
    grid = plots.image_grid_figure({"clean": x[:3], "δ": x[:3] - 0.5}, column_titles=["a", "b", "c"],
                                   diverging=["δ"])
    _has_labels(grid)
    assert len(grid.data) == 6


# --------------------------------------------------------------------------- seeds, one base class, one palette


def test_craft_adversarial_follows_its_seed_and_leaves_the_global_rng_alone(examples, models):
    x, y, _ = examples
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = widgets.craft_adversarial(models["STD"], x[:4], y[:4], 0.1, "pgd", steps=2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)  # another global state: a seeded call must not see it
    again = widgets.craft_adversarial(models["STD"], x[:4], y[:4], 0.1, "pgd", steps=2, seed=3)
    other = widgets.craft_adversarial(models["STD"], x[:4], y[:4], 0.1, "pgd", steps=2, seed=4)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_epsilon_explorer_follows_its_seed(examples, models):
    x, y, classes = examples
    perturbation = {}
    for global_seed, seed in ((0, 3), (1, 3), (1, 4)):
        torch.manual_seed(global_seed)
        explorer = widgets.EpsilonExplorer(models["STD"], x[:2], y[:2], classes, eps=0.1, attack="pgd", steps=2,
                                           seed=seed)
        perturbation[global_seed, seed] = np.asarray(explorer.figure.data[1].z)
    np.testing.assert_array_equal(perturbation[0, 3], perturbation[1, 3])
    assert not np.array_equal(perturbation[1, 3], perturbation[1, 4])


def test_activation_view_and_explorer_follow_their_seed(examples, models):
    x, y, classes = examples
    views, explorers = {}, {}
    for global_seed, seed in ((0, 3), (1, 3), (1, 4)):
        torch.manual_seed(global_seed)
        views[global_seed, seed] = widgets.activation_view(models, x, y, 0.1, int(y[0]), "STD", steps=1, seed=seed)
        torch.manual_seed(global_seed)
        explorer = widgets.ActivationExplorer({"STD": models["STD"]}, x, y, classes, eps=0.1, eps_max=0.1,
                                              eps_step=0.1, class_id=int(y[0]), steps=1, seed=seed, progress=False)
        explorers[global_seed, seed] = explorer.comparison("STD", 0.1).adversarial
    np.testing.assert_array_equal(views[0, 3]["adversarial_magnitudes"], views[1, 3]["adversarial_magnitudes"])
    assert not np.array_equal(views[1, 3]["adversarial_magnitudes"], views[1, 4]["adversarial_magnitudes"])
    assert torch.equal(explorers[0, 3], explorers[1, 3]) and not torch.equal(explorers[1, 3], explorers[1, 4])


def test_explorers_are_drawn_by_plots_and_share_one_base(examples, models):
    x, y, classes = examples
    epsilon = widgets.EpsilonExplorer(models["STD"], x[:2], y[:2], classes, eps=0.1)
    activation = widgets.ActivationExplorer(models, x, y, classes, eps=0.05, eps_max=0.05, eps_step=0.05, steps=1,
                                            progress=False)
    for explorer, static in ((epsilon, plots.epsilon_figure(epsilon.last_view, classes, epsilon.eps_max)),
                             (activation, plots.activation_figure(activation.comparison("STD", 0.05, 0)))):
        assert isinstance(explorer, widgets.Explorer)
        assert [t.type for t in explorer.figure.data] == [t.type for t in static.data]
        assert explorer.figure.layout.xaxis.title.text == static.layout.xaxis.title.text
    colors = [t.line.color for t in activation.figure.data[:2]] + [t.marker.color for t in activation.figure.data[2:]]
    assert colors == [plots.KIND_COLORS["natural"], plots.KIND_COLORS["adversarial"]] * 2
    assert [t.marker.color for t in epsilon.figure.data[3:]] == list(plots.KIND_COLORS.values())
    # deprecated aliases hand out the moved functions
    from cas_edu import activations, evaluation

    assert plots.robustness_curve is evaluation.robustness_curve
    assert widgets.class_comparison is activations.class_comparison


# --------------------------------------------------------------------------- static snapshots of the explorers


def _layout_without_title_and_size(fig: go.Figure) -> dict:
    layout = fig.layout.to_plotly_json()
    for key in ("title", "height", "margin"):
        layout.pop(key, None)
    return layout


def test_snapshot_is_a_plain_figure_of_the_current_view_titled_as_a_static_snapshot(examples, models):
    x, y, classes = examples
    epsilon = widgets.EpsilonExplorer(models["STD"], x[:3], y[:3], classes, eps=0.05)
    activation = widgets.ActivationExplorer(models, x, y, classes, eps=0.05, eps_max=0.05, eps_step=0.05, steps=1,
                                            progress=False)
    for explorer in (epsilon, activation):
        snapshot = explorer.snapshot()
        assert type(snapshot) is go.Figure  # a plain figure: static viewers get its image, no widget state needed
        title = snapshot.layout.title.text
        assert title.startswith("Static snapshot of the explorer's initial view")
        assert title.endswith(explorer.figure.layout.title.text)  # the explorer's own title is kept
        assert snapshot.layout.height == explorer.figure.layout.height + widgets._TITLE_LINE_PX
        assert snapshot.layout.margin.t == explorer.figure.layout.margin.t + widgets._TITLE_LINE_PX
        assert _layout_without_title_and_size(snapshot) == _layout_without_title_and_size(explorer.figure)
        assert snapshot.to_plotly_json()["data"] == explorer.figure.to_plotly_json()["data"]
        snapshot.data[-1].name = "changed"  # a copy: the explorer's figure is untouched
        assert explorer.figure.data[-1].name != "changed"

    epsilon.eps_slider.value = 0.2
    moved = epsilon.snapshot()
    assert moved.layout.title.text.startswith("Static snapshot of the explorer's current view")
    assert "ε = 0.200" in moved.layout.title.text
    np.testing.assert_allclose(np.asarray(moved.data[4].y), epsilon.last_view["probs_adversarial"])


def test_an_explorer_widget_reads_as_its_name_without_a_kernel(examples, models):
    import ipywidgets

    x, y, classes = examples
    explorer = widgets.EpsilonExplorer(models["STD"], x[:2], y[:2], classes, eps=0.1)
    bundle = explorer.widget._repr_mimebundle_()
    assert isinstance(explorer.widget, ipywidgets.VBox) and "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "[EpsilonExplorer: interactive, run the notebook to use it]"
