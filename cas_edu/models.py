"""Models and the facts about them: the classifiers that carry CAS modules, and what the rest of the package
asks of any model (its device, dtype and number of classes, whether it has CAS modules, evaluation mode, the
auxiliary logits, the cas_edu classifier inside a wrapper).

Architectures: :class:`SmallCNN` (digits), :class:`ResNet18` (CIFAR; at half width, ``resnet18_w32``, the model
notebooks 02-03 probe on digits) and :class:`WideResNet` (WRN-34-10, CIFAR), all
:class:`CASClassifier` subclasses built by :func:`build`. Every model's ``forward(x)`` returns main-head logits,
so any attack library can use it unchanged; ``forward_details(x, y)`` returns a :class:`ModelOutput` with the
auxiliary CAS logits and the pre-mask activations of every named layer.

Model facts (they take any ``nn.Module``, bare or wrapped in ``nn.Sequential``, DDP, ``DataParallel`` or
``torch.compile``): :func:`model_device`, :func:`model_dtype`, :func:`num_classes`, :func:`has_cas`,
:func:`eval_mode`, :func:`refuse_inference_parameters`, :func:`forward_with_aux`, :func:`find_classifier`,
:func:`classifier_details`. The CAS modules themselves are found by :func:`cas_edu.cas.find_cas_modules`.

Imports: :mod:`cas_edu.cas` only (below it :mod:`cas_edu.runtime`); :mod:`cas_edu.validation` and everything
above import from here.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .cas import CASModule, find_cas_modules, modules_through_wrappers, unwrap_parallel

@dataclass
class ModelOutput:
    """Main logits, one auxiliary logit tensor per CAS module, and pre-mask activations by layer name.

    Shape: logits (N, K); aux_logits a list of S tensors (N, K), one per CAS module in forward order (empty
    without CAS); activations maps each named layer to its features before any CAS mask, e.g. (N, C, H, W).
    Raises: nothing of its own.
    Source: arXiv 2103.08307 §4 (the auxiliary classifiers of Eq. 1-3); the official models return
    ``(output, class_wise_output)`` (github.com/bymavis/CAS_ICLR2021, Standard_Adv_Training/models/resnet_cas.py).
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor] = field(default_factory=list)
    activations: dict[str, torch.Tensor] = field(default_factory=dict)


