"""The public boundary (issue 13 §1-§3): every public function that takes images and labels checks them
by the one input rule of cas_edu.validation, runs with gradients whatever the caller's grad mode, works
through model wrappers with the unwrapped model's numbers, gives every submodule its own mode back, and
training survives a trailing one-example batch."""
from __future__ import annotations

import math
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from helpers import DDPLike, Unregistered

from cas_edu import activations, attacks, data, evaluation, models, training, validation, widgets
from cas_edu.models import SmallCNN, build
from cas_edu.presets import make_config

N, K = 6, 10
CLASSES = [str(i) for i in range(K)]


def _cnn(seed: int = 0, cas: bool = True) -> SmallCNN:
    """A small CAS CNN with non-trivial BatchNorm statistics (so eval and train mode differ)."""
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=K, in_channels=1, widths=(8, 16, 16), cas_layers=["block2", "block3"] if cas else None)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> SmallCNN:
    return _cnn()


@pytest.fixture(scope="module")
def batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    """N images and, as labels, the model's own predictions (natural accuracy 100 %, so attacks have work)."""
    x = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


# --------------------------------------------------------------------------- the public entry points

def _first_class(y):
    return int(y[0])


# name -> (call(model, x, y, good_y), takes labels, one image only, cheap enough to run for real)
ENTRIES = {
    "fgsm": (lambda m, x, y, g: attacks.fgsm(m, x, y, 0.1), True, False, True),
    "pgd": (lambda m, x, y, g: attacks.pgd(m, x, y, 0.1, steps=2, objective="ce+cas"), True, False, True),
    "pgd_l2": (lambda m, x, y, g: attacks.pgd(m, x, y, 0.5, steps=2, norm="l2"), True, False, True),
    "cw_inf": (lambda m, x, y, g: attacks.cw_inf(m, x, y, 0.1, steps=2, objective="ce+cas"), True, False, True),
    "trades_kl_attack": (lambda m, x, y, g: attacks.trades_kl_attack(m, x, 0.1, 0.02, steps=2, objective="ce+cas"),
                         False, False, True),
    "pgd_restarts": (lambda m, x, y, g: attacks.pgd_restarts(m, x, y, 0.1, steps=2, restarts=2), True, False, True),
    "straight_through_pgd": (lambda m, x, y, g: attacks.straight_through_pgd(m, x, y, 0.1, steps=2, restarts=2),
                             True, False, True),
    "autoattack": (lambda m, x, y, g: attacks.autoattack(m, x, y, 0.1, attacks=["apgd-ce"]), True, False, False),
    "autoattack_correct": (lambda m, x, y, g: evaluation.autoattack_correct(m, x, y, 0.1, attacks=["apgd-ce"]),
                           True, False, False),
    "evaluate": (lambda m, x, y, g: evaluation.evaluate(m, x, y, 0.1, attacks=("natural", "fgsm")), True, False, True),
    "accuracy": (lambda m, x, y, g: training.accuracy(m, x, y), True, False, True),
    "robust_accuracy": (lambda m, x, y, g: training.robust_accuracy(m, x, y, 0.1, steps=2), True, False, True),
    "channel_activations": (lambda m, x, y, g: activations.channel_activations(m, x), False, False, True),
    "compare_activations": (lambda m, x, y, g: activations.compare_activations(m, x, y, 0.1, steps=2), True, False,
                            True),
    "masked_channel_activations": (lambda m, x, y, g: activations.masked_channel_activations(m, x), False, False, True),
    "channel_data": (lambda m, x, y, g: activations.channel_data(m, x, y, [0.0, 0.1], steps=2), True, False, True),
    "craft_adversarial": (lambda m, x, y, g: widgets.craft_adversarial(m, x, y, 0.1, "pgd", steps=2), True, False,
                          True),
    "epsilon_view": (lambda m, x, y, g: widgets.epsilon_view(m, x, y, 0.1, "pgd", steps=2), True, True, True),
    "EpsilonExplorer": (lambda m, x, y, g: widgets.EpsilonExplorer(m, x, y, CLASSES, eps=0.1, steps=2).last_view,
                        True, False, True),
    "activation_view": (lambda m, x, y, g: widgets.activation_view({"m": m}, x, y, 0.1, _first_class(g), "m", steps=2),
                        True, False, True),
    "ActivationExplorer": (lambda m, x, y, g: widgets.ActivationExplorer(
        {"m": m}, x, y, CLASSES, eps=0.1, eps_max=0.1, eps_step=0.1, class_id=_first_class(g), steps=2,
        progress=False).last_view, True, False, True),
}
LABELLED = [name for name, entry in ENTRIES.items() if entry[1]]
RUNNABLE = [name for name, entry in ENTRIES.items() if entry[3]]


