"""Tests for cas_edu.evaluation: reports per attack and objective, the table and JSON, masking warnings, Square."""
from __future__ import annotations

import json

import pytest
import torch

from cas_edu import data
from cas_edu.evaluation import ATTACKS, EvaluationReport, evaluate, masking_warnings
from cas_edu.presets import make_config
from cas_edu.training import train

EPS = 0.1
WHITE_BOX = ("fgsm", "pgd20", "cw")


def subset(dataset: data.Dataset, n_train: int, n_val: int = 16) -> data.Dataset:
    return data.Dataset(dataset.name, data.Split(dataset.train.x[:n_train], dataset.train.y[:n_train]),
                        data.Split(dataset.val.x[:n_val], dataset.val.y[:n_val]), dataset.test, dataset.classes)


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits")


def _trained(digits: data.Dataset, cas: bool):
    config = make_config("digits", method="pgd_at", cas=cas, epochs=2, device="cpu", val_examples=16,
                         attack_steps=2, val_attack_steps=1, batch_size=32, seed=0)
    model, _ = train(config, dataset=subset(digits, 256), progress=False)
    return model


@pytest.fixture(scope="module")
def cas_model(digits):
    return _trained(digits, cas=True)


@pytest.fixture(scope="module")
def plain_model(digits):
    return _trained(digits, cas=False)


@pytest.fixture(scope="module")
def test_data(digits):
    return digits.test.x[:64], digits.test.y[:64]


@pytest.fixture(scope="module")
def cas_report(cas_model, test_data):
    x, y = test_data
    return evaluate(cas_model, x, y, EPS, attacks=("natural", "fgsm", "pgd20", "cw"), objective="both")


# --------------------------------------------------------------------------- reports


def test_cas_model_reports_both_objectives_for_white_box_attacks(cas_report, test_data):
    report = cas_report
    assert report.has_cas is True
    assert report.eps == EPS and report.n_examples == len(test_data[0])
    assert list(report.accuracy) == ["natural", "fgsm", "pgd20", "cw"]
    assert set(report.seconds) == set(report.accuracy)
    assert all(s >= 0 for s in report.seconds.values())
    assert set(report.accuracy["natural"]) == {"ce"}
    for name in WHITE_BOX:
        assert set(report.accuracy[name]) == {"ce", "ce+cas"}, name
    for by in report.accuracy.values():
        for value in by.values():
            assert 0.0 <= value <= 1.0
            assert (value * report.n_examples) == pytest.approx(round(value * report.n_examples))


def test_trained_model_is_better_than_chance_and_pgd_does_not_help_it(cas_report):
    acc = cas_report.accuracy
    assert acc["natural"]["ce"] > 0.3
    for objective in ("ce", "ce+cas"):
        assert acc["pgd20"][objective] <= acc["natural"]["ce"]
        assert acc["cw"][objective] <= acc["natural"]["ce"]
    assert acc["pgd20"]["ce+cas"] < acc["natural"]["ce"], "adaptive eps-0.1 PGD-20 should break some digits"


def test_plain_model_reports_only_the_main_head(plain_model, test_data):
    x, y = test_data
    report = evaluate(plain_model, x, y, EPS, attacks=("natural", "fgsm", "pgd20", "cw"), objective="both")
    assert report.has_cas is False
    for name in ("natural", *WHITE_BOX):
        assert set(report.accuracy[name]) == {"ce"}
    assert report.accuracy["pgd20"]["ce"] <= report.accuracy["natural"]["ce"]
    assert "adaptive" not in report.table()
    with pytest.raises(ValueError, match="CAS"):
        evaluate(plain_model, x, y, EPS, attacks=("pgd20",), objective="ce+cas")


@pytest.mark.parametrize("objective", ["ce", "ce+cas"])
def test_single_objective_on_a_cas_model(cas_model, test_data, objective):
    x, y = test_data
    report = evaluate(cas_model, x[:16], y[:16], EPS, attacks=("natural", "fgsm"), objective=objective)
    assert set(report.accuracy["natural"]) == {"ce"}
    assert set(report.accuracy["fgsm"]) == {objective}


def test_evaluation_is_seeded_and_keeps_the_model_mode(cas_model, test_data):
    x, y = test_data
    cas_model.train()
    try:
        first = evaluate(cas_model, x[:32], y[:32], EPS, attacks=("pgd20", "cw"), seed=5)
        assert cas_model.training, "evaluate must restore the model's mode"
        second = evaluate(cas_model, x[:32], y[:32], EPS, attacks=("pgd20", "cw"), seed=5)
    finally:
        cas_model.eval()
    assert first.accuracy == second.accuracy


def test_zero_budget_attacks_equal_natural_accuracy(plain_model, test_data):
    x, y = test_data
    report = evaluate(plain_model, x, y, 0.0, attacks=("natural", "fgsm", "pgd20", "cw"))
    natural = report.accuracy["natural"]["ce"]
    for name in WHITE_BOX:
        assert report.accuracy[name]["ce"] == natural


def test_table_lists_headers_rows_and_eps(cas_report):
    table = cas_report.table()
    lines = table.splitlines()
    assert "attack" in lines[0] and "main head (ce) %" in lines[0] and "adaptive (ce+cas) %" in lines[0]
    for label in ("natural", "FGSM", "PGD-20", "CW∞"):
        assert any(line.startswith(label) for line in lines), label
    pgd_line = next(line for line in lines if line.startswith("PGD-20"))
    assert f"{cas_report.accuracy['pgd20']['ce+cas'] * 100:.2f}" in pgd_line
    natural_line = next(line for line in lines if line.startswith("natural"))
    assert "–" in natural_line  # natural has no adaptive column
    assert "eps = 0.1" in table and f"{cas_report.n_examples} examples" in table


