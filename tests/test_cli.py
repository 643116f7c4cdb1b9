"""Tests for the command line (``python -m cas_edu``): help, train / evaluate / activations, and one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cas_edu import cli, run_folder
from cas_edu.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``main`` in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A one-epoch PGD-AT + CAS run on digits, trained through the CLI."""
    folder = tmp_path_factory.mktemp("cli") / "run"
    code = cli.main(["train", "--out", str(folder), "--epochs", "1", "--quiet", "--device", "cpu",
                     "--attack-steps", "1", "--cas"])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory) -> Path:
    """A tiny 3-channel 8×8 uint8 dataset (10 classes) in npz form."""
    folder = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    np.savez(folder / "train.npz", x=rng.integers(0, 256, size=(60, 8, 8, 3), dtype=np.uint8),
             y=np.arange(60) % 10)
    return folder


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["activations"]],
                         ids=["top", "train", "evaluate", "activations"])
def test_help_exits_zero(capsys, command):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    expected = {(): "train", ("train",): "--resume", ("evaluate",): "--attacks", ("activations",): "--class-id"}
    assert expected[tuple(command)] in out


# --------------------------------------------------------------------------- train


def test_train_writes_the_run_files(run_dir, capsys):
    names = sorted(p.name for p in run_dir.iterdir() if p.name != "eval")  # eval/: see the evaluate tests
    assert names == [".lock", "best.pt", "checkpoint.pt", "history.json"]  # .lock: the run folder's lock file
    saved = json.loads((run_dir / "history.json").read_text())
    assert len(saved["history"]) == 1 and saved["history"][0]["epoch"] == 1
    assert saved["config"]["epochs"] == 1 and saved["config"]["cas"] is True
    assert saved["config"]["attack_steps"] == 1 and saved["config"]["method"] == "pgd_at"
    payload = read_checkpoint(run_dir / "checkpoint.pt")
    assert payload["epoch"] == 1 and payload["model_spec"]["cas_layers"] == ["block3"]
    torch.load(run_dir / "best.pt", weights_only=True)


def test_train_prints_a_summary_or_json(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "std", "--method", "standard", "--epochs", "1",
                             "--quiet", "--device", "cpu")
    assert code == 0, err
    assert out.startswith("trained small_cnn (standard) on digits for 1 epoch: ") and "checkpoint.pt" in out
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "std", "--resume", "--quiet", "--device", "cpu",
                             "--json")
    assert code == 0, err
    history = json.loads(out)
    assert len(history) == 1 and history[0]["val_robust_accuracy"] is None
    assert history == json.loads((tmp_path / "std" / "history.json").read_text())["history"]
    # resuming the finished run trains nothing, and says so instead of "trained ... for 1 epoch"
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "std", "--resume", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert out.startswith(f"{tmp_path / 'std'} had already finished its 1 epoch, so nothing was trained; "
                          "small_cnn (standard) on digits") and "checkpoint.pt" in out
    assert "trained small_cnn" not in out


def test_a_resumed_training_counts_the_epochs_it_trained(tmp_path, capsys):
    args = ["train", "--out", tmp_path / "std", "--method", "standard", "--preset", "paper", "--quiet",
            "--device", "cpu"]
    code, out, err = run_cli(capsys, *args, "--epochs", "1")
    assert code == 0, err
    assert " for 1 epoch" in out
    code, out, err = run_cli(capsys, *args, "--epochs", "3", "--resume")
    assert code == 0, err
    assert out.startswith("trained small_cnn (standard) on digits for 3 epochs (resumed after epoch 1): "), out


def test_resume_without_checkpoint_exits_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "none", "--resume", "--quiet")
    assert code == 2
    assert out == "" and len(err.splitlines()) == 1 and "resume" in err


# --------------------------------------------------------------------------- evaluate and activations


def test_evaluate_json_is_printed_and_saved(run_dir, capsys):
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--attacks", "natural,pgd20", "--json", "--n", "50",
                             "--device", "cpu")
    assert code == 0, err
    report = json.loads(out)
    saved = run_folder.latest_report_path(run_dir)
    assert saved.parent == run_dir / "eval" and saved.name.endswith("-natural+pgd20-n50.json")
    assert report == json.loads(saved.read_text())
    assert report["n_examples"] == 50 and report["has_cas"] is True
    assert report["eps"] == pytest.approx(0.1)
    assert set(report["accuracy"]) == {"natural", "pgd20"}
    assert set(report["accuracy"]["pgd20"]) == {"ce", "ce+cas"}
    # On this one-epoch model an attack from a random start can turn a wrong digit right, so single attacks
    # are not compared with natural accuracy; the per-example worst case is bounded by every column.
    assert all(0 <= v <= 1 for v in report["accuracy"]["pgd20"].values())
    assert report["worst_case"] <= min(v for by in report["accuracy"].values() for v in by.values())
    assert report["worst_case_n"] == 50
    assert report["checkpoint"].endswith("best.pt")
    shutil.rmtree(run_dir / "eval")


