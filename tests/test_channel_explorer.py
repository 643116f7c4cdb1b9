"""The channel explorer of notebook 03, driven headlessly: controls → channel_view → figure data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cas_edu import activations, evaluation, models, plots, widgets

EPS_GRID = [0.0, 0.05, 0.3]


@pytest.fixture(scope="module")
def examples(digits):
    """The first 150 test digits (conftest's ``digits``): images, labels, class names."""
    return digits.test.x[:150], digits.test.y[:150], digits.classes


@pytest.fixture(scope="module")
def cas_model():
    torch.manual_seed(0)
    return models.build("small_cnn", in_channels=1, cas=True).eval()


@pytest.fixture(scope="module")
def cas_data(cas_model, examples):
    x, y, _ = examples
    return activations.channel_data(cas_model, x, y, EPS_GRID, steps=3, seed=0)


def _bars(explorer):
    kept, suppressed = explorer.figure.data[0].y, explorer.figure.data[1].y
    return np.array([k if k is not None else s for k, s in zip(kept, suppressed)], dtype=float)


def test_changing_the_class_shows_that_class_weight_row(cas_data, cas_model, examples):
    explorer = widgets.ChannelExplorer(cas_data, examples[2], class_id=0, eps=0.05)
    weight = cas_model.cas["block3"].classifier.weight.detach()
    for k in (3, 7):
        explorer.class_picker.value = k  # the observer runs the callback
        order = torch.argsort(weight[k], descending=True)
        np.testing.assert_allclose(_bars(explorer), weight[k][order].numpy(), rtol=1e-6)
        assert explorer.last_view["class_id"] == k
        assert explorer.last_view["order"] == order.tolist()
        assert f"class {examples[2][k]}" in explorer.figure.layout.title.text
    assert not np.allclose(_bars(explorer), np.sort(weight[3].numpy())[::-1])


def test_suppressed_channels_are_highlighted(cas_data):
    explorer = widgets.ChannelExplorer(cas_data, [str(i) for i in range(10)], class_id=2)
    view = explorer.last_view
    grey = np.array([v is not None for v in explorer.figure.data[1].y])
    np.testing.assert_array_equal(grey, view["suppressed"])
    mask = view["mask"]
    np.testing.assert_array_equal(view["suppressed"], mask <= 0.05 * np.abs(mask).max())
    assert view["suppressed"].any() and not view["suppressed"].all()


def test_larger_eps_changes_adversarial_activations_more(cas_data):
    explorer = widgets.ChannelExplorer(cas_data, [str(i) for i in range(10)], class_id=1, eps=0.0)
    assert explorer.last_view["pre_mask_change"] == 0.0
    np.testing.assert_allclose(explorer.figure.data[2].y, explorer.figure.data[3].y)
    changes = []
    for eps in (0.05, 0.3):
        explorer.eps_slider.value = eps
        np.testing.assert_allclose(explorer.figure.data[3].y, explorer.last_view["adversarial_pre"])
        changes.append(explorer.last_view["pre_mask_change"])
    assert 0 < changes[0] < changes[1]


def test_after_mask_activations_are_pre_mask_times_the_chosen_row(cas_model, examples):
    x, _, _ = examples
    pre, post, classes = activations.masked_channel_activations(cas_model, x[:40])
    weight = cas_model.cas["block3"].classifier.weight.detach()
    torch.testing.assert_close(post, pre * weight[classes], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        aux = cas_model.forward_details(x[:40]).aux_logits[0]
    torch.testing.assert_close(classes, aux.argmax(1))


def test_channel_view_rejects_bad_input(cas_data, examples):
    x, y, _ = examples
    torch.manual_seed(0)
    plain = activations.channel_data(models.build("small_cnn", in_channels=1).eval(), x[:20], y[:20], [0.0])
    with pytest.raises(ValueError, match="CAS"):
        widgets.channel_view(plain, 0, 0.0)
    with pytest.raises(ValueError, match="class_id"):
        widgets.channel_view(cas_data, 10, 0.0)
    with pytest.raises(ValueError, match="eps_values"):
        activations.channel_data(models.build("small_cnn", in_channels=1, cas=True), x[:4], y[:4], [])


def test_nearest_precomputed_eps_is_used(cas_data):
    assert widgets.channel_view(cas_data, 0, 0.28)["eps"] == 0.3
    assert widgets.channel_view(cas_data, 0, 0.01)["eps"] == 0.0


def _has_labels(fig):
    layout = fig.layout
    assert layout.title.text
    x_titles = [getattr(layout, k).title.text for k in layout if k.startswith("xaxis")]
    y_titles = [getattr(layout, k).title.text for k in layout if k.startswith("yaxis")]
    assert any(x_titles) and any(y_titles)
    assert any(trace.showlegend is not False and trace.name for trace in fig.data)


def test_figures_have_titles_axis_labels_and_legends(cas_data, cas_model, examples):
    at_data = activations.channel_data(models.build("small_cnn", in_channels=1).eval(), examples[0], examples[1], [0.0, 0.1],
                                    steps=2)
    _has_labels(plots.suppression_figure({"AT": at_data, "AT+CAS": cas_data}, class_id=0, eps=0.05))
    history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5, "val_natural_accuracy": 0.6,
                "val_robust_accuracy": 0.4} for e in (1, 2)]
    _has_labels(plots.training_curves_figure({"AT": history, "AT+CAS": history}))
    reports = {"AT": {"natural": {"ce": 0.9}, "pgd20": {"ce": 0.5}},
               "AT+CAS": {"natural": {"ce": 0.9}, "pgd20": {"ce": 0.7, "ce+cas": 0.4}}}
    fig = plots.robustness_comparison_figure(reports)
    _has_labels(fig)
    assert list(fig.data[0].y) == [90.0, 50.0, 50.0]  # no CAS: the main-head value stands in for the adaptive bar
    assert list(fig.data[1].y) == [90.0, 70.0, 40.0]
    _has_labels(widgets.ChannelExplorer(cas_data, examples[2]).figure)


