"""DistributedDataParallel training on the CPU: gloo backend, two processes started by torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cas_edu import distributed
from cas_edu.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TRAIN_ARGS = ["--dataset", "digits", "--model", "small_cnn", "--epochs", "2", "--batch-size", "64",
              "--attack-steps", "2", "--device", "cpu", "--quiet", "--json"]


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_partition_every_global_batch(world_size):
    for size in [1, 7, 64, 65]:
        batch = torch.arange(size) * 10
        shards = [distributed.Group(rank=r, world_size=world_size).shard(batch) for r in range(world_size)]
        assert sorted(torch.cat(shards).tolist()) == batch.tolist()
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_a_single_process_group_changes_nothing():
    group, device = distributed.from_environment(torch.device("cpu"))
    batch = torch.randn(5, 3)
    assert (group.rank, group.world_size, group.is_main, device.type) == (0, 1, True, "cpu")
    assert group.shard(batch) is batch
    assert torch.equal(group.sum(batch), batch)


def _train(out: Path, method: str, nproc: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
                if nproc > 1 else [sys.executable, "-m"])
    result = subprocess.run([*launcher, "cas_edu", "train", *TRAIN_ARGS, "--method", method, "--cas",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {(method, nproc): (root / f"{method}_{nproc}", _train(root / f"{method}_{nproc}", method, nproc))
            for method in ["standard", "pgd_at"] for nproc in [1, 2]}


@pytest.mark.parametrize("method", ["standard", "pgd_at"])
def test_two_gloo_processes_match_one_process(runs, method):
    (_, single), (_, ddp) = runs[(method, 1)], runs[(method, 2)]
    assert [r["epoch"] for r in ddp] == [1, 2]
    for one, two in zip(single, ddp):
        # same global batches and learning rates; each process normalises its half batch (no SyncBN on gloo)
        assert two["lr"] == pytest.approx(one["lr"], rel=1e-6)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.05)
        assert two["train_accuracy"] == pytest.approx(one["train_accuracy"], abs=0.05)
    assert ddp[-1]["val_natural_accuracy"] == pytest.approx(single[-1]["val_natural_accuracy"], abs=0.08)


def test_rank_zero_writes_one_run_folder_that_loads(runs):
    folder, history = runs[("pgd_at", 2)]
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "checkpoint.pt", "history.json"]
    payload = read_checkpoint(folder / "checkpoint.pt")
    assert payload["epoch"] == 2 and payload["history"] == history
    assert all(r["val_robust_accuracy"] is not None for r in history)


GRADIENT_SCRIPT = '''
import sys, torch, torch.nn.functional as F
from torch import nn
from cas_edu import distributed
from cas_edu.models import CASClassifier, ModelOutput

class Linear(CASClassifier):  # no BatchNorm, so the per-process forward is exactly the global one
    def __init__(self):
        super().__init__(num_classes=3, cas_layers=None)
        self.fc = nn.Linear(4, 3)
    def forward_details(self, x, y=None):
        return ModelOutput(logits=self.fc(x))

torch.manual_seed(0)
model = Linear()
x, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
group, device = distributed.from_environment(torch.device("cpu"))
forward = distributed.training_forward(model, group, device)
xs, ys = group.shard(x), group.shard(y)
loss = F.cross_entropy(forward(xs, ys).logits, ys)
group.global_mean_loss(loss, len(ys), len(y)).backward()
torch.save({n: p.grad for n, p in model.named_parameters()}, sys.argv[1] + f"/rank{group.rank}.pt")
group.close()
'''


def test_ddp_gradients_equal_the_global_batch_gradient_with_uneven_shards(tmp_path):
    script = tmp_path / "gradients.py"
    script.write_text(GRADIENT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3)
    x, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    expected = {"fc.weight": reference.weight.grad, "fc.bias": reference.bias.grad}
    for rank in range(2):  # 4 and 3 examples per process; DDP leaves the same averaged gradient on both
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, value in expected.items():
            torch.testing.assert_close(grads[name], value, rtol=1e-5, atol=1e-6)
