"""Tests for cas_edu.models: shapes, CAS placement (official ResNet-18 / WRN-34-10), pre-mask activations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cas_edu.cas import CASModule
from cas_edu.models import MODELS, ModelOutput, ResNet18, SmallCNN, WideResNet, build

# (name, in_channels, image side) -- small_cnn on 8×8 digits, the CIFAR models on 32×32, batch 2.
INPUTS = {"small_cnn": (1, 8), "wide_cnn": (1, 8), "resnet18_w16": (1, 8), "resnet18_w32": (1, 8),
          "resnet18": (3, 32), "wrn34_10": (3, 32)}
EXPECTED_CAS = {
    "small_cnn": {"block3": 128},
    "wide_cnn": {"block3": 512},
    "resnet18_w16": {"layer4_0": 128, "layer4_1": 128},
    "resnet18_w32": {"layer4_0": 256, "layer4_1": 256},
    "resnet18": {"layer4_0": 512, "layer4_1": 512},
    "wrn34_10": {"block3_4": 640, "final": 640},
}


def _images(name: str, n: int = 2, side: int | None = None, seed: int = 0) -> torch.Tensor:
    channels, default_side = INPUTS[name]
    side = side or default_side
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, bool], torch.nn.Module]:
    """Every model with and without CAS, built once (the WRN alone has 46 M parameters)."""
    built = {}
    for name in MODELS:
        for cas in (False, True):
            torch.manual_seed(0)
            built[name, cas] = build(name, num_classes=10, in_channels=INPUTS[name][0], cas=cas).eval()
    return built


# --------------------------------------------------------------------------- build, shapes, counts

def test_model_names():
    assert set(MODELS) == {"small_cnn", "wide_cnn", "resnet18_w16", "resnet18_w32", "resnet18", "wrn34_10"}


@pytest.mark.parametrize("name, layer4", [("resnet18_w16", 128), ("resnet18_w32", 256), ("resnet18", 512)])
def test_resnet18_width_sets_every_stage(name: str, layer4: int):
    model = build(name, in_channels=1).eval()
    with torch.no_grad():
        acts = model.forward_details(torch.rand(2, 1, 8, 8)).activations
    widths = [acts[f"layer{k}_1"].shape[1] for k in range(1, 5)]
    assert widths == [layer4 // 8, layer4 // 4, layer4 // 2, layer4]
    assert model.fc.in_features == layer4 and model.resolve_layer("layer4") == "layer4_1"


def test_wide_cnn_is_the_small_cnn_with_a_512_channel_last_block():
    model = build("wide_cnn", in_channels=1, cas=True)
    assert [b[0].out_channels for b in model.blocks.values()] == [32, 64, 512]
    assert model.cas_layers == ["block3"] and model.fc.in_features == 512


@pytest.mark.parametrize("cas", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_forward_returns_n_by_k_logits(models, name: str, cas: bool):
    model = models[name, cas]
    x = _images(name)
    with torch.no_grad():
        logits = model(x)
        details = model.forward_details(x)
    assert logits.shape == (2, 10)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert isinstance(details, ModelOutput)
    torch.testing.assert_close(details.logits, logits)
    assert len(details.aux_logits) == (len(EXPECTED_CAS[name]) if cas else 0)
    for aux in details.aux_logits:
        assert aux.shape == (2, 10)


@pytest.mark.parametrize("name", MODELS)
def test_cas_modules_at_the_official_places(models, name: str):
    plain, with_cas = models[name, False], models[name, True]
    assert not plain.has_cas and plain.cas_layers == [] and len(plain.cas) == 0
    assert with_cas.has_cas
    assert with_cas.cas_layers == list(EXPECTED_CAS[name])
    for layer, channels in EXPECTED_CAS[name].items():
        module = with_cas.cas[layer]
        assert isinstance(module, CASModule)
        assert module.classifier.in_features == channels
        assert module.classifier.out_features == 10
    assert sum(isinstance(m, CASModule) for m in with_cas.modules()) == len(EXPECTED_CAS[name])


@pytest.mark.parametrize("name, millions", [("resnet18", 11.2), ("wrn34_10", 46.1)])
@pytest.mark.parametrize("cas", [False, True])
def test_parameter_counts_match_the_published_sizes(models, name: str, millions: float, cas: bool):
    assert _count(models[name, cas]) == pytest.approx(millions * 1e6, rel=0.01)


def test_cas_adds_exactly_its_linear_heads(models):
    for name, layers in EXPECTED_CAS.items():
        extra = sum(channels * 10 + 10 for channels in layers.values())
        assert _count(models[name, True]) - _count(models[name, False]) == extra


def test_num_classes_and_in_channels_are_honoured():
    torch.manual_seed(0)
    model = build("small_cnn", num_classes=3, in_channels=3, cas=True).eval()
    out = model.forward_details(torch.rand(4, 3, 16, 16))
    assert out.logits.shape == (4, 3) and out.aux_logits[0].shape == (4, 3)


def test_build_accepts_dashes_and_case():
    assert isinstance(build("ResNet18"), ResNet18)
    assert isinstance(build("small-cnn", in_channels=1), SmallCNN)


def test_custom_cas_layers():
    torch.manual_seed(0)
    model = build("small_cnn", in_channels=1, cas=True, cas_layers=["block1", "block3"]).eval()
    assert model.cas_layers == ["block1", "block3"]
    assert model.cas["block1"].classifier.in_features == 32
    assert len(model.forward_details(_images("small_cnn")).aux_logits) == 2


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs", [
    dict(name="resnet50"),
    dict(name=""),
    dict(name="small_cnn", num_classes=1),
    dict(name="small_cnn", in_channels=0),
    dict(name="small_cnn", cas=True, cas_layers=["block9"]),
    dict(name="resnet18", cas=True, cas_layers=["layer4"]),  # an alias, not a layer name
    dict(name="wrn34_10", cas=True, cas_layers=["layer4_0"]),
    dict(name="small_cnn", cas=False, cas_layers=["block3"]),
    dict(name="small_cnn", cas_layers=[]),
])
def test_bad_build_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        build(**kwargs)


def test_wrn_depth_must_be_6n_plus_4():
    with pytest.raises(ValueError, match="6n"):
        WideResNet(depth=33, widen=1)


def test_cas_model_in_training_mode_needs_labels():
    torch.manual_seed(0)
    model = build("small_cnn", in_channels=1, cas=True).train()
    with pytest.raises(ValueError, match="label"):
        model(_images("small_cnn"))
    out = model.forward_details(_images("small_cnn"), torch.tensor([1, 2]))
    assert out.logits.shape == (2, 10)


# --------------------------------------------------------------------------- layer names

def test_resolve_layer_defaults_and_aliases(models):
    resnet = models["resnet18", True]
    assert resnet.resolve_layer("layer4") == "layer4_1"
    assert resnet.resolve_layer("layer2") == "layer2_1"
    assert resnet.resolve_layer(None) == "layer4_1"
    assert resnet.resolve_layer("layer3_0") == "layer3_0"
    assert models["small_cnn", False].resolve_layer(None) == "block3"
    assert models["wrn34_10", False].resolve_layer(None) == "final"


@pytest.mark.parametrize("name", MODELS)
def test_default_activation_layer_is_recorded(models, name: str):
    model = models[name, True]
    side = 8 if name != "small_cnn" else None  # the CIFAR models are fully convolutional; 8×8 is cheaper
    with torch.no_grad():
        out = model.forward_details(_images(name, side=side))
    layer = model.resolve_layer(None)
    assert layer in out.activations
    assert out.activations[layer].shape[:2] == (2, EXPECTED_CAS[name][model.cas_layers[-1]])


# --------------------------------------------------------------------------- CAS inside the models

def _block_outputs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None = None):
    """Run ``forward_details`` while recording what each block returns and receives (via hooks)."""
    inputs, outputs = {}, {}
    handles = []
    for name, block in model.blocks.items():
        def hook(module, args, kwargs, output, name=name):
            inputs[name], outputs[name] = args[0], output
        handles.append(block.register_forward_hook(hook, with_kwargs=True))
    try:
        out = model.forward_details(x, y)
    finally:
        for handle in handles:
            handle.remove()
    return out, inputs, outputs


def test_small_cnn_activations_are_pre_mask_and_mask_uses_labels_in_training():
    torch.manual_seed(0)
    model = build("small_cnn", in_channels=1, cas=True).train()
    x, y = _images("small_cnn", n=6), torch.tensor([0, 1, 2, 3, 4, 5])
    out, inputs, outputs = _block_outputs(model, x, y)
    for name in ("block1", "block2", "block3"):
        torch.testing.assert_close(out.activations[name], outputs[name], rtol=0, atol=0)
    weight = model.cas["block3"].classifier.weight
    masked = out.activations["block3"] * weight[y][:, :, None, None]
    torch.testing.assert_close(out.logits, model.fc(masked.mean(dim=(2, 3))))
    torch.testing.assert_close(out.aux_logits[0], model.cas["block3"].classifier(out.activations["block3"].mean(dim=(2, 3))))
    # and the unmasked features would give different logits
    assert not torch.allclose(out.logits, model.fc(out.activations["block3"].mean(dim=(2, 3))))


def test_small_cnn_activations_equal_calling_the_blocks_directly():
    torch.manual_seed(0)
    model = build("small_cnn", in_channels=1, cas=True).eval()
    x = _images("small_cnn", n=4)
    with torch.no_grad():
        out = model.forward_details(x)
        b1 = model.blocks["block1"](x)
        b2 = model.blocks["block2"](b1)
        b3 = model.blocks["block3"](b2)
    for name, expected in (("block1", b1), ("block2", b2), ("block3", b3)):
        torch.testing.assert_close(out.activations[name], expected)


def test_resnet18_activations_are_block_outputs_before_the_mask(models):
    model = models["resnet18", True]
    x = _images("resnet18", side=16)
    with torch.no_grad():
        out, inputs, outputs = _block_outputs(model, x)
        # the recorded layer4 activations equal the blocks called directly on their inputs
        torch.testing.assert_close(out.activations["layer4_0"], model.blocks["layer4_0"](inputs["layer4_0"]))
        torch.testing.assert_close(out.activations["layer4_1"], model.blocks["layer4_1"](inputs["layer4_1"]))
    assert len(out.activations) == 8
    for name in model.blocks:
        torch.testing.assert_close(out.activations[name], outputs[name], rtol=0, atol=0)


def test_resnet18_masks_compound(models):
    model = models["resnet18", True]
    x = _images("resnet18", side=16)
    cas0, cas1 = model.cas["layer4_0"], model.cas["layer4_1"]
    with torch.no_grad():
        out, inputs, _ = _block_outputs(model, x)
        a0 = out.activations["layer4_0"]
        # layer4_1 receives layer4_0's output masked by the row of layer4_0's auxiliary prediction
        k0 = cas0.classifier(a0.mean(dim=(2, 3))).argmax(dim=1)
        masked0 = a0 * cas0.classifier.weight[k0][:, :, None, None]
        torch.testing.assert_close(inputs["layer4_1"], masked0)
        torch.testing.assert_close(out.activations["layer4_1"], model.blocks["layer4_1"](masked0))
        # and the head sees layer4_1's output masked by its own module
        a1 = out.activations["layer4_1"]
        k1 = cas1.classifier(a1.mean(dim=(2, 3))).argmax(dim=1)
        torch.testing.assert_close(out.logits, model.fc((a1 * cas1.classifier.weight[k1][:, :, None, None]).mean(dim=(2, 3))))

        saved = cas0.classifier.weight.clone()
        try:
            cas0.classifier.weight.zero_()
            zeroed = model.forward_details(x)
        finally:
            cas0.classifier.weight.copy_(saved)
    torch.testing.assert_close(zeroed.activations["layer4_0"], a0)  # upstream, pre-mask: unchanged
    assert not torch.allclose(zeroed.activations["layer4_1"], out.activations["layer4_1"])
    # a zero mask feeds zeros to layer4_1, whose output is then ReLU(bn2(conv2(ReLU(bn1(0)))) + shortcut(0))
    with torch.no_grad():
        torch.testing.assert_close(zeroed.activations["layer4_1"], model.blocks["layer4_1"](torch.zeros_like(a0)))


def test_third_party_call_on_cas_model_in_eval_mode(models):
    """An attack library only calls ``model(x)``: no labels, eval mode, main-head logits."""
    model = models["resnet18", True]
    assert not model.training
    x = _images("resnet18", side=16)
    with torch.no_grad():
        logits = model(x)
        again = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, again, rtol=0, atol=0)  # deterministic in eval mode
    x_grad = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_grad), torch.tensor([0, 1])).backward()
    assert x_grad.grad is not None and x_grad.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_wrn_cas_masks_only_the_residual_branch(models):
    model = models["wrn34_10", True]
    block, cas = model.blocks["block3_4"], model.cas["block3_4"]
    assert block.equal_in_out and block.shortcut is None  # identity shortcut: the unmasked input
    x = _images("wrn34_10", side=8)
    with torch.no_grad():
        out, inputs, outputs = _block_outputs(model, x)
        x_in = inputs["block3_4"]
        pre = F.relu(block.bn1(x_in))
        torch.testing.assert_close(out.activations["block3_4"], pre)  # recorded before the mask
        k = cas.classifier(pre.mean(dim=(2, 3))).argmax(dim=1)
        branch = block.conv2(F.relu(block.bn2(block.conv1(pre * cas.classifier.weight[k][:, :, None, None]))))
        torch.testing.assert_close(outputs["block3_4"], x_in + branch)

        saved = cas.classifier.weight.clone()
        try:
            cas.classifier.weight.zero_()
            zeroed, z_inputs, z_outputs = _block_outputs(model, x)
        finally:
            cas.classifier.weight.copy_(saved)
    z_in = z_inputs["block3_4"]
    torch.testing.assert_close(z_in, x_in)  # upstream unchanged
    with torch.no_grad():
        zero_branch = block.conv2(F.relu(block.bn2(block.conv1(torch.zeros_like(pre)))))
    torch.testing.assert_close(z_outputs["block3_4"], z_in + zero_branch)
    # with freshly initialised BatchNorm the zero branch vanishes: the block passes its input through
    torch.testing.assert_close(z_outputs["block3_4"], z_in)
    assert z_in.abs().sum() > 0


def test_wrn_final_cas_masks_the_pooled_features(models):
    model = models["wrn34_10", True]
    x = _images("wrn34_10", side=8)
    with torch.no_grad():
        out = model.forward_details(x)
        final = out.activations["final"]
        assert final.shape[1] == 640 and (final >= 0).all()  # after the last BN-ReLU
        cas = model.cas["final"]
        k = cas.classifier(final.mean(dim=(2, 3))).argmax(dim=1)
        torch.testing.assert_close(out.aux_logits[1], cas.classifier(final.mean(dim=(2, 3))))
        torch.testing.assert_close(out.logits, model.fc((final * cas.classifier.weight[k][:, :, None, None]).mean(dim=(2, 3))))


def test_wrn_block_names_and_shortcuts(models):
    model = models["wrn34_10", False]
    assert list(model.blocks) == [f"block{g}_{i}" for g in (1, 2, 3) for i in range(5)]
    # the first block of each group changes width or stride and needs a 1×1 shortcut
    for g in (1, 2, 3):
        assert model.blocks[f"block{g}_0"].shortcut is not None
        assert all(model.blocks[f"block{g}_{i}"].shortcut is None for i in range(1, 5))
    assert model.fc.in_features == 640


# --------------------------------------------------------------------------- model facts (cas_edu.models owns them)

def _wrappers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from helpers import DDPLike, Unregistered

    return [model, torch.nn.Sequential(torch.nn.Identity(), model), DDPLike(model), Unregistered(model)]


def test_model_facts_look_through_wrappers():
    from cas_edu.models import has_cas, model_device, model_dtype, num_classes

    on_meta = SmallCNN(num_classes=7, in_channels=1, widths=(4, 4, 4), cas_layers=["block3"]).to("meta")
    for wrapped in _wrappers(on_meta):
        assert model_device(wrapped).type == "meta"  # the CPU is only the answer for a model without tensors
        assert model_dtype(wrapped) == torch.float32
        assert num_classes(wrapped) == 7
        assert has_cas(wrapped)
    for wrapped in _wrappers(SmallCNN(num_classes=3, in_channels=1, widths=(4, 4, 4)).double()):
        assert model_dtype(wrapped) == torch.float64 and not has_cas(wrapped)
    assert model_device(torch.nn.Flatten()) == torch.device("cpu") and model_dtype(torch.nn.Flatten()) is None


def test_classifier_details_runs_the_classifier_on_what_the_wrapper_feeds_it():
    from cas_edu.models import classifier_details, find_classifier, forward_with_aux

    class Halve(torch.nn.Module):
        def forward(self, x):
            return x / 2

    torch.manual_seed(0)
    inner = SmallCNN(num_classes=10, in_channels=1, widths=(4, 8, 8), cas_layers=["block2", "block3"]).eval()
    wrapped = torch.nn.Sequential(Halve(), inner)
    x = _images("small_cnn", n=3, seed=1)
    assert find_classifier(wrapped) is inner and find_classifier(torch.nn.Flatten()) is None
    with torch.no_grad():
        found, details = classifier_details(wrapped, x)
        expected = inner.forward_details(x / 2)
        logits, aux = forward_with_aux(wrapped, x)
    assert found is inner
    torch.testing.assert_close(details.logits, expected.logits)
    torch.testing.assert_close(details.activations["block1"], expected.activations["block1"])
    torch.testing.assert_close(logits, expected.logits)
    assert len(aux) == 2 and all(torch.equal(a, b) for a, b in zip(aux, expected.aux_logits))
    with pytest.raises(ValueError, match="no cas_edu classifier"):
        classifier_details(torch.nn.Flatten(), x)


def test_moved_model_facts_stay_importable_from_their_old_modules():
    from cas_edu import attacks, models, validation

    for name in ("has_cas", "forward_with_aux", "find_classifier", "classifier_details"):
        assert getattr(attacks, name) is getattr(models, name), name
    for name in ("eval_mode", "model_device", "model_dtype", "num_classes", "refuse_inference_parameters"):
        assert getattr(validation, name) is getattr(models, name), name
        assert getattr(models, name).__module__ == "cas_edu.models"


def test_the_core_modules_import_only_downwards():
    import ast
    from pathlib import Path

    import cas_edu

    rank = {"runtime": 0, "cas": 1, "models": 2, "validation": 3}
    for name in ("cas", "models", "validation"):
        level = rank[name]
        tree = ast.parse((Path(cas_edu.__file__).parent / f"{name}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cas_edu"):
                imported.add(node.module.split(".")[1] if "." in node.module else node.names[0].name)
        upward = {m for m in imported if rank.get(m, 99) >= level}
        assert not upward, f"cas_edu.{name} imports {upward}, which are not below it"