def test_table_shows_warnings():
    report = EvaluationReport(eps=0.1, n_examples=10, accuracy={"pgd20": {"ce": 0.5}}, warnings=["look here"])
    assert report.table().splitlines()[-1] == "WARNING: look here"


def test_to_json_round_trips(cas_report):
    loaded = json.loads(cas_report.to_json())
    assert loaded == cas_report.to_dict()
    assert loaded["accuracy"] == cas_report.accuracy
    assert set(loaded) == {"eps", "n_examples", "has_cas", "accuracy", "seconds", "warnings"}


# --------------------------------------------------------------------------- validation


def test_unknown_attack_or_objective_is_a_value_error(plain_model, test_data):
    x, y = test_data
    with pytest.raises(ValueError, match="pgd1000"):
        evaluate(plain_model, x, y, EPS, attacks=("natural", "pgd1000"))
    with pytest.raises(ValueError, match="objective"):
        evaluate(plain_model, x, y, EPS, attacks=("natural",), objective="kl")


def test_bad_inputs_are_value_errors(plain_model, test_data):
    x, y = test_data
    with pytest.raises(ValueError, match="eps"):
        evaluate(plain_model, x, y, 1.5, attacks=("natural",))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(plain_model, x * 255, y, EPS, attacks=("natural",))
    with pytest.raises(ValueError, match="label"):
        evaluate(plain_model, x, y[:-1], EPS, attacks=("natural",))


def test_attack_names_are_the_documented_ones():
    assert ATTACKS == ("natural", "fgsm", "pgd20", "cw", "square", "autoattack")


# --------------------------------------------------------------------------- gradient-masking warnings


def test_warns_when_square_beats_adaptive_pgd():
    found = masking_warnings({"pgd20": {"ce": 0.50, "ce+cas": 0.40}, "square": {"ce": 0.30}}, "ce+cas", 0.01)
    assert len(found) == 1
    assert "Square" in found[0] and "30.0%" in found[0] and "40.0%" in found[0] and "masking" in found[0]


def test_warns_when_main_head_pgd_beats_adaptive_pgd():
    found = masking_warnings({"pgd20": {"ce": 0.30, "ce+cas": 0.45}}, "ce+cas", 0.01)
    assert len(found) == 1 and "main-head-only PGD-20" in found[0]


def test_warns_for_autoattack_and_fgsm_too():
    accuracy = {"pgd20": {"ce": 0.5}, "fgsm": {"ce": 0.3}, "autoattack": {"ce": 0.2}}
    found = masking_warnings(accuracy, "ce", 0.01)
    assert len(found) == 2
    fgsm_warning, autoattack_warning = found
    assert "FGSM" in fgsm_warning and "likely gradient masking" in fgsm_warning
    assert "AutoAttack" in autoattack_warning and "overstates" in autoattack_warning
    assert "likely gradient masking" not in autoattack_warning


@pytest.mark.parametrize("accuracy, reference", [
    ({"pgd20": {"ce": 0.50, "ce+cas": 0.40}, "square": {"ce": 0.45}, "fgsm": {"ce": 0.6, "ce+cas": 0.5}}, "ce+cas"),
    ({"pgd20": {"ce": 0.40, "ce+cas": 0.40}, "square": {"ce": 0.395}}, "ce+cas"),   # within tolerance
    ({"pgd20": {"ce": 0.395, "ce+cas": 0.40}}, "ce+cas"),                           # within tolerance
    ({"pgd20": {"ce": 0.30}}, "ce"),                                                 # nothing to compare
    ({"natural": {"ce": 0.9}, "square": {"ce": 0.1}}, "ce"),                         # no PGD-20 reference
    ({"pgd20": {"ce": 0.2, "ce+cas": 0.5}}, "ce"),   # ce reference: the ce-vs-ce+cas check does not apply
], ids=["weaker-attacks", "square-within-tol", "ce-within-tol", "pgd-only", "no-pgd", "ce-reference"])
def test_no_warning_when_nothing_is_suspicious(accuracy, reference):
    assert masking_warnings(accuracy, reference, 0.01) == []


def test_tolerance_boundary_is_strict():
    assert masking_warnings({"pgd20": {"ce": 0.5}, "square": {"ce": 0.25}}, "ce", 0.25) == []
    assert len(masking_warnings({"pgd20": {"ce": 0.5}, "square": {"ce": 0.2499}}, "ce", 0.25)) == 1


# --------------------------------------------------------------------------- Square (pyautoattack)


@pytest.mark.slow
def test_square_runs_through_pyautoattack_and_is_no_better_than_natural(cas_model, test_data):
    x, y = test_data
    report = evaluate(cas_model, x[:20], y[:20], EPS, attacks=("natural", "square"), square_queries=50)
    square, natural = report.accuracy["square"]["ce"], report.accuracy["natural"]["ce"]
    assert set(report.accuracy["square"]) == {"ce"}
    assert 0.0 <= square <= natural
    assert report.n_examples == 20


def test_no_examples_is_a_value_error(plain_model):
    with pytest.raises(ValueError):
        evaluate(plain_model, torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), EPS, attacks=("natural",))
