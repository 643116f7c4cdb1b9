"""Tests for cas_edu.cas: the CAS module's mask, auxiliary logits and loss, as the official code defines them."""
from __future__ import annotations

import math

import pytest
import torch

from cas_edu.cas import DEFAULT_CAS_BETA, CASModule, auxiliary_loss, cas_loss

C, K = 6, 4


def _module(seed: int = 0) -> CASModule:
    torch.manual_seed(seed)
    module = CASModule(C, K)
    with torch.no_grad():  # a visible bias, to prove it never enters the mask
        module.classifier.bias.copy_(torch.linspace(-3.0, 5.0, K))
    return module


def _features(n: int = 5, h: int = 3, w: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, h, w, generator=g)  # post-ReLU features are non-negative


def _hand_aux_logits(module: CASModule, features: torch.Tensor) -> torch.Tensor:
    """Linear(mean over H, W) written out: pooled @ W.T + b."""
    pooled = features.sum(dim=(2, 3)) / (features.shape[2] * features.shape[3])
    return pooled @ module.classifier.weight.T + module.classifier.bias


def _hand_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy written out with logsumexp."""
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(y)), y]).mean()


# --------------------------------------------------------------------------- training-mode mask

def test_train_mode_mask_is_the_signed_weight_row_of_the_true_label():
    module = _module().train()
    f = _features()
    y = torch.tensor([0, 3, 1, 3, 2])
    masked, _ = module(f, y)
    weight = module.classifier.weight
    assert (weight < 0).any() and (weight > 0).any(), "need signed weights for this test to mean anything"
    torch.testing.assert_close(masked, f * weight[y][:, :, None, None], rtol=0, atol=0)
    # signed: features are non-negative, so a negative weight gives a negative output (no abs, no sigmoid)
    assert (masked < 0).any()
    assert not torch.allclose(masked, f * torch.sigmoid(weight[y])[:, :, None, None])
    # the same mask at every spatial position
    ratio = masked / f
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))


def test_train_mode_mask_ignores_bias():
    module = _module().train()
    f, y = _features(), torch.tensor([1, 1, 0, 2, 3])
    before, _ = module(f, y)
    with torch.no_grad():
        module.classifier.bias.mul_(-7.0).add_(11.0)
    after, _ = module(f, y)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_train_mode_mask_follows_labels_not_predictions():
    module = _module().train()
    f = _features()
    _, aux = module(f, torch.zeros(5, dtype=torch.long))
    predicted = aux.argmax(dim=1)
    other = (predicted + 1) % K  # labels that disagree with the auxiliary prediction everywhere
    masked, _ = module(f, other)
    torch.testing.assert_close(masked, f * module.classifier.weight[other][:, :, None, None], rtol=0, atol=0)
    assert not torch.allclose(masked, f * module.classifier.weight[predicted][:, :, None, None])


def test_train_mode_without_labels_raises_value_error():
    module = _module().train()
    with pytest.raises(ValueError, match="label"):
        module(_features())


def test_train_mode_without_labels_says_what_to_do():
    """A newcomer's ``model(x)`` on a training-mode CAS model: the error names both ways out."""
    from cas_edu.models import build

    model = build("small_cnn", num_classes=K, in_channels=1, cas=True).train()
    with pytest.raises(ValueError) as info:
        model(torch.rand(2, 1, 8, 8))
    message = str(info.value)
    assert "model.eval()" in message and "inference" in message
    assert "model.forward_details(x, y)" in message


# --------------------------------------------------------------------------- evaluation-mode mask

def _spread_features(n: int = 12) -> torch.Tensor:
    """Features dominated by a different channel per example, so the auxiliary predictions vary."""
    f = 0.1 * _features(n=n)
    f[torch.arange(n), torch.arange(n) % C] += 3.0
    return f


def test_eval_mode_mask_is_the_row_of_the_auxiliary_argmax():
    module = _module().eval()
    with torch.no_grad():
        module.classifier.bias.zero_()
    f = _spread_features()
    masked, aux = module(f)
    predicted = _hand_aux_logits(module, f).argmax(dim=1)
    assert predicted.unique().numel() > 1, "several predicted classes make the check per-example"
    torch.testing.assert_close(masked, f * module.classifier.weight[predicted][:, :, None, None], rtol=0, atol=0)


def test_eval_mode_ignores_labels():
    module = _module().eval()
    f = _spread_features()
    out_none, aux_none = module(f)
    for y in (torch.zeros(12, dtype=torch.long), torch.arange(12) % K, torch.full((12,), K - 1)):
        out_y, aux_y = module(f, y)
        torch.testing.assert_close(out_y, out_none, rtol=0, atol=0)
        torch.testing.assert_close(aux_y, aux_none, rtol=0, atol=0)


def test_eval_mode_with_bias_choosing_the_class():
    """The bias enters the auxiliary prediction (hence which row is chosen) but never the mask values."""
    module = _module().eval()
    f = _features(n=4)
    with torch.no_grad():
        module.classifier.bias.copy_(torch.tensor([0.0, 0.0, 1e4, 0.0]))  # class 2 always wins
    masked, _ = module(f)
    torch.testing.assert_close(masked, f * module.classifier.weight[2][None, :, None, None], rtol=0, atol=0)


