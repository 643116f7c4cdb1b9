"""Tests for cas_edu.training: every method with and without CAS, schedules, augmentation, MART,
non-finite losses, seeding and bit-identical resumption (in-process and after a real SIGKILL)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import subset, tiny_config

from cas_edu import attacks, data, training
from cas_edu.checkpoint import read_checkpoint
from cas_edu.presets import OFFICIAL, make_config
from cas_edu.losses import mart_loss
from cas_edu.training import NonFiniteLossError, learning_rate_factor, random_crop_flip, train

REPO = Path(__file__).resolve().parents[1]
HISTORY_KEYS = {"epoch", "lr", "train_loss", "train_accuracy", "val_natural_accuracy", "val_robust_accuracy", "seconds"}


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


# --------------------------------------------------------------------------- every method, with and without CAS


@pytest.mark.parametrize("cas", [False, True], ids=["plain", "cas"])
@pytest.mark.parametrize("method", ["standard", "pgd_at", "trades", "mart"])
def test_each_method_trains_one_epoch_and_reports_history(digits, method, cas):
    config = tiny_config(method, cas)
    small = subset(digits, 96, 16)
    started = time.perf_counter()
    model, history = train(config, dataset=small, progress=False)
    elapsed = time.perf_counter() - started
    assert len(history) == 1
    record = history[0]
    assert set(record) == HISTORY_KEYS
    assert record["epoch"] == 1
    assert math.isfinite(record["train_loss"]) and record["train_loss"] > 0
    assert 0.0 <= record["train_accuracy"] <= 1.0
    assert record["val_natural_accuracy"] == training.accuracy(model, small.val.x, small.val.y)  # one epoch: best = last
    if method == "standard":
        assert record["val_robust_accuracy"] is None
    else:
        assert 0.0 <= record["val_robust_accuracy"] <= 1.0
    assert 0 < record["seconds"] <= elapsed  # the epoch's own wall time, in seconds
    assert model.has_cas is cas
    assert not model.training, "train() returns the model in eval mode"
    out = model.forward_details(digits.test.x[:4])
    assert out.logits.shape == (4, 10)
    assert len(out.aux_logits) == (1 if cas else 0)


@pytest.mark.parametrize("method", ["standard", "pgd_at"])
def test_training_lowers_the_loss_and_beats_chance(digits, method):
    config = make_config("digits", method=method, epochs=3, device="cpu", val_examples=144, attack_steps=2,
                         val_attack_steps=2, batch_size=32)
    _, history = train(config, dataset=subset(digits, 512, 144), progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # ten classes: chance is 10 %; over 8 training seeds (benchmarks/test_margins.py) the value was 0.94-1.00
    assert history[-1]["val_natural_accuracy"] > 0.6, history


def test_same_seed_gives_identical_weights_and_different_seed_does_not(digits):
    small = subset(digits, 96, 16)
    first, h1 = train(tiny_config("pgd_at", cas=True, seed=3), dataset=small, progress=False)
    second, h2 = train(tiny_config("pgd_at", cas=True, seed=3), dataset=small, progress=False)
    other, _ = train(tiny_config("pgd_at", cas=True, seed=4), dataset=small, progress=False)
    assert_states_equal(state_of(first), state_of(second))
    assert without_seconds(h1) == without_seconds(h2)
    a, c = state_of(first), state_of(other)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --------------------------------------------------------------------------- learning-rate schedules


def test_one_cycle_factor_rises_to_one_at_40_percent_then_falls_to_zero():
    config = make_config("digits", epochs=10)
    assert not config.lr_drops
    assert learning_rate_factor(config, 0.0) == 0.0
    assert learning_rate_factor(config, 2.0) == pytest.approx(0.5)
    assert learning_rate_factor(config, 4.0) == pytest.approx(1.0)
    assert learning_rate_factor(config, 7.0) == pytest.approx(0.5)
    assert learning_rate_factor(config, 10.0) == pytest.approx(0.0)
    grid = [i / 10 for i in range(101)]
    values = [learning_rate_factor(config, p) for p in grid]
    assert all(0.0 <= v <= 1.0 for v in values)
    rising, falling = values[:41], values[40:]
    assert all(a < b for a, b in zip(rising, rising[1:]))
    assert all(a > b for a, b in zip(falling, falling[1:]))


def test_paper_pgd_at_schedule_counts_epochs_from_one():
    config = make_config("digits", method="pgd_at", preset="paper")
    assert config.lr_drops == {75: 0.1, 90: 0.01} and config.epochs == 200
    # progress p = epochs completed; the running epoch (official, 1-based) is floor(p) + 1
    assert learning_rate_factor(config, 0.0) == 1.0
    assert learning_rate_factor(config, 73.99) == 1.0     # epoch 74
    assert learning_rate_factor(config, 74.0) == 0.1      # epoch 75: first dropped epoch
    assert learning_rate_factor(config, 88.5) == 0.1      # epoch 89
    assert learning_rate_factor(config, 89.0) == 0.01     # epoch 90
    assert learning_rate_factor(config, 199.9) == 0.01


def test_paper_trades_schedule_has_three_drops():
    config = make_config("digits", method="trades", preset="paper")
    assert config.lr_drops == OFFICIAL["trades"]["lr_drops"]
    expected = {0.0: 1.0, 74.5: 0.1, 89.5: 0.01, 98.9: 0.01, 99.0: 0.001}
    for progress, factor in expected.items():
        assert learning_rate_factor(config, progress) == factor, progress


@pytest.fixture
def used(monkeypatch) -> list[float]:
    """The learning rate of every SGD step taken while the test runs, in order."""
    rates: list[float] = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    return rates


def test_train_applies_the_step_schedule_per_batch(digits, used):
    # 64 examples, batch 32: two optimizer steps per epoch; drops at (1-based) epoch 2 (x0.5) and 4 (x0.25)
    config = tiny_config("standard", epochs=4, lr=0.05, lr_drops={2: 0.5, 4: 0.25}, batch_size=32, val_examples=8)
    train(config, dataset=subset(digits, 64, 8), progress=False)
    assert used == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125])


def test_one_cycle_in_train_warms_up_within_the_first_epoch(digits, used):
    config = tiny_config("standard", epochs=2, lr=0.1, batch_size=16, val_examples=8)  # 4 steps per epoch
    train(config, dataset=subset(digits, 64, 8), progress=False)
    expected = [0.1 * learning_rate_factor(config, step / 4) for step in range(8)]
    assert used == pytest.approx(expected)
    assert used[0] == 0.0 and used[1] == pytest.approx(0.1 * 0.25 / 0.8)  # peak at 40 % of 2 epochs


# --------------------------------------------------------------------------- augmentation


def _is_window_of_padded(out: torch.Tensor, image: torch.Tensor, padding: int) -> bool:
    c, h, w = image.shape
    padded = F.pad(image, (padding,) * 4)
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy:dy + h, dx:dx + w]
            if torch.equal(out, window) or torch.equal(out, window.flip(2)):
                return True
    return False


def test_random_crop_flip_is_a_shifted_window_of_the_zero_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 8, 8, generator=g) + 0.5  # no zeros inside, so windows are distinguishable
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(len(x)):
        assert _is_window_of_padded(out[i], x[i], 4), f"image {i} is not a crop of the padded image"
    assert not torch.equal(out, x), "24 images all left untouched is not random"
    # every crop keeps exactly the part of the image that stays in the window: zeros are padding only
    assert ((out == 0) | (out >= 0.5)).all()


def test_random_crop_flip_padding_zero_only_flips():
    x = torch.rand(16, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    out = random_crop_flip(x, torch.Generator().manual_seed(3), padding=0)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(16)]
    for i in range(16):
        assert torch.equal(out[i], x[i]) or flipped[i]
    assert 0 < sum(flipped) < 16


def test_random_crop_flip_is_driven_by_the_generator():
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(0)
    d = random_crop_flip(x, torch.Generator().manual_seed(7))
    torch.manual_seed(1)
    e = random_crop_flip(x, torch.Generator().manual_seed(7))
    assert torch.equal(d, e), "the global RNG must not influence the augmentation"


# --------------------------------------------------------------------------- MART


def _mart_by_hand(adv_logits, natural_logits, y, beta):
    n, k = adv_logits.shape
    total_ce, total_boost, total_robust = 0.0, 0.0, 0.0
    for i in range(n):
        adv = [math.exp(v) for v in adv_logits[i].tolist()]
        adv = [v / sum(adv) for v in adv]
        nat = [math.exp(v) for v in natural_logits[i].tolist()]
        nat = [v / sum(nat) for v in nat]
        label = int(y[i])
        runner_up = max((j for j in range(k) if j != label), key=lambda j: adv[j])
        total_ce += -math.log(adv[label])
        total_boost += -math.log(1.0001 - adv[runner_up])
        kl = sum(nat[j] * (math.log(nat[j]) - math.log(adv[j])) for j in range(k))
        total_robust += kl * (1.0000001 - nat[label])
    return (total_ce + total_boost) / n + beta * total_robust / n


def test_mart_loss_matches_a_hand_computation():
    adv = torch.tensor([[2.0, 0.5, -1.0, 0.1],    # top class is the label: runner-up is class 1
                        [0.3, 1.7, 0.2, -0.4],    # top class is wrong (1): runner-up is class 1
                        [-0.5, 0.0, 0.9, 2.2]], dtype=torch.float64)
    natural = torch.tensor([[1.0, 0.0, 0.0, 0.5],
                            [0.2, 0.1, 1.5, -1.0],
                            [0.0, 0.4, -0.3, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    for beta in (0.0, 1.0, 5.0):
        expected = _mart_by_hand(adv, natural, y, beta)
        assert mart_loss(adv, natural, y, beta).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_mart_loss_is_differentiable_and_grows_with_beta():
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(6, 10, generator=g, requires_grad=True)
    natural = torch.randn(6, 10, generator=g)
    y = torch.arange(6)
    low, high = mart_loss(adv, natural, y, 1.0), mart_loss(adv, natural, y, 6.0)
    assert high > low  # the KL term is positive when adv != natural
    high.backward()
    assert adv.grad is not None and torch.isfinite(adv.grad).all() and adv.grad.abs().sum() > 0


# --------------------------------------------------------------------------- non-finite losses


def test_nan_loss_raises_and_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch):
    real_loss = training.training_loss
    finished: list[int] = []
    saved_bytes: dict[str, bytes] = {}

    def loss_that_breaks_in_epoch_two(model, x, y, config, **kwargs):
        loss, logits = real_loss(model, x, y, config, **kwargs)
        return (loss * float("nan") if finished else loss), logits

    def remember(record):
        finished.append(record["epoch"])
        saved_bytes["checkpoint"] = (tmp_path / "checkpoint.pt").read_bytes()
        saved_bytes["best"] = (tmp_path / "best.pt").read_bytes()

    monkeypatch.setattr(training, "training_loss", loss_that_breaks_in_epoch_two)
    config = tiny_config("pgd_at", epochs=3)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, out_dir=tmp_path, dataset=subset(digits, 64, 8), progress=False, on_epoch_end=remember)
    message = str(info.value)
    assert "epoch 2" in message
    assert "--lr" in message and "batch" in message.lower()
    assert finished == [1]
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved_bytes["checkpoint"]
    assert (tmp_path / "best.pt").read_bytes() == saved_bytes["best"]
    payload = read_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["epoch"] == 1 and len(payload["history"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "best.pt", "checkpoint.pt", "history.json"]
    monkeypatch.setattr(training, "training_loss", real_loss)
    model, history = train(config, out_dir=tmp_path, resume=True, progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_huge_learning_rate_is_reported_as_non_finite(digits):
    config = tiny_config("standard", epochs=3, lr=1e12, batch_size=16, val_examples=8)
    with pytest.raises(NonFiniteLossError, match="lr"):
        train(config, dataset=subset(digits, 64, 8), progress=False)


# --------------------------------------------------------------------------- resume


def test_resume_without_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume"):
        train(tiny_config("standard"), out_dir=tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(FileNotFoundError):
        train(tiny_config("standard"), out_dir=None, resume=True, progress=False)


def test_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(digits, tmp_path):
    small = subset(digits, 128, 16)
    config = tiny_config("pgd_at", cas=True, epochs=3, attack_steps=2, augment=True, batch_size=48)
    model_a, history_a = train(config, out_dir=tmp_path / "a", dataset=small, progress=False)

    def interrupt_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out_dir=tmp_path / "b", dataset=small, progress=False, on_epoch_end=interrupt_after_first_epoch)
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(12345)  # disturb the global RNG: resumption must restore it from the checkpoint
    model_b, history_b = train(config, out_dir=tmp_path / "b", dataset=small, resume=True, progress=False)

    assert_states_equal(state_of(model_a), state_of(model_b))
    assert without_seconds(history_a) == without_seconds(history_b)
    saved_a = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    saved_b = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert saved_a["epoch"] == saved_b["epoch"] == 3
    assert_states_equal(saved_a["model_state"], saved_b["model_state"])
    assert_states_equal(read_checkpoint(tmp_path / "a" / "best.pt")["model_state"],
                        read_checkpoint(tmp_path / "b" / "best.pt")["model_state"])


def test_resume_of_a_finished_run_trains_nothing_more(digits, tmp_path):
    small = subset(digits, 64, 8)
    config = tiny_config("standard", epochs=2, val_examples=8)
    model, history = train(config, out_dir=tmp_path, dataset=small, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    again, history_again = train(config, out_dir=tmp_path, dataset=small, resume=True, progress=False)
    assert without_seconds(history_again) == without_seconds(history)
    assert_states_equal(state_of(model), state_of(again))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cas_edu", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow
def test_cli_run_killed_with_sigkill_resumes_to_identical_weights(tmp_path):
    common = ["--epochs", "4", "--quiet", "--device", "cpu", "--attack-steps", "2", "--cas"]
    reference = subprocess.run(_cli("--out", str(tmp_path / "ref"), *common), env=_env(), cwd=REPO,
                               capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    process = subprocess.Popen(_cli("--out", str(run), *common), env=_env(), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_at = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and process.poll() is None:
            checkpoint = run / "checkpoint.pt"
            if checkpoint.is_file():
                epoch = read_checkpoint(checkpoint)["epoch"]  # atomic writes: never a half file
                if epoch >= 1:
                    process.send_signal(signal.SIGKILL)
                    killed_at = epoch
                    break
            time.sleep(0.01)
    finally:
        if process.poll() is None and killed_at is None:
            process.kill()
        process.wait(timeout=60)
    assert killed_at is not None, f"the run ended before it could be killed: {process.stderr.read()}"
    assert process.returncode == -signal.SIGKILL
    assert 1 <= read_checkpoint(run / "checkpoint.pt")["epoch"] < 4, "killed too late to test resumption"

    resumed = subprocess.run(_cli("--out", str(run), "--resume", "--quiet", "--device", "cpu"), env=_env(),
                             cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    final_ref = read_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    final_run = read_checkpoint(run / "checkpoint.pt")
    assert final_ref["epoch"] == final_run["epoch"] == 4
    assert_states_equal(final_ref["model_state"], final_run["model_state"])
    assert without_seconds(final_ref["history"]) == without_seconds(final_run["history"])


# --------------------------------------------------------------------------- the paper preset as the official recipe


def _recorded_weight_decay(digits, monkeypatch, **overrides) -> tuple[dict[int, float], dict[int, int]]:
    """{id(parameter): weight decay} from the optimizer's groups at its first step, and {id(parameter): dim}."""
    seen: dict[int, float] = {}
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        if not seen:
            seen.update({id(p): g["weight_decay"] for g in self.param_groups for p in g["params"]})
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    model, _ = train(tiny_config("standard", cas=True, **overrides), dataset=subset(digits, 64, 8), progress=False)
    return {id(p): seen[id(p)] for p in model.parameters()}, p_dims(model)


