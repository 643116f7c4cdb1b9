"""Tests for cas_edu.checkpoint: atomic writes, safe loading, refusal of pickled code, train_or_load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cas_edu
from cas_edu import checkpoint, data, training
from cas_edu.checkpoint import FORMAT, load_checkpoint, read_checkpoint, save_checkpoint, write_json
from cas_edu.presets import TrainConfig, make_config
from cas_edu.training import train, train_or_load

RUN_FILES = ["best.pt", "checkpoint.pt", "history.json"]


def subset(dataset: data.Dataset, n_train: int, n_val: int = 16) -> data.Dataset:
    return data.Dataset(dataset.name, data.Split(dataset.train.x[:n_train], dataset.train.y[:n_train]),
                        data.Split(dataset.val.x[:n_val], dataset.val.y[:n_val]), dataset.test, dataset.classes)


def tiny_config(**overrides) -> TrainConfig:
    values = dict(method="pgd_at", cas=True, epochs=1, device="cpu", val_examples=16, attack_steps=1,
                  val_attack_steps=1, batch_size=64)
    values.update(overrides)
    return make_config("digits", **values)


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits")


@pytest.fixture(scope="module")
def small(digits) -> data.Dataset:
    return subset(digits, 96)


@pytest.fixture(scope="module")
def run(tmp_path_factory, small):
    """A one-epoch PGD-AT + CAS run: (folder, trained model, history, config)."""
    folder = tmp_path_factory.mktemp("run")
    config = tiny_config()
    model, history = train(config, out_dir=folder, dataset=small, progress=False)
    return folder, model, history, config


# --------------------------------------------------------------------------- what a run writes


def test_run_folder_holds_exactly_the_run_files_and_no_temporaries(run):
    folder, _, history, config = run
    assert sorted(p.name for p in folder.iterdir()) == RUN_FILES
    saved = json.loads((folder / "history.json").read_text())
    assert saved["config"] == json.loads(json.dumps(config.to_dict()))
    assert len(saved["history"]) == 1 and saved["history"][0]["epoch"] == 1


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_checkpoints_load_with_weights_only(run, name):
    folder, model, _, config = run
    payload = torch.load(folder / name, weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["config"] == config.to_dict()
    assert payload["epoch"] == 1
    assert payload["model_spec"] == {"name": "small_cnn", "num_classes": 10, "in_channels": 1,
                                     "cas_layers": ["block3"]}
    assert payload["model_state"].keys() == model.state_dict().keys()
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in payload["model_state"].values())
    if name == "checkpoint.pt":
        for key in ("optimizer_state", "scheduler_state", "history", "rng", "best_robust"):
            assert key in payload


def test_load_checkpoint_gives_an_eval_mode_model_with_the_same_logits(run, digits):
    folder, model, _, _ = run
    x = digits.test.x[:32]
    with torch.no_grad():
        expected = model.eval()(x)
    for source in (folder, str(folder), folder / "checkpoint.pt", folder / "best.pt"):
        loaded = load_checkpoint(source)
        assert not loaded.training
        assert all(not m.training for m in loaded.modules())
        assert loaded.has_cas and loaded.cas_layers == ["block3"]
        with torch.no_grad():
            assert torch.equal(loaded(x), expected), source
    assert cas_edu.load_checkpoint is load_checkpoint


def test_load_checkpoint_of_a_folder_prefers_best_pt(tmp_path, run):
    folder, _, _, _ = run
    for name in ("checkpoint.pt", "best.pt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    best = read_checkpoint(tmp_path / "best.pt")
    best["model_state"] = {k: v + 1 if v.is_floating_point() else v for k, v in best["model_state"].items()}
    save_checkpoint(tmp_path / "best.pt", best)
    assert torch.equal(read_checkpoint(tmp_path)["model_state"]["fc.weight"], best["model_state"]["fc.weight"])
    for key, value in load_checkpoint(tmp_path).state_dict().items():
        assert torch.equal(value, best["model_state"][key])
    (tmp_path / "best.pt").unlink()  # without best.pt the folder falls back to checkpoint.pt
    final = read_checkpoint(folder / "checkpoint.pt")["model_state"]
    for key, value in load_checkpoint(tmp_path).state_dict().items():
        assert torch.equal(value, final[key])


# --------------------------------------------------------------------------- atomic writes


def test_save_checkpoint_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "model_state": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip file")
        handle.flush()
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "model_state": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1


def test_save_checkpoint_interrupted_by_keyboard_interrupt_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"epoch": 3})
    before = path.read_bytes()

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 4})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_save_checkpoint_renames_a_temporary_from_the_same_folder(tmp_path, monkeypatch):
    renames = []
    real_replace = checkpoint.os.replace

    def recording_replace(src, dst):
        renames.append((Path(src), Path(dst), Path(src).is_file()))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", recording_replace)
    save_checkpoint(tmp_path / "sub" / "c.pt", {"epoch": 1})
    write_json(tmp_path / "sub" / "h.json", {"a": [1, 2]})
    assert [(dst.name, src.parent, exists) for src, dst, exists in renames] == [
        ("c.pt", tmp_path / "sub", True), ("h.json", tmp_path / "sub", True)]
    assert all(src.name != dst.name for src, dst, _ in renames)
    assert json.loads((tmp_path / "sub" / "h.json").read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.pt", "h.json"]


# --------------------------------------------------------------------------- refusing what is not ours


class _Exploit:
    """Unpickling this runs code that writes a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    target = tmp_path / "side_effect.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model_state": {}, "payload": _Exploit(target)}, evil)

    with pytest.raises(ValueError, match="pickled code"):
        read_checkpoint(evil)
    assert not target.exists()
    with pytest.raises(ValueError, match="pickled code"):
        load_checkpoint(evil)
    assert not target.exists()

    # the same file in a run folder (as best.pt) is refused too
    folder = tmp_path / "run"
    folder.mkdir()
    evil.rename(folder / "best.pt")
    with pytest.raises(ValueError, match="pickled code"):
        load_checkpoint(folder)
    assert not target.exists()

    # control: the exploit is real, an unsafe load does run it
    torch.load(folder / "best.pt", weights_only=False)
    assert target.read_text() == "pwned"


