"""Run folders are never lost: refusal to replace a run, --overwrite, the lock (also after SIGKILL), --resume with
different flags, every evaluation report kept, leftover temporaries, and failed writes (a full disk)."""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import save_untrained_run, subset, tiny_config

from cas_edu import checkpoint, cli, data, evaluation, pipeline, run_folder, training
from cas_edu.checkpoint import CheckpointWriteError, read_checkpoint, save_checkpoint, write_json
from cas_edu.evaluation import EvaluationReport
from cas_edu.training import ResumeMismatchError, train

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--method", "standard", "--epochs", "1", "--quiet", "--device", "cpu"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def report(n: int = 5, attacks=("natural",)) -> EvaluationReport:
    return EvaluationReport(eps=0.1, n_examples=n, accuracy={a: {"ce": 0.5} for a in attacks})


# --------------------------------------------------------------------------- no silent replacement, --overwrite


def test_training_into_a_folder_holding_a_run_is_refused(tmp_path, capsys, digits):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, *QUICK)[0] == 0
    before = {name: (out / name).read_bytes() for name in run_folder.RUN_FILES}
    code, stdout, err = run_cli(capsys, "train", "--out", out, *QUICK, "--seed", "1")
    assert code == 2 and stdout == ""
    line = one_error_line(err)
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert {name: (out / name).read_bytes() for name in run_folder.RUN_FILES} == before
    with pytest.raises(run_folder.RunExistsError, match="overwrite=True"):  # the library refuses the same way
        train(tiny_config("standard"), out_dir=out, dataset=subset(digits, 128), progress=False)
    assert {name: (out / name).read_bytes() for name in run_folder.RUN_FILES} == before


def test_reports_alone_also_count_as_a_run(tmp_path, digits):
    run_folder.save_report(tmp_path, report())
    with pytest.raises(run_folder.RunExistsError, match="eval/"):
        train(tiny_config("standard"), out_dir=tmp_path, dataset=subset(digits, 128), progress=False)


def test_overwrite_deletes_the_old_run_and_its_reports_then_trains(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, *QUICK)[0] == 0
    run_folder.save_report(out, report())
    (out / "eval.json").write_text(json.dumps(report().to_dict()))  # a report an older version wrote
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "--out", out, *QUICK, "--seed", "7", "--overwrite")
    assert code == 0, err
    assert read_checkpoint(out / "checkpoint.pt")["config"]["seed"] == 7
    assert not (out / "eval").exists() and not (out / "eval.json").exists(), "no stale report beside the new model"
    assert run_folder.latest_report(out) is None
    assert (out / "notes.txt").read_text() == "mine", "only the run's own files are deleted"


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "r", *QUICK, "--resume", "--overwrite")
    assert code == 2 and "only one" in one_error_line(err)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the lock

HOLDER = """
import sys, time
from cas_edu import presets, training

def hang_after_epoch_one(record):
    if record["epoch"] == 1:
        print("saved epoch 1", flush=True)
        time.sleep(600)

config = presets.make_config("digits", method="standard", epochs=3, device="cpu")
training.train(config, out_dir=sys.argv[1], progress=False, on_epoch_end=hang_after_epoch_one)
"""


