"""Training configuration and the hyper-parameters of the official CAS code, recorded in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .runtime import AMP_MODES, CHANNELS_LAST_MODES, DEFAULT_AMP

METHODS = ("standard", "pgd_at", "trades", "mart")
PRESETS = ("fast", "paper")
#: Models whose blocks take one tensor, so each block compiles once (WRN's blocks take a mask callable).
COMPILABLE_MODELS = ("small_cnn", "resnet18")

#: Official CAS code, CIFAR-10 ResNet-18 (see ../shared/GUIDE.md, "Official training defaults").
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
    """Everything that defines a training run; plain values only, so it fits in a safe checkpoint."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.lr_drops = {int(k): float(v) for k, v in config.lr_drops.items()}
        return config


def make_config(dataset: str = "digits", model: str = "small_cnn", method: str = "pgd_at", cas: bool = False,
                preset: str = "fast", **overrides) -> TrainConfig:
    """A config with the preset's defaults for this dataset and method; ``overrides`` that are not None win.

    ``paper`` is the official recipe wherever we can follow it (``OFFICIAL``: schedule, epochs, batch,
    weight decay on every parameter, fp32); ``fast`` is a one-cycle short schedule that exempts 1-D
    parameters from weight decay. Both hold out ``val_fraction`` (0.1) of the training set for checkpoint
    selection unless ``val_fraction=0``; README "Departures from the official code" lists what differs.
    Raises ``ValueError`` for an unknown method or preset, or values that cannot train.
    """
    dataset = dataset.lower().replace("-", "_")
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
    config = TrainConfig.from_dict(base)
    validate_config(config)
    return config


def validate_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` for a configuration that cannot train."""
    if config.method not in METHODS:
        raise ValueError(f"Unknown method {config.method!r}; choose one of {', '.join(METHODS)}.")
    if not 0 <= config.eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] (images are scaled to [0, 1]), got {config.eps}.")
    if config.epochs < 1 or config.batch_size < 1 or config.attack_steps < 1:
        raise ValueError("epochs, batch_size and attack_steps must all be at least 1.")
    if config.lr <= 0 or config.step_size < 0:
        raise ValueError("lr must be positive and step_size non-negative.")
    if not 0 <= config.val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1) (0: no validation split, train on everything), "
                         f"got {config.val_fraction}.")
    if config.amp not in AMP_MODES:
        raise ValueError(f"Unknown amp {config.amp!r}; choose one of {', '.join(AMP_MODES)}.")
    if config.channels_last not in CHANNELS_LAST_MODES:
        raise ValueError(f"Unknown channels_last {config.channels_last!r}; choose one of {', '.join(CHANNELS_LAST_MODES)}.")
    if config.compile and config.model not in COMPILABLE_MODELS:
        raise ValueError(f"compile supports {', '.join(COMPILABLE_MODELS)}, not {config.model!r}; train without it.")
