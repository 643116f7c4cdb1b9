"""Every notebook's config cell takes the same profiles (cpu, colab, gpu) and refuses any other name.

Each test runs only the notebook's first code cell (the ALL-CAPS config) under ``CAS_EDU_PROFILE``: nothing
trains or loads data, so the gpu and colab branches are checked here although this machine has no GPU.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

from cas_edu import evaluation, pipeline, presets

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0[1-4]_*.py"))
PROFILES = ("cpu", "colab", "gpu")


def config_cell(notebook: Path, profile: str | None, monkeypatch) -> dict:
    """The namespace left by running ``notebook``'s first code cell with ``CAS_EDU_PROFILE=profile``."""
    if profile is None:
        monkeypatch.delenv("CAS_EDU_PROFILE", raising=False)
    else:
        monkeypatch.setenv("CAS_EDU_PROFILE", profile)
    cells = [c for c in jupytext.read(notebook).cells
             if c.cell_type == "code" and "setup" not in c.metadata.get("tags", [])]  # skip the Colab set-up cell
    namespace: dict = {}
    exec(compile(cells[0].source, f"{notebook.name}[config]", "exec"), namespace)
    return namespace


def test_there_are_four_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
@pytest.mark.parametrize("profile", PROFILES)
def test_config_cell_takes_each_profile(notebook, profile, monkeypatch):
    assert config_cell(notebook, profile, monkeypatch)["PROFILE"] == profile


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_config_cell_defaults_to_cpu(notebook, monkeypatch):
    assert config_cell(notebook, None, monkeypatch)["PROFILE"] == "cpu"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
@pytest.mark.parametrize("name", ["full", "tpu", ""])
def test_config_cell_refuses_other_names_listing_the_valid_ones(notebook, name, monkeypatch):
    with pytest.raises(ValueError) as error:
        config_cell(notebook, name, monkeypatch)
    assert all(valid in str(error.value) for valid in PROFILES)


def _notebook(prefix: str) -> Path:
    return next(p for p in NOTEBOOKS if p.name.startswith(prefix))


def test_01_gpu_trains_longer_on_the_whole_test_split(monkeypatch):
    small, colab, gpu = (config_cell(_notebook("01"), p, monkeypatch) for p in ("cpu", "colab", "gpu"))
    assert (small["EPOCHS"], small["N_EVAL"]) == (colab["EPOCHS"], colab["N_EVAL"]) == (6, 200)
    assert (gpu["EPOCHS"], gpu["N_EVAL"]) == (12, None)


def test_02_colab_probes_the_cpu_runs_and_gpu_the_papers_setting(monkeypatch):
    cpu, colab, gpu = (config_cell(_notebook("02"), p, monkeypatch) for p in ("cpu", "colab", "gpu"))
    assert {k: c.to_dict() for k, c in colab["CONFIGS"].items()} == {k: c.to_dict() for k, c in cpu["CONFIGS"].items()}
    assert (cpu["DATASET"], cpu["MODEL"]) == ("digits", "resnet18_w32")
    assert (gpu["DATASET"], gpu["MODEL"], gpu["EPS"]) == ("cifar10", "resnet18", pytest.approx(8 / 255))


def test_03_gpu_evaluation_runs_the_adaptive_checks_on_the_whole_test_split(monkeypatch):
    cpu, colab, gpu = (config_cell(_notebook("03"), p, monkeypatch) for p in ("cpu", "colab", "gpu"))
    keys = ("N_EVAL", "N_COSTLY", "SQUARE_QUERIES", "EVAL_ATTACKS")
    assert [cpu[k] for k in keys] == [colab[k] for k in keys]
    assert (gpu["N_EVAL"], gpu["N_COSTLY"], gpu["SQUARE_QUERIES"]) == (10_000, 1_000, 5_000)
    for attacks in (cpu["EVAL_ATTACKS"], gpu["EVAL_ATTACKS"]):
        for name in attacks:
            evaluation.attack_entry(name)  # raises for a name the evaluation does not know
    assert {"autoattack", "pgd-st"} <= set(gpu["EVAL_ATTACKS"]) and not {"autoattack", "pgd-st"} & set(cpu["EVAL_ATTACKS"])
    assert pipeline.observation_configs(gpu["PROFILE"])["pgd_at"].to_dict() == \
        pipeline.suite_configs("gpu", methods=["pgd_at"])["pgd_at"].to_dict()
    assert pipeline.observation_run_dir("runs", colab["PROFILE"], "pgd_at") == \
        pipeline.observation_run_dir("runs", "cpu", "pgd_at")


def test_04_dataset_follows_the_profile(monkeypatch):
    datasets = {p: config_cell(_notebook("04"), p, monkeypatch)["DATASET"] for p in PROFILES}
    assert datasets == {"cpu": "digits", "colab": "cifar10", "gpu": "cifar10"}


def test_colab_profile_trains_at_and_at_cas_within_its_estimated_budget():
    configs = pipeline.suite_configs("colab")
    assert list(configs) == ["pgd_at", "pgd_at+cas"]
    assert all(c.dataset == "cifar10" and c.model == "resnet18" and c.amp == "off" for c in configs.values())
    hours = sum(presets.estimate_train_seconds(c, presets.COLAB_T4_FP32_FLOPS) for c in configs.values()) / 3600
    # 2 h in all; the evaluation (both models, 1,000 images + the costly attacks on 200) is estimated at ~0.15 h.
    assert hours <= 1.75


def test_estimate_train_seconds_matches_the_guides_pgd10_epoch():
    # GUIDE §2: a PGD-10 ResNet-18 epoch on 50,000 CIFAR-10 images is ~1.28 PFLOP, 1.6 s at 790 TFLOP/s.
    config = presets.make_config("cifar10", "resnet18", "pgd_at", False, "paper", epochs=1, val_fraction=0)
    assert presets.estimate_train_seconds(config, 790e12) == pytest.approx(1.28e15 / 790e12, rel=0.01)
    standard = presets.make_config("cifar10", "resnet18", "standard", False, "paper", epochs=2, val_fraction=0.1)
    assert presets.estimate_train_seconds(standard, 1e12) == pytest.approx(2 * 45_000 * 3 * 1.11e9 / 1e12)


@pytest.mark.parametrize("bad", [dict(dataset="digits", model="small_cnn"), dict(dataset="cifar10", model="wide_cnn")])
def test_estimate_train_seconds_refuses_unsized_runs(bad):
    with pytest.raises(ValueError, match="no size recorded"):
        presets.estimate_train_seconds(presets.make_config(bad["dataset"], bad["model"], "pgd_at"), 1e12)
    with pytest.raises(ValueError, match="positive"):
        presets.estimate_train_seconds(presets.make_config("cifar10", "resnet18", "pgd_at"), 0.0)
