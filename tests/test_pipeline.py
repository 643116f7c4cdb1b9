"""The six-run suite of notebook 04: configs, CLI reuse, tables and the exercise checker."""
from __future__ import annotations

import pytest
import torch

from helpers import untrained_checkpoint

from cas_edu import cli, data, pipeline, run_folder
from cas_edu.evaluation import EvaluationReport
from cas_edu.presets import make_config


def test_profiles_and_configs():
    configs = pipeline.suite_configs("cpu")
    assert list(configs) == ["pgd_at", "pgd_at+cas", "trades", "trades+cas", "mart", "mart+cas"]
    assert all(c.cas == name.endswith("+cas") for name, c in configs.items())
    assert {c.dataset for c in configs.values()} == {"digits"}
    gpu = pipeline.suite_configs("gpu")
    assert gpu["pgd_at"].model == "resnet18" and gpu["pgd_at"].epochs == 200 and gpu["trades"].epochs == 100
    assert gpu["mart+cas"].attack_steps == 10 and gpu["mart+cas"].preset == "paper"
    with pytest.raises(ValueError, match="CAS_EDU_PROFILE"):
        pipeline.get_profile("tpu")
    with pytest.raises(ValueError, match="method"):
        pipeline.suite_configs("cpu", methods=["adam"])
    assert pipeline.display_name("trades+cas") == "TRADES+CAS" and pipeline.display_name("pgd_at") == "AT"


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_cli_command_builds_the_same_config(profile):
    for name, config in pipeline.suite_configs(profile, seed=3).items():
        argv = pipeline.cli_command(config, "runs/x").split()[3:]  # drop "python -m cas_edu"
        args = cli.build_parser().parse_args(argv)
        rebuilt = make_config(args.dataset, args.model, args.method, args.cas, args.preset, cas_beta=args.cas_beta,
                              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, eps=args.eps,
                              step_size=args.step_size, attack_steps=args.attack_steps, seed=args.seed,
                              device=args.device, data_root=args.data_root)
        assert rebuilt.to_dict() == config.to_dict(), name


@pytest.mark.slow
def test_run_suite_reuses_cli_runs_and_its_own(tmp_path):
    ds = data.load("digits")
    config = pipeline.suite_configs("cpu", methods=["pgd_at"], epochs=1)["pgd_at"]
    assert cli.main(pipeline.cli_command(config, tmp_path / "cpu" / "pgd_at").split()[3:] + ["--quiet"]) == 0
    assert pipeline.is_finished(config, tmp_path / "cpu" / "pgd_at")
    small = data.Dataset(ds.name, data.Split(ds.train.x[:128], ds.train.y[:128]), ds.val, ds.test, ds.classes)
    suite = pipeline.run_suite("cpu", tmp_path, dataset=small, methods=["pgd_at"], epochs=1, progress=False)
    assert suite.reused == {"pgd_at": True, "pgd_at+cas": False}
    assert suite.models["pgd_at+cas"].has_cas and not suite.models["pgd_at"].has_cas
    again = pipeline.run_suite("cpu", tmp_path, dataset=small, methods=["pgd_at"], epochs=1, progress=False)
    assert again.reused == {"pgd_at": True, "pgd_at+cas": True}
    assert again.histories == suite.histories
    assert "reused" in again.summary()
    reports = pipeline.evaluate_suite(again, ds, attacks=("natural", "pgd20"), n=16, progress=False)
    assert set(reports["pgd_at+cas"].accuracy["pgd20"]) == {"ce", "ce+cas"}
    assert set(reports["pgd_at"].accuracy["pgd20"]) == {"ce"}
    assert reports["pgd_at"].checkpoint == str(tmp_path / "cpu" / "pgd_at" / "best.pt")


def _report(acc, cas):
    return EvaluationReport(eps=0.1, n_examples=100, accuracy=acc, has_cas=cas)


