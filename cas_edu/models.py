"""Classifiers that can carry CAS modules: a small CNN, the CIFAR ResNet-18 and WRN-34-10.

Every model's ``forward(x)`` returns main-head logits, so any attack library can use it
unchanged. ``forward_details(x, y)`` returns a :class:`ModelOutput` with the auxiliary CAS
logits and the pre-mask activations of every named layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .cas import CASModule


@dataclass
class ModelOutput:
    """Main logits, one auxiliary logit tensor per CAS module, and pre-mask activations by layer name."""

    logits: torch.Tensor
    aux_logits: list[torch.Tensor] = field(default_factory=list)
    activations: dict[str, torch.Tensor] = field(default_factory=dict)


class CASClassifier(nn.Module):
    """Base class: named layers, optional CAS modules after some of them, a pooled linear head."""

    default_cas_layers: tuple[str, ...] = ()
    default_activation_layer: str = ""
    layer_aliases: dict[str, str] = {}

    def __init__(self, num_classes: int, cas_layers: list[str] | None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._requested_cas_layers = list(cas_layers or [])
        self.cas = nn.ModuleDict()

    def _add_cas(self, channels_by_layer: dict[str, int]) -> None:
        unknown = [name for name in self._requested_cas_layers if name not in channels_by_layer]
        if unknown:
            raise ValueError(
                f"Unknown CAS layer(s) {unknown} for {type(self).__name__}; choose from {sorted(channels_by_layer)}."
            )
        for name in self._requested_cas_layers:
            self.cas[name] = CASModule(channels_by_layer[name], self.num_classes)

    @property
    def has_cas(self) -> bool:
        return len(self.cas) > 0

    @property
    def cas_layers(self) -> list[str]:
        return list(self.cas.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_details(x).logits

    def forward_details(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    def _maybe_mask(self, name: str, features: torch.Tensor, y: torch.Tensor | None, out: ModelOutput) -> torch.Tensor:
        out.activations[name] = features
        if name in self.cas:
            features, aux = self.cas[name](features, y)
            out.aux_logits.append(aux)
        return features

    def resolve_layer(self, layer: str | None) -> str:
        """Map ``None`` to the default activation layer and aliases (e.g. ``layer4``) to layer names."""
        layer = layer or self.default_activation_layer
        return self.layer_aliases.get(layer, layer)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(CASClassifier):
    """Three conv-BN-ReLU blocks (the last two halve the resolution), global pool, linear head.

    Sized for 8×8 digits up to 32×32 CIFAR; CAS defaults to the last block, S = 1.
    """

    default_cas_layers = ("block3",)
    default_activation_layer = "block3"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int, int] = (32, 64, 128),
                 cas_layers: list[str] | None = None) -> None:
        super().__init__(num_classes, cas_layers)
        w1, w2, w3 = widths
        self.blocks = nn.ModuleDict({
            "block1": nn.Sequential(*_conv_bn_relu(in_channels, w1)),
            "block2": nn.Sequential(*_conv_bn_relu(w1, w2), nn.MaxPool2d(2)),
            "block3": nn.Sequential(*_conv_bn_relu(w2, w3), nn.MaxPool2d(2)),
        })
        self.fc = nn.Linear(w3, num_classes)
        self._add_cas({"block1": w1, "block2": w2, "block3": w3})

    def forward_details(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        out = ModelOutput(logits=x)
        for name, block in self.blocks.items():
            x = self._maybe_mask(name, block(x), y, out)
        out.logits = self.fc(x.mean(dim=(2, 3)))
        return out


class BasicBlock(nn.Module):
    """The ResNet-18 basic block; its output is taken after the final ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(CASClassifier):
    """CIFAR ResNet-18 (3×3 stem, no max-pool). Layer names ``layer{1..4}_{0,1}``; CAS defaults to both
    blocks of layer4 (S = 2), so the second block sees the first block's masked output, as officially."""

    default_cas_layers = ("layer4_0", "layer4_1")
    default_activation_layer = "layer4"
    layer_aliases = {f"layer{i}": f"layer{i}_1" for i in range(1, 5)}

    def __init__(self, num_classes: int = 10, in_channels: int = 3, cas_layers: list[str] | None = None) -> None:
        super().__init__(num_classes, cas_layers)
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, 64))
        self.blocks = nn.ModuleDict()
        channels, cin = {}, 64
        for layer, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            for i, s in enumerate([stride, 1]):
                name = f"layer{layer}_{i}"
                self.blocks[name] = BasicBlock(cin, cout, s)
                channels[name], cin = cout, cout
        self.fc = nn.Linear(512, num_classes)
        self._add_cas(channels)

    def forward_details(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        out = ModelOutput(logits=x)
        x = self.stem(x)
        for name, block in self.blocks.items():
            x = self._maybe_mask(name, block(x), y, out)
        out.logits = self.fc(x.mean(dim=(2, 3)))
        return out


class WideBlock(nn.Module):
    """Pre-activation wide basic block; ``branch_input`` is its BN-ReLU'd input, which CAS may mask."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout and stride == 1
        self.shortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def branch_input(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(x))

    def forward(self, x: torch.Tensor, mask: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        pre = self.branch_input(x)
        branch = mask(pre) if mask is not None else pre
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(branch))))
        return shortcut + out


class WideResNet(CASClassifier):
    """WRN-depth-widen for CIFAR. CAS at ``block{g}_{i}`` masks that block's pre-activated input on the
    residual branch only; CAS at ``final`` masks the last BN-ReLU features before the pool. Default
    (official, S = 2): ``block3_4`` (640 channels) and ``final``."""

    default_cas_layers = ("block3_4", "final")
    default_activation_layer = "final"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, depth: int = 34, widen: int = 10,
                 cas_layers: list[str] | None = None) -> None:
        super().__init__(num_classes, cas_layers)
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.blocks = nn.ModuleDict()
        channels, cin = {}, widths[0]
        for group, (cout, stride) in enumerate(zip(widths[1:], [1, 2, 2]), start=1):
            for i in range(n):
                name = f"block{group}_{i}"
                self.blocks[name] = WideBlock(cin, cout, stride if i == 0 else 1)
                channels[name], cin = cin, cout
        self.bn = nn.BatchNorm2d(cin)
        channels["final"] = cin
        self.fc = nn.Linear(cin, num_classes)
        self._add_cas(channels)

    def forward_details(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        out = ModelOutput(logits=x)
        x = self.stem(x)
        for name, block in self.blocks.items():
            x = block(x, mask=lambda f, name=name: self._maybe_mask(name, f, y, out))
        x = self._maybe_mask("final", F.relu(self.bn(x)), y, out)
        out.logits = self.fc(x.mean(dim=(2, 3)))
        return out


MODELS = ("small_cnn", "resnet18", "wrn34_10")


def build(name: str, num_classes: int = 10, in_channels: int = 3, cas: bool = False,
          cas_layers: list[str] | None = None) -> CASClassifier:
    """Build a model by name; ``cas=True`` adds CAS modules at the official default places
    (or at ``cas_layers`` when given)."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    if num_classes < 2 or in_channels < 1:
        raise ValueError(f"num_classes must be >= 2 and in_channels >= 1, got {num_classes}, {in_channels}.")
    if cas_layers is not None and not cas:
        raise ValueError("cas_layers was given but cas=False; pass cas=True to place CAS modules.")
    constructor = {"small_cnn": SmallCNN, "resnet18": ResNet18, "wrn34_10": WideResNet}[key]
    layers = list(cas_layers if cas_layers is not None else constructor.default_cas_layers) if cas else []
    return constructor(num_classes=num_classes, in_channels=in_channels, cas_layers=layers)
