"""Every command-line flag is checked before any work: exit code 2 and one ``error:`` line, no data loaded,
nothing trained, no run folder created; environmental failures exit 1 with one line; never a traceback."""
from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from helpers import save_untrained_run

from cas_edu import cli, data, training
from cas_edu.checkpoint import read_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def spies(monkeypatch):
    """Record every call of data.load and training.train (the real functions still run)."""
    calls = {"load": [], "train": []}
    real_load, real_train = data.load, training.train

    def load(*args, **kwargs):
        calls["load"].append(args)
        return real_load(*args, **kwargs)

    def train(*args, **kwargs):
        calls["train"].append(args)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(data, "load", load)
    monkeypatch.setattr(training, "train", train)
    return calls


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained digits runs (no training needed to test the checks): with CAS, without, and without a val split."""
    root = tmp_path_factory.mktemp("runs")
    return {"cas": save_untrained_run(root / "cas", cas=True), "plain": save_untrained_run(root / "plain"),
            "all_data": save_untrained_run(root / "all_data", cas=True, val_fraction=0)}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, out: str, err: str, expected: int = 2) -> str:
    assert code == expected, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------- train


TRAIN_CASES = {
    "lr-nan": (["--lr", "nan"], "--lr"), "lr-inf": (["--lr", "inf"], "--lr"), "lr-0": (["--lr", "0"], "--lr"),
    "lr-negative": (["--lr", "-0.1"], "--lr"), "lr-text": (["--lr", "fast"], "--lr"),
    "epochs-0": (["--epochs", "0"], "--epochs"), "epochs-negative": (["--epochs", "-2"], "--epochs"),
    "epochs-float": (["--epochs", "2.5"], "--epochs"), "batch-0": (["--batch-size", "0"], "--batch-size"),
    "batch-negative": (["--batch-size", "-64"], "--batch-size"),
    "steps-0": (["--attack-steps", "0"], "--attack-steps"),
    "step-negative": (["--step-size", "-0.01"], "--step-size"), "step-nan": (["--step-size", "nan"], "--step-size"),
    "eps-nan": (["--eps", "nan"], "--eps"), "eps-inf": (["--eps", "inf"], "--eps"),
    "eps-negative": (["--eps", "-0.1"], "--eps"),
    "cas-beta-negative": (["--cas-beta", "-1"], "--cas-beta"), "cas-beta-nan": (["--cas-beta", "nan"], "--cas-beta"),
    "val-1": (["--val-fraction", "1"], "--val-fraction"), "val-negative": (["--val-fraction", "-0.1"], "--val-fraction"),
    "val-nan": (["--val-fraction", "nan"], "--val-fraction"), "seed-negative": (["--seed", "-1"], "--seed"),
    "device-gpu": (["--device", "gpu"], "gpu"), "device-nonsense-index": (["--device", "cuda:x"], "cuda:x"),
    "dataset-unknown": (["--dataset", "imagenet"], "imagenet"),
    "dataset-npz-missing": (["--dataset", "npz:{tmp}/nothing"], "nothing"),
    "data-root-file": (["--data-root", "{tmp}/a_file"], "--data-root"),
    "compile-wrn": (["--model", "wrn34_10", "--compile"], "compile"),
    # a train-mode BatchNorm cannot normalise one example: refused here, not by torch after the folder exists
    "batch-1": (["--batch-size", "1"], "--batch-size"), "seed-2**63": (["--seed", str(2**63)], "--seed"),
    "seed-2**70": (["--seed", str(2**70)], "--seed"),
}


@pytest.mark.parametrize("extra, needle", TRAIN_CASES.values(), ids=TRAIN_CASES.keys())
def test_train_refuses_bad_flags_before_any_work(extra, needle, tmp_path, capsys, spies):
    (tmp_path / "a_file").write_text("not a folder")
    args = ["train", "--out", tmp_path / "run", "--quiet", *[a.format(tmp=tmp_path) for a in extra]]
    line = assert_one_line(*run_cli(capsys, *args))
    assert needle in line
    assert spies == {"load": [], "train": []}
    assert not (tmp_path / "run").exists()


def test_train_refuses_an_out_that_is_a_file_or_cannot_be_created(tmp_path, capsys, spies):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for out, needle in ((blocker, "is a file"), (blocker / "run", "cannot be created")):
        line = assert_one_line(*run_cli(capsys, "train", "--out", out, "--quiet"))
        assert needle in line and str(blocker) in line
    assert spies == {"load": [], "train": []}
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("device, needle", [("cuda", "CUDA"), ("cuda:7", "CUDA"), ("mps", "MPS")])
def test_train_refuses_a_device_this_machine_does_not_have(device, needle, tmp_path, capsys, spies, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    line = assert_one_line(*run_cli(capsys, "train", "--out", tmp_path / "run", "--device", device))
    assert needle in line and "not available" in line
    assert spies == {"load": [], "train": []} and not (tmp_path / "run").exists()


def test_train_refuses_a_missing_cuda_index(tmp_path, capsys, spies, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = assert_one_line(*run_cli(capsys, "train", "--out", tmp_path / "run", "--device", "cuda:7"))
    assert "cuda:7" in line and "1 CUDA device" in line
    assert spies == {"load": [], "train": []}


@pytest.mark.parametrize("out", ["", "   "], ids=["empty", "blank"])
def test_train_refuses_an_empty_out_instead_of_training_into_the_current_folder(out, tmp_path, capsys, spies,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = assert_one_line(*run_cli(capsys, "train", "--out", out, "--quiet"))
    assert "--out" in line
    assert spies == {"load": [], "train": []} and list(tmp_path.iterdir()) == []


def test_a_tilde_in_out_is_expanded_once_so_the_checked_folder_is_the_written_one(tmp_path, capsys, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    written = []

    def fake_train(config, out_dir=None, **kwargs):  # where training would write, without training
        written.append(Path(out_dir))
        return None, [{"epoch": 1, "val_natural_accuracy": 0.5, "val_robust_accuracy": 0.25}]

    monkeypatch.setattr(training, "train", fake_train)
    code, _, err = run_cli(capsys, "train", "--out=~/tilde", "--quiet", "--method", "standard")
    assert code == 0, err
    assert written == [home / "tilde"] and list(cwd.iterdir()) == [], "no literal ./~ folder"


def test_train_refuses_a_split_too_small_to_train_before_creating_the_run_folder(tmp_path, capsys):
    # digits' 1,438 training images minus a 0.9995 validation share leave one: refused by a data check that runs
    # before the lock, so that neither RUN/ nor RUN/.lock exists afterwards
    line = assert_one_line(*run_cli(capsys, "train", "--out", tmp_path / "run", "--val-fraction", "0.9995",
                                    "--quiet", "--device", "cpu"))
    assert "1 example(s)" in line and "val_fraction" in line
    assert not (tmp_path / "run").exists()


def test_a_bad_progress_setting_is_refused_before_any_work_also_when_no_bar_is_drawn(runs, tmp_path, capsys, spies,
                                                                                 monkeypatch):
    monkeypatch.setenv("CAS_EDU_PROGRESS", "bar")
    for args in (["train", "--out", tmp_path / "run", "--quiet"], ["evaluate", runs["plain"], "--json"],
                 ["activations", runs["plain"]]):
        line = assert_one_line(*run_cli(capsys, *args))
        assert "CAS_EDU_PROGRESS='bar' is not a progress style" in line
    assert spies == {"load": [], "train": []} and not (tmp_path / "run").exists()
    assert sorted(p.name for p in runs["plain"].iterdir()) == ["best.pt"], "nothing written into the run"


def test_library_train_refuses_a_bad_progress_setting_or_device_before_touching_the_run_folder(tmp_path, digits,
                                                                                            monkeypatch):
    """The README's promise for train() too: refused before the run folder or its .lock exists, and an
    ``overwrite`` refused this way has not deleted the old run."""
    from helpers import subset, tiny_config

    small = subset(digits, 128)
    old = tmp_path / "old"
    training.train(tiny_config("standard"), out_dir=old, dataset=small, progress=False)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    monkeypatch.setenv("CAS_EDU_PROGRESS", "bar")
    with pytest.raises(ValueError, match="CAS_EDU_PROGRESS"):
        training.train(tiny_config("standard"), out_dir=old, dataset=small, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    with pytest.raises(ValueError, match="CAS_EDU_PROGRESS"):
        training.train(tiny_config("standard"), out_dir=tmp_path / "new", dataset=small, progress=False)
    assert not (tmp_path / "new").exists()
    monkeypatch.delenv("CAS_EDU_PROGRESS")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available"):
        training.train(tiny_config("standard", device="cuda"), out_dir=tmp_path / "new", dataset=small)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_missing_dataset_names_the_cli_flags_not_the_python_arguments(command, runs, tmp_path, capsys, spies):
    data_root = tmp_path / "data"
    args = ["train", "--out", tmp_path / "run", "--model", "resnet18", "--quiet"] if command == "train" \
        else ["evaluate", runs["plain"]]
    line = assert_one_line(*run_cli(capsys, *args, "--dataset", "cifar10", "--data-root", data_root))
    assert line.startswith(f"error: CIFAR-10 not found in {data_root}: ")
    assert "--data-root" in line and "CAS_EDU_DATA" in line and "cifar-10-batches-py/" in line
    assert "download=True" not in line and "root=" not in line
    assert ("add --download on a machine with internet" in line) == (command == "train")
    assert ("evaluate does not download; train --download does" in line) == (command == "evaluate")
    assert spies["train"] == [] and not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where os.access lies to root")
def test_destinations_are_tested_by_writing_not_by_permission_bits(runs, tmp_path, capsys, spies):
    line = assert_one_line(*run_cli(capsys, "train", "--out", "/proc/cas_edu_run", "--quiet"))
    assert "/proc" in line and "cannot be written" in line
    line = assert_one_line(*run_cli(capsys, "evaluate", runs["plain"], "--attacks", "natural",
                                    "--output", "/proc/cas_edu_report.json"))
    assert "cannot write into /proc" in line
    assert spies == {"load": [], "train": []}, "refused before any data is loaded or attack runs"


# --------------------------------------------------------------------------- evaluate and activations


EVAL_CASES = {
    "attacks-empty": (["--attacks", ""], "--attacks"), "attacks-commas": (["--attacks", " , "], "--attacks"),
    "attacks-unknown": (["--attacks", "natural,pgd1000"], "pgd1000"),
    "n-0": (["--n", "0"], "--n"), "n-negative": (["--n", "-5"], "--n"),
    "subset-n-negative": (["--subset-n", "-1"], "--subset-n"), "subset-n-0": (["--subset-n", "0"], "--subset-n"),
    "batch-0": (["--batch-size", "0"], "--batch-size"), "eps-nan": (["--eps", "nan"], "--eps"),
    "eps-above-1": (["--eps", "2"], "--eps"), "seed-negative": (["--seed", "-3"], "--seed"),
    "device-gpu": (["--device", "gpu"], "gpu"), "dataset-unknown": (["--dataset", "imagenet"], "imagenet"),
    "dataset-npz-missing": (["--dataset", "npz:{tmp}/nothing"], "nothing"),
    "data-root-file": (["--data-root", "{tmp}/a_file"], "--data-root"),
    "ce+cas-without-cas": (["--objective", "ce+cas"], "ce+cas"),
    "seed-2**64": (["--seed", str(2**64)], "--seed"),
}


@pytest.mark.parametrize("extra, needle", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_evaluate_refuses_bad_flags_before_loading_data(extra, needle, runs, tmp_path, capsys, spies):
    (tmp_path / "a_file").write_text("not a folder")
    line = assert_one_line(*run_cli(capsys, "evaluate", runs["plain"], *[a.format(tmp=tmp_path) for a in extra]))
    assert needle in line
    assert spies["load"] == []
    assert sorted(p.name for p in runs["plain"].iterdir()) == ["best.pt"], "nothing written into the run"


def test_evaluate_refuses_the_val_split_of_a_run_trained_on_everything(runs, capsys, spies):
    line = assert_one_line(*run_cli(capsys, "evaluate", runs["all_data"], "--split", "val"))
    assert "val_fraction 0" in line and "--split test" in line
    assert spies["load"] == []


ACT_CASES = {
    "class-id-99": (["--class-id", "99"], "--class-id 99"), "class-id-10": (["--class-id", "10"], "10 classes"),
    "class-id-negative": (["--class-id", "-1"], "--class-id"), "layer-unknown": (["--layer", "nosuch"], "block3"),
    "n-0": (["--n", "0"], "--n"), "eps-negative": (["--eps", "-1"], "--eps"), "device": (["--device", "tpu"], "tpu"),
    "seed-2**63": (["--seed", str(2**63)], "--seed"),
    "threshold-negative": (["--threshold", "-0.1"], "--threshold"),
    "threshold-above-1": (["--threshold", "1.5"], "--threshold"),
    "threshold-nan": (["--threshold", "nan"], "--threshold"), "threshold-text": (["--threshold", "1%"], "--threshold"),
}


@pytest.mark.parametrize("extra, needle", ACT_CASES.values(), ids=ACT_CASES.keys())
def test_activations_refuses_bad_flags_before_loading_data(extra, needle, runs, capsys, spies):
    line = assert_one_line(*run_cli(capsys, "activations", runs["cas"], *extra))
    assert needle in line
    assert spies["load"] == []


@pytest.mark.parametrize("command", ["evaluate", "activations"])
@pytest.mark.parametrize("damage, needle", [
    ("rename", "1 missing (blocks.block1.0.weight); 1 unexpected (old_name.weight)"),
    ("drop", "1 missing (fc.bias)"),
    ("extra", "1 unexpected (extra.weight)"),
    ("shape", "fc.weight (11, 128) vs (10, 128)"),
    ("no-spec", "no model_spec"),
    ("bad-spec", "model_spec"),
    ("bad-config", "recorded training config"),
    ("no-config", "no recorded training config"),  # never silent defaults for eps, dataset and split
    ("complex-weights", "fc.weight is complex64"), ("int-weights", "fc.weight is int64"),
    ("nan-weights", "NaN or infinite values (first in fc.bias)"),
])
def test_a_checkpoint_that_does_not_fit_its_model_exits_2_naming_the_mismatch(command, damage, needle, runs,
                                                                             tmp_path, capsys, spies):
    payload = read_checkpoint(runs["cas"])
    state = dict(payload["model_state"])
    if damage == "rename":
        state["old_name.weight"] = state.pop("blocks.block1.0.weight")
    elif damage == "drop":
        del state["fc.bias"]
    elif damage == "extra":
        state["extra.weight"] = torch.zeros(3)
    elif damage == "shape":
        state["fc.weight"] = torch.zeros(11, 128)
    payload["model_state"] = state
    if damage == "no-spec":
        del payload["model_spec"]
    elif damage == "bad-spec":
        payload["model_spec"] = {**payload["model_spec"], "num_classes": -3}
    elif damage == "bad-config":
        payload["config"] = {**payload["config"], "lr": float("nan")}
    elif damage == "no-config":
        del payload["config"]
    elif damage == "complex-weights":
        state["fc.weight"] = state["fc.weight"].to(torch.complex64)
    elif damage == "int-weights":
        state["fc.weight"] = state["fc.weight"].to(torch.int64)
    elif damage == "nan-weights":
        state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    payload.pop("format")
    save_checkpoint(tmp_path / "damaged.pt", payload)
    line = assert_one_line(*run_cli(capsys, command, tmp_path / "damaged.pt"))
    assert needle in line and "damaged.pt" in line
    assert spies["load"] == []


@pytest.mark.parametrize("args, needle", [(["evaluate", "  "], "run"), (["activations", ""], "run"),
                                           (["evaluate", "{run}", "--output", ""], "--output"),
                                           (["evaluate", "{run}", "--output", "  "], "--output")],
                         ids=["evaluate-run", "activations-run", "output-empty", "output-blank"])
def test_an_empty_path_argument_is_refused(args, needle, runs, tmp_path, capsys, spies, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a blank --output would otherwise name a file '  ' in the current folder
    line = assert_one_line(*run_cli(capsys, *[a.format(run=runs["plain"]) for a in args]))
    assert needle in line and spies["load"] == [] and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- environmental failures: exit 1


def test_download_without_network_is_one_line_naming_the_offline_fix(tmp_path, capsys, monkeypatch, spies):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    line = assert_one_line(*run_cli(capsys, "train", "--out", tmp_path / "run", "--dataset", "cifar10", "--model",
                                    "resnet18", "--data-root", tmp_path / "data", "--download", "--quiet"), expected=1)
    assert "could not download CIFAR-10 (no network: " in line and "name resolution" in line
    assert str(tmp_path / "data") in line and "CAS_EDU_DATA" in line
    assert spies["train"] == []


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied", "/somewhere"),
                                   OSError(errno.ENOSPC, "No space left on device")], ids=["permission", "disk-full"])
def test_an_os_error_reaching_main_is_one_line_and_exit_1(error, tmp_path, capsys, monkeypatch):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(data, "load", fails)
    line = assert_one_line(*run_cli(capsys, "train", "--out", tmp_path / "run", "--quiet"), expected=1)
    assert error.strerror in line


def test_exit_codes_are_documented_in_help_and_main(capsys):
    for command in ([], ["train"], ["evaluate"], ["activations"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "exit codes: 0 success; 1 " in out and "2 bad input" in out, command
    assert "Exit codes" in cli.main.__doc__ and "2 bad input" in cli.main.__doc__


@pytest.mark.parametrize("command, saved, needle", [
    ("train", True, "continue with --resume"), ("train", False, "start the training again"),
    ("evaluate", False, "no report was written"), ("activations", False, "interrupted")])
def test_only_a_training_with_a_saved_epoch_is_told_to_resume_when_interrupted(command, saved, needle, runs, tmp_path,
                                                                            capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    out = tmp_path / "run"
    if saved:
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(b"")
    args = ["train", "--out", out, "--quiet", *(["--resume"] if saved else [])] if command == "train" \
        else [command, runs["plain"]]
    if saved:
        monkeypatch.setattr(cli, "_check_args", lambda args: None)  # the empty checkpoint.pt is never read
    code, out_text, err = run_cli(capsys, *args)
    assert code == 130 and out_text == "" and len(err.splitlines()) == 1
    assert needle in err
    assert ("--resume" in err) == saved


@pytest.mark.parametrize("command", ["evaluate", "activations"])
def test_out_of_memory_outside_training_does_not_suggest_resume(command, runs, capsys, monkeypatch):
    def out_of_memory(args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setitem(cli.COMMANDS, command, out_of_memory)
    line = assert_one_line(*run_cli(capsys, command, runs["plain"]), expected=1)
    assert "out of memory" in line and "--resume" not in line
    assert ("--batch-size" if command == "evaluate" else "--n") in line