@pytest.mark.parametrize("payload", [{"model_state": {"w": torch.ones(2)}}, [torch.ones(2)],
                                     {"format": "someone-else/1", "model_state": {}}],
                         ids=["dict-without-tag", "list", "other-format"])
def test_torch_file_that_is_not_a_cas_edu_checkpoint_is_refused(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a cas_edu checkpoint"):
        read_checkpoint(path)
    with pytest.raises(ValueError):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x02garbage bytes"],
                         ids=["empty", "broken-zip", "binary"])
def test_unreadable_file_is_a_value_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_checkpoint(path)


def test_text_file_is_a_value_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello world, this is not a checkpoint\n")
    with pytest.raises(ValueError):
        read_checkpoint(path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "no_such_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "empty")


# --------------------------------------------------------------------------- train_or_load


def test_train_or_load_reuses_a_matching_finished_run(run, monkeypatch, digits):
    folder, model, history, config = run

    def must_not_train(*args, **kwargs):
        raise AssertionError("train_or_load retrained a finished run")

    monkeypatch.setattr(training, "train", must_not_train)
    again, history_again = train_or_load(TrainConfig.from_dict(config.to_dict()), folder, progress=False)
    assert history_again == history
    assert not again.training
    x = digits.test.x[:16]
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))


@pytest.mark.parametrize("change", [{"seed": 1}, {"epochs": 2}, {"cas": False}], ids=["seed", "epochs", "cas"])
def test_train_or_load_retrains_when_the_config_differs(run, monkeypatch, change, small):
    folder, _, _, config = run
    calls = []

    def fake_train(config, out_dir=None, **kwargs):
        calls.append((config, Path(out_dir)))
        return "retrained", []

    monkeypatch.setattr(training, "train", fake_train)
    different = TrainConfig.from_dict({**config.to_dict(), **change})
    assert train_or_load(different, folder, progress=False, dataset=small) == ("retrained", [])
    assert calls == [(different, folder)]


def test_train_or_load_trains_into_an_empty_folder_and_then_reuses_it(tmp_path, small, monkeypatch):
    config = tiny_config(method="standard", cas=False)
    model, history = train_or_load(config, tmp_path / "new", progress=False, dataset=small)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == RUN_FILES
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained"))
    _, history_again = train_or_load(config, tmp_path / "new", progress=False, dataset=small)
    assert history_again == history
