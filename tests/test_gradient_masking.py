"""Tests for cas_edu.gradient_masking: a toy input-quantisation defence that masks gradients on purpose.

On 200 digits test images at ε = 0.2 (L∞), a standard small CNN behind a 4-level quantiser: PGD-20 sees
zero gradients and reports ≥ 80 % robust accuracy, the black-box Square attack (5,000 queries) reports at
least 20 points less, the evaluation's gradient-masking check fires, and PGD-20 through the BPDA backward
pass (identity for the quantiser; Athalye et al. 2018) brings it to ≤ 20 %. Measured when written
(benchmarks/README has the command): natural 99.0 %, PGD-20 98.0 %, Square 0.0 %, BPDA PGD-20 0.0 %."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cas_edu import attacks, evaluation
from cas_edu.gradient_masking import InputQuantization, bpda, quantized_model

EPS = 0.2
LEVELS = 4
SUBSET = 200


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _pgd20(model, x, y) -> float:
    torch.manual_seed(0)
    return _accuracy(model, attacks.pgd(model, x, y, EPS, step_size=EPS / 10, steps=20), y)


@pytest.fixture(scope="module")
def toy(standard_cnn, digits):
    """The standard digits small CNN (conftest) behind a 4-level input quantiser, and 200 test digits."""
    base = standard_cnn
    x, y = digits.test.x[:SUBSET], digits.test.y[:SUBSET]
    return {"base": base, "model": quantized_model(base, LEVELS).eval(), "x": x, "y": y}


# --------------------------------------------------------------------------- exact properties

def test_quantization_rounds_to_the_levels():
    x = torch.tensor([0.0, 0.1, 0.17, 0.49, 0.51, 0.8, 0.84, 1.0])
    # 4 levels: 0, 1/3, 2/3, 1; thresholds at 1/6, 1/2, 5/6
    expected = torch.tensor([0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    torch.testing.assert_close(InputQuantization(4)(x), expected)
    torch.testing.assert_close(InputQuantization(2)(x), (x > 0.5).float())


def test_gradient_is_zero_without_bpda_and_the_models_with_bpda(toy):
    model, base, x, y = toy["model"], toy["base"], toy["x"][:16], toy["y"][:16]
    x_req = x.clone().requires_grad_(True)
    (masked,) = torch.autograd.grad(F.cross_entropy(model(x_req), y), x_req)
    assert torch.equal(masked, torch.zeros_like(x))
    quantized = InputQuantization(LEVELS)(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(base(quantized), y), quantized)
    with bpda(model):
        x_req = x.clone().requires_grad_(True)
        out = model(x_req)
        (through,) = torch.autograd.grad(F.cross_entropy(out, y), x_req)
    assert torch.equal(out, model(x))  # forward unchanged
    torch.testing.assert_close(through, expected)
    assert through.abs().sum() > 0
    assert not model[0].bpda  # restored


def test_bad_arguments_raise_value_error(toy):
    for levels in (1, 0, 2.5):
        with pytest.raises(ValueError, match="levels"):
            InputQuantization(levels)
    with pytest.raises(ValueError, match="InputQuantization"):
        with bpda(toy["base"]):
            pass


# --------------------------------------------------------------------------- the lesson's four numbers

@pytest.fixture(scope="module")
def numbers(toy):
    model, x, y = toy["model"], toy["x"], toy["y"]
    result = {"natural": _accuracy(model, x, y), "pgd20": _pgd20(model, x, y)}
    with bpda(model):
        result["bpda_pgd20"] = _pgd20(model, x, y)
    result["square"] = evaluation.autoattack_accuracy(model, x, y, EPS, ["square"], square_queries=5000)
    return result


def test_pgd20_is_fooled_by_the_masked_gradients(numbers):
    assert numbers["pgd20"] >= 0.8, numbers


def test_square_finds_what_pgd20_misses(numbers):
    assert numbers["square"] <= numbers["pgd20"] - 0.2, numbers


def test_the_masking_check_fires(numbers):
    accuracy = {"pgd20": {"ce": numbers["pgd20"]}, "square": {"ce": numbers["square"]}}
    warnings = evaluation.masking_warnings(accuracy, "ce", 0.01)
    assert len(warnings) == 1 and "Square" in warnings[0] and "masking" in warnings[0]


def test_bpda_breaks_the_toy_defence(numbers):
    assert numbers["bpda_pgd20"] <= 0.2, numbers
    assert numbers["natural"] >= 0.9, numbers  # the defence is only fake-robust, not broken on clean digits