@pytest.fixture
def reports():
    return {
        "pgd_at": _report({"natural": {"ce": 0.95}, "pgd20": {"ce": 0.60}, "square": {"ce": 0.70}}, False),
        "pgd_at+cas": _report({"natural": {"ce": 0.96}, "pgd20": {"ce": 0.80, "ce+cas": 0.55},
                               "square": {"ce": 0.50}}, True),
        "trades": _report({"natural": {"ce": 0.90}, "pgd20": {"ce": 0.62}, "square": {"ce": 0.66}}, False),
        "trades+cas": _report({"natural": {"ce": 0.91}, "pgd20": {"ce": 0.70, "ce+cas": 0.68},
                               "square": {"ce": 0.69}}, True),
    }


def test_table_worst_case_and_gains(reports):
    headers, rows = pipeline.results_rows(reports)
    assert headers == ["model", "natural", "PGD-20 main head", "PGD-20 adaptive", "Square", "worst case"]
    assert rows[0] == ["AT", "95.0", "60.0", "60.0", "70.0", "60.0"]
    assert rows[1] == ["AT+CAS", "96.0", "80.0", "55.0", "50.0", "50.0"]
    assert pipeline.worst_case(reports["pgd_at+cas"]) == pytest.approx(0.50)
    assert pipeline.cas_gains(reports) == {"AT": -10.0, "TRADES": 6.0}
    assert pipeline.cas_gains(reports, "PGD-20 main head") == {"AT": 20.0, "TRADES": 8.0}
    table = pipeline.results_table(reports)
    assert table.splitlines()[0].startswith("| model") and "| AT+CAS" in table
    assert [c.strip() for c in table.splitlines()[2].split("|")[1:-1]] == ["n"] + ["100"] * 5  # examples per column
    with pytest.raises(ValueError, match="column"):
        pipeline.cas_gains(reports, "CW∞")


def test_check_cas_gains(reports, capsys):
    assert pipeline.check_cas_gains(lambda r: pipeline.cas_gains(r), reports)
    assert capsys.readouterr().out.startswith("✓ Right")
    assert not pipeline.check_cas_gains(lambda r: {"AT": 10.0, "TRADES": -6.0}, reports)
    assert "sign" in capsys.readouterr().out
    assert not pipeline.check_cas_gains(lambda r: {}, reports)
    assert "missing" in capsys.readouterr().out
    assert not pipeline.check_cas_gains(lambda r: 1 / 0, reports)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet") and out.count("\n") == 1


def test_eval_examples():
    ds = data.load("digits")
    x, y = pipeline.eval_examples(ds, 50)
    assert x.shape == (50, 1, 8, 8) and torch.equal(y, ds.test.y[:50])
    with pytest.raises(ValueError):
        pipeline.eval_examples(ds, 0)


# --------------------------------------------------------------------------- evaluate_suite: best.pt, subsets, intervals


def _save_run(folder, seed):
    """A run folder whose best.pt and checkpoint.pt hold different weights (seeds ``seed`` and ``seed + 1``)."""
    from cas_edu.checkpoint import save_checkpoint

    models = {}
    for name, s in (("best.pt", seed), ("checkpoint.pt", seed + 1)):
        payload, models[name] = untrained_checkpoint(cas=seed % 2 == 1, init_seed=s, method="pgd_at", device="cpu")
        save_checkpoint(folder / name, payload)
    return models


def test_evaluate_suite_evaluates_best_pt_on_the_profile_examples(tmp_path):
    import json

    ds = data.load("digits")
    saved = {name: _save_run(tmp_path / name, seed) for name, seed in (("pgd_at", 0), ("pgd_at+cas", 1))}
    runs = {name: tmp_path / name for name in saved}
    reports = pipeline.evaluate_suite(runs, ds, profile="cpu", attacks=("natural", "pgd20", "pgd-st"), n=40,
                                      subset_n=20, progress=False)
    x, y = ds.test.x[:40], ds.test.y[:40]
    for name, models in saved.items():
        report = reports[name]
        with torch.no_grad():
            expected = models["best.pt"](x).argmax(1) == y
        assert torch.equal(report.correct["natural"]["ce"], expected), "best.pt, not the final checkpoint"
        assert report.eps == pytest.approx(0.1) and report.checkpoint.endswith("best.pt")
        assert report.count("pgd20") == 40 and report.count("pgd-st") == 20 and report.worst_case_n == 20
        assert torch.equal(report.examples["pgd-st"], pipeline.evaluation.balanced_indices(y, 20, 0))
        saved_json = json.loads(run_folder.latest_report_path(tmp_path / name).read_text())
        assert saved_json["worst_case"] == report.worst_case and saved_json["n"]["pgd-st"] == 20
        assert [p.parent.name for p in run_folder.saved_reports(tmp_path / name)] == ["eval"]
    x_sub, y_sub = pipeline.balanced_subset(x, y, 20, seed=0)
    assert torch.equal(y_sub, y[reports["pgd_at"].examples["pgd-st"]])
    table = pipeline.results_table(reports)
    headers = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    counts = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert dict(zip(headers, counts)) == {"model": "n", "natural": "40", "PGD-20 main head": "40",
                                          "PGD-20 adaptive": "40", "PGD-100×5 straight-through": "20",
                                          "worst case": "20"}
    with pytest.raises(ValueError, match="x=..."):
        pipeline.evaluate_suite(runs, x, y)


