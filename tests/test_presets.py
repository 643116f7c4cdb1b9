"""TrainConfig holds plain Python values and refuses hyper-parameters that cannot train; devices are checked.

Every path that makes a config (``make_config``, ``TrainConfig(...)``, ``TrainConfig.from_dict``, reassigning a
field and calling ``validate_config``, which ``train`` does) goes through the same normalisation and checks.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cas_edu import runtime
from cas_edu.checkpoint import read_checkpoint, save_checkpoint
from cas_edu.presets import TrainConfig, make_config, validate_config
from cas_edu.runtime import resolve_device

def _make(**values):
    """``make_config`` for digits unless ``values`` names another dataset."""
    return make_config(**{"dataset": "digits", **values})


# --------------------------------------------------------------------------- plain values


@pytest.mark.parametrize("field, value, plain", [
    ("eps", np.linspace(0, .3, 4)[1], float),        # the example: a numpy float64
    ("eps", np.float32(0.05), float),
    ("eps", torch.tensor(0.05), float),
    ("eps", np.array(0.05), float),                  # 0-d array
    ("lr", 1, float),                                # an int where a float belongs
    ("lr", torch.tensor(0.05, dtype=torch.float64), float),
    ("epochs", np.int64(3), int),
    ("epochs", torch.tensor(3), int),
    ("epochs", 3.0, int),                            # a whole float where an int belongs
    ("seed", np.uint8(7), int),
    ("cas", np.bool_(True), bool),
    ("cas", torch.tensor(True), bool),
    ("augment", 1, bool),
    ("dataset", np.str_("digits"), str),
], ids=lambda v: type(v).__name__ if not isinstance(v, (str, type)) else str(v))
def test_config_values_become_plain_python(field, value, plain):
    config = _make(**{field: value})
    stored = getattr(config, field)
    assert type(stored) is plain
    assert stored == pytest.approx(plain(value.item() if hasattr(value, "item") else value))
    assert type(TrainConfig(**{field: value}).to_dict()[field]) is plain  # direct construction too


def test_numpy_values_in_a_config_do_not_make_its_checkpoint_unloadable(tmp_path):
    config = make_config("digits", eps=np.linspace(0, .3, 4)[1], epochs=np.int64(2), lr=np.float32(0.05),
                         cas=np.bool_(True), lr_drops={np.int64(2): np.float64(0.1)})
    save_checkpoint(tmp_path / "c.pt", {"config": config.to_dict()})
    loaded = read_checkpoint(tmp_path / "c.pt")  # weights_only=True: numpy globals would be refused
    assert TrainConfig.from_dict(loaded["config"]) == config
    assert loaded["config"]["lr_drops"] == {2: 0.1} and type(next(iter(loaded["config"]["lr_drops"]))) is int


def test_a_field_reassigned_after_construction_is_normalised_and_checked_again():
    config = make_config("digits")
    config.eps = np.float32(0.2)
    validate_config(config)  # train() calls this before anything is saved
    assert type(config.eps) is float and config.eps == pytest.approx(0.2)
    config.lr = float("nan")
    with pytest.raises(ValueError, match="lr"):
        validate_config(config)


def test_from_dict_keeps_json_epoch_keys_and_ignores_unknown_fields():
    config = TrainConfig.from_dict({"lr_drops": {"75": 0.1, "90": 0.01}, "not_a_field": 1})
    assert config.lr_drops == {75: 0.1, 90: 0.01}
    with pytest.raises(ValueError, match="dict"):
        TrainConfig.from_dict(["not", "a", "dict"])


def test_dataset_names_are_canonical_and_npz_paths_keep_their_case():
    assert make_config("CIFAR-10").dataset == "cifar10"
    assert make_config("FashionMNIST").dataset == "fashion_mnist"
    assert make_config("npz:/data/My-Images").dataset == "npz:/data/My-Images"


# --------------------------------------------------------------------------- values that cannot train


BAD = [
    ("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0), ("lr", -0.1), ("lr", "0.1"), ("lr", None),
    ("lr", np.array([0.1])), ("lr", torch.tensor([0.1, 0.2])), ("lr", 10 ** 400),
    ("eps", float("inf")), ("eps", float("nan")), ("eps", -0.01), ("eps", 1.5),
    ("step_size", -0.01), ("step_size", float("nan")), ("step_size", 2.0),
    ("weight_decay", -1e-4), ("weight_decay", float("inf")),
    ("momentum", -0.1), ("momentum", 1.0), ("momentum", float("nan")),
    ("cas_beta", -2.0), ("cas_beta", float("nan")),
    ("method_beta", -1.0), ("method_beta", float("inf")),
    ("val_fraction", 1.0), ("val_fraction", -0.1), ("val_fraction", float("nan")),
    ("epochs", 0), ("epochs", -3), ("epochs", 2.5), ("epochs", True), ("epochs", float("inf")),
    ("batch_size", 0), ("batch_size", -64),
    ("attack_steps", 0), ("val_attack_steps", 0), ("val_examples", 0), ("val_examples", -1),
    ("seed", -1), ("seed", 1.5),
    ("cas", "yes"), ("cas", 2), ("compile", None),
    ("lr_drops", {0: 0.1}), ("lr_drops", {75: -0.1}), ("lr_drops", {75: float("nan")}), ("lr_drops", [75]),
    ("device", "gpu"), ("device", "cuda:x"), ("device", "meta"), ("device", 0),
    ("model", "resnet50"), ("method", "fgsm"), ("amp", "fp16"), ("dataset", "imagenet"), ("dataset", "npz:"),
    ("data_root", ""), ("data_root", 3),
]


@pytest.mark.parametrize("field, value", BAD, ids=[f"{f}={v!r}"[:40] for f, v in BAD])
def test_a_value_that_cannot_train_is_refused_naming_the_field(field, value):
    name = "lr_drops" if field == "lr_drops" else field
    with pytest.raises(ValueError) as info:
        _make(**{field: value}) if value is not None else TrainConfig(**{field: value})  # make_config: None = default
    message = str(info.value)
    assert name in message or (field in ("device", "dataset") and repr(value) in message), message
    assert "\n" not in message
    with pytest.raises(ValueError):
        TrainConfig(**{field: value})  # the dataclass itself refuses it, not only make_config


def test_make_config_still_refuses_unknown_methods_and_presets():
    with pytest.raises(ValueError, match="preset"):
        make_config("digits", preset="slow")
    with pytest.raises(ValueError, match="method"):
        make_config("digits", method="fgsm")


def test_good_configs_still_build():
    for method in ("standard", "pgd_at", "trades", "mart"):
        for preset in ("fast", "paper"):
            config = make_config("cifar10", "resnet18", method, cas=True, preset=preset)
            assert config.lr > 0 and 0 < config.eps < 1 and all(isinstance(k, int) for k in config.lr_drops)
    assert make_config("digits", val_fraction=0).val_fraction == 0.0
    assert make_config("digits", eps=0).eps == 0.0 and math.isclose(make_config("digits", eps=1).eps, 1.0)


# --------------------------------------------------------------------------- devices


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:-1", "meta", "", 0, None])
def test_resolve_device_refuses_unknown_devices_in_one_sentence(device):
    with pytest.raises(ValueError) as info:
        resolve_device(device)
    assert "\n" not in str(info.value) and ("device" in str(info.value).lower())


@pytest.mark.parametrize("device, needle", [("cuda", "CUDA"), ("cuda:0", "CUDA"), ("mps", "MPS"),
                                            (torch.device("cuda"), "CUDA")])
def test_resolve_device_refuses_a_device_this_machine_does_not_have(device, needle, monkeypatch):
    _no_accelerators(monkeypatch)
    with pytest.raises(ValueError, match="not available") as info:
        resolve_device(device)
    assert needle in str(info.value) and "'cpu'" in str(info.value)


def test_resolve_device_refuses_a_cuda_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # exists: passed through


def test_resolve_device_auto_and_spellings(monkeypatch):
    _no_accelerators(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert runtime.device_name("CUDA:1") == "cuda:1"  # spelling only: no availability check


# --------------------------------------------------------------------------- batch size and seed bounds


@pytest.mark.parametrize("size", [1, np.int64(1), 0])
def test_a_batch_of_one_is_refused_because_train_mode_batchnorm_needs_two(size):
    with pytest.raises(ValueError, match=r"batch_size must be at least 2 \(a train-mode BatchNorm needs 2"):
        _make(batch_size=size)
    config = _make()
    config.batch_size = size
    with pytest.raises(ValueError, match="BatchNorm"):  # a field reassigned after construction too (train checks)
        validate_config(config)
    assert _make(batch_size=2).batch_size == 2


@pytest.mark.parametrize("seed", [2**63, 2**70, -1])
def test_a_seed_outside_0_to_2_63_minus_1_is_refused_before_torch_overflows(seed):
    with pytest.raises(ValueError, match="seed"):
        _make(seed=seed)
    with pytest.raises(ValueError, match="seed"):
        TrainConfig.from_dict({"seed": seed})
    assert _make(seed=2**63 - 1).seed == 2**63 - 1


def test_a_batch_too_small_for_every_process_is_refused_before_training(monkeypatch):
    from cas_edu import training

    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="at least 8"):  # 2 examples for each of 4 processes
        training.check_processes(_make(batch_size=6, device="cpu"))
    training.check_processes(_make(batch_size=8, device="cpu"))
