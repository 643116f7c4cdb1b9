"""Tests for cas_edu.activations: the Figure 1/2 statistics and their capture from models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cas_edu import activations as A
from cas_edu.models import build

# Three examples, four channels; threshold 1% of each example's largest value.
#   ex0: max 1.0 -> threshold 0.01: ch0, ch1 (0.02), ch2 activated; ch3 (0.005) not
#   ex1: max 2.0 -> threshold 0.02: ch0 only; ch1 (0.015) is above 1% absolute but not relative
#   ex2: all zero -> nothing activated
HAND = torch.tensor([
    [1.0, 0.02, 0.5, 0.005],
    [2.0, 0.015, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
])


def _model(cas: bool = False, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("small_cnn", in_channels=1, cas=cas, **kwargs)


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10


def test_activated_uses_threshold_relative_to_each_examples_max():
    expected = torch.tensor([
        [True, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ])
    assert torch.equal(A.activated(HAND), expected)
    # strictly greater: a value exactly at 1% of the max is not activated
    assert not A.activated(torch.tensor([[1.0, 0.01]]))[0, 1]
    # threshold 0 activates every positive value
    assert A.activated(HAND, threshold=0.0).sum() == (HAND > 0).sum()


def test_counts_and_magnitudes_on_hand_example():
    assert A.activation_counts(HAND).tolist() == [2, 1, 1, 0]
    magnitudes = A.channel_magnitudes(HAND)
    # sums over all examples (sub-threshold values included) / activated count; never activated -> 0
    assert torch.allclose(magnitudes, torch.tensor([1.5, 0.035, 0.5, 0.0]))
    assert magnitudes[3] == 0


def test_sorted_magnitudes_descending():
    assert torch.allclose(A.sorted_magnitudes(HAND), torch.tensor([1.5, 0.5, 0.035, 0.0]))


def test_counts_sorted_by_natural_order():
    natural, other = A.counts_sorted_by(torch.tensor([0, 3, 1, 2]), torch.tensor([10, 20, 30, 40]))
    assert natural.tolist() == [3, 2, 1, 0]
    assert other.tolist() == [20, 40, 30, 10]
    # ties keep channel order
    natural, other = A.counts_sorted_by(torch.tensor([1, 2, 1, 2]), torch.tensor([0, 1, 2, 3]))
    assert other.tolist() == [1, 3, 0, 2]
    with pytest.raises(ValueError):
        A.counts_sorted_by(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_entropy_uniform_concentrated_and_known_value():
    assert A.channel_entropy(torch.ones(5, 8)) == pytest.approx(1.0)
    one_hot = torch.zeros(5, 8)
    one_hot[:, 3] = 2.0
    assert A.channel_entropy(one_hot) == pytest.approx(0.0, abs=1e-12)
    nearly = torch.full((5, 8), 1e-4)
    nearly[:, 0] = 1.0
    assert A.channel_entropy(nearly) < 0.05
    # mass split evenly over 2 of 4 channels: log 2 / log 4 = 0.5
    assert A.channel_entropy(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        A.channel_entropy(-torch.ones(2, 3))


def test_ratio_and_fraction_activated():
    assert A.magnitude_ratio(torch.ones(4, 3), 2 * torch.ones(4, 3)) == pytest.approx(2.0)
    assert math.isnan(A.magnitude_ratio(torch.zeros(4, 3), torch.ones(4, 3)))
    assert A.fraction_activated(HAND) == pytest.approx((3 / 4 + 1 / 4 + 0) / 3)


def test_bad_shapes_and_threshold_rejected():
    with pytest.raises(ValueError):
        A.activated(torch.ones(3))
    with pytest.raises(ValueError):
        A.activated(HAND, threshold=1.5)


def test_channel_activations_shape_dtype_and_default_layer():
    model = _model()
    x, _ = _data(10)
    acts = A.channel_activations(model, x, batch_size=3)
    assert acts.shape == (10, 128) and acts.dtype == torch.float32 and acts.device.type == "cpu"
    assert A.channel_activations(model, x, "block1").shape == (10, 32)
    # batching does not change the result
    assert torch.allclose(acts, A.channel_activations(model, x, batch_size=256), atol=1e-6)


def test_unknown_layer_lists_available_names():
    model = _model()
    x, _ = _data(4)
    with pytest.raises(ValueError, match="block1.*block2.*block3"):
        A.channel_activations(model, x, "layer9")


def test_pre_mask_capture_at_cas_layers():
    model = _model(cas=True, cas_layers=["block2", "block3"])
    model.eval()
    x, _ = _data(12)
    captured = {}
    handle = model.blocks["block3"].register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    unmasked = captured["out"].mean(dim=(2, 3))
    acts = A.channel_activations(model, x, "block3")
    assert torch.allclose(acts, unmasked, atol=1e-6)
    # the masked path differs: what the head sees is the features times the aux weight row
    with torch.no_grad():
        masked, _ = model.cas["block3"](captured["out"])
    assert not torch.allclose(acts, masked.mean(dim=(2, 3)), atol=1e-3)
    # block3 activations depend on block2's mask (masks compound): removing it changes them
    with torch.no_grad():
        unmasked_chain = model.blocks["block3"](model.blocks["block2"](model.blocks["block1"](x))).mean(dim=(2, 3))
    assert not torch.allclose(acts, unmasked_chain, atol=1e-3)


def test_eval_mode_used_and_restored():
    model = _model(cas=True)
    x, _ = _data(8)
    with torch.no_grad():
        model.eval()
        expected = model.forward_details(x).activations["block3"].mean(dim=(2, 3))
    model.train()
    stats = model.blocks["block1"][1].running_mean.clone()
    acts = A.channel_activations(model, x)  # CAS in training mode would need labels and fail
    assert model.training
    assert torch.equal(stats, model.blocks["block1"][1].running_mean)
    assert torch.allclose(acts, expected, atol=1e-6)
    model.eval()
    A.channel_activations(model, x)
    assert not model.training


def test_compare_eps_zero_identical():
    model = _model(cas=True)
    x, y = _data(16)
    comparison = A.compare_activations(model, x, y, eps=0.0)
    assert torch.equal(comparison.natural, comparison.adversarial)
    assert torch.equal(comparison.natural_counts, comparison.adversarial_counts)
    assert torch.equal(comparison.natural_magnitudes, comparison.adversarial_magnitudes)
    summary = comparison.summary()
    assert summary["magnitude_ratio"] == 1.0
    assert summary["natural_entropy"] == summary["adversarial_entropy"]
    assert summary["natural_fraction_activated"] == summary["adversarial_fraction_activated"]
    assert summary["n_examples"] == 16
    assert comparison.layer == "block3"


def _trained_cas_model() -> torch.nn.Module:
    """A CAS model after a few SGD steps on random images with labels 0-2 (a loss PGD can climb), in training
    mode."""
    model = _model(cas=True)
    x, y = _data(32)
    y = y % 3
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(3):
        optimiser.zero_grad()
        out = model.forward_details(x, y)
        (F.cross_entropy(out.logits, y) + sum(F.cross_entropy(a, y) for a in out.aux_logits)).backward()
        optimiser.step()
    return model


def test_compare_positive_eps_changes_activations_and_curves_are_consistent():
    model = _trained_cas_model()  # in training mode, with a meaningful loss to ascend
    x, y = _data(32)
    y = y % 3
    torch.manual_seed(3)
    comparison = A.compare_activations(model, x, y, eps=0.3, steps=3, batch_size=20)
    assert model.training
    assert comparison.adversarial.shape == comparison.natural.shape == (32, 128)
    assert not torch.allclose(comparison.natural, comparison.adversarial, atol=1e-4)
    # curves are the module functions applied to the stored activations
    assert torch.equal(comparison.adversarial_magnitudes, A.sorted_magnitudes(comparison.adversarial))
    natural_counts = A.activation_counts(comparison.natural)
    order = torch.sort(natural_counts, descending=True, stable=True).indices
    assert torch.equal(comparison.natural_counts, natural_counts[order])
    assert torch.equal(comparison.adversarial_counts, A.activation_counts(comparison.adversarial)[order])
    assert torch.all(comparison.natural_counts[:-1] >= comparison.natural_counts[1:])
    summary = comparison.summary()
    assert summary["magnitude_ratio"] != 1.0
    assert isinstance(summary.pop("saturated"), bool)
    assert all(isinstance(v, float) for v in summary.values())


def test_compare_uses_caller_rng():
    model = _model()
    x, y = _data(8)
    kwargs = dict(eps=0.2, steps=1, step_size=0.01)
    torch.manual_seed(5)
    first = A.compare_activations(model, x, y, **kwargs).adversarial
    second = A.compare_activations(model, x, y, **kwargs).adversarial
    torch.manual_seed(5)
    again = A.compare_activations(model, x, y, **kwargs).adversarial
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


def test_class_filter():
    model = _model()
    x, y = _data(30)
    comparison = A.compare_activations(model, x, y, eps=0.0, class_id=3)
    assert comparison.class_id == 3
    assert comparison.n_examples == int((y == 3).sum()) == 3
    assert torch.allclose(comparison.natural, A.channel_activations(model, x[y == 3]), atol=1e-6)
    with pytest.raises(ValueError, match="No example"):
        A.compare_activations(model, x, torch.zeros_like(y), eps=0.0, class_id=4)
    with pytest.raises(ValueError, match="class_id"):
        A.compare_activations(model, x, y, eps=0.0, class_id=10)
    with pytest.raises(ValueError, match="class_id"):
        A.compare_activations(model, x, y, eps=0.0, class_id=-1)


def test_compare_validates_eps_and_layer():
    model = _model()
    x, y = _data(4)
    for eps in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            A.compare_activations(model, x, y, eps=eps)
    with pytest.raises(ValueError, match="Unknown layer"):
        A.compare_activations(model, x, y, eps=0.0, layer="nope")


# --------------------------------------------------------------------------- the official figures' attack by default


@pytest.fixture
def recorded_pgd(monkeypatch):
    """Replace PGD in activations (compare_activations and channel_data) by a recorder returning the images."""
    calls = []

    def fake_pgd(model, x, y, eps, **kwargs):
        calls.append({"eps": eps, **kwargs})
        return x.clone()

    monkeypatch.setattr(A, "pgd", fake_pgd)
    return calls


@pytest.mark.parametrize("cas, objective", [(True, "ce+cas"), (False, "ce")])
def test_statistics_default_to_the_official_figure_attack(recorded_pgd, cas, objective):
    """PGD-20, step 0.003 at ε = 8/255 (scaled with ε), random start; adaptive ce+cas on CAS models."""
    from cas_edu import widgets

    model = _model(cas=cas)
    x, y = _data(8)
    eps = 0.1
    comparison = A.compare_activations(model, x, y, eps=eps)
    A.channel_data(model, x, y, [0.0, eps])
    widgets.activation_view({"m": model}, x, y, eps, class_id=int(y[0]), model_name="m")
    assert len(recorded_pgd) == 3
    for call in recorded_pgd:
        assert call["steps"] == 20 and call["objective"] == objective and call["random_start"] is True
        assert call["step_size"] == pytest.approx(eps * 0.003 / (8 / 255))
    assert A.figure_step_size(8 / 255) == pytest.approx(0.003)
    assert comparison.attack == {"name": "PGD-20", "steps": 20, "step_size": pytest.approx(0.003 * eps * 255 / 8),
                                 "objective": objective, "random_start": True}


# --------------------------------------------------------------------------- seeds, the one layer lookup, the CAS view


def test_compare_activations_follows_its_seed_and_leaves_the_global_rng_alone():
    model = _model()
    x, y = _data(8)
    kwargs = dict(eps=0.2, steps=1, step_size=0.01)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = A.compare_activations(model, x, y, seed=3, **kwargs).adversarial
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)  # another global state: a seeded call must not see it
    again = A.compare_activations(model, x, y, seed=3, **kwargs).adversarial
    other = A.compare_activations(model, x, y, seed=4, **kwargs).adversarial
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_channel_data_follows_its_seed_and_leaves_the_global_rng_alone():
    model = _trained_cas_model()
    x, y = _data(12)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = A.channel_data(model, x, y, [0.0, 0.2], steps=1, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    again = A.channel_data(model, x, y, [0.0, 0.2], steps=1, seed=3)
    other = A.channel_data(model, x, y, [0.0, 0.2], steps=1, seed=4)
    assert torch.equal(first.adversarial_pre[0.2], again.adversarial_pre[0.2])
    assert not torch.equal(first.adversarial_pre[0.2], other.adversarial_pre[0.2])
    assert torch.equal(first.adversarial_pre[0.0], first.natural_pre)


def test_resolve_layer_is_the_one_layer_lookup():
    from cas_edu import channels

    plain, cas2 = _model(), _model(cas=True, cas_layers=["block2"])
    assert A.resolve_layer(plain) == "block3" and A.resolve_layer(plain, "block1") == "block1"
    assert A.resolve_layer(cas2) == "block3" and A.resolve_layer(cas2, cas_first=True) == "block2"
    assert A.cas_layer(cas2) == "block2" and A.cas_layer(cas2, "block1") == "block1" and A.cas_layer(plain) == "block3"
    assert A.resolve_layer(torch.nn.Sequential(torch.nn.Identity(), cas2), cas_first=True) == "block2"
    torch.manual_seed(0)
    resnet = build("resnet18", in_channels=1)
    assert A.resolve_layer(resnet, "layer4") == "layer4_1" and A.resolve_layer(resnet) == "layer4_1"
    with pytest.raises(ValueError, match="classifier"):
        A.resolve_layer(torch.nn.Linear(4, 2))
    # the captured layer is the resolved one, and the deprecated module hands out the same functions
    x, _ = _data(4)
    assert A.masked_channel_activations(cas2, x)[0].shape == (4, 64)  # block2: the CAS layer
    assert A.channel_activations(cas2, x).shape == (4, 128)  # block3: the default activation layer
    assert channels.cas_layer is A.cas_layer and channels.channel_data is A.channel_data


def _hand_channel_data() -> A.ChannelData:
    """Two classes, three channels, four examples; the numbers of test_suppression_summary_by_hand."""
    weight = torch.tensor([[1.0, 0.02, -0.5], [0.1, 0.9, 0.3]])
    natural = torch.tensor([[2.0, 1.0, 1.0], [4.0, 3.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    adversarial = torch.tensor([[2.0, 2.0, 2.0], [2.0, 4.0, 2.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    y = torch.tensor([0, 0, 1, 1])
    return A.ChannelData(layer="block3", eps_values=[0.0, 0.1], y=y, weight=weight, natural_pre=natural,
                         natural_post=natural * weight[y], natural_mask_class=torch.tensor([0, 0, 1, 0]),
                         natural_pred=torch.tensor([0, 1, 1, 1]),
                         adversarial_pre={0.0: natural, 0.1: adversarial},
                         adversarial_post={0.0: natural * weight[y], 0.1: adversarial * weight[y]},
                         adversarial_mask_class={0.0: torch.tensor([0, 0, 1, 0]), 0.1: torch.tensor([1, 0, 0, 0])},
                         adversarial_pred={0.0: torch.tensor([0, 1, 1, 1]), 0.1: torch.tensor([1, 1, 1, 1])})


def test_suppression_summary_by_hand():
    data = _hand_channel_data()
    means = A.class_mean_activations(data, 0, 0.12)  # nearest precomputed ε: 0.1
    assert means["eps"] == 0.1 and means["n_examples"] == 2
    assert means["natural_pre"].tolist() == [3.0, 2.0, 1.0] and means["adversarial_pre"].tolist() == [2.0, 3.0, 2.0]
    assert A.class_mean_activations(data, 0, 0.02)["adversarial_pre"].tolist() == [3.0, 2.0, 1.0]  # ε = 0: natural
    s = A.suppression_summary(data, 0, 0.12)
    assert s["order"].tolist() == [0, 1, 2]
    assert s["suppressed"].tolist() == [False, True, True]  # 0.02 ≤ 5 % of 1.0, −0.5 < 0
    assert s["accuracy_natural"] == 0.5 and s["accuracy_adversarial"] == 0.0
    assert s["right_mask_natural"] == 1.0 and s["right_mask_adversarial"] == 0.5
    assert s["suppressed_share_natural"] == pytest.approx(3 / 6)
    assert s["suppressed_share_adversarial"] == pytest.approx(5 / 7)
    assert s["pre_mask_change"] == pytest.approx(3 / 6)
    assert s["natural_post"].tolist() == pytest.approx([3.0, 0.04, -0.5])
    other = A.suppression_summary(data, 1, 0.1)  # class 1's row orders the channels 1, 2, 0
    assert other["order"].tolist() == [1, 2, 0] and other["natural_pre"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="class_id"):
        A.suppression_summary(data, 2, 0.1)
    data.weight = None
    with pytest.raises(ValueError, match="CAS"):
        A.suppression_summary(data, 0, 0.1)


def test_class_comparison_keeps_one_class():
    model = _model()
    x, y = _data(30)
    full = A.compare_activations(model, x, y, eps=0.0)
    three = A.class_comparison(full, y, 3)
    assert three.class_id == 3 and torch.equal(three.natural, full.natural[y == 3])
    with pytest.raises(ValueError, match="No example"):
        A.class_comparison(full, torch.zeros_like(y), 3)
