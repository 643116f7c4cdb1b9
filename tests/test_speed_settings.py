"""The GPU speed settings (bf16 autocast, channels_last, torch.compile) exercised on the CPU: they switch
on where asked, leave the maths unchanged within float tolerance, and bad values are refused."""
from __future__ import annotations

import pytest
import torch

from cas_edu import cli, data, training
from cas_edu.presets import make_config
from cas_edu.runtime import autocast, memory_format, uses_bf16
from cas_edu.training import train


@pytest.fixture(scope="module")
def small() -> data.Dataset:
    ds = data.load("digits")
    return data.Dataset(ds.name, data.Split(ds.train.x[:128], ds.train.y[:128]),
                        data.Split(ds.val.x[:16], ds.val.y[:16]), ds.test, ds.classes)


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
    model_bf16, history_bf16 = train(config(amp="bf16"), dataset=small, progress=False)
    assert seen and all(seen)
    seen.clear()
    model_fp32, history_fp32 = train(config(amp="off"), dataset=small, progress=False)
    assert seen and not any(seen)
    assert history_bf16[0]["train_loss"] == pytest.approx(history_fp32[0]["train_loss"], rel=0.1)
    assert torch.isfinite(params(model_bf16)).all()


def test_channels_last_changes_the_layout_not_the_result(small):
    model_cl, history_cl = train(config(channels_last="on"), dataset=small, progress=False)
    model_c, history_c = train(config(channels_last="off"), dataset=small, progress=False)
    conv = model_cl.blocks["block2"][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model_c.blocks["block2"][0].weight.is_contiguous()
    torch.testing.assert_close(params(model_cl), params(model_c), rtol=1e-3, atol=1e-4)
    assert history_cl[0]["train_loss"] == pytest.approx(history_c[0]["train_loss"], rel=1e-4)


def test_compiled_blocks_train_to_the_same_result(small):
    pytest.importorskip("torch._inductor")
    model_compiled, history_compiled = train(config(compile=True, method="standard"), dataset=small, progress=False)
    model_eager, history_eager = train(config(method="standard"), dataset=small, progress=False)
    assert hasattr(model_compiled.blocks["block1"], "_compiled_call_impl")
    torch.testing.assert_close(params(model_compiled), params(model_eager), rtol=1e-3, atol=1e-4)
    assert history_compiled[0]["train_loss"] == pytest.approx(history_eager[0]["train_loss"], rel=1e-4)


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