def _call(name: str, model: nn.Module, x, y, good_y: torch.Tensor, seed: int = 0):
    fn, _, single, _ = ENTRIES[name]
    if single:
        x, y = x[:1], y[:1]
    torch.manual_seed(seed)
    return fn(model, x, y, good_y)


def _comparable(value):
    """A result as nested plain containers of tensors/arrays/numbers, for exact comparison."""
    if isinstance(value, evaluation.EvaluationReport):
        return {"accuracy": value.accuracy, "correct": _comparable(value.correct)}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _comparable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return value


def _assert_same(a, b, where: str = "result") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.equal(a.float() if a.is_floating_point() else a, b.float() if b.is_floating_point() else b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


# --------------------------------------------------------------------------- §1: bad images and labels


def _set_last(value):
    def change(x):
        x = x.clone()
        x[-1, 0, 2, 2] = value
        return x
    return change


BAD_IMAGES = {
    "nan": (_set_last(math.nan), "NaN or infinite"),
    "inf": (_set_last(math.inf), "NaN or infinite"),
    "minus_inf": (_set_last(-math.inf), "NaN or infinite"),
    "negative": (_set_last(-1e-3), r"\[0, 1\]"),
    "above_one": (_set_last(1.0 + 1e-3), r"\[0, 1\]"),
    "scaled_to_255": (lambda x: x * 255, r"\[0, 1\]"),
    "float64_scaled_to_255": (lambda x: x.double() * 255, r"\[0, 1\]"),
    "uint8": (lambda x: (x * 255).to(torch.uint8), "uint8"),
    "int32": (lambda x: (x * 255).to(torch.int32), "int32"),
    "bool": (lambda x: x > 0.5, "bool"),
    "complex": (lambda x: x.to(torch.complex64), "complex64"),
    "numpy": (lambda x: x.numpy(), "torch.Tensor"),
    "flat": (lambda x: x.flatten(), "×H×W"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
@pytest.mark.parametrize("name", list(ENTRIES))
def test_bad_images_are_refused_with_a_clear_value_error(model, batch, name, kind):
    x, y = batch
    change, message = BAD_IMAGES[kind]
    fn, _, single, _ = ENTRIES[name]
    bad = change(x[:1] if single else x)
    with pytest.raises(ValueError, match=message):
        fn(model, bad, y[:1] if single else y, y)


def _set_label(value):
    def change(y):
        y = y.clone()
        y[-1] = value
        return y
    return change


BAD_LABELS = {
    "equal_to_k": (_set_label(K), r"\[0, 10\)", False),
    "far_above_k": (_set_label(10**6), r"\[0, 10\)", False),
    "minus_one": (_set_label(-1), r"\[0, 10\)", False),
    "ignore_index": (_set_label(-100), r"\[0, 10\)", False),  # CE would silently skip it
    "int32_out_of_range": (lambda y: _set_label(K)(y).to(torch.int32), r"\[0, 10\)", False),
    "float": (lambda y: y.float(), "float32", False),
    "float64": (lambda y: y.double(), "float64", False),
    "bool": (lambda y: y > 4, "bool", False),
    "complex": (lambda y: y.to(torch.complex64), "complex64", False),
    "list": (lambda y: y.tolist(), "torch.Tensor", False),
    "numpy": (lambda y: y.numpy(), "torch.Tensor", False),
    "column": (lambda y: y[:, None], "shape", True),
    "one_too_many": (lambda y: torch.cat([y, y[:1]]), "shape", True),
}


@pytest.mark.parametrize("kind", list(BAD_LABELS))
@pytest.mark.parametrize("name", LABELLED)
def test_bad_labels_are_refused_with_the_valid_range_or_dtype_named(model, batch, name, kind):
    x, y = batch
    change, message, needs_batch = BAD_LABELS[kind]
    fn, _, single, _ = ENTRIES[name]
    if single and needs_batch:
        pytest.skip("a one-image function takes its one label in any shape")
    xs, ys = (x[:1], y[:1]) if single else (x, y)
    with pytest.raises(ValueError, match=message):
        fn(model, xs, change(ys), y)


def test_nan_images_no_longer_give_nan_adversarial_examples_or_an_accuracy(model, batch):
    x, y = batch
    bad = _set_last(math.nan)(x)
    with pytest.raises(ValueError, match="NaN"):
        attacks.pgd(model, bad, y, 0.1, steps=1)
    with pytest.raises(ValueError, match="NaN"):
        evaluation.evaluate(model, bad, y, 0.1, attacks=("natural",))


def test_labels_without_a_num_classes_attribute_are_checked_against_the_logits():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    assert models.num_classes(model, x) == 3
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        attacks.pgd(model, x, torch.tensor([0, 3]), 0.1, steps=1)
    assert attacks.pgd(model, x, torch.tensor([0, 2]), 0.1, steps=1).shape == x.shape


def test_explorers_need_one_class_name_per_class(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="classes"):
        widgets.EpsilonExplorer(model, x, y, CLASSES[:5])
    with pytest.raises(ValueError, match="classes"):
        widgets.ActivationExplorer({"m": model}, x, y, CLASSES[:5], eps_max=0.1, eps_step=0.1, class_id=int(y[0]))


def test_epsilon_view_takes_an_int_label_but_not_a_float_one(model, batch):
    x, y = batch
    assert widgets.epsilon_view(model, x[0], int(y[0]), 0.0)["label"] == int(y[0])
    with pytest.raises(ValueError, match="float"):
        widgets.epsilon_view(model, x[0], float(y[0]) + 0.5, 0.0)


def test_x_on_another_device_than_the_model_is_a_value_error(batch):
    x, y = batch
    model = _cnn().to(torch.device("meta"))
    with pytest.raises(ValueError, match="device|meta"):
        attacks.pgd(model, x, y, 0.1, steps=1)


# --------------------------------------------------------------------------- §1: dtypes that are cast


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
@pytest.mark.parametrize("name", [n for n in LABELLED if n in RUNNABLE])
def test_integer_labels_of_any_width_give_the_int64_result(model, batch, name, dtype):
    x, y = batch
    expected = _comparable(_call(name, model, x, y, y))
    _assert_same(_comparable(_call(name, model, x, y.to(dtype), y)), expected)


@pytest.mark.parametrize("name", RUNNABLE)
def test_float64_images_are_cast_to_the_model_dtype_with_the_float32_result(model, batch, name):
    x, y = batch
    expected = _comparable(_call(name, model, x, y, y))
    result = _call(name, model, x.double(), y, y)
    if isinstance(result, torch.Tensor) and name not in ("channel_activations",):
        assert result.dtype == torch.float64  # attacks return the caller's dtype
    _assert_same(_comparable(result), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw_inf", "trades_kl_attack", "pgd_restarts", "straight_through_pgd"])
def test_half_precision_images_run_and_keep_the_budget_in_their_dtype(model, batch, name, dtype):
    x, y = batch
    x = x.to(dtype)
    x_adv = _call(name, model, x, y, y)
    assert x_adv.dtype == dtype and x_adv.shape == x.shape
    assert ((x_adv.double() - x.double()).abs() <= 0.1).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_a_float64_model_takes_float32_images(batch):
    x, y = batch
    model = _cnn().double()
    x_adv = attacks.pgd(model, x, y, 0.1, steps=2)
    assert x_adv.dtype == torch.float32 and ((x_adv.double() - x.double()).abs() <= 0.1).all()
    assert evaluation.evaluate(model, x, y, 0.1, attacks=("natural", "fgsm")).n_examples == N


# --------------------------------------------------------------------------- §1: grad mode of the caller


@pytest.mark.parametrize("name", RUNNABLE)
def test_no_grad_of_the_caller_changes_nothing(model, batch, name):
    x, y = batch
    expected = _comparable(_call(name, model, x, y, y))
    with torch.no_grad():
        result = _call(name, model, x, y, y)
    _assert_same(_comparable(result), expected)


@pytest.mark.parametrize("name", RUNNABLE)
def test_inference_mode_of_the_caller_changes_nothing(model, batch, name):
    x, y = batch
    expected = _comparable(_call(name, model, x, y, y))
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors, as a caller inside inference_mode would have
        result = _call(name, model, xi, yi, y)
    _assert_same(_comparable(result), expected)


@pytest.mark.slow
def test_autoattack_runs_inside_no_grad_and_inference_mode_and_casts_inputs(model, batch):
    x, y = batch
    x, y = x[:2], y[:2]
    expected = evaluation.autoattack_correct(model, x, y, 0.1, attacks=["apgd-ce"], straight_through=True)
    with torch.no_grad():
        assert torch.equal(evaluation.autoattack_correct(model, x, y, 0.1, attacks=["apgd-ce"], straight_through=True),
                           expected)
    with torch.inference_mode():
        assert torch.equal(evaluation.autoattack_correct(model, x.clone(), y.clone(), 0.1, attacks=["apgd-ce"],
                                                         straight_through=True), expected)
    assert torch.equal(evaluation.autoattack_correct(model, x.double(), y.to(torch.int32), 0.1, attacks=["apgd-ce"],
                                                     straight_through=True), expected)  # cast like everywhere else


def test_a_model_made_inside_inference_mode_is_refused_in_one_sentence(batch):
    x, y = batch
    with torch.inference_mode():
        model = _cnn()
    for call in (lambda: attacks.pgd(model, x, y, 0.1, steps=1),
                 lambda: attacks.trades_kl_attack(model, x, 0.1, 0.02, steps=1),
                 lambda: attacks.autoattack(model, x, y, 0.1, attacks=["apgd-ce"])):
        with pytest.raises(ValueError, match="inference_mode"):
            call()


# --------------------------------------------------------------------------- §1: attack schedules


@pytest.mark.parametrize("steps, step_size", [(0, 0.02), (-3, 0.02), (1.5, 0.02), (True, 0.02), (2, 0.0),
                                              (2, -0.01), (2, math.nan), (2, math.inf)])
def test_trades_attack_refuses_a_schedule_that_cannot_attack(model, batch, steps, step_size):
    x, _ = batch
    with pytest.raises(ValueError, match="steps|step_size"):
        attacks.trades_kl_attack(model, x, 0.1, step_size, steps=steps)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=2.5), dict(step_size=math.nan), dict(step_size=math.inf),
                                    dict(step_size=-0.1), dict(eps=math.inf, norm="l2"), dict(eps=math.nan)])
def test_pgd_refuses_a_schedule_that_cannot_attack(model, batch, kwargs):
    x, y = batch
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match="steps|step_size|eps"):
        attacks.pgd(model, x, y, **kwargs)


