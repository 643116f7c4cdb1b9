"""The notebooks' Colab set-up cell and cas_edu.hosted, on a pretend Colab.

Colab cannot be reached from here. "On Colab" means a fake ``google.colab`` module in ``sys.modules`` (the test the
set-up cell and ``hosted.on_colab`` make), with ``subprocess.run``, ``importlib.util.find_spec`` and
``cas_edu.data.load`` patched: nothing is installed or downloaded. Each set-up cell is read from its notebook's
jupytext source, as ``make links`` wrote it.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import jupytext
import pytest

from helpers import subset, tiny_config

from cas_edu import data, hosted, pipeline, training
from cas_edu.checkpoint import read_checkpoint
from tools import launch_links

NOTEBOOKS = launch_links.scripts()
ENV = ("CAS_EDU_PROFILE", "CAS_EDU_DATA")


def _cells(notebook: Path, tag: str | None) -> list[str]:
    """Code cell sources of ``notebook``: those tagged ``tag``, or (None) the untagged-by-setup ones in order."""
    cells = [c for c in jupytext.read(notebook).cells if c.cell_type == "code"]
    if tag is None:
        return [c.source for c in cells if "setup" not in c.metadata.get("tags", [])]
    return [c.source for c in cells if tag in c.metadata.get("tags", [])]


def _run(source: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(source, "<cell>", "exec"), namespace)
    return namespace


class Colab:
    """What the set-up cell asked of the world: pip runs, find_spec lookups, widget-manager calls, data loads."""

    def __init__(self):
        self.pip, self.lookups, self.widget_manager, self.loads = [], [], 0, []


@pytest.fixture
def world(monkeypatch):
    """A clean environment (no CAS_EDU_* variables, no google.colab) with every side effect recorded, none done."""
    for name in ENV:  # setenv first, so that monkeypatch also removes what the code under test sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.delitem(sys.modules, hosted.COLAB_MODULE, raising=False)
    record, real_find_spec = Colab(), importlib.util.find_spec
    record.installed = True

    def find_spec(name, *args, **kwargs):
        if name == "cas_edu":
            record.lookups.append(name)
            return real_find_spec(name, *args, **kwargs) if record.installed else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: record.pip.append((command, kwargs)))
    monkeypatch.setattr(data, "load", lambda name, root=None, download=False, **kwargs:
                        record.loads.append((name, Path(root), download)))
    return record


@pytest.fixture
def colab(world, monkeypatch):
    """``world`` on a pretend Colab: a fake google.colab module whose widget-manager switch is recorded."""
    def enable_custom_widget_manager():
        world.widget_manager += 1

    module, output = types.ModuleType(hosted.COLAB_MODULE), types.ModuleType(f"{hosted.COLAB_MODULE}.output")
    output.enable_custom_widget_manager = enable_custom_widget_manager
    module.output = output
    monkeypatch.setitem(sys.modules, hosted.COLAB_MODULE, module)
    monkeypatch.setitem(sys.modules, output.__name__, output)
    return world


def _needed_datasets(namespace: dict) -> set[str]:
    """The datasets a notebook's config cell chose, less digits (bundled): what Colab must fetch for it."""
    dataset = namespace.get("DATASET") or pipeline.observation_configs(namespace["PROFILE"])["standard"].dataset
    return {dataset} - {"digits"}


def test_every_notebook_has_one_setup_cell():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    assert all(len(_cells(p, "setup")) == 1 for p in NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_setup_cell_does_nothing_away_from_colab(notebook, world):
    _run(_cells(notebook, "setup")[0])
    assert (world.pip, world.lookups, world.widget_manager, world.loads) == ([], [], 0, [])
    assert not any(name in os.environ for name in ENV)


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "missing"])
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_setup_cell_on_colab(notebook, installed, colab):
    colab.installed = installed
    namespace = _run(_cells(notebook, "setup")[0])
    links = launch_links.read_links()
    expected_pip = [] if installed else [([sys.executable, "-m", "pip", "install", "--quiet",
                                           f"cas_edu @ git+{links.repository}@{links.branch}"], {"check": True})]
    assert colab.pip == expected_pip, "pip runs exactly when cas_edu is not importable"
    assert colab.widget_manager == 1
    assert os.environ["CAS_EDU_PROFILE"] == "colab" and os.environ["CAS_EDU_DATA"] == str(hosted.COLAB_DATA_ROOT)
    _run(_cells(notebook, None)[0], namespace)  # the config cell, after the set-up cell as in the notebook
    assert namespace["PROFILE"] == "colab"
    assert colab.loads == [(name, hosted.COLAB_DATA_ROOT, True) for name in sorted(_needed_datasets(namespace))]


