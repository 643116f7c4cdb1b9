"""The six-run suite of notebook 04: configs, CLI reuse, tables and the exercise checker."""
from __future__ import annotations

import pytest
import torch

from cas_edu import cli, data, pipeline
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
    reports = pipeline.evaluate_suite(again.models, ds.test.x[:16], ds.test.y[:16], 0.1,
                                      attacks=("natural", "pgd20"), progress=False)
    assert set(reports["pgd_at+cas"].accuracy["pgd20"]) == {"ce", "ce+cas"}
    assert set(reports["pgd_at"].accuracy["pgd20"]) == {"ce"}


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