def _wait_for_line(process: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            break
    return ""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_second_training_is_refused_and_a_sigkilled_holder_does_not_block_resume(tmp_path, capsys, digits):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _wait_for_line(holder)
        assert line.strip() == "saved epoch 1", holder.stderr.read() if holder.poll() is not None else line
        for extra in (["--resume"], ["--overwrite"]):  # while it trains, nothing else may write the folder
            code, _, err = run_cli(capsys, "train", "--out", out, "--quiet", "--device", "cpu", *extra)
            assert code == 2
            message = one_error_line(err)
            assert "another training holds" in message and str(out) in message
        with pytest.raises(run_folder.RunLockedError):
            train(tiny_config("standard"), out_dir=out, dataset=subset(digits, 128), progress=False, resume=True)
        assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert (out / run_folder.LOCK_NAME).exists(), "the lock file stays; the kernel released the lock"
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "(standard)" in stdout and "for 3 epochs" in stdout
    assert [r["epoch"] for r in read_checkpoint(out / "checkpoint.pt")["history"]] == [1, 2, 3]


def test_the_lock_is_exclusive_and_reentrant_within_one_thread(tmp_path):
    import threading

    with run_folder.locked(tmp_path / "run"):
        with run_folder.locked(tmp_path / "run"):  # the CLI and train() may both hold it
            pass
        failures = []

        def other_thread():
            try:
                with run_folder.locked(tmp_path / "run"):
                    pass
            except run_folder.RunLockedError as err:
                failures.append(err)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(failures) == 1
    with run_folder.locked(tmp_path / "run"):  # released at the end of the block
        pass


def test_only_rank_zero_writes_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not run_folder.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert run_folder.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "3")
    assert run_folder.is_main_process()


# --------------------------------------------------------------------------- --resume with other settings


def test_resume_refuses_every_flag_that_differs_and_names_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, *QUICK)[0] == 0  # standard training, fast preset
    before = (out / "checkpoint.pt").read_bytes()
    cases = [(["--epochs", "3"], ["--epochs 3"]),  # fast preset: the one-cycle schedule depends on the total
             (["--method", "pgd_at"], ["--method pgd_at"]),  # the default value, given explicitly, still differs
             (["--cas", "--eps", "0.2", "--preset", "paper"], ["--cas", "--eps 0.2", "--preset paper"]),
             (["--dataset", "mnist", "--seed", "3"], ["--dataset mnist", "--seed 3"])]
    for flags, named in cases:
        code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--quiet", *flags)
        assert code == 2 and stdout == "", flags
        message = one_error_line(err)
        assert all(n in message for n in named), (flags, message)
    assert (out / "checkpoint.pt").read_bytes() == before
    # the flags that agree with the run, and where it runs, are not differences
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--quiet", "--method", "standard",
                                "--epochs", "1", "--device", "cpu")
    assert code == 0, err
    assert "(standard)" in stdout, "the summary names the method actually used"
    assert "nothing was trained" in stdout and "finished its 1 epoch" in stdout, "a finished run is not retrained"


def test_more_epochs_continue_a_step_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, "--preset", "paper", "--method", "standard", "--epochs", "1",
                   "--quiet", "--device", "cpu")[0] == 0
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "2", "--quiet")
    assert code == 0, err
    assert "for 2 epochs" in stdout
    saved = read_checkpoint(out / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["config"]["epochs"] == 2 and saved["config"]["lr_drops"]
    code, _, err = run_cli(capsys, "train", "--out", out, "--resume", "--epochs", "1", "--quiet")
    assert code == 2 and "--epochs 1" in one_error_line(err), "fewer epochs are refused"


def test_library_resume_compares_the_whole_config(tmp_path, digits):
    ds = subset(digits, 128)
    train(tiny_config("standard"), out_dir=tmp_path, dataset=ds, progress=False)
    with pytest.raises(ResumeMismatchError, match=r"method='pgd_at'.*seed=5") as info:
        train(tiny_config("pgd_at", seed=5), out_dir=tmp_path, dataset=ds, progress=False, resume=True)
    assert {"method", "seed"} <= set(info.value.differences) and "device" not in info.value.differences
    with pytest.raises(ResumeMismatchError, match="epochs"):  # fast preset: no more epochs
        train(tiny_config("standard", epochs=2), out_dir=tmp_path, dataset=ds, progress=False, resume=True)
    _, history = train(tiny_config("standard", device="auto"), out_dir=tmp_path, dataset=ds, progress=False,
                       resume=True)
    assert len(history) == 1


def test_train_or_load_resumes_a_run_that_stopped_early(tmp_path, digits, monkeypatch):
    ds = subset(digits, 128)
    config = tiny_config("standard", epochs=2)

    def stop_after_one(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out_dir=tmp_path, dataset=ds, progress=False, on_epoch_end=stop_after_one)
    first_epoch = read_checkpoint(tmp_path / "checkpoint.pt")["history"][0]
    calls, real_train = [], training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(k) or real_train(*a, **k))
    _, history = training.train_or_load(config, tmp_path, progress=False, dataset=ds)
    assert [k.get("resume") for k in calls] == [True]
    assert [r["epoch"] for r in history] == [1, 2] and history[0] == first_epoch, "continued, not retrained"


