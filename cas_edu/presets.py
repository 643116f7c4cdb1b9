"""Every configuration in one place: the training config (:class:`TrainConfig`, :func:`make_config`), the
hyper-parameters of the official CAS code (:data:`OFFICIAL`), and the notebooks' profiles (:class:`Profile`,
:data:`PROFILES`, :func:`get_profile`: what notebook 04's suite trains and how it is evaluated).

Sources: the official training scripts of github.com/bymavis/CAS_ICLR2021 -- Standard_Adv_Training/train.py
(PGD-AT), Trades/train_trades_cifar10_cas.py (TRADES), MART/train_mart_cas.py (MART) -- and arXiv 2103.08307
(Bai et al., ICLR 2021) §5. README "Departures from the official code" lists what the ``fast`` preset changes.

Imports: :mod:`cas_edu.data`, :mod:`cas_edu.models`, :mod:`cas_edu.runtime`, :mod:`cas_edu.validation`.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .data import dataset_key
from .models import MODELS
from .runtime import AMP_MODES, CHANNELS_LAST_MODES, DEFAULT_AMP, device_name
from .validation import MAX_SEED

METHODS = ("standard", "pgd_at", "trades", "mart")
PRESETS = ("fast", "paper")
#: Models whose blocks take one tensor, so each block compiles once (WRN's blocks take a mask callable).
COMPILABLE_MODELS = ("small_cnn", "resnet18")

#: Official CAS code, CIFAR-10 ResNet-18: github.com/bymavis/CAS_ICLR2021, Standard_Adv_Training/train.py
#: (``pgd_at``), Trades/train_trades_cifar10_cas.py (``trades``), MART/train_mart_cas.py (``mart``).
#: ``lr_drops`` maps an epoch to the factor applied to the base learning rate from that epoch on.
OFFICIAL = {
    "pgd_at": dict(epochs=200, lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                   lr_drops={75: 0.1, 90: 0.01}, eps=8 / 255, step_size=2 / 255, attack_steps=10, method_beta=0.0),
    "trades": dict(epochs=100, lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128,
                   lr_drops={75: 0.1, 90: 0.01, 100: 0.001}, eps=0.031, step_size=0.007, attack_steps=10,
                   method_beta=4.0),
    "mart": dict(epochs=120, lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128,
                 lr_drops={75: 0.1, 90: 0.01, 100: 0.001}, eps=0.031, step_size=0.007, attack_steps=10,
                 method_beta=5.0),
}
OFFICIAL["standard"] = {**OFFICIAL["pgd_at"], "weight_decay": 5e-4}
OFFICIAL_CAS_BETA = 2.0

#: The L∞ budget we use per dataset when none is given (images in [0, 1]).
DEFAULT_EPS = {"digits": 0.1, "mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255, "svhn": 8 / 255}

#: Epochs of the ``fast`` preset (a one-cycle schedule), per dataset.
FAST_EPOCHS = {"digits": 12, "mnist": 10, "fashion_mnist": 10, "cifar10": 30, "svhn": 15}


@dataclass
class TrainConfig:
    """Everything that defines a training run; plain values only, so it fits in a safe checkpoint.

    Construction (and :func:`validate_config`) turns numpy scalars, 0-d arrays and tensors, numpy bools and
    ints given for floats into plain Python ``bool`` / ``int`` / ``float`` / ``str``, and raises ``ValueError``
    naming the field for a value that cannot train (NaN, infinite or negative hyper-parameters, ``eps`` outside
    [0, 1], ``val_fraction`` outside [0, 1), zero epochs or steps, a batch size below 2 (a train-mode BatchNorm
    cannot normalise one example), a seed outside [0, 2**63 - 1], unknown names, ...).

    Units: ``eps`` and ``step_size`` (the training attack's budget and step) in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` naming the field for a value that cannot train (from :func:`validate_config`).
    Source: the official training scripts (github.com/bymavis/CAS_ICLR2021: Standard_Adv_Training/train.py,
    Trades/train_trades_cifar10_cas.py, MART/train_mart_cas.py); ``cas_beta`` is β of arXiv 2103.08307 Eq. 4.
    """

    dataset: str = "digits"
    model: str = "small_cnn"
    method: str = "pgd_at"
    cas: bool = False
    cas_beta: float = OFFICIAL_CAS_BETA
    preset: str = "fast"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    #: Weight decay on 1-D parameters (BatchNorm weights and biases, all biases) too, as every official
    #: script does (``paper``); ``fast`` exempts them (False), the usual practice for short schedules.
    decay_1d_params: bool = False
    lr_drops: dict = field(default_factory=dict)
    eps: float = 0.1
    step_size: float = 0.025
    attack_steps: int = 10
    method_beta: float = 0.0
    augment: bool = False
    #: Fraction of the training set held out for validation and checkpoint selection (``best.pt``);
    #: 0 trains on all of it, like the official scripts, and ``best.pt`` is then the last epoch.
    val_fraction: float = 0.1
    val_examples: int = 512
    val_attack_steps: int = 10
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    amp: str = DEFAULT_AMP
    channels_last: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        validate_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config ``values`` describes (unknown keys ignored, e.g. from a newer version); ``ValueError`` as
        for construction, also when ``values`` is not a dict."""
        if not isinstance(values, dict):
            raise ValueError(f"a training config must be a dict of field values, got {type(values).__name__}.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def make_config(dataset: str = "digits", model: str = "small_cnn", method: str = "pgd_at", cas: bool = False,
                preset: str = "fast", **overrides) -> TrainConfig:
    """A config with the preset's defaults for this dataset and method; ``overrides`` that are not None win.

    ``paper`` is the official recipe wherever we can follow it (``OFFICIAL``: schedule, epochs, batch,
    weight decay on every parameter, fp32); ``fast`` is a one-cycle short schedule that exempts 1-D
    parameters from weight decay. Both hold out ``val_fraction`` (0.1) of the training set for checkpoint
    selection unless ``val_fraction=0``; README "Departures from the official code" lists what differs.

    Raises: ``ValueError`` for an unknown method or preset, or values that cannot train.
    Source: :data:`OFFICIAL`, from the official training scripts (github.com/bymavis/CAS_ICLR2021:
    Standard_Adv_Training/train.py, Trades/train_trades_cifar10_cas.py, MART/train_mart_cas.py).
    """
    dataset = dataset_key(dataset)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    official = OFFICIAL[method]
    image_like_cifar = dataset in ("cifar10", "svhn")
    eps = official["eps"] if image_like_cifar else DEFAULT_EPS.get(dataset, 0.1)
    base = dict(dataset=dataset, model=model, method=method, cas=cas, preset=preset, eps=eps,
                step_size=official["step_size"] if image_like_cifar else eps / 4,
                attack_steps=official["attack_steps"], method_beta=official["method_beta"],
                momentum=official["momentum"], weight_decay=official["weight_decay"], augment=image_like_cifar)
    if preset == "paper":
        base.update(epochs=official["epochs"], lr=official["lr"], batch_size=official["batch_size"],
                    lr_drops=dict(official["lr_drops"]), decay_1d_params=True)
    else:
        base.update(epochs=FAST_EPOCHS.get(dataset, 10), lr=0.2 if image_like_cifar else 0.1,
                    batch_size=128 if image_like_cifar else 64, decay_1d_params=False)
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "eps" in overrides and overrides["eps"] is not None and overrides.get("step_size") is None:
        base["step_size"] = base["eps"] / 4
    return TrainConfig.from_dict(base)


def _plain(name: str, value: Any) -> Any:
    """A Python scalar for a numpy scalar or a 0-d numpy array / tensor; anything else unchanged."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a single value, got an array of shape {tuple(value.shape)}.")
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_bool(name: str, value: Any) -> bool:
    value = _plain(name, value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def _as_int(name: str, value: Any, minimum: int, why: str = "", maximum: int | None = None) -> int:
    value = _plain(name, value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{why}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}{why}, got {value}.")
    return value


def _as_float(name: str, value: Any, low: float = 0.0, high: float = math.inf, *, low_open: bool = False,
              high_open: bool = False, why: str = "") -> float:
    """``value`` as a finite Python float in the interval from ``low`` to ``high`` (open ends as flagged)."""
    value = _plain(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a float, got {value}.") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        if high == math.inf:
            rule = f"be {'greater than' if low_open else 'at least'} {low:g}"
        else:
            rule = f"lie in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must {rule}{why}, got {value:g}.")
    return value


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    value = _plain(name, value)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")
    return value


def validate_config(config: TrainConfig) -> None:
    """Normalise ``config`` in place to plain Python values and refuse a configuration that cannot train.

    Called on construction and again by ``train`` (fields may be reassigned).

    Raises: ``ValueError`` naming the field (and the rule it breaks) for a value that cannot train.
    Source: this package (no paper).
    """
    c = config
    c.dataset = dataset_key(_plain("dataset", c.dataset))
    model = _plain("model", c.model)
    c.model = _as_choice("model", model.lower().replace("-", "_") if isinstance(model, str) else model, MODELS)
    c.method = _as_choice("method", c.method, METHODS)
    c.preset = _as_choice("preset", c.preset, PRESETS)
    c.amp = _as_choice("amp", c.amp, AMP_MODES)
    c.channels_last = _as_choice("channels_last", c.channels_last, CHANNELS_LAST_MODES)
    c.device = device_name(_plain("device", c.device))
    root = _plain("data_root", c.data_root)
    if root is not None:
        if not isinstance(root, (str, os.PathLike)) or not str(os.fspath(root)).strip():
            raise ValueError(f"data_root must be a folder path or None, got {root!r}.")
        root = str(os.fspath(root))
    c.data_root = root
    for name in ("cas", "decay_1d_params", "augment", "compile"):
        setattr(c, name, _as_bool(name, getattr(c, name)))
    c.epochs = _as_int("epochs", c.epochs, 1)
    c.batch_size = _as_int("batch_size", c.batch_size, 2, " (a train-mode BatchNorm needs 2 examples per batch to "
                                                       "normalise over)")
    c.attack_steps = _as_int("attack_steps", c.attack_steps, 1)
    c.val_examples = _as_int("val_examples", c.val_examples, 1, " (val_fraction=0 trains without validation)")
    c.val_attack_steps = _as_int("val_attack_steps", c.val_attack_steps, 1)
    c.seed = _as_int("seed", c.seed, 0, " (seeds run from 0 to 2**63 - 1)", maximum=MAX_SEED)
    c.lr = _as_float("lr", c.lr, low_open=True)
    c.momentum = _as_float("momentum", c.momentum, 0.0, 1.0, high_open=True)
    c.weight_decay = _as_float("weight_decay", c.weight_decay)
    c.eps = _as_float("eps", c.eps, 0.0, 1.0, why=" (images are scaled to [0, 1])")
    c.step_size = _as_float("step_size", c.step_size, 0.0, 1.0, why=" (images are scaled to [0, 1])")
    c.cas_beta = _as_float("cas_beta", c.cas_beta)
    c.method_beta = _as_float("method_beta", c.method_beta)
    c.val_fraction = _as_float("val_fraction", c.val_fraction, 0.0, 1.0, high_open=True,
                               why=" (0: no validation split, train on everything)")
    drops = _plain("lr_drops", c.lr_drops)
    if not isinstance(drops, dict):
        raise ValueError(f"lr_drops must map an epoch to a learning-rate factor, e.g. {{75: 0.1}}, got {drops!r}.")
    normalised = {}
    for epoch, factor in drops.items():
        epoch = _plain("lr_drops epoch", epoch)
        if isinstance(epoch, str) and epoch.strip().isdigit():  # JSON keys
            epoch = int(epoch)
        normalised[_as_int("lr_drops epoch", epoch, 1)] = _as_float(f"lr_drops[{epoch}]", factor, low_open=True)
    c.lr_drops = normalised
    if c.compile and c.model not in COMPILABLE_MODELS:
        raise ValueError(f"compile supports {', '.join(COMPILABLE_MODELS)}, not {c.model!r}; train without it.")


# --------------------------------------------------------------------------- the notebooks' profiles

#: The methods of notebook 04's suite, each trained without and with CAS.
SUITE_METHODS: tuple[str, ...] = ("pgd_at", "trades", "mart")


@dataclass(frozen=True)
class Profile:
    """What a suite trains and how it is evaluated; ``None`` keeps the preset's value.

    ``n_eval`` test images for natural accuracy and the white-box attacks (None: the whole test split);
    ``subset_n`` a class-balanced subset of them for the costly attacks (``cas_edu.evaluation.COSTLY``; None: all).

    Raises: nothing of its own (a frozen dataclass; names are checked where they are used).
    Source: this package (no paper); the ``gpu`` profile's settings are :data:`OFFICIAL`.
    """

    name: str
    dataset: str
    model: str
    preset: str
    epochs: int | None
    attack_steps: int | None
    n_eval: int | None  # test images for natural and the white-box attacks; None = the whole test split
    attacks: tuple[str, ...]
    square_queries: int
    methods: tuple[str, ...] = SUITE_METHODS
    description: str = ""
    subset_n: int | None = None  # class-balanced subset for the costly attacks (evaluation.COSTLY); None = all


PROFILES: dict[str, Profile] = {
    "cpu": Profile(
        name="cpu", dataset="digits", model="small_cnn", preset="fast", epochs=6, attack_steps=5, n_eval=200,
        attacks=("natural", "fgsm", "pgd20", "cw", "square", "pgd-st"), square_queries=500, subset_n=100,
        description="digits (8×8), small CNN, 6 one-cycle epochs with PGD-5 training attacks; best.pt evaluated "
                    "on 200 test images, Square (500 queries, a reduced budget) and the straight-through "
                    "PGD-100×5 on a class-balanced 100 of them"),
    "gpu": Profile(
        name="gpu", dataset="cifar10", model="resnet18", preset="paper", epochs=None, attack_steps=None, n_eval=None,
        attacks=("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st", "autoattack-st"),
        square_queries=5000, subset_n=1000,
        description="CIFAR-10, ResNet-18, the official CAS schedules (AT 200, TRADES 100, MART 120 epochs, "
                    "PGD-10 training attacks); best.pt evaluated on all 10,000 test images with the white-box "
                    "attacks, and with Square, AutoAttack and the straight-through attacks on a seeded, "
                    "class-balanced 1,000"),
    "colab": Profile(
        name="colab", dataset="cifar10", model="resnet18", preset="fast", epochs=10, attack_steps=5, n_eval=1000,
        attacks=("natural", "fgsm", "pgd20", "cw", "square", "pgd-st"), square_queries=1000, methods=("pgd_at",),
        subset_n=200,
        description="CIFAR-10, ResNet-18 on a free Colab GPU: PGD-AT and PGD-AT+CAS only, the fast one-cycle "
                    "preset shortened to 10 epochs with PGD-5 training attacks, fp32; best.pt evaluated on 1,000 "
                    "test images, Square (1,000 queries) and the straight-through PGD-100×5 on a class-balanced "
                    "200 of them (notebooks 01-03 run their cpu settings on this profile)"),
}

#: Training images per epoch of a dataset before the validation hold-out.
TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257}
#: Forward-pass GFLOP per 32×32 image (GUIDE §2: 0.555 G multiply-accumulates for the CIFAR ResNet-18).
FORWARD_GFLOP = {"resnet18": 1.11, "wrn34_10": 13.3}
#: A conservative sustained rate for a free-tier Colab T4 in fp32: 30 % of its 8.1 TFLOP/s peak (NVIDIA T4
#: datasheet). An assumption until measured on such a GPU.
COLAB_T4_FP32_FLOPS = 0.30 * 8.1e12


def estimate_train_seconds(config: "TrainConfig", flops_per_second: float) -> float:
    """Estimated wall time of one training run at a sustained ``flops_per_second``, from the FLOP count alone.

    Per training image and epoch: the training attack's ``attack_steps`` forward + input-gradient backward passes
    (2 forward-equivalents each) and one forward + full backward (3), i.e. 2·steps + 3 forward-equivalents (1 for
    standard training: 3); the validation attack and data loading are ignored (a few per cent).

    Units: seconds; ``flops_per_second`` in FLOP/s.
    Raises: ``ValueError`` for a dataset or model without a recorded size (:data:`TRAIN_IMAGES`,
    :data:`FORWARD_GFLOP`) or a non-positive rate.
    Source: GUIDE §2 (forward FLOPs, the 23 forward-equivalents of PGD-10 AT).
    """
    if config.dataset not in TRAIN_IMAGES or config.model not in FORWARD_GFLOP:
        raise ValueError(f"no size recorded for {config.dataset}/{config.model}; known datasets "
                         f"{', '.join(TRAIN_IMAGES)}, models {', '.join(FORWARD_GFLOP)}.")
    if not flops_per_second > 0:
        raise ValueError(f"flops_per_second must be positive, got {flops_per_second!r}.")
    images = TRAIN_IMAGES[config.dataset] * (1 - config.val_fraction)
    passes = 3 if config.method == "standard" else 2 * config.attack_steps + 3
    return config.epochs * images * passes * FORWARD_GFLOP[config.model] * 1e9 / flops_per_second


def get_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` by name (``cpu``, ``gpu`` or ``colab``, any case, spaces ignored); a Profile passes through.

    Raises: ``ValueError`` naming the profiles for an unknown name.
    Source: this package (no paper).
    """
    if isinstance(profile, Profile):
        return profile
    key = str(profile).strip().lower()
    if key not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {', '.join(PROFILES)} "
                         "(e.g. set the environment variable CAS_EDU_PROFILE=cpu).")
    return PROFILES[key]