def test_pgd_restarts_refuses_zero_restarts(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="restarts"):
        attacks.pgd_restarts(model, x, y, 0.1, restarts=0)


# --------------------------------------------------------------------------- §1: wrappers


class _Identity(nn.Module):
    """Normalisation with mean 0 and std 1: a real preprocessing module that changes no number."""

    def forward(self, x):
        return (x - 0.0) / 1.0


@pytest.fixture(scope="module")
def process_group():
    """A one-process gloo group, so that a real DistributedDataParallel can wrap a model."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'store'}", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def _wrap(kind: str, model: nn.Module, request) -> nn.Module:
    if kind == "sequential":
        return nn.Sequential(_Identity(), model)
    if kind == "ddp_like":
        return DDPLike(model)
    if kind == "unregistered":
        return Unregistered(model)
    if kind == "nested":
        return DDPLike(nn.Sequential(_Identity(), DDPLike(model)))
    if kind == "compile":
        return torch.compile(model, backend="eager")
    if kind == "ddp":
        request.getfixturevalue("process_group")
        return nn.parallel.DistributedDataParallel(model)
    raise AssertionError(kind)


WRAPPERS = ["sequential", "ddp_like", "unregistered", "nested", "compile", "ddp"]
WRAPPED_CALLS = {
    "evaluate": lambda m, x, y: evaluation.evaluate(m, x, y, 0.1, attacks=("natural", "fgsm", "pgd20", "cw", "pgd-st")),
    "robust_accuracy": lambda m, x, y: training.robust_accuracy(m, x, y, 0.1, steps=3),
    "accuracy": lambda m, x, y: training.accuracy(m, x, y),
    "pgd_ce+cas": lambda m, x, y: attacks.pgd(m, x, y, 0.1, steps=3, objective="ce+cas"),
    "cw_ce+cas": lambda m, x, y: attacks.cw_inf(m, x, y, 0.1, steps=3, objective="ce+cas"),
    "trades_ce+cas": lambda m, x, y: attacks.trades_kl_attack(m, x, 0.1, 0.03, steps=3, objective="ce+cas"),
    "straight_through_pgd": lambda m, x, y: attacks.straight_through_pgd(m, x, y, 0.1, steps=3, restarts=2),
    "compare_activations": lambda m, x, y: activations.compare_activations(m, x, y, 0.1, steps=3),
    "channel_activations": lambda m, x, y: activations.channel_activations(m, x, layer="block2"),
    "masked_channel_activations": lambda m, x, y: activations.masked_channel_activations(m, x),
    "channel_data": lambda m, x, y: activations.channel_data(m, x, y, [0.0, 0.1], steps=3),
    "activation_view": lambda m, x, y: widgets.activation_view({"m": m}, x, y, 0.1, int(y[0]), "m", steps=3),
}


@pytest.fixture()
def short_straight_through(monkeypatch):
    monkeypatch.setattr(evaluation, "ST_STEPS", 3)
    monkeypatch.setattr(evaluation, "ST_RESTARTS", 2)


@pytest.mark.parametrize("call", list(WRAPPED_CALLS))
@pytest.mark.parametrize("kind", WRAPPERS)
def test_wrapped_cas_models_give_the_unwrapped_numbers(model, batch, kind, call, request, short_straight_through):
    x, y = batch
    wrapped = _wrap(kind, model, request)
    torch.manual_seed(0)
    expected = _comparable(WRAPPED_CALLS[call](model, x, y))
    torch.manual_seed(0)
    _assert_same(_comparable(WRAPPED_CALLS[call](wrapped, x, y)), expected)


@pytest.mark.parametrize("kind", WRAPPERS)
def test_wrapped_cas_models_keep_the_adaptive_attack(model, batch, kind, request, short_straight_through):
    x, y = batch
    wrapped = _wrap(kind, model, request)
    report = evaluation.evaluate(wrapped, x, y, 0.1, attacks=("natural", "pgd20", "pgd-st"))
    assert report.has_cas and set(report.accuracy["pgd20"]) == {"ce", "ce+cas"}
    assert set(report.accuracy["pgd-st"]) == {"ce+cas"}
    assert activations.default_objective(wrapped) == "ce+cas"
    assert activations.cas_layer(wrapped) == "block2"
    # the adaptive objective really differs from the main head's here, so a lost CAS lookup would show
    torch.manual_seed(0)
    adaptive = attacks.pgd(wrapped, x, y, 0.1, steps=3, objective="ce+cas")
    torch.manual_seed(0)
    assert not torch.equal(adaptive, attacks.pgd(wrapped, x, y, 0.1, steps=3, objective="ce"))


def test_robust_accuracy_of_a_wrapped_cas_model_uses_the_adaptive_objective(model, batch, monkeypatch):
    x, y = batch
    seen = []
    pgd = attacks.pgd
    monkeypatch.setattr(attacks, "pgd", lambda *a, **kw: seen.append(kw["objective"]) or pgd(*a, **kw))
    training.robust_accuracy(nn.Sequential(_Identity(), model), x, y, 0.1, steps=1)
    assert seen and set(seen) == {"ce+cas"}


def test_activations_through_a_transforming_wrapper_are_those_of_the_transformed_input(model, batch):
    x, _ = batch
    shift = nn.Sequential(nn.Identity(), model)
    scaled = nn.Sequential(_Half(), model)
    assert torch.equal(activations.channel_activations(shift, x), activations.channel_activations(model, x))
    assert torch.equal(activations.channel_activations(scaled, x), activations.channel_activations(model, x / 2))


class _Half(nn.Module):
    def forward(self, x):
        return x / 2


def test_a_wrapper_without_a_cas_edu_classifier_gets_a_clear_error(batch):
    x, _ = batch
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, K)).eval()
    with pytest.raises(ValueError, match="classifier"):
        activations.channel_activations(plain, x)
    with pytest.raises(ValueError, match="classifier"):
        activations.channel_data(plain, x, torch.zeros(N, dtype=torch.long), [0.0])


# --------------------------------------------------------------------------- §2: module state


def _frozen_bn_model() -> SmallCNN:
    """A model in train mode whose first BatchNorm is frozen (eval), as in fine-tuning."""
    model = _cnn().train()
    model.blocks["block1"][1].eval()
    return model


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_submodule_gets_its_own_mode_back(batch, name):
    x, y = batch
    model = _frozen_bn_model()
    before = _modes(model)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    _call(name, model, x, y, y)
    assert _modes(model) == before
    assert not model.blocks["block1"][1].training and model.training
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.equal(value, stats[key]), key


def test_eval_model_with_one_training_submodule_is_restored_too(batch):
    x, y = batch
    model = _cnn().eval()
    model.cas["block3"].train()
    before = _modes(model)
    evaluation.evaluate(model, x, y, 0.1, attacks=("natural", "fgsm"))
    training.accuracy(model, x, y)
    assert _modes(model) == before


def test_eval_mode_reaches_and_restores_modules_held_outside_the_module_tree(batch):
    x, y = batch
    model = _frozen_bn_model()
    wrapped = Unregistered(model)
    seen = []
    model.blocks["block2"].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    before = _modes(model)
    attacks.pgd(wrapped, x, y, 0.1, steps=1)
    assert seen and not any(seen)
    assert _modes(model) == before


# --------------------------------------------------------------------------- §3: a trailing one-example batch


@pytest.mark.parametrize("n, batch_size, world_size, expected", [
    (9, 4, 1, [(0, 4), (4, 9)]),                 # 2·4 + 1: the lone last example joins the batch before
    (8, 4, 1, [(0, 4), (4, 8)]),                 # no short batch: unchanged
    (10, 4, 1, [(0, 4), (4, 8), (8, 10)]),       # a last batch of 2 is kept
    (1294, 431, 1, [(0, 431), (431, 862), (862, 1294)]),  # resnet18 on digits, --batch-size 431
    (11, 4, 2, [(0, 4), (4, 11)]),               # 3 examples would give one process a single one
    (12, 4, 2, [(0, 4), (4, 8), (8, 12)]),
    (3, 8, 1, [(0, 3)]),                         # one short batch only: nothing to merge into, and 3 ≥ 2
    (5, 1, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),  # batch_size 1 is the caller's choice: not merged
])
def test_epoch_batches_merge_a_trailing_batch_too_small_for_batchnorm(n, batch_size, world_size, expected):
    bounds = training.epoch_batches(n, batch_size, world_size)
    assert bounds == expected
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))  # every example, once


@pytest.mark.parametrize("n, world_size", [(1, 1), (3, 2), (0, 1)])
def test_epoch_batches_refuse_a_training_split_too_small_to_train(n, world_size):
    with pytest.raises(ValueError, match="at least 2"):
        training.epoch_batches(n, 4, world_size)


def test_a_last_batch_of_one_example_does_not_crash_batchnorm():
    """ResNet-18 on 8×8 digits has a 1×1 feature map in layer4: one example alone cannot be batch-normalised in
    train mode. n = 2·B + 1 training examples, two steps of standard training; the lone example must not end the run."""
    digits = data.load("digits")
    batch_size = 4
    n = 2 * batch_size + 1
    tiny = data.Dataset(digits.name, data.Split(digits.train.x[:n], digits.train.y[:n]),
                        data.Split(digits.val.x[:4], digits.val.y[:4]), digits.test, digits.classes)
    config = make_config("digits", model="resnet18", method="standard", epochs=1, batch_size=batch_size,
                         device="cpu", val_examples=4)
    seen = []
    forward = build("resnet18", num_classes=10, in_channels=1)  # to check the premise: one example crashes alone
    with pytest.raises(ValueError, match="more than 1 value"):
        forward.train()(digits.train.x[:1])
    original = training.training_loss

    def record(model, x, y, cfg, forward=None):
        seen.append(len(y))
        return original(model, x, y, cfg, forward=forward)

    try:
        training.training_loss = record
        model, history = training.train(config, dataset=tiny, progress=False)
    finally:
        training.training_loss = original
    assert seen == [4, 5] and sum(seen) == n  # the lone example joined the batch before: every example trained
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


# --------------------------------------------------------------------------- §1: the exercise checkers

from cas_edu import cas as cas_lib, exercises  # noqa: E402 - this section's own imports

CHECKERS = {  # checker -> (a right implementation, how to spoil its result)
    "check_fgsm": (exercises.check_fgsm, lambda m, x, y, e: attacks.fgsm(m, x, y, e, random_start=False)),
    "check_pgd_projection": (exercises.check_pgd_projection, attacks.project),
    "check_activation_counts": (exercises.check_activation_counts, lambda a: activations.activation_counts(a).double()),
    "check_channel_magnitudes": (exercises.check_channel_magnitudes, activations.channel_magnitudes),
    "check_cas_mask": (exercises.check_cas_mask, lambda m, f, y: m(f, y)[0]),
    "check_cas_loss": (exercises.check_cas_loss, cas_lib.cas_loss),
}


def _spoiled(fn, how):
    def spoiled(*args):
        result = fn(*args).detach().clone()
        if how == "complex":
            return result.to(torch.complex64)
        result.view(-1)[-1] = {"nan": math.nan, "inf": math.inf}[how]
        return result
    return spoiled


@pytest.mark.parametrize("how, message", [("nan", "NaN"), ("inf", "NaN or infinite"), ("complex", "complex64")])
@pytest.mark.parametrize("name", list(CHECKERS))
def test_checkers_name_non_finite_or_complex_results(name, how, message, capsys):
    checker, right = CHECKERS[name]
    assert checker(_spoiled(right, how), seed=0) is False
    line = capsys.readouterr().out.strip()
    assert line.startswith("✗ Not yet:") and message in line, line


@pytest.mark.parametrize("name", list(CHECKERS))
def test_checkers_grade_inside_no_grad_and_inference_mode(name, capsys):
    checker, right = CHECKERS[name]
    with torch.no_grad():
        assert checker(right, seed=0) is True
    with torch.inference_mode():
        assert checker(right, seed=0) is True
    capsys.readouterr()


# --------------------------------------------------------------------------- DDP and DataParallel are looked through


def test_attacks_and_evaluation_never_call_ddp_forward(model, batch, process_group):
    """DDP's forward broadcasts buffers (a collective every rank must join): attacks run on the module inside."""
    x, y = batch
    ddp = nn.parallel.DistributedDataParallel(model)
    calls = []
    handle = ddp.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        evaluation.evaluate(ddp, x, y, 0.1, attacks=("natural", "fgsm", "cw"))
        attacks.trades_kl_attack(ddp, x, 0.1, 0.02, steps=1)
        training.robust_accuracy(ddp, x, y, 0.1, steps=1)
        activations.channel_activations(ddp, x)
    finally:
        handle.remove()
    assert calls == []
    assert cas_lib.unwrap_parallel(ddp) is model and cas_lib.unwrap_parallel(nn.DataParallel(model)) is model


