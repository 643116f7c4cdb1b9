"""Tests for cas_edu.checkpoint: atomic writes, safe loading, refusal of pickled code, train_or_load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import subset, tiny_config, untrained_checkpoint

import cas_edu
from cas_edu import checkpoint, data, run_folder, training
from cas_edu.checkpoint import FORMAT, load_checkpoint, read_checkpoint, save_checkpoint, write_json
from cas_edu.presets import TrainConfig, make_config
from cas_edu.training import train, train_or_load

RUN_FILES = [".lock", "best.pt", "checkpoint.pt", "history.json"]  # .lock: the run folder's lock (run_folder)


@pytest.fixture(scope="module")
def small(digits) -> data.Dataset:
    return subset(digits, 96)


@pytest.fixture(scope="module")
def run(tmp_path_factory, small):
    """A one-epoch PGD-AT + CAS run: (folder, trained model, history, config)."""
    folder = tmp_path_factory.mktemp("run")
    config = tiny_config("pgd_at", cas=True)
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
def test_train_or_load_refuses_a_different_config_unless_told_to_overwrite(run, monkeypatch, change, small):
    folder, _, _, config = run
    calls = []

    def fake_train(config, out_dir=None, **kwargs):
        calls.append((config, Path(out_dir), kwargs.get("overwrite")))
        return "retrained", []

    monkeypatch.setattr(training, "train", fake_train)
    different = TrainConfig.from_dict({**config.to_dict(), **change})
    with pytest.raises(run_folder.RunExistsError, match=f"{next(iter(change))}.*overwrite=True"):
        train_or_load(different, folder, progress=False, dataset=small)
    assert calls == []
    assert train_or_load(different, folder, progress=False, dataset=small, overwrite=True) == ("retrained", [])
    assert calls == [(different, folder, True)]


def test_train_or_load_trains_into_an_empty_folder_and_then_reuses_it(tmp_path, small, monkeypatch):
    config = tiny_config("standard")
    model, history = train_or_load(config, tmp_path / "new", progress=False, dataset=small)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == RUN_FILES
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained"))
    _, history_again = train_or_load(config, tmp_path / "new", progress=False, dataset=small)
    assert history_again == history


# --------------------------------------------------------------------------- weights that do not fit their model


def _untrained_payload() -> dict:
    return untrained_checkpoint(cas=True)[0]


def _damaged(payload: dict, damage: str) -> dict:
    state = dict(payload["model_state"])
    if damage == "renamed":
        state["old.weight"] = state.pop("blocks.block1.0.weight")
    elif damage == "missing":
        del state["fc.bias"]
    elif damage == "extra":
        state.update({f"extra{i}.weight": torch.zeros(1) for i in range(5)})
    elif damage == "shape":
        state["fc.weight"] = torch.zeros(11, 128)
    elif damage == "not-a-dict":
        state = [1, 2, 3]
    elif damage == "not-tensors":
        state["fc.bias"] = [0.0] * 10
    elif damage == "complex":
        state["fc.weight"] = state["fc.weight"].to(torch.complex64)
    elif damage == "int":
        state["fc.weight"] = state["fc.weight"].round().to(torch.int64)
    elif damage == "bool":
        state["blocks.block1.1.num_batches_tracked"] = torch.tensor(True)
    elif damage == "nan":
        state["fc.bias"] = state["fc.bias"].clone()
        state["fc.bias"][3] = float("nan")
    elif damage == "inf":
        state["blocks.block2.1.running_var"] = torch.full_like(state["blocks.block2.1.running_var"], float("inf"))
    return {**payload, "model_state": state}


@pytest.mark.parametrize("damage, needle", [
    ("renamed", "1 missing (blocks.block1.0.weight); 1 unexpected (old.weight)"),
    ("missing", "1 missing (fc.bias)"),
    ("extra", "5 unexpected (extra0.weight, extra1.weight, extra2.weight and 2 more)"),
    ("shape", "1 of another shape (checkpoint vs model: fc.weight (11, 128) vs (10, 128))"),
    ("not-a-dict", "not a dict of named tensors"),
    ("not-tensors", "not a dict of named tensors"),
    ("complex", "fc.weight is complex64"),  # not a torch warning and a silently dropped imaginary part
    ("int", "fc.weight is int64 where floating-point weights belong"),  # not a silent cast
    ("bool", "blocks.block1.1.num_batches_tracked is bool"),
    ("nan", "NaN or infinite values (first in fc.bias)"),  # a NaN model is damage, not a model
    ("inf", "NaN or infinite values (first in blocks.block2.1.running_var)"),
])
def test_weights_that_do_not_fit_the_recorded_model_are_one_value_error_line(tmp_path, damage, needle):
    save_checkpoint(tmp_path / "m.pt", _damaged(_untrained_payload(), damage))
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "m.pt")
    message = str(info.value)
    assert needle in message and str(tmp_path / "m.pt") in message and "\n" not in message


@pytest.mark.parametrize("spec, needle", [
    (None, "no model_spec"), ("small_cnn", "must be a dict"),
    ({"name": "resnet50"}, "unknown model 'resnet50'"),
    ({"num_classes": 10 ** 9}, "num_classes must be a whole number from 1 to 100000"),
    ({"num_classes": True}, "num_classes"), ({"num_classes": "10"}, "num_classes"),
    ({"in_channels": 0}, "in_channels"), ({"cas_layers": "block3"}, "list of layer names"),
    ({"cas_layers": ["nosuch"]}, "can build (Unknown CAS layer"),
], ids=["missing", "string", "model", "huge-head", "bool", "text", "channels", "layers-str", "layers-unknown"])
def test_a_missing_or_nonsense_model_spec_is_one_value_error_line(spec, needle):
    payload = _untrained_payload()
    if spec is None:
        del payload["model_spec"]
    else:
        payload["model_spec"] = spec if isinstance(spec, str) else {**payload["model_spec"], **spec}
    with pytest.raises(ValueError) as info:
        checkpoint.model_from_payload(payload, source="run/best.pt")
    assert needle in str(info.value) and "run/best.pt" in str(info.value) and "\n" not in str(info.value)


def test_model_from_payload_round_trips_a_good_payload():
    payload = _untrained_payload()
    model = checkpoint.model_from_payload(payload)
    assert all(torch.equal(v, payload["model_state"][k]) for k, v in model.state_dict().items())


def test_resuming_from_weights_that_do_not_fit_is_a_value_error_naming_the_checkpoint(run, tmp_path, small):
    import shutil

    folder, _, _, config = run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    saved = read_checkpoint(copy / "checkpoint.pt")
    saved["model_state"]["fc.weight"] = torch.zeros(3, saved["model_state"]["fc.weight"].shape[1])
    save_checkpoint(copy / "checkpoint.pt", {k: v for k, v in saved.items() if k != "format"})
    with pytest.raises(ValueError, match=r"checkpoint.pt: the weights do not fit.*fc.weight \(3, "):
        train(config, out_dir=copy, resume=True, dataset=small, progress=False)


def test_half_precision_weights_load_into_the_float32_model():
    payload = _untrained_payload()
    payload["model_state"] = {k: v.half() for k, v in payload["model_state"].items()}  # counters too, as .half() of
    model = checkpoint.model_from_payload(payload)  # a state dict gives them
    assert model.fc.weight.dtype == torch.float32
    assert torch.equal(model.fc.weight, payload["model_state"]["fc.weight"].float())


def test_a_checkpoint_without_a_recorded_config_is_refused_not_filled_with_defaults():
    payload = _untrained_payload()
    payload.pop("config", None)
    with pytest.raises(ValueError, match=r"run/best.pt has no recorded training config"):
        checkpoint.recorded_config(payload, "run/best.pt")
    with pytest.raises(ValueError, match="recorded training config is invalid"):
        checkpoint.recorded_config({"config": {"eps": float("nan")}}, "run/best.pt")
    assert checkpoint.recorded_config({"config": make_config("digits").to_dict()}) == make_config("digits")


def test_resuming_from_a_checkpoint_that_lacks_the_training_state_names_what_is_missing(run, tmp_path, small):
    import shutil

    folder, _, _, config = run
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.copy(copy / "best.pt", copy / "checkpoint.pt")  # a best.pt in checkpoint.pt's place: no optimizer state
    with pytest.raises(ValueError, match=r"checkpoint.pt cannot be resumed: it lacks optimizer_state"):
        train(config, out_dir=copy, resume=True, dataset=small, progress=False)