def test_profiles_evaluate_what_they_claim():
    gpu, cpu = pipeline.get_profile("gpu"), pipeline.get_profile("cpu")
    assert gpu.n_eval is None and gpu.subset_n >= 1000  # all 10,000 test images; costly attacks on >= 1,000
    assert {"autoattack", "pgd-st", "autoattack-st"} <= set(gpu.attacks)
    assert cpu.subset_n < cpu.n_eval and "pgd-st" in cpu.attacks


def _paired_reports():
    """AT and AT+CAS on 10 examples: CAS survives examples 0-6, AT examples 3-9 (per-example worst case)."""
    def report(survived, cas):
        s = torch.zeros(10, dtype=torch.bool)
        s[list(survived)] = True
        correct = {"natural": {"ce": torch.ones(10, dtype=torch.bool)}, "pgd20": {"ce": s}}
        return EvaluationReport(eps=0.1, n_examples=10, has_cas=cas, correct=correct, digest="same",
                                accuracy={a: {o: c.double().mean().item() for o, c in by.items()}
                                          for a, by in correct.items()})
    return {"pgd_at": report(range(3, 10), False), "pgd_at+cas": report(range(0, 7), True)}


def test_cas_gains_come_with_a_paired_interval(capsys):
    reports = _paired_reports()
    intervals = pipeline.cas_gain_intervals(reports)
    assert set(intervals) == {"AT"}
    gain = intervals["AT"]
    assert gain.difference == 0 and (gain.a_only, gain.b_only) == (3, 3) and gain.n == 10
    assert gain.low < 0 < gain.high
    assert pipeline.check_cas_gains(lambda r: {"AT": 0.0}, reports)
    assert "AT +0.0 (95% CI" in capsys.readouterr().out


def test_the_straight_through_column_shows_cas_and_plain_models():
    """On CAS models the straight-through PGD runs with the adaptive objective, on plain ones with ce: one column."""
    from cas_edu.evaluation import EvaluationReport

    plain = EvaluationReport(eps=0.1, n_examples=10, accuracy={"natural": {"ce": 1.0}, "pgd-st": {"ce": 0.9}})
    cas = EvaluationReport(eps=0.1, n_examples=10, has_cas=True,
                           accuracy={"natural": {"ce": 1.0}, "pgd-st": {"ce+cas": 0.8}})
    headers, rows = pipeline.results_rows({"pgd_at": plain, "pgd_at+cas": cas})
    column = headers.index("PGD-100×5 straight-through")
    assert [row[column] for row in rows] == ["90.0", "80.0"]


def _train_parser():
    return next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]


@pytest.mark.parametrize("overrides", [
    {},
    dict(epochs=3, attack_steps=2, eps=8 / 255, seed=7, device="cpu", data_root="/data/my datasets"),
    dict(batch_size=32, lr=0.05, step_size=0.01, cas_beta=1.5, val_fraction=0.0, amp="bf16", channels_last="off"),
])
@pytest.mark.parametrize("cas", [False, True])
def test_cli_command_parses_back_into_the_same_config_with_the_real_parser(overrides, cas):
    import shlex

    config = make_config("digits", "small_cnn", "trades", cas, "fast", **overrides)
    command = pipeline.cli_command(config, "runs/a b")
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "cas_edu", "train"]
    known = set(_train_parser()._option_string_actions)
    assert [w for w in words if w.startswith("--") and w not in known] == []  # every flag is the parser's own
    args = cli.build_parser().parse_args(words[3:])
    assert cli.config_from_args(args).to_dict() == config.to_dict()
    assert args.out == "runs/a b"


