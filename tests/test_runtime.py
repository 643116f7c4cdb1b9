"""cas_edu.runtime: the forked, seeded RNG block, the RNG state save/restore used by resume, progress bars and
torch.compile of the blocks."""
from __future__ import annotations

import sys

import pytest
import torch

from cas_edu.models import build
from cas_edu.runtime import compile_blocks, restore_rng, rng_state, seeded, show_progress


def test_seeded_same_seed_gives_the_same_draws():
    with seeded(3):
        first = torch.rand(8)
    with seeded(3):
        second = torch.rand(8)
    assert torch.equal(first, second)


def test_seeded_different_seed_gives_different_draws():
    with seeded(3):
        first = torch.rand(8)
    with seeded(4):
        second = torch.rand(8)
    assert not torch.equal(first, second)


def test_seeded_leaves_the_callers_generator_as_it_was():
    torch.manual_seed(11)
    expected = torch.rand(8)
    torch.manual_seed(11)
    with seeded(3, device="cpu"):
        torch.rand(100)
    assert torch.equal(torch.rand(8), expected)


def test_seeded_restores_the_generator_after_an_error():
    torch.manual_seed(11)
    expected = torch.rand(8)
    torch.manual_seed(11)
    with pytest.raises(KeyError):
        with seeded(3):
            torch.rand(100)
            raise KeyError("inside")
    assert torch.equal(torch.rand(8), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seeded_forks_and_seeds_the_cuda_generator():
    device = torch.device("cuda")
    torch.cuda.manual_seed(11)
    expected = torch.rand(8, device=device)
    torch.cuda.manual_seed(11)
    with seeded(3, device):
        inside = torch.rand(8, device=device)
    with seeded(3, device):
        again = torch.rand(8, device=device)
    assert torch.equal(inside, again)
    assert torch.equal(torch.rand(8, device=device), expected)


def test_restore_rng_puts_back_every_generator_rng_state_saved():
    import random

    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(6)
    random.seed(7)
    state = rng_state(generator)
    first = (torch.rand(4), random.random(), torch.rand(4, generator=generator))
    restore_rng(state, generator)
    again = (torch.rand(4), random.random(), torch.rand(4, generator=generator))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and torch.equal(first[2], again[2])


def test_show_progress_follows_the_argument_else_whether_someone_watches(monkeypatch):
    assert show_progress(True) is True and show_progress(False) is False
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert show_progress(None) is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(None) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert show_progress(None) is True


def test_compile_blocks_compiles_the_stem_every_block_and_the_head_not_the_cas_modules(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    model = build("resnet18", num_classes=10, in_channels=1, cas=True)
    compile_blocks(model)
    assert compiled == [model.stem, *model.blocks.values(), model.fc]
    assert not any(module in compiled for module in model.cas.values())


def test_progress_bar_is_tqdm_auto_unless_the_build_asks_for_text(monkeypatch):
    import io

    import tqdm.auto
    import tqdm.std

    from cas_edu.runtime import PROGRESS_ENV, progress_bar

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    with progress_bar(range(3), disable=True) as bar:
        assert isinstance(bar, tqdm.auto.tqdm)
    monkeypatch.setenv(PROGRESS_ENV, "auto")
    with progress_bar(range(3), disable=True) as bar:
        assert isinstance(bar, tqdm.auto.tqdm)
    monkeypatch.setenv(PROGRESS_ENV, " Text ")
    stream = io.StringIO()
    assert list(progress_bar(range(3), desc="work", file=stream, mininterval=0)) == [0, 1, 2]
    assert stream.getvalue().rsplit("\r", 1)[-1].startswith("work: 100%|") and "3/3" in stream.getvalue()
    with progress_bar(range(3), disable=True) as bar:
        assert type(bar) is tqdm.std.tqdm  # plain text, no widget
    monkeypatch.setenv(PROGRESS_ENV, "widget")
    with pytest.raises(ValueError, match="CAS_EDU_PROGRESS='widget' is not a progress style; set it to 'auto' or"):
        progress_bar(range(3))