def test_evaluate_prints_a_table_and_honours_options(run_dir, capsys):
    shutil.rmtree(run_dir / "eval", ignore_errors=True)
    code, out, err = run_cli(capsys, "evaluate", run_dir / "checkpoint.pt", "--attacks", "natural,fgsm", "--n", "20",
                             "--objective", "ce", "--eps", "0.05", "--split", "val", "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0].startswith("attack")
    assert "adaptive" not in out.splitlines()[0], "only the main-head objective was run: no adaptive column"
    fgsm_row = next(line for line in out.splitlines() if line.startswith("FGSM"))
    assert fgsm_row.split()[-1] == "20" and len(fgsm_row.split()) == 5  # accuracy, [low, high] (Wilson 95 %), n
    worst_row = next(line for line in out.splitlines() if line.startswith("worst case (per example)"))
    assert worst_row.split()[-1] == "20"
    assert "eps = 0.05" in out and "20 examples" in out
    assert not (run_dir / "eval").exists(), "a .pt path is not a run folder: no report saved there"


def test_evaluate_reports_autoattack_and_for_cas_the_straight_through_attacks_by_default(run_dir, capsys, monkeypatch):
    args = cli.build_parser().parse_args(["evaluate", "runs/x"])
    assert args.attacks is None and args.objective == "both"
    assert cli.default_attacks(False) == ("natural", "fgsm", "pgd20", "cw", "autoattack")
    assert cli.default_attacks(True) == ("natural", "fgsm", "pgd20", "cw", "autoattack", "pgd-st", "autoattack-st")
    from cas_edu import evaluation

    asked = {}

    def fake_evaluate(model, x, y, eps, attacks, **kwargs):
        asked.update(attacks=tuple(attacks), **kwargs)
        return evaluation.EvaluationReport(eps=eps, n_examples=len(x))

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    code, _, err = run_cli(capsys, "evaluate", run_dir, "--n", "10", "--subset-n", "5", "--device", "cpu",
                           "--output", run_dir / "unused.json")
    assert code == 0, err
    assert asked["attacks"] == cli.default_attacks(True) and asked["subset_n"] == 5  # the run has CAS modules
    (run_dir / "unused.json").unlink()


def test_an_n_above_the_split_size_uses_every_example_and_says_so(run_dir, capsys, monkeypatch):
    from cas_edu import evaluation

    asked = {}

    def fake_evaluate(model, x, y, eps, attacks, **kwargs):
        asked.update(n=len(x), subset_n=kwargs["subset_n"])
        return evaluation.EvaluationReport(eps=eps, n_examples=len(x))

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    output = run_dir / "unused.json"
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--n", "100000", "--subset-n", "50000", "--device", "cpu",
                             "--output", output)
    output.unlink()
    assert code == 0, err
    test_size = asked["n"]
    assert 300 < test_size < 400  # digits' test split, not 100,000
    assert err.splitlines() == [
        f"note: --n 100000 is more than the {test_size} examples of the test split of digits; using all {test_size}.",
        f"note: --subset-n 50000 is more than the {test_size} examples evaluated; autoattack, pgd-st, "
        "autoattack-st run on all of them."]
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--n", "10", "--subset-n", "50000", "--attacks", "natural",
                             "--device", "cpu", "--output", output)
    output.unlink()
    assert code == 0 and err == "", "no note when N fits, nor for --subset-n without a costly attack"


def test_evaluate_output_names_the_report_file(run_dir, tmp_path, capsys):
    shutil.rmtree(run_dir / "eval", ignore_errors=True)
    target = tmp_path / "reports" / "natural_only.json"
    code, out, err = run_cli(capsys, "evaluate", run_dir, "--attacks", "natural", "--n", "10", "--device", "cpu",
                             "--output", target)
    assert code == 0, err
    assert json.loads(target.read_text())["accuracy"].keys() == {"natural"}
    assert not (run_dir / "eval").exists(), "--output replaces the default RUN/eval/"