# --------------------------------------------------------------------------- leftover temporaries


def test_leftover_temporaries_are_removed_on_the_next_start(tmp_path, digits):
    ds = subset(digits, 128)
    train(tiny_config("standard"), out_dir=tmp_path, dataset=ds, progress=False)
    leftovers = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".best.pt.abc.tmp", tmp_path / ".history.json.x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    (tmp_path / ".notes.txt.tmp").write_text("not ours")
    # a finished run: trains nothing
    train(tiny_config("standard"), out_dir=tmp_path, dataset=ds, progress=False, resume=True)
    assert not any(path.exists() for path in leftovers)
    assert (tmp_path / ".notes.txt.tmp").exists(), "only the training's own temporaries are removed"


# --------------------------------------------------------------------------- failed writes (a full disk)


def _disk_full_after(limit: int, failures: list):
    """A torch.save that fails as a full disk does, after ``limit`` bytes, on the second epoch's checkpoint.pt."""
    real = torch.save

    def save(obj, handle, *args, **kwargs):
        if "optimizer_state" in obj:  # checkpoint.pt's payload (best.pt has no optimizer state)
            failures.append(obj["epoch"])
            if len(failures) >= 2:
                handle.write(b"PK\x03\x04" + b"\0" * limit)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, handle, *args, **kwargs)

    return save


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys,
                                                                                         monkeypatch):
    out = tmp_path / "run"
    seen_epochs = []
    real_train = training.train

    def remembering_train(*args, **kwargs):  # keep checkpoint.pt's bytes after every epoch
        def remember(record):
            seen_epochs.append((record["epoch"], (out / "checkpoint.pt").read_bytes()))
        return real_train(*args, **kwargs, on_epoch_end=remember)

    monkeypatch.setattr(training, "train", remembering_train)
    monkeypatch.setattr(torch, "save", _disk_full_after(64, []))
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--method", "standard", "--epochs", "2", "--quiet",
                                "--device", "cpu")
    assert code == cli.EXIT_WRITE_FAILED and stdout == ""
    message = one_error_line(err)
    assert "checkpoint.pt" in message and "No space left on device" in message and "--resume" in message
    assert "epoch 1" in message
    assert [epoch for epoch, _ in seen_epochs] == [1]
    assert (out / "checkpoint.pt").read_bytes() == seen_epochs[0][1], "the last checkpoint is byte-identical"
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp")), "no temporary file is left"
    monkeypatch.undo()
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--resume", "--quiet")
    assert code == 0 and "for 2 epochs" in stdout, err


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 30\n"
                                                  "frame #0: c10::Error ...")], ids=["oserror", "torch-runtimeerror"])
def test_save_checkpoint_wraps_write_failures_in_one_sentence(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def failing(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half")
        raise failure

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"epoch": 2})
    message = str(info.value)
    assert "\n" not in message and "checkpoint.pt is intact" in message and str(path) in message
    assert isinstance(info.value.__cause__, type(failure))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1


def test_write_json_without_replace_never_replaces(tmp_path):
    write_json(tmp_path / "a.json", {"v": 1}, replace=False)
    with pytest.raises(FileExistsError):
        write_json(tmp_path / "a.json", {"v": 2}, replace=False)
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointWriteError, match="no r.json was written"):  # a file where a folder should be
        write_json(tmp_path / "file" / "r.json", {})


# --------------------------------------------------------------------------- reports are kept