def test_bpda_finds_the_quantiser_inside_a_wrapper_held_outside_the_module_tree():
    from cas_edu.gradient_masking import InputQuantization, bpda, quantized_model

    wrapped = Unregistered(quantized_model(_cnn(cas=False)))
    with bpda(wrapped):
        assert all(m.bpda for m in wrapped.module.modules() if isinstance(m, InputQuantization))
    assert not any(m.bpda for m in wrapped.module.modules() if isinstance(m, InputQuantization))


# --------------------------------------------------------------------------- batch sizes, seeds, report numbers


BATCHED = {  # every public function that takes a batch size, called with it
    "accuracy": lambda m, x, y, b: training.accuracy(m, x, y, batch_size=b),
    "robust_accuracy": lambda m, x, y, b: training.robust_accuracy(m, x, y, 0.1, 1, batch_size=b),
    "evaluate": lambda m, x, y, b: evaluation.evaluate(m, x, y, 0.1, attacks=["natural"], batch_size=b),
    "autoattack": lambda m, x, y, b: attacks.autoattack(m, x, y, 0.1, attacks=["apgd-ce"], batch_size=b),
    "channel_activations": lambda m, x, y, b: activations.channel_activations(m, x, batch_size=b),
    "compare_activations": lambda m, x, y, b: activations.compare_activations(m, x, y, 0.1, steps=1, batch_size=b),
    "masked_channel_activations": lambda m, x, y, b: activations.masked_channel_activations(m, x, batch_size=b),
    "channel_data": lambda m, x, y, b: activations.channel_data(m, x, y, [0.0], steps=1, batch_size=b),
}