class CASClassifier(nn.Module):
    """Base class: named layers, optional CAS modules after some of them, a pooled linear head.

    Subclasses build their layers, then call ``_add_cas`` with the channel count of every layer a CAS module
    may follow; ``forward_details(x, y)`` runs the layers, masking the features of each layer in ``cas``.
    Raises: ``ValueError`` (from ``_add_cas``) naming a requested CAS layer the architecture does not have.
    Source: arXiv 2103.08307 §4 (a CAS module after a layer's activations, S modules in all).
    """

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
    Raises: ``ValueError`` for a CAS layer other than ``block1`` .. ``block3``; ``CASModule``'s ``ValueError`` when CAS layers are asked for with ``num_classes`` < 2.
    Source: this package (no paper): a small teaching model with the CAS placement of arXiv 2103.08307 §4.
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
    """The ResNet-18 basic block; its output is taken after the final ReLU.

    Raises: nothing of its own.
    Source: He et al. 2016 (ResNet); as the official ``BasicBlock`` (Standard_Adv_Training/models/resnet_cas.py).
    """

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
    blocks of layer4 (S = 2), so the second block sees the first block's masked output, as officially.
    ``width`` is the stem's channel count (64 officially); layer k has 2^(k-1) × width channels, so layer4 has
    8 × width (512 officially, 256 for ``resnet18_w32``).

    Raises: ``ValueError`` for an unknown CAS layer; ``CASModule``'s ``ValueError`` when CAS layers are asked for with ``num_classes`` < 2.
    Source: the official ``ResNet18`` with ``CASBlock`` in layer4 (github.com/bymavis/CAS_ICLR2021,
    Standard_Adv_Training/models/resnet_cas.py); arXiv 2103.08307 §5.
    """

    default_cas_layers = ("layer4_0", "layer4_1")
    default_activation_layer = "layer4"
    layer_aliases = {f"layer{i}": f"layer{i}_1" for i in range(1, 5)}

    def __init__(self, num_classes: int = 10, in_channels: int = 3, cas_layers: list[str] | None = None,
                 width: int = 64) -> None:
        super().__init__(num_classes, cas_layers)
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, width))
        self.blocks = nn.ModuleDict()
        channels, cin = {}, width
        for layer, (cout, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)], start=1):
            for i, s in enumerate([stride, 1]):
                name = f"layer{layer}_{i}"
                self.blocks[name] = BasicBlock(cin, cout, s)
                channels[name], cin = cout, cout
        self.fc = nn.Linear(8 * width, num_classes)
        self._add_cas(channels)

    def forward_details(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        out = ModelOutput(logits=x)
        x = self.stem(x)
        for name, block in self.blocks.items():
            x = self._maybe_mask(name, block(x), y, out)
        out.logits = self.fc(x.mean(dim=(2, 3)))
        return out


class WideBlock(nn.Module):
    """Pre-activation wide basic block; ``branch_input`` is its BN-ReLU'd input, which CAS may mask.

    Raises: nothing of its own.
    Source: Zagoruyko & Komodakis 2016 (wide residual networks), as in Trades/models/wideresnet_cas.py
    (github.com/bymavis/CAS_ICLR2021).
    """

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
    (official, S = 2): ``block3_4`` (640 channels) and ``final``.

    Raises: ``ValueError`` when ``depth`` is not 6n + 4 or for an unknown CAS layer; ``CASModule``'s
    ``ValueError`` when CAS layers are asked for with ``num_classes`` < 2.
    Source: the official WRN-34-10 with CAS (github.com/bymavis/CAS_ICLR2021, Trades/models/wideresnet_cas.py);
    arXiv 2103.08307 §5.
    """

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


#: Each name's constructor and keyword arguments. ``wide_cnn``, ``resnet18_w16`` and ``resnet18_w32`` are the
#: candidates benchmarks/observations.py measured for showing the paper's observations on digits: the small CNN
#: with a 512-channel last block, and ResNet-18 at a quarter and half of its width (base 16 / 32 channels instead
#: of 64; layer4 has 8 × base channels). ``resnet18_w32`` is the smallest whose standard model showed both.
ARCHITECTURES: dict[str, tuple[type, dict]] = {
    "small_cnn": (SmallCNN, {}),
    "wide_cnn": (SmallCNN, {"widths": (32, 64, 512)}),
    "resnet18_w16": (ResNet18, {"width": 16}),
    "resnet18_w32": (ResNet18, {"width": 32}),
    "resnet18": (ResNet18, {}),
    "wrn34_10": (WideResNet, {}),
}
MODELS = tuple(ARCHITECTURES)


def build(name: str, num_classes: int = 10, in_channels: int = 3, cas: bool = False,
          cas_layers: list[str] | None = None) -> CASClassifier:
    """Build a model by name; ``cas=True`` adds CAS modules at the official default places
    (or at ``cas_layers`` when given).

    ``name`` is one of :data:`MODELS` (case-insensitive, ``-`` read as ``_``). The model is in training mode.
    Raises: ``ValueError`` for an unknown name, ``num_classes`` < 2 or ``in_channels`` < 1, ``cas_layers``
    without ``cas=True``, or a CAS layer the architecture does not have.
    Source: the architectures' official CAS placements (see :class:`ResNet18`, :class:`WideResNet`);
    :class:`SmallCNN` is this package's.
    """
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    if num_classes < 2 or in_channels < 1:
        raise ValueError(f"num_classes must be >= 2 and in_channels >= 1, got {num_classes}, {in_channels}.")
    if cas_layers is not None and not cas:
        raise ValueError("cas_layers was given but cas=False; pass cas=True to place CAS modules.")
    constructor, options = ARCHITECTURES[key]
    layers = list(cas_layers if cas_layers is not None else constructor.default_cas_layers) if cas else []
    return constructor(num_classes=num_classes, in_channels=in_channels, cas_layers=layers, **options)