def test_every_report_is_kept_and_latest_names_the_newest(tmp_path, monkeypatch):
    first = run_folder.save_report(tmp_path, report(5))
    assert first.parent == tmp_path / "eval" and first.name.endswith("-natural-n5.json")
    monkeypatch.setattr(run_folder, "report_name", lambda data, when=None: "29990101T000000Z-natural+fgsm-n7.json")
    paths = [run_folder.save_report(tmp_path, report(7, ("natural", "fgsm"))) for _ in range(3)]
    assert [p.name for p in paths] == ["29990101T000000Z-natural+fgsm-n7.json", "29990101T000000Z-natural+fgsm-n7-2.json",
                                       "29990101T000000Z-natural+fgsm-n7-3.json"]
    assert json.loads(first.read_text())["n_examples"] == 5, "an earlier report is never replaced"
    assert json.loads((tmp_path / "eval" / "latest.json").read_text())["report"] == paths[-1].name
    assert run_folder.latest_report_path(tmp_path) == paths[-1]
    assert run_folder.saved_reports(tmp_path)[:3] == paths[::-1]
    assert set(run_folder.saved_reports(tmp_path)) == {first, *paths}
    assert run_folder.latest_report(tmp_path).accuracy == {"natural": {"ce": 0.5}, "fgsm": {"ce": 0.5}}


def test_a_failed_latest_pointer_keeps_the_report_and_says_so(tmp_path, monkeypatch):
    real_write = run_folder.write_json

    def no_pointer(path, data, **kwargs):
        if Path(path).name == run_folder.LATEST:
            raise CheckpointWriteError(f"could not write {path} (No space left on device)")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(run_folder, "write_json", no_pointer)
    with pytest.raises(CheckpointWriteError, match="the report was saved to") as info:
        run_folder.save_report(tmp_path, report(5))
    assert info.value.report_path.is_file() and json.loads(info.value.report_path.read_text())["n_examples"] == 5


def test_a_legacy_eval_json_is_found_as_the_oldest_report(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps(report(3).to_dict()))
    assert run_folder.latest_report(tmp_path).n_examples == 3
    newer = run_folder.save_report(tmp_path, report(4))
    assert run_folder.saved_reports(tmp_path) == [newer, tmp_path / "eval.json"]
    assert run_folder.latest_report(tmp_path).n_examples == 4
    assert json.loads((tmp_path / "eval.json").read_text())["n_examples"] == 3


@pytest.fixture
def saved_run(tmp_path) -> Path:
    """A run folder with an untrained small CNN (best.pt), for evaluations."""
    return save_untrained_run(tmp_path / "run", method="standard", device="cpu")


def test_a_second_evaluate_keeps_the_first_report(saved_run, capsys):
    for n in ("6", "5"):
        code, _, err = run_cli(capsys, "evaluate", saved_run, "--attacks", "natural", "--n", n, "--device", "cpu",
                               "--json")
        assert code == 0, err
    reports = run_folder.saved_reports(saved_run)
    assert sorted(json.loads(p.read_text())["n_examples"] for p in reports) == [5, 6]
    assert run_folder.latest_report(saved_run).n_examples == 5


def _no_attacks(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("attacks ran although the report could not be written")

    monkeypatch.setattr(evaluation, "evaluate", must_not_run)


@pytest.mark.parametrize("where", ["folder", "exists", "under-a-file", "run-eval-is-a-file"])
def test_evaluate_checks_the_destination_before_any_attack(saved_run, tmp_path, capsys, monkeypatch, where):
    _no_attacks(monkeypatch)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "old.json").write_text("keep me")
    output = {"folder": [tmp_path], "exists": [tmp_path / "old.json"], "under-a-file": [tmp_path / "a_file" / "r.json"],
              "run-eval-is-a-file": None}[where]
    if output is None:
        (saved_run / "eval").write_text("in the way")
    code, stdout, err = run_cli(capsys, "evaluate", saved_run, "--attacks", "natural", "--n", "5", "--device", "cpu",
                                *(["--output", output[0]] if output else []))
    assert code == 2 and stdout == ""
    one_error_line(err)
    assert (tmp_path / "old.json").read_text() == "keep me"