def p_dims(model: torch.nn.Module) -> dict[int, int]:
    return {id(p): p.dim() for p in model.parameters()}


def test_paper_preset_decays_every_parameter_like_the_official_scripts(digits, monkeypatch):
    """All three official scripts pass model.parameters() to SGD with weight_decay: BatchNorm and biases too."""
    config = make_config("digits", method="trades", preset="paper")
    assert config.decay_1d_params is True and config.to_dict()["decay_1d_params"] is True
    decay, dims = _recorded_weight_decay(digits, monkeypatch, preset="paper", epochs=1, lr_drops={})
    assert 1 in dims.values() and all(d == OFFICIAL["standard"]["weight_decay"] for d in decay.values())


def test_fast_preset_exempts_one_dimensional_parameters_from_weight_decay(digits, monkeypatch):
    assert make_config("digits").decay_1d_params is False
    decay, dims = _recorded_weight_decay(digits, monkeypatch)
    assert {decay[i] for i, d in dims.items() if d == 1} == {0.0}
    assert {decay[i] for i, d in dims.items() if d > 1} == {make_config("digits", method="standard").weight_decay}


def test_training_runs_in_fp32_unless_bf16_is_asked_for(monkeypatch):
    from cas_edu import cli
    from cas_edu.runtime import uses_bf16

    for preset in ("paper", "fast"):
        config = make_config("cifar10", model="resnet18", method="pgd_at", cas=True, preset=preset)
        assert config.amp == "off" and not uses_bf16(config.amp, torch.device("cuda"))
    args = cli.build_parser().parse_args(["train", "--out", "x"])
    assert args.amp == "off"
    assert make_config("digits", amp="bf16").amp == "bf16"