@pytest.mark.parametrize("bad", [-1, 0, 2.5, 2.0, True, "4", None], ids=repr)
@pytest.mark.parametrize("name", list(BATCHED))
def test_every_batch_size_must_be_a_whole_number_of_at_least_one(name, bad, model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="batch_size must be a whole number"):  # never a silent 0.0 or range()'s words
        BATCHED[name](model, x, y, bad)


def test_a_numpy_batch_size_is_a_whole_number_too(model, batch):
    x, y = batch
    assert training.accuracy(model, x, y, batch_size=np.int64(4)) == training.accuracy(model, x, y) == 1.0


SEEDED = {  # every public function that takes a seed, called with it
    "evaluate": lambda m, x, y, s: evaluation.evaluate(m, x, y, 0.1, attacks=["natural"], seed=s),
    "balanced_indices": lambda m, x, y, s: evaluation.balanced_indices(y, 2, seed=s),
    "channel_data": lambda m, x, y, s: activations.channel_data(m, x, y, [0.0], steps=1, seed=s),
    "craft_adversarial": lambda m, x, y, s: widgets.craft_adversarial(m, x, y, 0.1, attack="pgd", steps=1, seed=s),
    "seed_everything": lambda m, x, y, s: __import__("cas_edu.runtime").runtime.seed_everything(s),
    "config": lambda m, x, y, s: make_config("digits", seed=s),
}