def test_a_failed_report_write_still_prints_the_report(saved_run, capsys, monkeypatch):
    real_write = checkpoint._atomic_write

    def full_disk(path, write, replace=True):
        if path.suffix == ".json":
            def half(handle):
                handle.write(b'{"eps": ')
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(path, half, replace)
        return real_write(path, write, replace)

    monkeypatch.setattr(checkpoint, "_atomic_write", full_disk)
    code, stdout, err = run_cli(capsys, "evaluate", saved_run, "--attacks", "natural", "--n", "5", "--device", "cpu",
                                "--json")
    assert code == cli.EXIT_WRITE_FAILED
    assert json.loads(stdout)["n_examples"] == 5, "the report is printed although it could not be saved"
    message = one_error_line(err)
    assert "No space left on device" in message and "not saved" in message
    leftovers = [p for p in saved_run.rglob("*") if p.is_file() and p.name != "best.pt"]
    assert leftovers == [], "no half report and no temporary file"


# --------------------------------------------------------------------------- the pipeline and the benchmark


def test_evaluate_suite_keeps_every_report_and_checks_folders_first(saved_run, tmp_path, monkeypatch, digits):
    for _ in range(2):
        pipeline.evaluate_suite({"std": saved_run}, digits, attacks=("natural",), n=5, progress=False, device="cpu")
    assert len(run_folder.saved_reports(saved_run)) == 2
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "eval").write_text("in the way")
    _no_attacks(monkeypatch)
    with pytest.raises(ValueError, match="is a file"):
        pipeline.evaluate_suite({"std": saved_run, "blocked": blocked}, digits, eps=0.1, attacks=("natural",), n=5,
                                progress=False, device="cpu")