def test_only_notebook_04_fetches_a_dataset_on_colab(colab):
    fetched = {}
    for notebook in NOTEBOOKS:
        colab.loads.clear()
        _run(_cells(notebook, "setup")[0])
        fetched[notebook.name[:2]] = [name for name, _, _ in colab.loads]
    assert fetched == {"01": [], "02": [], "03": [], "04": ["cifar10"]}


def test_a_profile_and_data_folder_set_before_are_kept(colab, monkeypatch, tmp_path):
    monkeypatch.setenv("CAS_EDU_PROFILE", "gpu")
    monkeypatch.setenv("CAS_EDU_DATA", str(tmp_path))
    done = hosted.set_up_colab(datasets=("cifar10",))
    assert (os.environ["CAS_EDU_PROFILE"], os.environ["CAS_EDU_DATA"]) == ("gpu", str(tmp_path))
    assert done == hosted.ColabSetUp("gpu", tmp_path, ("cifar10",))
    assert colab.loads == [("cifar10", tmp_path, True)]


def test_set_up_colab_away_from_colab_returns_none_and_touches_nothing(world):
    assert hosted.set_up_colab(datasets=("cifar10", "svhn")) is None
    assert (world.widget_manager, world.loads) == (0, [])
    assert not any(name in os.environ for name in ENV)


@pytest.mark.parametrize("name", ["digits", "cifar100", "CIFAR10"])
def test_set_up_colab_refuses_what_it_cannot_fetch_even_locally(world, name):
    with pytest.raises(ValueError, match="cifar10"):
        hosted.set_up_colab(datasets=(name,))


# --------------------------------------------------------------------------- Drive


@pytest.fixture
def drive(tmp_path, monkeypatch) -> Path:
    """A pretend mounted Google Drive: ``hosted.DRIVE_ROOT`` pointed at an existing folder in tmp_path."""
    root = tmp_path / "drive" / "MyDrive"
    root.mkdir(parents=True)
    monkeypatch.setattr(hosted, "DRIVE_ROOT", root)
    return root


def test_runs_dir_is_the_default_away_from_colab_even_with_a_drive_folder(world, drive):
    assert hosted.runs_dir() == "runs"
    assert hosted.runs_dir(Path("elsewhere")) == "elsewhere"


def test_runs_dir_on_colab_without_drive_mounted_is_the_default(colab, tmp_path, monkeypatch):
    monkeypatch.setattr(hosted, "DRIVE_ROOT", tmp_path / "not-mounted" / "MyDrive")
    assert hosted.runs_dir("runs") == "runs"


def test_runs_dir_on_colab_with_drive_mounted_is_on_drive(colab, drive):
    assert hosted.runs_dir("runs") == str(drive / "cas_edu" / "runs")
    assert not (drive / "cas_edu").exists(), "runs_dir creates nothing"


def test_a_run_on_drive_resumes_in_the_next_session(colab, drive, digits, monkeypatch):
    # The resume rules themselves are tested in tests/test_run_folder.py
    # (test_train_or_load_resumes_a_run_that_stopped_early) and tests/test_training.py (bit-identical resumption);
    # here: a run kept where runs_dir puts it on Drive is picked up again by the notebook's train_or_load.
    ds, config = subset(digits, 128), tiny_config("standard", epochs=2)
    out_dir = Path(hosted.runs_dir("runs")) / "colab" / "standard"

    def disconnect(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(config, out_dir=out_dir, dataset=ds, progress=False, on_epoch_end=disconnect)
    assert out_dir.is_relative_to(drive) and read_checkpoint(out_dir / "checkpoint.pt")["epoch"] == 1
    first_epoch = read_checkpoint(out_dir / "checkpoint.pt")["history"][0]

    calls, real_train = [], training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(k.get("resume")) or real_train(*a, **k))
    again = Path(hosted.runs_dir("runs")) / "colab" / "standard"  # the new session computes the same folder
    _, history = training.train_or_load(config, again, progress=False, dataset=ds)
    assert calls == [True]
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == first_epoch