# --------------------------------------------------------------------------- auxiliary logits

@pytest.mark.parametrize("training", [True, False])
def test_aux_logits_come_from_unmasked_pooled_features(training: bool):
    module = _module().train(training)
    f = _features(h=4, w=5)
    y = torch.tensor([2, 0, 1, 3, 3])
    masked, aux = module(f, y)
    torch.testing.assert_close(aux, _hand_aux_logits(module, f))
    # not the logits of the masked features
    assert not torch.allclose(aux, _hand_aux_logits(module, masked))
    assert aux.shape == (5, K)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("shape", [(2, C + 1, 3, 3), (2, C - 1, 3, 3), (2, C, 3), (C, 3, 3, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_wrong_feature_shape_raises_value_error(shape, training: bool):
    module = _module().train(training)
    with pytest.raises(ValueError, match="expects features"):
        module(torch.rand(*shape), torch.zeros(shape[0], dtype=torch.long))


@pytest.mark.parametrize("channels, classes", [(0, 10), (8, 1), (8, 0)])
def test_bad_constructor_arguments_raise_value_error(channels: int, classes: int):
    with pytest.raises(ValueError):
        CASModule(channels, classes)


# --------------------------------------------------------------------------- gradients

def test_gradient_reaches_the_weight_rows_used_as_mask_in_training():
    module = _module().train()
    f = _features()
    y = torch.tensor([0, 3, 0, 3, 3])
    masked, _ = module(f, y)
    masked.sum().backward()  # only the mask path, the auxiliary logits are not in this loss
    grad = module.classifier.weight.grad
    assert grad is not None
    # d/dW[k] sum(f * W[y]) = sum of spatially summed features of the examples labelled k
    expected = torch.zeros(K, C)
    expected.index_add_(0, y, f.sum(dim=(2, 3)))
    torch.testing.assert_close(grad, expected)
    assert grad[0].abs().sum() > 0 and grad[3].abs().sum() > 0
    assert torch.equal(grad[1], torch.zeros(C)) and torch.equal(grad[2], torch.zeros(C))
    assert module.classifier.bias.grad is None or torch.equal(module.classifier.bias.grad, torch.zeros(K))


def test_gradient_reaches_features_through_mask_and_auxiliary_head():
    module = _module().train()
    f = _features().requires_grad_(True)
    y = torch.tensor([1, 2, 3, 0, 1])
    masked, aux = module(f, y)
    (masked.sum() + aux.sum()).backward()
    h, w = f.shape[2:]
    expected = module.classifier.weight[y][:, :, None, None] + module.classifier.weight.sum(0)[None, :, None, None] / (h * w)
    torch.testing.assert_close(f.grad, expected.expand_as(f))


# --------------------------------------------------------------------------- loss

def test_cas_loss_matches_hand_computation_for_two_modules():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(7, K, generator=g)
    aux = [torch.randn(7, K, generator=g), torch.randn(7, K, generator=g)]
    y = torch.randint(0, K, (7,), generator=g)
    beta, s = 2.0, 2
    expected = _hand_ce(logits, y) + beta / s * (_hand_ce(aux[0], y) + _hand_ce(aux[1], y))
    torch.testing.assert_close(cas_loss(logits, aux, y, beta=beta), expected)
    assert DEFAULT_CAS_BETA == 2.0
    torch.testing.assert_close(cas_loss(logits, aux, y), expected)
    # a different beta changes the loss in proportion to the auxiliary term
    aux_term = (_hand_ce(aux[0], y) + _hand_ce(aux[1], y)) / s
    torch.testing.assert_close(cas_loss(logits, aux, y, beta=5.0), _hand_ce(logits, y) + 5.0 * aux_term)


def test_cas_loss_is_an_average_over_modules_not_a_sum():
    g = torch.Generator().manual_seed(4)
    logits, a = torch.randn(5, K, generator=g), torch.randn(5, K, generator=g)
    y = torch.randint(0, K, (5,), generator=g)
    # S copies of the same auxiliary logits give the same loss as one
    torch.testing.assert_close(cas_loss(logits, [a, a, a], y), cas_loss(logits, [a], y))
    torch.testing.assert_close(auxiliary_loss([a], y, beta=2.0), 2.0 * _hand_ce(a, y))


def test_auxiliary_loss_of_no_modules_is_zero():
    y = torch.tensor([0, 1])
    assert auxiliary_loss([], y) == 0
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, 1.0, -2.0]])
    torch.testing.assert_close(cas_loss(logits, [], y), _hand_ce(logits, y))


def test_cas_loss_backpropagates_into_aux_classifier():
    module = _module().train()
    f = _features()
    y = torch.tensor([0, 1, 2, 3, 0])
    masked, aux = module(f, y)
    main = masked.mean(dim=(2, 3))[:, :K]
    cas_loss(main, [aux], y).backward()
    assert module.classifier.bias.grad is not None and module.classifier.bias.grad.abs().sum() > 0
    assert math.isfinite(module.classifier.weight.grad.abs().sum().item())