def test_train_without_a_validation_split_keeps_the_last_epoch(digits, tmp_path):
    """val_fraction 0 (the official scripts' 50,000 training images): no validation, best.pt = last epoch."""
    everything = data.load("digits", val_fraction=0)
    small = data.Dataset(everything.name, data.Split(everything.train.x[:64], everything.train.y[:64]),
                         everything.val, everything.test, everything.classes)
    config = tiny_config("pgd_at", epochs=2, val_fraction=0.0)
    _, history = train(config, out_dir=tmp_path, dataset=small, progress=False)
    assert [(r["val_natural_accuracy"], r["val_robust_accuracy"]) for r in history] == [(None, None)] * 2
    assert_states_equal(read_checkpoint(tmp_path / "best.pt")["model_state"],
                        read_checkpoint(tmp_path / "checkpoint.pt")["model_state"])
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_pt"].startswith("last epoch") and saved["config"]["val_fraction"] == 0.0
    _, resumed = train(config, out_dir=tmp_path, resume=True, progress=False)  # resumes with the saved config
    assert without_seconds(resumed) == without_seconds(history)


def test_cli_val_fraction_zero_trains_on_every_training_image(tmp_path, capsys):
    from cas_edu import cli

    code = cli.main(["train", "--out", str(tmp_path / "all"), "--method", "standard", "--epochs", "1", "--quiet",
                     "--device", "cpu", "--val-fraction", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "no validation split" in out and "best.pt is the last epoch" in out
    saved = json.loads((tmp_path / "all" / "history.json").read_text())
    assert saved["config"]["val_fraction"] == 0.0 and saved["history"][0]["val_natural_accuracy"] is None
    assert cli.main(["train", "--out", str(tmp_path / "bad"), "--val-fraction", "1"]) == 2
    assert "val_fraction" in capsys.readouterr().err


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_a_val_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        make_config("digits", val_fraction=fraction)


# --------------------------------------------------------------------------- PGD starting points


class _FlatModel(torch.nn.Module):
    """Logits with a zero input gradient: PGD's steps are sign(0) = 0, so x_adv is the starting point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 10) + 0.0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_normal_start_is_x_plus_a_thousandth_of_gaussian_noise(norm):
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    y = torch.zeros(64, dtype=torch.long)
    torch.manual_seed(5)
    x_adv = attacks.pgd(_FlatModel(), x, y, 0.1, step_size=0.01, steps=2, random_start="normal", norm=norm)
    torch.manual_seed(5)
    expected = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)  # ‖noise‖ ≪ ε: no projection on the ball
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-7)
    torch.manual_seed(5)
    uniform = attacks.pgd(_FlatModel(), x, y, 0.1, step_size=0.01, steps=2, random_start="uniform", norm=norm)
    assert (uniform - x).abs().max() > 0.01 > (x_adv - x).abs().max()


def test_pgd_random_start_keeps_its_boolean_meaning():
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(16, dtype=torch.long)
    runs = {}
    for start in (True, "uniform", False, "none"):
        torch.manual_seed(3)
        runs[start] = attacks.pgd(_FlatModel(), x, y, 0.1, steps=1, random_start=start)
    assert torch.equal(runs[True], runs["uniform"]) and (runs[True] - x).abs().max() > 0.05
    assert torch.equal(runs[False], x) and torch.equal(runs["none"], x)
    with pytest.raises(ValueError, match="random_start"):
        attacks.pgd(_FlatModel(), x, y, 0.1, random_start="gaussian")


# --------------------------------------------------------------------------- the trainer's named steps


def test_the_named_steps_called_by_hand_reproduce_train(digits, tmp_path):
    """set_up, then run_epoch, validate and save for every epoch, is the whole of train's loop: the same weights,
    history and run files, bit for bit."""
    small = subset(digits, 96, 16)
    config = tiny_config("trades", cas=True, epochs=2, seed=5)
    model, history = train(config, out_dir=tmp_path / "train", dataset=small, progress=False)
    run = training.set_up(config, small)
    (tmp_path / "steps").mkdir()
    for epoch in range(config.epochs):
        record = {"epoch": epoch + 1, **training.run_epoch(run, epoch), **training.validate(run), "seconds": 0.0}
        run.history.append(record)
        training.save(run, tmp_path / "steps")
    assert_states_equal(state_of(run.model), state_of(model))
    assert without_seconds(run.history) == without_seconds(history)
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["best.pt", "checkpoint.pt", "history.json"]
    for name in ("checkpoint.pt", "best.pt"):
        by_train, by_hand = read_checkpoint(tmp_path / "train" / name), read_checkpoint(tmp_path / "steps" / name)
        assert by_train["epoch"] == by_hand["epoch"]
        assert_states_equal(by_train["model_state"], by_hand["model_state"])
    assert torch.equal(read_checkpoint(tmp_path / "train" / "checkpoint.pt")["rng"]["data"],
                       read_checkpoint(tmp_path / "steps" / "checkpoint.pt")["rng"]["data"])


def test_run_epoch_takes_one_step_per_batch_and_reports_the_last_learning_rate(digits):
    config = tiny_config("standard", batch_size=16, epochs=2)
    run = training.set_up(config, subset(digits, 64, 8))
    before = state_of(run.model)
    result = training.run_epoch(run, 0)
    assert set(result) == {"lr", "train_loss", "train_accuracy"}
    assert run.scheduler.last_epoch == len(training.epoch_batches(64, 16)) == 4
    assert result["lr"] == pytest.approx(config.lr * learning_rate_factor(config, 3 / 4))
    after = state_of(run.model)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_validate_measures_what_best_pt_is_chosen_by(digits):
    small = subset(digits, 32, 8)
    adversarial = training.set_up(tiny_config("pgd_at"), small)
    standard = training.set_up(tiny_config("standard"), small)
    without_val = training.set_up(tiny_config("pgd_at"), subset(digits, 32, 0))
    measured = training.validate(adversarial)
    assert measured["val_natural_accuracy"] == training.accuracy(adversarial.model, small.val.x, small.val.y)
    assert 0.0 <= measured["val_robust_accuracy"] <= 1.0
    assert training.validate(standard)["val_robust_accuracy"] is None
    assert training.validate(standard)["val_natural_accuracy"] is not None
    assert training.validate(without_val) == {"val_natural_accuracy": None, "val_robust_accuracy": None}


def test_save_writes_checkpoint_before_best_and_keeps_the_earliest_best_epoch(digits, tmp_path, monkeypatch):
    run = training.set_up(tiny_config("pgd_at"), subset(digits, 32, 8))
    written: list[tuple[str, int]] = []
    monkeypatch.setattr(training, "save_checkpoint", lambda path, payload: written.append((path.name, payload["epoch"])))
    monkeypatch.setattr(training, "write_json",
                        lambda path, payload: written.append((path.name, payload["history"][-1]["epoch"])))
    for epoch, robust in [(1, 0.5), (2, 0.25), (3, 0.75), (4, 0.75)]:
        run.history.append({"epoch": epoch, "val_natural_accuracy": 0.9, "val_robust_accuracy": robust})
        training.save(run, tmp_path)
    assert written == [("checkpoint.pt", 1), ("best.pt", 1), ("history.json", 1),
                       ("checkpoint.pt", 2), ("history.json", 2),
                       ("checkpoint.pt", 3), ("best.pt", 3), ("history.json", 3),
                       ("checkpoint.pt", 4), ("history.json", 4)]
    assert (run.best_epoch, run.best_score) == (3, 0.75)