# --------------------------------------------------------------------------- model facts (any nn.Module, bare or wrapped)

def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (also inside wrappers); the CPU when it has none.

    The one way the package finds a model's device.
    Raises: ``ValueError`` when ``model`` is not an ``nn.Module`` (:func:`cas_edu.cas.modules_through_wrappers`).
    Source: this package (no paper).
    """
    for m in modules_through_wrappers(model):
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            return t.device
    return torch.device("cpu")


def _floating_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    for m in modules_through_wrappers(model):
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            if t.is_floating_point():
                yield t


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of ``model``'s first floating-point parameter (or buffer, also inside wrappers); None when it
    has none.

    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``.
    Source: this package (no paper).
    """
    return next((t.dtype for t in _floating_tensors(model)), None)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` and every module inside it (also inside wrappers, :func:`cas_edu.cas.modules_through_wrappers`)
    in evaluation mode for the block, then give *each* module back its own previous mode, also after an error.

    Restoring each module's flag (not ``model.train(was_training)``, which would overwrite every submodule)
    keeps set-ups such as frozen BatchNorm layers (eval) inside a model that trains. In evaluation mode
    BatchNorm uses its running statistics and every CAS module masks with its auxiliary head's prediction.
    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``; errors inside the block propagate.
    Source: this package (no paper); the evaluation-mode CAS mask is arXiv 2103.08307 §4.
    """
    modules = modules_through_wrappers(model)
    modes = [(m, m.training) for m in modules]
    try:
        model.eval()
        for m in modules:  # modules held outside _modules (e.g. an unregistered .module) are not reached by eval()
            if m.training:
                m.eval()
        yield model
    finally:
        for m, was in modes:
            m.training = was


def num_classes(model: nn.Module, x: torch.Tensor | None = None) -> int | None:
    """K, the number of classes of ``model``: its ``num_classes`` (also inside wrappers), else the width of the
    logits of one forward of ``x[:1]`` (eval mode, no gradients); None when neither is available.

    Shape: x (N, ...) as the model takes it (only ``x[:1]`` runs), cast to the model's device and dtype.
    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``; whatever the model's forward raises for ``x``.
    Source: this package (no paper).
    """
    for m in modules_through_wrappers(unwrap_parallel(model)):
        k = m.__dict__.get("num_classes")
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
    if x is None or len(x) == 0:
        return None
    dtype = model_dtype(model)
    with torch.no_grad(), eval_mode(model):
        logits = model(x[:1].to(model_device(model), dtype or x.dtype))
    return int(logits.shape[-1]) if isinstance(logits, torch.Tensor) and logits.dim() >= 1 else None


def refuse_inference_parameters(model: nn.Module) -> None:
    """Check that input gradients can flow through ``model``: none of its parameters (also inside wrappers) is an
    inference tensor.

    Raises: ``ValueError`` when ``model``'s parameters were made inside ``torch.inference_mode()`` (no gradient
    attack can run on it), or when ``model`` is not an ``nn.Module``.
    Source: this package (no paper).
    """
    if any(p.is_inference() for m in modules_through_wrappers(model) for p in m.parameters(recurse=False)):
        raise ValueError("the model's parameters were created or loaded inside torch.inference_mode(), so no input "
                         "gradient can flow through them; build or load the model outside inference_mode "
                         "(calling the attack inside it is fine).")


def has_cas(model: nn.Module) -> bool:
    """Whether ``model`` carries CAS modules, also inside wrappers (see :func:`cas_edu.cas.find_cas_modules`).

    An object that is not an ``nn.Module`` answers by its ``has_cas`` attribute (False without one).
    Raises: nothing of its own.
    Source: arXiv 2103.08307 §4 (a model with S ≥ 1 CAS modules).
    """
    if not isinstance(model, nn.Module):
        return bool(getattr(model, "has_cas", False))
    return bool(find_cas_modules(model))


def forward_with_aux(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main logits and the auxiliary logits of every CAS module, in forward order.

    Uses ``model.forward_details`` when the model has one (our classifiers); otherwise, e.g. for
    ``nn.Sequential(preprocess, model)``, DDP or ``torch.compile`` wrappers, one plain ``model(x)``
    call with forward hooks on the CAS modules found inside it. The list is empty without CAS modules.
    Runs in the model's current mode (wrap it in :func:`eval_mode` for evaluation masks).
    Shape: x as the model takes it, e.g. (N, C, H, W) in [0, 1]; returns logits (N, K) and a list of S
    tensors (N, K).
    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``; whatever the model's forward raises.
    Source: arXiv 2103.08307 §4 (main and auxiliary outputs); the official ``model(x, y, _eval=True)`` returns
    the same pair (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py).
    """
    if callable(getattr(model, "forward_details", None)):
        details = model.forward_details(x)
        return details.logits, list(details.aux_logits)
    modules = find_cas_modules(model)
    aux: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _inputs, output: aux.append(output[1])) for m in modules]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, aux


def find_classifier(model: nn.Module) -> nn.Module | None:
    """The cas_edu classifier inside ``model``: ``model`` itself or the first module inside it (looking through
    wrappers, :func:`cas_edu.cas.modules_through_wrappers`) with a ``forward_details`` method; None without one.

    Raises: ``ValueError`` when ``model`` is not an ``nn.Module``.
    Source: this package (no paper).
    """
    for module in modules_through_wrappers(unwrap_parallel(model)):
        if callable(getattr(module, "forward_details", None)):
            return module
    return None


def classifier_details(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, ModelOutput]:
    """``(classifier, details)``: the classifier inside ``model`` (:func:`find_classifier`) and its
    ``forward_details`` output (logits, auxiliary logits, pre-mask activations by layer) for ``x`` as ``model``
    feeds it.

    A wrapper that transforms the input (``nn.Sequential(normalize, model)``) runs once with a hook that records
    what reaches the classifier, which then runs ``forward_details`` on exactly that. Runs in the model's
    current mode and gradient setting.
    Shape: x as ``model`` takes it, e.g. (N, C, H, W) in [0, 1]; details as in :class:`ModelOutput`.
    Raises: ``ValueError`` when ``model`` holds no such classifier or never calls it.
    Source: this package (no paper); the pre-mask activations are those of arXiv 2103.08307 §3 (Figures 1-2).
    """
    model = unwrap_parallel(model)
    if callable(getattr(model, "forward_details", None)):
        return model, model.forward_details(x)
    inner = find_classifier(model)
    if inner is None:
        raise ValueError(f"{type(model).__name__} holds no cas_edu classifier with named layers (forward_details); "
                         "pass a model built by cas_edu.models, bare or wrapped.")
    seen: list[torch.Tensor] = []
    handle = inner.register_forward_pre_hook(lambda _m, args: seen.append(args[0]) if not seen else None)
    try:
        model(x)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__}'s forward never called the classifier inside it; pass the classifier.")
    return inner, inner.forward_details(seen[0])


__all__ = ["ARCHITECTURES", "MODELS", "BasicBlock", "CASClassifier", "ModelOutput", "ResNet18", "SmallCNN", "WideBlock", "WideResNet",
           "build", "classifier_details", "eval_mode", "find_classifier", "forward_with_aux", "has_cas",
           "model_device", "model_dtype", "num_classes", "refuse_inference_parameters"]