@pytest.mark.parametrize("bad", [-1, 2**63, 2**70, 1.5, True], ids=repr)
@pytest.mark.parametrize("name", list(SEEDED))
def test_every_seed_lies_in_0_to_2_63_minus_1(name, bad, model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="seed"):
        SEEDED[name](model, x, y, bad)


def test_the_largest_seed_is_accepted(model, batch):
    x, y = batch
    report = evaluation.evaluate(model, x, y, 0.1, attacks=["natural"], seed=validation.MAX_SEED)
    assert report.seed == 2**63 - 1 and make_config("digits", seed=2**63 - 1).seed == 2**63 - 1


def test_a_report_of_numpy_numbers_holds_plain_python_numbers_and_serialises(model, batch):
    x, y = batch
    report = evaluation.evaluate(model, x, y, np.float32(0.1), attacks=["natural"], seed=np.int64(3))
    assert type(report.eps) is float and type(report.seed) is int
    assert evaluation.EvaluationReport.from_dict(__import__("json").loads(report.to_json())).seed == 3
    by_hand = evaluation.EvaluationReport(eps=np.float64(0.1), n_examples=np.int64(5), seed=np.int32(1),
                                          accuracy={"natural": {"ce": np.float32(0.5)}},
                                          seconds={"natural": np.float64(1)})
    assert '"eps": 0.1' in by_hand.to_json() and '"seed": 1' in by_hand.to_json()


