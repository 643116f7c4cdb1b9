"""The CUDA training path (bf16 autocast, channels_last, cudnn.benchmark, compile, GPU-resident data and
augmentation). Skipped without a CUDA device; run it on a GPU machine with ``pytest tests/test_gpu.py``."""
from __future__ import annotations

import pytest
import torch

from cas_edu import data, training
from cas_edu.attacks import pgd
from cas_edu.models import build
from cas_edu.presets import make_config
from cas_edu.training import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cifar_shaped() -> data.Dataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(320, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (320,), generator=generator)
    return data.Dataset("random", data.Split(x[:256], y[:256]), data.Split(x[256:288], y[256:288]),
                        data.Split(x[288:], y[288:]), [str(i) for i in range(10)])


def config(**overrides):
    values = dict(model="resnet18", method="pgd_at", cas=True, epochs=1, batch_size=64, attack_steps=2,
                  val_examples=32, val_attack_steps=1, device="cuda")
    return make_config("cifar10", **{**values, **overrides})


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def test_cuda_epoch_uses_bf16_channels_last_and_cudnn_benchmark(cifar_shaped, monkeypatch):
    real_loss, seen = training.training_loss, []

    def recording_loss(model, x, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cuda"), x.is_contiguous(memory_format=torch.channels_last), x.device.type))
        return real_loss(model, x, *args, **kwargs)

    monkeypatch.setattr(training, "training_loss", recording_loss)
    model, history = train(config(), dataset=cifar_shaped, progress=False)
    assert seen and all(s == (True, True, "cuda") for s in seen)
    assert torch.backends.cudnn.benchmark
    assert next(model.parameters()).device.type == "cuda"
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))


def test_cuda_fp32_epoch_matches_the_cpu_epoch(cifar_shaped):
    small = dict(model="small_cnn", method="standard", amp="off", channels_last="off", augment=False)  # no RNG draws
    model_gpu, history_gpu = train(config(**small), dataset=cifar_shaped, progress=False)
    model_cpu, history_cpu = train(config(**small, device="cpu"), dataset=cifar_shaped, progress=False)
    assert history_gpu[0]["train_loss"] == pytest.approx(history_cpu[0]["train_loss"], rel=1e-3)
    torch.testing.assert_close(params(model_gpu), params(model_cpu), rtol=1e-2, atol=1e-3)


def test_cuda_bf16_epoch_stays_close_to_fp32(cifar_shaped):
    _, history_bf16 = train(config(amp="bf16"), dataset=cifar_shaped, progress=False)
    _, history_fp32 = train(config(amp="off"), dataset=cifar_shaped, progress=False)
    assert history_bf16[0]["train_loss"] == pytest.approx(history_fp32[0]["train_loss"], rel=0.05)


def test_cuda_compiled_epoch_matches_eager(cifar_shaped):
    _, history_compiled = train(config(compile=True, amp="off"), dataset=cifar_shaped, progress=False)
    _, history_eager = train(config(amp="off"), dataset=cifar_shaped, progress=False)
    assert history_compiled[0]["train_loss"] == pytest.approx(history_eager[0]["train_loss"], rel=1e-2)


def test_cuda_attack_respects_the_budget_exactly(cifar_shaped):
    model = build("resnet18", cas=True).cuda().eval()
    x, y = cifar_shaped.test.x.cuda(), cifar_shaped.test.y.cuda()
    eps = 8 / 255
    x_adv = pgd(model, x, y, eps, steps=5, objective="ce+cas")
    assert x_adv.device.type == "cuda"
    assert ((x_adv.double() - x.double()).abs() <= eps).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())