def test_suppression_figure_draws_each_class_mean_sorted_by_the_natural_one(cas_data):
    fig = plots.suppression_figure({"AT+CAS": cas_data}, class_id=2, eps=0.04)  # nearest precomputed ε: 0.05
    means = activations.class_mean_activations(cas_data, 2, 0.04)
    assert means["eps"] == 0.05 and means["n_examples"] == int((cas_data.y == 2).sum())
    for first, stage in ((0, "pre"), (2, "post")):
        order = torch.argsort(means[f"natural_{stage}"], descending=True)
        np.testing.assert_allclose(fig.data[first].y, means[f"natural_{stage}"][order].numpy())
        np.testing.assert_allclose(fig.data[first + 1].y, means[f"adversarial_{stage}"][order].numpy())
    assert not np.allclose(fig.data[0].y, fig.data[1].y)  # PGD at ε = 0.05 moved the activations


def test_robustness_figure_takes_attacks_and_labels_from_evaluation():
    reports = {"AT": {"natural": {"ce": 0.9}, "fgsm": {"ce": 0.6}, "pgd-st": {"ce": 0.45}},
               "AT+CAS": {"natural": {"ce": 0.9}, "fgsm": {"ce": 0.8, "ce+cas": 0.55}, "pgd-st": {"ce+cas": 0.3}}}
    fig = plots.robustness_comparison_figure(reports)
    bars = [("natural", "ce"), ("fgsm", "ce"), ("fgsm", "ce+cas"), ("pgd-st", "ce+cas")]
    assert list(fig.data[0].x) == [evaluation.column_label(a, o) for a, o in bars]
    assert list(fig.data[0].y) == pytest.approx([90, 60, 60, 45])  # no CAS: the main-head / plain value stands in
    assert list(fig.data[1].y) == pytest.approx([90, 80, 55, 30])