def test_cli_command_refuses_a_config_the_command_line_cannot_write():
    config = make_config("digits", momentum=0.5)
    with pytest.raises(ValueError, match="momentum"):
        pipeline.cli_command(config, "runs/x")


def test_profiles_live_in_presets_and_the_checker_in_exercises():
    from cas_edu import exercises, presets

    assert pipeline.get_profile is presets.get_profile and pipeline.PROFILES is presets.PROFILES
    assert pipeline.Profile is presets.Profile and pipeline.SUITE_METHODS == presets.SUITE_METHODS
    assert pipeline.check_cas_gains is exercises.check_cas_gains
    with pytest.raises(AttributeError):
        pipeline.no_such_name  # noqa: B018


def test_results_table_is_the_markdown_table_of_its_rows(reports):
    from cas_edu.tables import markdown_table

    headers, rows = pipeline.results_rows(reports, intervals=True)
    table = pipeline.results_table(reports)
    assert table.startswith(markdown_table(headers, [pipeline.results_counts(reports)] + rows) + "\n")


def test_observation_configs_are_schedule_matched_and_printable():
    configs = pipeline.observation_configs("cpu", seed=3)
    assert list(configs) == list(pipeline.OBSERVATION_RUNS)
    assert {c.model for c in configs.values()} == {pipeline.OBSERVATION_MODELS["cpu"]} == {"resnet18_w32"}
    assert {(c.dataset, c.epochs, c.seed, c.preset) for c in configs.values()} == {("digits", 12, 3, "fast")}
    at, cas = configs["pgd_at"], configs["pgd_at+cas"]
    assert (at.method, at.cas, cas.method, cas.cas, configs["standard"].method) == ("pgd_at", False, "pgd_at", True,
                                                                                   "standard")
    assert (at.eps, at.attack_steps, at.step_size) == (cas.eps, cas.attack_steps, cas.step_size) == (0.1, 3, 0.1 * 2.5 / 3)
    parser = cli.build_parser()
    for name, config in configs.items():
        folder = pipeline.observation_run_dir("runs", "cpu", name)
        assert folder.as_posix() == f"runs/cpu/resnet18_w32/{name}"
        rebuilt = cli.config_from_args(parser.parse_args(pipeline.cli_command(config, folder).split()[3:]))
        assert rebuilt == config


def test_gpu_observation_runs_are_notebook_04s():
    configs = pipeline.observation_configs("gpu")
    suite = pipeline.suite_configs("gpu", methods=["pgd_at"])
    assert configs["pgd_at"] == suite["pgd_at"] and configs["pgd_at+cas"] == suite["pgd_at+cas"]
    assert (configs["standard"].dataset, configs["standard"].model, configs["standard"].preset) == (
        "cifar10", "resnet18", "paper")
    assert pipeline.observation_run_dir("runs", "gpu", "pgd_at").as_posix() == "runs/gpu/pgd_at"
    with pytest.raises(ValueError, match="cpu, gpu"):
        pipeline.observation_configs("full")


def test_observation_suite_trains_then_reuses_its_runs(tmp_path, monkeypatch):
    tiny = {name: config for name, config in pipeline.observation_configs("cpu").items()}
    tiny = {name: make_config("digits", "small_cnn", c.method, c.cas, epochs=1, attack_steps=1, val_examples=16,
                              device="cpu") for name, c in tiny.items()}
    monkeypatch.setattr(pipeline, "observation_configs", lambda *args, **kwargs: tiny)
    ds = data.load("digits")
    small = data.Dataset(ds.name, data.Split(ds.train.x[:128], ds.train.y[:128]), ds.val, ds.test, ds.classes)
    suite = pipeline.observation_suite("cpu", tmp_path, dataset=small, progress=False)
    assert suite.reused == {name: False for name in pipeline.OBSERVATION_RUNS}
    assert suite.run_dirs["pgd_at+cas"] == tmp_path / "cpu" / "resnet18_w32" / "pgd_at+cas"
    assert suite.models["pgd_at+cas"].has_cas and not suite.models["pgd_at"].has_cas
    again = pipeline.observation_suite("cpu", tmp_path, dataset=small, progress=False)
    assert again.reused == {name: True for name in pipeline.OBSERVATION_RUNS}