def test_reproduce_cifar10_reuses_a_matching_kept_report(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import reproduce_cifar10 as bench

    attacks = bench.PROFILE.attacks
    matching = EvaluationReport(eps=0.03, n_examples=20, accuracy={a: {"ce": 0.5} for a in attacks})
    run_folder.save_report(tmp_path, matching)
    run_folder.save_report(tmp_path, report(20))  # newer, but a 5-image natural check does not cover the profile
    found = bench.saved_report(tmp_path, n_test=20, subset_n=1000)
    assert found is not None and set(found.accuracy) == set(attacks)
    assert bench.saved_report(tmp_path, n_test=30, subset_n=1000) is None



def test_a_benchmark_result_never_replaces_an_earlier_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    for value in range(3):
        path = common.write_json("bench", {"value": value})
    kept = sorted(p for p in tmp_path.iterdir() if p != path)
    assert path == tmp_path / "bench.json" and json.loads(path.read_text()) == {"value": 2}
    assert len(kept) == 2 and sorted(json.loads(p.read_text())["value"] for p in kept) == [0, 1]
    assert all(p.name.startswith("bench-") for p in kept) and not list(tmp_path.glob("*.tmp"))


# --------------------------------------------------------------------------- nothing created by a refused run


@pytest.mark.parametrize("out_dir", ["", "  "], ids=["empty", "blank"])
def test_an_empty_out_dir_is_refused_instead_of_training_into_the_current_folder(out_dir, tmp_path, monkeypatch,
                                                                                 digits):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="out_dir"):
        train(tiny_config("standard"), out_dir=out_dir, dataset=subset(digits, 128), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_training_split_too_small_is_refused_before_the_run_folder_exists(tmp_path, digits):
    one = data.Dataset(digits.name, data.Split(digits.train.x[:1], digits.train.y[:1]),
                       data.Split(digits.val.x[:16], digits.val.y[:16]), digits.test, digits.classes)
    with pytest.raises(ValueError, match="has 1 example"):
        train(tiny_config("standard"), out_dir=tmp_path / "run", dataset=one, progress=False)
    assert not (tmp_path / "run").exists(), "neither RUN/ nor RUN/.lock for a refused run"


def test_a_destination_is_tested_by_creating_a_file_not_by_permission_bits(tmp_path, monkeypatch):
    import tempfile

    (tmp_path / "reports").mkdir()
    run_folder.check_writable_folder(tmp_path / "reports")  # writable: passes, and leaves nothing behind
    run_folder.check_report_destination(tmp_path / "new" / "r.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"] and not list((tmp_path / "reports").iterdir())

    def read_only(*args, **kwargs):  # what /proc, a read-only mount or a full inode table answer, even to root
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    for check, where in ((run_folder.check_writable_folder, tmp_path / "reports"),
                         (run_folder.check_report_destination, tmp_path / "r.json"),
                         (cli._check_out, str(tmp_path / "run"))):
        with pytest.raises(ValueError, match="Read-only file system"):
            check(where)


# --------------------------------------------------------------------------- write order of an epoch


def _failing_save(name: str):
    """A torch.save that fails like a full disk for ``name``'s payload (checkpoint.pt holds optimizer state)."""
    real = torch.save

    def save(obj, handle, *args, **kwargs):
        if ("optimizer_state" in obj) == (name == "checkpoint.pt"):
            raise OSError(errno.EFBIG, "File too large")
        return real(obj, handle, *args, **kwargs)

    return save


def test_checkpoint_pt_is_written_before_best_pt_so_a_failed_first_epoch_leaves_no_run(tmp_path, digits,
                                                                                       monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", _failing_save("checkpoint.pt"))
    with pytest.raises(CheckpointWriteError) as info:
        train(tiny_config("standard"), out_dir=out, dataset=subset(digits, 128), progress=False)
    message = str(info.value)
    assert "before any epoch was saved" in message and "start the training again" in message
    assert "continue with --resume" not in message, "there is nothing to resume"
    assert sorted(p.name for p in out.iterdir()) == [run_folder.LOCK_NAME], "no orphan best.pt"
    run_folder.check_can_start(out)  # a fresh start is accepted, as the message says


def test_a_best_pt_that_failed_after_checkpoint_pt_is_rewritten_on_resume(tmp_path, digits, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", _failing_save("best.pt"))
        with pytest.raises(CheckpointWriteError, match=r"checkpoint.pt is complete \(epoch 1\).*--resume"):
            train(tiny_config("standard"), out_dir=out, dataset=subset(digits, 128), progress=False)
    assert not (out / "best.pt").exists() and read_checkpoint(out / "checkpoint.pt")["best_epoch"] == 1
    # finished: trains nothing more
    train(tiny_config("standard"), out_dir=out, dataset=subset(digits, 128), progress=False, resume=True)
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "checkpoint.pt")
    assert best["epoch"] == 1
    assert all(torch.equal(v, last["model_state"][k]) for k, v in best["model_state"].items())


# --------------------------------------------------------------------------- temporaries in eval/


def test_temporary_files_are_not_a_run_and_stale_report_temporaries_are_cleaned(tmp_path):
    reports = tmp_path / run_folder.REPORTS_DIR
    reports.mkdir()
    stale, fresh = reports / ".20260101T000000Z-natural-n20.json.abc.tmp", reports / ".latest.json.x1.tmp"
    stale.write_text("half a report")
    fresh.write_text("a report being written")
    now = time.time()
    os.utime(stale, (now - 2 * run_folder.STALE_REPORT_TMP_SECONDS,) * 2)
    os.utime(fresh, (now - 60,) * 2)
    assert run_folder.run_contents(tmp_path) == [], "temporaries are neither a run nor a report"
    run_folder.check_can_start(tmp_path)  # so training may take the folder
    assert run_folder.remove_temporaries(tmp_path, now=now) == [stale]
    assert fresh.exists(), "a report an evaluation may be writing now is left alone"
    (reports / "kept.json").write_text("{}")
    assert run_folder.run_contents(tmp_path) == ["eval/"]