def test_activations_json(run_dir, capsys):
    code, out, err = run_cli(capsys, "activations", run_dir, "--n", "100", "--json", "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert result["layer"] == "block3" and result["class_id"] is None
    assert result["n_examples"] == 100 and isinstance(result["n_examples"], int)  # a count, not 100.0
    assert result["eps"] == pytest.approx(0.1)
    for key in ("natural_counts", "adversarial_counts", "natural_magnitudes", "adversarial_magnitudes"):
        assert len(result[key]) == 128, key
    assert all(0 <= c <= 100 for c in result["natural_counts"] + result["adversarial_counts"])
    assert result["natural_counts"] == sorted(result["natural_counts"], reverse=True)


def test_activations_table_for_one_class(run_dir, capsys):
    code, out, err = run_cli(capsys, "activations", run_dir, "--n", "100", "--class-id", "0", "--device", "cpu")
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["layer"] == "block3" and lines["class_id"] == "0"
    assert 0 < float(lines["n_examples"]) < 100


@pytest.mark.usefixtures("one_thread")  # PGD-20 on 20 digits: well under a second on one thread
def test_activations_threshold_passes_through(run_dir, capsys):
    """--threshold reaches the counts; the JSON and the table report threshold, saturation and saturated."""
    results = {}
    for threshold in ("0.01", "0.5"):
        code, out, err = run_cli(capsys, "activations", run_dir, "--n", "20", "--json", "--device", "cpu",
                                 "--threshold", threshold)
        assert code == 0, err
        results[threshold] = json.loads(out)
    default, high = results["0.01"], results["0.5"]
    assert default["threshold"] == 0.01 and high["threshold"] == 0.5
    assert isinstance(high["saturated"], bool) and 0 <= high["saturation"] <= 1
    assert high["saturation"] < default["saturation"] and high["saturated"] is False
    assert sum(high["natural_counts"]) < sum(default["natural_counts"])
    code, out, err = run_cli(capsys, "activations", run_dir, "--n", "20", "--device", "cpu", "--threshold", "0.5")
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["threshold"] == "0.5000" and lines["saturated"] == "False" and "saturation" in lines
    assert lines["n_examples"] == "20" and lines["class_id"] == "all"  # a count as a count; no class: all
    assert out.splitlines()[-1].startswith("not saturated: ") and "at t = 50 %" in out


# --------------------------------------------------------------------------- bad arguments: exit 2, one line


@pytest.mark.parametrize("args", [
    ["train", "--out", "{tmp}/r", "--eps", "-0.1"],
    ["train", "--out", "{tmp}/r", "--eps", "1.5"],
    ["train", "--out", "{tmp}/r", "--method", "foo"],
    ["train", "--out", "{tmp}/r", "--model", "foo"],
    ["train", "--out", "{tmp}/r", "--dataset", "foo"],
    ["train", "--out", "{tmp}/r", "--epochs", "0"],
    ["train", "--out", "{tmp}/r", "--lr", "-1"],
    ["train", "--out", "{tmp}/r", "--preset", "slow"],
    ["train"],                                                   # --out is required
    ["evaluate", "{tmp}/missing"],
    ["evaluate", "{run}", "--attacks", "natural,pgd1000"],
    ["evaluate", "{run}", "--dataset", "npz:{rgb}"],
    ["evaluate", "{run}", "--dataset", "foo"],
    ["evaluate", "{run}", "--n", "0"],
    ["evaluate", "{run}", "--eps", "1.5"],
    ["evaluate", "{run}", "--objective", "kl"],
    ["activations", "{tmp}/missing"],
    ["activations", "{run}", "--n", "0"],
    ["activations", "{run}", "--layer", "nope", "--n", "10"],
    ["activations", "{run}", "--class-id", "11", "--n", "10"],
    ["frobnicate"],
    [],
], ids=["eps-negative", "eps-above-1", "method", "model", "train-dataset", "epochs-0", "lr-negative", "preset",
        "no-out", "missing-run", "unknown-attack", "wrong-channels", "eval-dataset", "n-0", "eval-eps", "objective",
        "act-missing-run", "act-n-0", "act-layer", "act-class", "unknown-command", "no-command"])
def test_bad_arguments_exit_2_with_one_line(args, run_dir, rgb_npz, tmp_path, capsys):
    filled = [a.format(tmp=tmp_path, run=run_dir, rgb=rgb_npz) for a in args]
    code, out, err = run_cli(capsys, *filled)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert not (tmp_path / "r").exists(), "a failed start must not leave a run folder"


def test_error_lines_say_what_went_wrong(run_dir, rgb_npz, tmp_path, capsys):
    expectations = [
        (["train", "--out", tmp_path / "r", "--eps", "1.5"], "eps"),
        (["train", "--out", tmp_path / "r", "--method", "foo"], "foo"),
        (["evaluate", run_dir, "--attacks", "natural,pgd1000"], "pgd1000"),
        (["evaluate", run_dir, "--dataset", f"npz:{rgb_npz}"], "channels"),
        (["evaluate", run_dir, "--n", "0"], "--n"),
        (["evaluate", tmp_path / "missing"], "No checkpoint"),
    ]
    for args, needle in expectations:
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and needle in err, (args, err)


def test_evaluate_a_text_file_exits_2(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("hello world, this is not a checkpoint\n")
    code, out, err = run_cli(capsys, "evaluate", path)
    assert code == 2 and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- notebooks


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nothing can be created")
def test_notebooks_into_a_folder_that_cannot_be_created_is_one_line_naming_it(capsys):
    code, out, err = run_cli(capsys, "notebooks", "/proc/cas_edu_course")
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: the folder /proc/cas_edu_course cannot be written: creating a file in /proc failed (")
    assert "Errno" not in err


def test_notebooks_under_a_file_is_refused_before_anything_is_copied(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    code, out, err = run_cli(capsys, "notebooks", blocker / "course")
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert f"the folder {blocker / 'course'} cannot be created: {blocker} is a file, not a folder" in err
    assert blocker.read_text() == "a file"


def test_notebooks_failing_while_copying_is_one_line_naming_the_folder_and_exit_1(tmp_path, capsys, monkeypatch):
    def disk_full(source, target, *args, **kwargs):
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    code, out, err = run_cli(capsys, "notebooks", tmp_path / "course")
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: could not copy the course into {tmp_path / 'course'}: No space left on device (")


# --------------------------------------------------------------------------- the program's name


@pytest.mark.parametrize("argv0, prog", [("/venv/bin/cas-edu", "cas-edu"),
                                         ("/site-packages/cas_edu/__main__.py", "python -m cas_edu"),
                                         ("", "python -m cas_edu")], ids=["console-script", "module", "none"])
def test_usage_and_errors_name_the_program_as_it_was_invoked(argv0, prog, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [argv0, "train"])
    capsys.readouterr()
    code = cli.main()  # no argv: main reads sys.argv, as a console script does
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {prog} train: the following arguments are required: --out (see --help)\n"
    monkeypatch.setattr(sys, "argv", [argv0, "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert capsys.readouterr().out.startswith(f"usage: {prog} [-h]")


# --------------------------------------------------------------------------- real processes


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_module_help_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "cas_edu", "evaluate", "--help"], env=_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "--objective" in result.stdout and result.stderr == ""


def test_module_error_in_a_subprocess_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cas_edu", "evaluate", str(tmp_path / "missing")], env=_env(),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_out_of_memory_says_lower_the_batch_size_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from cas_edu import training

    real_loss, calls = training.training_loss, []

    def runs_out_of_memory_in_epoch_two(model, x, y, config, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # digits' 1,294 training images at batch 1024: two steps per epoch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(model, x, y, config, **kwargs)

    monkeypatch.setattr(training, "training_loss", runs_out_of_memory_in_epoch_two)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--out", out, "--epochs", "3", "--batch-size", "1024", "--quiet",
                           "--device", "cpu", "--attack-steps", "1")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "--batch-size" in err and "--resume" in err
    assert read_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_activations_use_the_official_attack_on_the_cas_run(run_dir, capsys, monkeypatch):
    from cas_edu import activations

    calls = []

    def fake_pgd(model, x, y, eps, **kwargs):
        calls.append(kwargs)
        return x.clone()

    monkeypatch.setattr(activations, "pgd", fake_pgd)
    code, out, err = run_cli(capsys, "activations", run_dir, "--n", "20", "--device", "cpu")
    assert code == 0, err
    assert calls and all(c["objective"] == "ce+cas" and c["steps"] == 20 for c in calls)
    assert calls[0]["step_size"] == pytest.approx(0.1 * 0.003 / (8 / 255))
    assert "PGD-20 (ce+cas" in out


def test_train_options_and_the_config_come_from_the_parser_definition():
    """Every config flag is an option of ``train`` under the config field's name, and parsing a command line
    gives the config ``make_config`` gives for those values."""
    from cas_edu.presets import TrainConfig, make_config

    options = cli.train_options()
    assert set(cli.CONFIG_OPTIONS) <= set(options) and set(cli.CONFIG_OPTIONS) <= set(TrainConfig.__dataclass_fields__)
    assert options["attack_steps"] == "--attack-steps" and options["out"] == "--out"
    args = cli.build_parser().parse_args(["train", "--method", "mart", options["attack_steps"], "3",
                                          options["batch_size"], "16", "--out", "runs/x"])
    assert cli.config_from_args(args) == make_config("digits", method="mart", attack_steps=3, batch_size=16)


def test_the_default_attacks_are_the_registry_s():
    from cas_edu import evaluation

    assert cli.default_attacks(True) == evaluation.report_attacks(True)
    assert cli.REPORT_ATTACKS is evaluation.REPORT_ATTACKS
    text = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["evaluate"].format_help()
    assert ",".join(evaluation.REPORT_ATTACKS) in " ".join(text.split())
