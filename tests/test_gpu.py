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
from helpers import one_training_step

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


def test_cuda_epoch_uses_bf16_channels_last_and_cudnn_benchmark(cifar_shaped, monkeypatch):
    real_loss, seen = training.training_loss, []

    def recording_loss(model, x, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cuda"), x.is_contiguous(memory_format=torch.channels_last), x.device.type))
        return real_loss(model, x, *args, **kwargs)

    monkeypatch.setattr(training, "training_loss", recording_loss)
    model, history = train(config(amp="bf16"), dataset=cifar_shaped, progress=False)  # fp32 unless asked
    assert seen and all(s == (True, True, "cuda") for s in seen)
    assert torch.backends.cudnn.benchmark
    assert next(model.parameters()).device.type == "cuda"
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))


@pytest.fixture
def exact_fp32():
    """Plain fp32 matmuls and convolutions (PyTorch may otherwise use TF32 on Ampere and later)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def same_weights(name: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(name, num_classes=10, in_channels=3, cas=True).to(device)


# Each setting is compared on one training step from the same weights and batch, where only the kernels
# differ; whole adversarial training runs are not compared (they amplify rounding by a machine-dependent
# amount). The tolerances below have not been measured on a GPU yet (no GPU was lent so far).
def test_cuda_fp32_step_matches_the_cpu_step(cifar_shaped, exact_fp32):
    x, y = cifar_shaped.train.x[:64], cifar_shaped.train.y[:64]
    loss_gpu, grads_gpu = one_training_step(same_weights("small_cnn", "cuda"), x.cuda(), y.cuda())
    loss_cpu, grads_cpu = one_training_step(same_weights("small_cnn", "cpu"), x, y)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-5)
    torch.testing.assert_close(grads_gpu, grads_cpu, rtol=1e-4, atol=1e-5)


def test_cuda_bf16_step_stays_close_to_fp32(cifar_shaped, exact_fp32):
    x, y = cifar_shaped.train.x[:64].cuda(), cifar_shaped.train.y[:64].cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss_bf16, _ = one_training_step(same_weights("resnet18", "cuda"), x, y)
    loss_fp32, _ = one_training_step(same_weights("resnet18", "cuda"), x, y)
    assert loss_bf16 == pytest.approx(loss_fp32, rel=0.05)


def test_cuda_compiled_blocks_match_eager(cifar_shaped, exact_fp32):
    model_compiled, history = train(config(compile=True, amp="off"), dataset=cifar_shaped, progress=False)
    assert torch.isfinite(torch.tensor(history[0]["train_loss"]))
    model_eager = same_weights("resnet18", "cuda")
    model_eager.load_state_dict(model_compiled.state_dict())
    x, y = cifar_shaped.train.x[:64].cuda(), cifar_shaped.train.y[:64].cuda()
    loss_compiled, grads_compiled = one_training_step(model_compiled, x, y)
    loss_eager, grads_eager = one_training_step(model_eager, x, y)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-4)
    torch.testing.assert_close(grads_compiled, grads_eager, rtol=1e-3, atol=1e-4)


def test_cuda_attack_respects_the_budget_exactly(cifar_shaped):
    model = build("resnet18", cas=True).cuda().eval()
    x, y = cifar_shaped.test.x.cuda(), cifar_shaped.test.y.cuda()
    eps = 8 / 255
    x_adv = pgd(model, x, y, eps, steps=5, objective="ce+cas")
    assert x_adv.device.type == "cuda"
    assert ((x_adv.double() - x.double()).abs() <= eps).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())