# --------------------------------------------------------------------------- Wilson intervals in the comparison table


def _outcome_reports():
    """AT (no CAS) and AT+CAS on 20 examples; Square on the subset 0-9; per-example results throughout."""
    def report(natural, pgd_ce, pgd_adaptive, square, cas):
        def bools(survived, n=20):
            out = torch.zeros(n, dtype=torch.bool)
            out[list(survived)] = True
            return out
        correct = {"natural": {"ce": bools(natural)}, "pgd20": {"ce": bools(pgd_ce)},
                   "square": {"ce": bools(square, 10)}}
        if pgd_adaptive is not None:
            correct["pgd20"]["ce+cas"] = bools(pgd_adaptive)
        return EvaluationReport(eps=0.1, n_examples=20, has_cas=cas, correct=correct, digest="same",
                                examples={"square": torch.arange(10)},
                                accuracy={a: {o: c.double().mean().item() for o, c in by.items()}
                                          for a, by in correct.items()})
    return {"pgd_at": report(range(19), range(12), None, range(7), False),
            "pgd_at+cas": report(range(20), range(17), range(3, 11), range(2, 9), True)}


def test_results_table_prints_each_accuracy_with_its_wilson_interval():
    from cas_edu.evaluation import wilson_interval

    reports = _outcome_reports()
    table = pipeline.results_table(reports)
    lines = table.splitlines()
    headers = [c.strip() for c in lines[0].split("|")[1:-1]]
    cells = {row[0]: dict(zip(headers, row)) for row in
             ([c.strip() for c in line.split("|")[1:-1]] for line in lines[3:5])}
    at, cas = reports["pgd_at"], reports["pgd_at+cas"]

    def expected(outcomes):
        ci = wilson_interval(outcomes)
        return f"{100 * ci.accuracy:.1f} {ci.bounds(1)}"

    assert cells["AT"]["natural"] == expected(at.correct["natural"]["ce"]) == "95.0 [76.4, 99.1]"
    assert cells["AT"]["PGD-20 main head"] == expected(at.correct["pgd20"]["ce"])
    assert cells["AT"]["PGD-20 adaptive"] == cells["AT"]["PGD-20 main head"]  # ce stands in without CAS
    assert cells["AT+CAS"]["PGD-20 main head"] == expected(cas.correct["pgd20"]["ce"])
    assert cells["AT+CAS"]["PGD-20 adaptive"] == expected(cas.correct["pgd20"]["ce+cas"])
    assert cells["AT+CAS"]["Square"] == expected(cas.correct["square"]["ce"])  # over the subset's 10, not 20
    assert cells["AT+CAS"]["worst case"] == expected(cas.worst_case_correct()[1]) == "60.0 [31.3, 83.2]"
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["n", "20", "20", "20", "10", "10"]
    assert "Wilson" in table


def test_results_rows_stay_plain_numbers_without_intervals_and_cas_gains_read_them():
    reports = _outcome_reports()
    _, plain = pipeline.results_rows(reports)
    _, bracketed = pipeline.results_rows(reports, intervals=True)
    assert all(float(cell) >= 0 for row in plain for cell in row[1:])
    assert [[c.split(" [")[0] for c in row] for row in bracketed] == plain
    assert pipeline.cas_gains(reports) == {"AT": -10.0}  # worst case 6/10 with CAS, 7/10 without


def test_results_table_leaves_out_intervals_it_cannot_count():
    """A hand-built report whose accuracy × n is no whole number has no per-example results to count."""
    odd = EvaluationReport(eps=0.1, n_examples=7, accuracy={"natural": {"ce": 0.5}, "pgd20": {"ce": 0.25}})
    _, rows = pipeline.results_rows({"pgd_at": odd}, intervals=True)
    assert rows == [["AT", "50.0", "25.0", "25.0"]]