@pytest.mark.parametrize("eps", [torch.tensor(0.1), np.array([0.1]), float("inf"), "0.1"], ids=repr)
def test_evaluate_takes_eps_as_a_finite_real_number(eps, model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps"):
        evaluation.evaluate(model, x, y, eps, attacks=["natural"])


def test_meta_device_images_labels_and_models_are_refused_naming_the_device(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="x is on the meta device"):
        training.accuracy(model, x.to("meta"), y)
    with pytest.raises(ValueError, match="y is on the meta device"):
        attacks.fgsm(model, x, y.to("meta"), 0.1)
    with pytest.raises(ValueError, match="meta device"):
        evaluation.evaluate(_cnn().to("meta"), x, y, 0.1, attacks=["natural"])


@pytest.mark.parametrize("change, shown, hint", [
    (lambda x: x.index_put((torch.tensor(0),) * 4, torch.tensor(1.0000001)), repr(float(torch.tensor(1.0000001))),
     "clamp"),
    (lambda x: x * 255, "", "divided by 255"),
    (lambda x: (x - 0.5) / 0.25, "", "normalis"),
], ids=["just-above-1", "uint8-range", "normalised"])
def test_an_out_of_range_message_shows_the_real_extremes_and_the_fitting_hint(change, shown, hint, model, batch):
    x, y = batch
    bad = change(x)
    with pytest.raises(ValueError) as caught:
        attacks.fgsm(model, bad, y, 0.1)
    message = str(caught.value)
    assert repr(float(bad.max())) in message and repr(float(bad.min())) in message and shown in message
    assert hint in message
    assert ("255" in message) == (hint == "divided by 255"), "the uint8 hint only for values in 0..255"
