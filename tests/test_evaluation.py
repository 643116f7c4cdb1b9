"""Tests for cas_edu.evaluation: reports per attack and objective, the table and JSON, masking warnings, Square."""
from __future__ import annotations

import json
import time

import pytest
import torch

from helpers import subset

from cas_edu import data
from cas_edu import attacks as attack_lib
from cas_edu import evaluation
from cas_edu.evaluation import ATTACKS, EvaluationReport, evaluate, masking_warnings
from cas_edu.presets import make_config
from cas_edu.training import train

EPS = 0.1
WHITE_BOX = ("fgsm", "pgd20", "cw")


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
    # An attack from a random start may turn a naturally wrong example right (on this barely trained CAS model
    # the main-head PGD-20 does: the mask's argmax moves), so per attack only the adaptive one is compared;
    # the per-example worst case can never exceed natural accuracy.
    assert cas_report.worst_case <= acc["natural"]["ce"]
    # Measured over training seeds 0-5 (2026-11-30): adaptive PGD-20 stays 12.5-34 points below natural
    # accuracy (the plain model's PGD-20: 16-31 points below), far outside one example (1.6 points).
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


def test_report_seconds_are_each_attacks_own_wall_time(cas_model, test_data):
    x, y = test_data
    started = time.perf_counter()
    report = evaluate(cas_model, x[:8], y[:8], EPS, attacks=("natural", "fgsm"))
    elapsed = time.perf_counter() - started
    assert set(report.seconds) == {"natural", "fgsm"}
    assert all(s > 0 for s in report.seconds.values()) and sum(report.seconds.values()) <= elapsed


def test_evaluation_is_seeded_and_keeps_the_model_mode(cas_model, test_data):
    """The same seed gives the same per-example results whatever the caller's global RNG state."""
    x, y = test_data
    cas_model.train()
    try:
        torch.manual_seed(1)
        first = evaluate(cas_model, x[:32], y[:32], EPS, attacks=("pgd20", "cw"), seed=5)
        assert cas_model.training, "evaluate must restore the model's mode"
        torch.manual_seed(2)
        second = evaluate(cas_model, x[:32], y[:32], EPS, attacks=("pgd20", "cw"), seed=5)
    finally:
        cas_model.eval()
    assert first.accuracy == second.accuracy
    for name in ("pgd20", "cw"):
        for objective in ("ce", "ce+cas"):
            assert torch.equal(first.correct[name][objective], second.correct[name][objective]), (name, objective)


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
    assert set(loaded) == {"eps", "n_examples", "has_cas", "seed", "digest", "accuracy", "n", "worst_case",
                           "worst_case_n", "seconds", "warnings", "correct_legend", "correct", "intervals",
                           "worst_case_interval", "interval_method"}
    ci = evaluation.wilson_interval(cas_report.correct["pgd20"]["ce+cas"])
    assert loaded["intervals"]["pgd20"]["ce+cas"] == [ci.low, ci.high]
    assert loaded["worst_case_interval"] == [cas_report.worst_case_interval.low, cas_report.worst_case_interval.high]
    assert loaded["worst_case"] == cas_report.worst_case and loaded["worst_case_n"] == cas_report.n_examples
    assert loaded["correct"]["pgd20"]["ce+cas"] == "".join(
        str(int(v)) for v in cas_report.correct["pgd20"]["ce+cas"])
    again = EvaluationReport.from_dict(loaded)
    assert again.worst_case == cas_report.worst_case and again.accuracy == cas_report.accuracy
    for attack, by in cas_report.correct.items():
        for objective, correct in by.items():
            assert torch.equal(again.correct[attack][objective], correct)


# --------------------------------------------------------------------------- accuracy intervals

Z95 = 1.959963984540054  # the standard normal quantile of 0.975


def _wilson_by_formula(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1 − p)/n + z²/4n²)) / (1 + z²/n), written out independently."""
    p = k / n
    centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
    half = z * (p * (1 - p) / n + z ** 2 / (4 * n ** 2)) ** 0.5 / (1 + z ** 2 / n)
    return centre - half, centre + half


def test_wilson_interval_matches_known_values():
    # 84 of 100: p = 0.84, z²/n = 0.0384146, centre = (0.84 + 0.0192073) / 1.0384146 = 0.827422,
    # half = 1.959964 · sqrt(0.84 · 0.16 / 100 + 3.8414588 / 40000) / 1.0384146 = 0.071625 → [0.755797, 0.899047]
    # (scipy.stats.binomtest(84, 100).proportion_ci(method="wilson") gives 0.7557973061, 0.8990471151)
    ci = evaluation.wilson_interval(84, 100)
    assert (ci.accuracy, ci.n, ci.correct) == (0.84, 100, 84)
    assert ci.low == pytest.approx(0.7557973061072976, abs=1e-12)
    assert ci.high == pytest.approx(0.8990471151119521, abs=1e-12)
    # 0 of 10: low = 0 exactly, high = 2 · (z²/20) / (1 + z²/10) = 0.277533; 10 of 10 mirrors it
    none, every = evaluation.wilson_interval(0, 10), evaluation.wilson_interval(10, 10)
    assert none.low == 0.0 and none.high == pytest.approx(0.2775328, abs=1e-6)
    assert every.high == 1.0 and every.low == pytest.approx(1 - 0.2775328, abs=1e-6)
    assert str(ci) == "84.0 % [75.6, 89.9] (n = 100)"
    assert ci.format(2, show_n=False) == "84.00 % [75.58, 89.90]" and ci.bounds() == "[75.6, 89.9]"


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 7), (3, 7), (7, 7), (1, 64), (50, 64), (359, 359),
                                  (123, 359), (5000, 10000)])
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_interval_agrees_with_scipy_and_the_formula(k, n, confidence):
    from scipy.stats import binomtest
    from statistics import NormalDist

    ci = evaluation.wilson_interval(k, n, confidence=confidence)
    reference = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ci.low == pytest.approx(reference.low, abs=1e-9) and ci.high == pytest.approx(reference.high, abs=1e-9)
    low, high = _wilson_by_formula(k, n, NormalDist().inv_cdf(0.5 + confidence / 2))
    assert ci.low == pytest.approx(max(0.0, low), abs=1e-12) and ci.high == pytest.approx(min(1.0, high), abs=1e-12)
    assert 0 <= ci.low <= ci.accuracy <= ci.high <= 1 and ci.confidence == confidence


def test_wilson_interval_counts_per_example_outcomes():
    outcomes = torch.tensor([True] * 21 + [False] * 4)
    by_count = evaluation.wilson_interval(21, 25)
    assert evaluation.wilson_interval(outcomes) == by_count
    assert evaluation.wilson_interval(outcomes.int().reshape(5, 5)) == by_count  # 0/1 integers, any shape
    assert evaluation.wilson_interval(outcomes.double().tolist()) == by_count  # a list of 0.0/1.0
    assert evaluation.wilson_interval(torch.tensor(21), 25) == by_count  # a 0-d count
    assert "90 % CI, n = 25" in str(evaluation.wilson_interval(21, 25, confidence=0.9))


@pytest.mark.parametrize("args, kwargs, needle", [
    ((torch.zeros(0, dtype=torch.bool),), {}, "no examples"),
    ((0, 0), {}, "no examples"),
    ((5, 4), {}, r"\[0, n\]"),
    ((-1, 4), {}, r"\[0, n\]"),
    ((2.5, 4), {}, "whole number"),
    ((2, 4.5), {}, "whole number"),
    ((torch.tensor([0, 1, 2]),), {}, "0/1"),
    ((torch.tensor([0.5, 1.0]),), {}, "0/1"),
    ((torch.tensor([True, False]), 2), {}, "either"),
    ((21,), {}, "without n"),
    ((torch.tensor([True]),), {"confidence": 1.0}, "confidence"),
    ((torch.tensor([True]),), {"confidence": 0}, "confidence"),
    ((torch.tensor([True]),), {"confidence": 95}, "confidence"),
])
def test_wilson_interval_refuses_what_is_not_an_accuracy(args, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        evaluation.wilson_interval(*args, **kwargs)


def test_report_intervals_come_from_the_per_example_results(cas_report):
    for attack, by in cas_report.correct.items():
        for objective, correct in by.items():
            assert cas_report.interval(attack, objective) == evaluation.wilson_interval(correct)
    assert cas_report.interval("pgd20") == cas_report.interval("pgd20", "ce+cas")  # the adaptive one by default
    assert cas_report.interval("natural") == evaluation.wilson_interval(cas_report.correct["natural"]["ce"])
    survived = cas_report.worst_case_correct()[1]
    assert cas_report.interval("worst_case") == cas_report.worst_case_interval == evaluation.wilson_interval(survived)
    with pytest.raises(ValueError, match="square"):
        cas_report.interval("square")
    with pytest.raises(ValueError, match="objective"):
        cas_report.interval("natural", "ce+cas")


def test_table_shows_each_accuracy_with_its_wilson_interval(cas_report):
    lines = cas_report.table().splitlines()
    assert "main head (ce) % [95 % CI]" in lines[0] and "adaptive (ce+cas) % [95 % CI]" in lines[0]
    pgd_line = next(line for line in lines if line.startswith("PGD-20"))
    for objective in ("ce", "ce+cas"):
        ci = cas_report.interval("pgd20", objective)
        assert f"{100 * ci.accuracy:.2f} {ci.bounds(1)}" in pgd_line
    worst_line = next(line for line in lines if line.startswith("worst case"))
    assert cas_report.worst_case_interval.bounds(1) in worst_line
    assert "Wilson" in cas_report.table()


def test_hand_built_reports_get_intervals_only_for_whole_counts():
    report = EvaluationReport(eps=0.1, n_examples=10, accuracy={"natural": {"ce": 0.9}, "pgd20": {"ce": 0.4}})
    assert report.interval("pgd20") == evaluation.wilson_interval(4, 10)
    assert report.worst_case_interval == evaluation.wilson_interval(4, 10)
    assert f"40.00 {evaluation.wilson_interval(4, 10).bounds(1)}" in report.table()
    odd = EvaluationReport(eps=0.1, n_examples=10, accuracy={"pgd20": {"ce": 0.123}})
    with pytest.raises(ValueError, match="whole number"):
        odd.interval("pgd20")
    assert odd.worst_case_interval is None
    assert odd.table().splitlines()[2].split()[1:] == ["12.30", "10"]  # no interval to show
    assert odd.to_dict()["intervals"] == {} and odd.to_dict()["worst_case_interval"] is None


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
    assert ATTACKS == ("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st", "autoattack-st")


# --------------------------------------------------------------------------- gradient-masking warnings


def test_warns_when_square_beats_adaptive_pgd():
    found = masking_warnings({"pgd20": {"ce": 0.50, "ce+cas": 0.40}, "square": {"ce": 0.30}}, "ce+cas", 0.01)
    assert len(found) == 1
    assert "Square" in found[0] and "30.0%" in found[0] and "40.0%" in found[0] and "masking" in found[0]


def test_warnings_compare_with_the_strongest_attack_that_should_win():
    # Square beats the straight-through PGD (the strongest gradient attack) but not the adaptive PGD-20
    found = masking_warnings({"pgd20": {"ce": 0.6, "ce+cas": 0.5}, "pgd-st": {"ce+cas": 0.35},
                              "square": {"ce": 0.30}}, "ce+cas", 0.01)
    assert len(found) == 2
    square_warning, st_warning = found
    assert "Square" in square_warning and "35.0%" in square_warning and "gradient masking" in square_warning
    assert "straight-through" in st_warning and "too weak" in st_warning and "50.0%" in st_warning
    # Square below the adaptive PGD-20 but above the straight-through PGD: PGD-20 is weak, the gradients are fine
    found = masking_warnings({"pgd20": {"ce": 0.6, "ce+cas": 0.5}, "pgd-st": {"ce+cas": 0.35},
                              "square": {"ce": 0.40}}, "ce+cas", 0.01)
    assert len(found) == 1 and "too weak" in found[0]
    # the straight-through AutoAttack beating plain AutoAttack: the argmax mask hides gradients
    found = masking_warnings({"pgd20": {"ce": 0.5}, "autoattack": {"ce": 0.45}, "autoattack-st": {"ce": 0.30}},
                             "ce", 0.01)
    assert len(found) == 3 and "hides gradients" in found[-1] and "45.0%" in found[-1]
    assert "overstates" in found[0]
    # nothing beats what it should not: no warning
    assert masking_warnings({"pgd20": {"ce": 0.6, "ce+cas": 0.45}, "pgd-st": {"ce+cas": 0.445},
                             "autoattack-st": {"ce": 0.44}, "autoattack": {"ce": 0.445}, "square": {"ce": 0.5},
                             "fgsm": {"ce": 0.7, "ce+cas": 0.6}}, "ce+cas", 0.01) == []


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


# --------------------------------------------------------------------------- the per-example worst case


def test_report_keeps_per_example_results_and_the_worst_case_is_per_example(cas_report):
    n = cas_report.n_examples
    survived = torch.ones(n, dtype=torch.bool)
    for attack, by in cas_report.correct.items():
        for objective, correct in by.items():
            assert correct.dtype == torch.bool and correct.shape == (n,) and correct.device.type == "cpu"
            assert cas_report.accuracy[attack][objective] == pytest.approx(correct.double().mean().item())
            survived &= correct
    assert cas_report.worst_case == pytest.approx(survived.double().mean().item())
    lowest = min(v for a, by in cas_report.accuracy.items() if a != "natural" for v in by.values())
    assert cas_report.worst_case <= lowest
    assert "worst case (per example)" in cas_report.table()


def test_worst_case_counts_an_example_only_if_every_attack_failed():
    """Two attacks that each break half of the examples, different halves: each 50 %, the worst case 0 %."""
    true, false = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    report = EvaluationReport(eps=0.1, n_examples=4, accuracy={"natural": {"ce": 1.0}, "fgsm": {"ce": 0.5},
                                                               "pgd20": {"ce": 0.5}},
                              correct={"natural": {"ce": torch.ones(4, dtype=torch.bool)},
                                       "fgsm": {"ce": torch.cat([false, true])},
                                       "pgd20": {"ce": torch.cat([true, false])}})
    assert report.worst_case == 0.0 < min(report.accuracy["fgsm"]["ce"], report.accuracy["pgd20"]["ce"])
    assert report.to_dict()["worst_case"] == 0.0
    # worst-case row: 0.00 % with its Wilson interval [0, 49.0] (0 of 4: high = 2·(z²/8)/(1 + z²/4)), n = 4
    assert report.table().splitlines()[-2].split()[-4:] == ["0.00", "[0.0,", "49.0]", "4"]
    # an example the model gets wrong naturally never counts, even if no attack "breaks" it
    report.correct["natural"]["ce"] = torch.tensor([False, True, True, True])
    report.correct["fgsm"]["ce"] = report.correct["pgd20"]["ce"] = torch.ones(4, dtype=torch.bool)
    assert report.worst_case == 0.75


def test_each_attack_is_seeded_on_its_own(cas_model, test_data):
    """PGD-20 gives the same per-example results alone and after FGSM; another seed moves the random start."""
    x, y = test_data
    alone = evaluate(cas_model, x[:24], y[:24], EPS, attacks=("pgd20",), seed=3)
    after = evaluate(cas_model, x[:24], y[:24], EPS, attacks=("fgsm", "pgd20"), seed=3)
    for objective in ("ce", "ce+cas"):
        assert torch.equal(alone.correct["pgd20"][objective], after.correct["pgd20"][objective])
    assert evaluation.attack_seed(3, "pgd20", "ce") == 670109089  # CRC-32 of "3/pgd20/ce": the same in every process
    assert len({evaluation.attack_seed(s, a, o) for s in (0, 1) for a in ("fgsm", "pgd20") for o in ("ce", "ce+cas")}) == 8


def test_the_seed_sets_the_random_start_and_leaves_the_global_rng_alone(plain_model, test_data, monkeypatch):
    x, y = test_data
    starts = []
    real_pgd = attack_lib.pgd

    def spy(model, xb, yb, eps, **kwargs):
        starts.append(torch.random.get_rng_state().clone())
        return real_pgd(model, xb, yb, eps, **kwargs)

    monkeypatch.setattr(attack_lib, "pgd", spy)
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    evaluate(plain_model, x[:8], y[:8], EPS, attacks=("pgd20",), seed=0)
    evaluate(plain_model, x[:8], y[:8], EPS, attacks=("fgsm", "pgd20"), seed=0)
    evaluate(plain_model, x[:8], y[:8], EPS, attacks=("pgd20",), seed=1)
    assert torch.equal(torch.random.get_rng_state(), before), "evaluate must not move the global RNG"
    pgd_alone, fgsm, pgd_after, pgd_seed1 = starts
    assert torch.equal(pgd_alone, pgd_after)
    assert not torch.equal(pgd_alone, fgsm) and not torch.equal(pgd_alone, pgd_seed1)


def test_balanced_indices():
    y = torch.arange(100) % 5
    index = evaluation.balanced_indices(y, 23, seed=0)
    assert len(index) == 23 and len(set(index.tolist())) == 23 and torch.equal(index, index.sort().values)
    per_class = torch.bincount(y[index], minlength=5)
    assert per_class.max() - per_class.min() <= 1 and per_class.sum() == 23
    assert torch.equal(index, evaluation.balanced_indices(y, 23, seed=0))
    assert not torch.equal(index, evaluation.balanced_indices(y, 23, seed=1))
    assert torch.equal(evaluation.balanced_indices(y, 500), torch.arange(100))
    with pytest.raises(ValueError, match="class 4"):
        evaluation.balanced_indices(torch.tensor([0, 0, 0, 1, 2, 3, 4]), 6)
    with pytest.raises(ValueError, match="n must"):
        evaluation.balanced_indices(y, 0)


def test_costly_attacks_run_on_a_balanced_subset_and_say_how_many(plain_model, test_data):
    x, y = test_data
    report = evaluate(plain_model, x[:40], y[:40], EPS, attacks=("natural", "pgd20", "pgd-st"), subset_n=20, seed=0)
    assert report.count("natural") == report.count("pgd20") == 40 and report.count("pgd-st") == 20
    assert torch.equal(report.examples["pgd-st"], evaluation.balanced_indices(y[:40], 20, seed=0))
    assert report.worst_case_n == 20 and report.to_dict()["n"] == {"natural": 40, "pgd20": 40, "pgd-st": 20}
    assert report.to_dict()["correct"]["pgd-st"]["ce"].count("-") == 20
    rows = {line.split("  ")[0].strip(): line.split()[-1] for line in report.table().splitlines()[2:-1]}
    assert rows["PGD-100×5 (no CAS: plain PGD)"] == "20" and rows["PGD-20"] == "40"
    assert rows["worst case (per example)"] == "20"
    index = report.examples["pgd-st"]
    survived = report.correct["natural"]["ce"][index] & report.correct["pgd20"]["ce"][index] & report.correct["pgd-st"]["ce"]
    assert report.worst_case == pytest.approx(survived.double().mean().item())
    assert report.correct["pgd-st"]["ce"].sum() <= report.correct["natural"]["ce"][index].sum()


def test_straight_through_pgd_runs_on_cas_models_with_the_adaptive_objective(cas_model, test_data):
    x, y = test_data
    report = evaluate(cas_model, x[:16], y[:16], EPS, attacks=("natural", "pgd-st"))
    assert set(report.accuracy["pgd-st"]) == {"ce+cas"}
    assert report.accuracy["pgd-st"]["ce+cas"] <= report.accuracy["natural"]["ce"]
    assert "PGD-100×5 straight-through (BPDA)" in report.table()


# --------------------------------------------------------------------------- paired comparison


def test_paired_interval_covers_the_true_difference():
    """Coverage of the Bonett-Price interval over 2,000 simulated paired samples (n = 200) is close to 95 %."""
    g = torch.Generator().manual_seed(0)
    covered, reps, n = 0, 2000, 200
    for _ in range(reps):
        shared = torch.rand(n, generator=g)
        a = shared < 0.6
        b = torch.where(torch.rand(n, generator=g) < 0.7, a, torch.rand(n, generator=g) < 0.5)
        true = 0.6 - (0.7 * 0.6 + 0.3 * 0.5)
        result = evaluation.paired_interval(a, b)
        covered += result.low <= true <= result.high
    assert 0.93 <= covered / reps <= 0.975


def test_paired_interval_edges():
    same = torch.tensor([True, False] * 50)
    result = evaluation.paired_interval(same, same)
    assert result.difference == 0 and result.low < 0 < result.high and result.a_only == result.b_only == 0
    wins = evaluation.paired_interval(torch.ones(30, dtype=torch.bool), torch.zeros(30, dtype=torch.bool))
    assert wins.difference == 1 and wins.high == 1 and 0.8 < wins.low < 1
    with pytest.raises(ValueError):
        evaluation.paired_interval(same, same[:-1])
    with pytest.raises(ValueError, match="confidence"):
        evaluation.paired_interval(same, same, confidence=95)


def test_paired_difference_of_two_reports(cas_report, test_data, plain_model):
    x, y = test_data
    plain = evaluate(plain_model, x, y, EPS, attacks=("natural", "fgsm", "pgd20", "cw"), objective="both")
    result = evaluation.paired_difference(cas_report, plain)
    assert result.difference == pytest.approx(cas_report.worst_case - plain.worst_case)
    assert result.low <= result.difference <= result.high and result.n == len(x)
    pgd = evaluation.paired_difference(cas_report, plain, attack="pgd20")  # each model's own adaptive objective
    assert pgd.difference == pytest.approx(cas_report.accuracy["pgd20"]["ce+cas"] - plain.accuracy["pgd20"]["ce"])
    other = evaluate(plain_model, x.flip(0), y.flip(0), EPS, attacks=("natural",))
    with pytest.raises(ValueError, match="different examples"):
        evaluation.paired_difference(cas_report, other, attack="natural")
    with pytest.raises(ValueError, match="square"):
        evaluation.paired_difference(cas_report, plain, attack="square")


# --------------------------------------------------------------------------- the registry, accuracy, the curve


def test_registry_keeps_the_names_labels_and_kinds_evaluate_reports():
    assert evaluation.ATTACKS == ("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st", "autoattack-st")
    assert evaluation.WHITE_BOX == ("fgsm", "pgd20", "cw")
    assert evaluation.STRAIGHT_THROUGH == ("pgd-st", "autoattack-st")
    assert evaluation.COSTLY == ("square", "autoattack", "pgd-st", "autoattack-st")
    assert evaluation.DEFAULT_ATTACKS == ("natural", "fgsm", "pgd20", "cw", "square")
    assert evaluation.report_attacks(False) == ("natural", "fgsm", "pgd20", "cw", "autoattack")
    assert evaluation.report_attacks(True)[-2:] == ("pgd-st", "autoattack-st")
    assert evaluation.LABELS["pgd-st"] == "PGD-100×5 straight-through (BPDA)"
    assert evaluation.NO_CAS_LABELS == {"pgd-st": "PGD-100×5 (no CAS: plain PGD)",
                                        "autoattack-st": "AutoAttack (no CAS: plain, own seed)"}
    assert "pgd" not in evaluation.ATTACKS and evaluation.REGISTRY["pgd"].craft is not None  # the curve's PGD-k
    assert evaluation.column_label("pgd20", "ce") == "PGD-20 main head"
    assert evaluation.column_label("cw", "ce+cas") == "CW∞ adaptive"
    assert evaluation.column_label("square") == "Square"
    with pytest.raises(ValueError, match="Unknown attack"):
        evaluation.attack_entry("pgd7")


@pytest.mark.parametrize("name, direct", [
    ("fgsm", lambda m, x, y: attack_lib.fgsm(m, x, y, EPS, random_start=True, objective="ce+cas")),
    ("pgd20", lambda m, x, y: attack_lib.pgd(m, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce+cas")),
    ("cw", lambda m, x, y: attack_lib.cw_inf(m, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce+cas")),
])
def test_each_white_box_entry_runs_its_attack_with_the_evaluated_parameters(cas_model, test_data, name, direct):
    """A registry entry is the attack with the parameters the report names (ε/10 steps, 20 of them, random start)."""
    x, y = test_data[0][:8], test_data[1][:8]
    torch.manual_seed(4)
    expected = direct(cas_model, x, y)
    crafted = evaluation.craft(cas_model, x, y, name, eps=EPS, objective="ce+cas", seed=4)
    assert torch.equal(crafted, expected)


def test_accuracy_is_per_example_and_is_what_evaluate_reports(cas_model, test_data):
    x, y = test_data
    report = evaluate(cas_model, x, y, EPS, attacks=("natural", "pgd20"), seed=7)
    natural = evaluation.accuracy(cas_model, x, y)
    assert natural.dtype == torch.bool and natural.device.type == "cpu" and natural.shape == (len(x),)
    assert torch.equal(natural, report.correct["natural"]["ce"])
    with torch.no_grad():
        assert torch.equal(natural, cas_model(x).argmax(1) == y)
    for objective in ("ce", "ce+cas"):
        robust = evaluation.accuracy(cas_model, x, y, "pgd20", eps=EPS, objective=objective, batch_size=20,
                                     seed=evaluation.attack_seed(7, "pgd20", objective))
        assert torch.equal(robust, report.correct["pgd20"][objective]), objective


def test_accuracy_seeds_the_attack_and_leaves_the_global_rng_alone(plain_model, test_data):
    x, y = test_data[0][:10], test_data[1][:10]
    draws = []

    def attack(model, xb, yb):
        draws.append(torch.rand(3))
        return xb

    torch.manual_seed(0)
    before = torch.get_rng_state()
    evaluation.accuracy(plain_model, x, y, attack, seed=11)
    evaluation.accuracy(plain_model, x, y, attack, seed=12)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(11)
    assert torch.equal(draws[0], torch.rand(3))
    assert not torch.equal(draws[0], draws[1])  # another seed, other random numbers


def test_accuracy_takes_a_callable_and_restores_the_model_mode(plain_model, test_data):
    x, y = test_data
    modes = []

    def blank(model, xb, yb):
        modes.append(model.training)
        return torch.zeros_like(xb)

    plain_model.train()
    try:
        blanked = evaluation.accuracy(plain_model, x, y, blank, batch_size=24)
        assert plain_model.training and all(m.training for m in plain_model.modules())
    finally:
        plain_model.eval()
    assert modes == [False, False, False]  # 64 examples in batches of 24, crafted in eval mode
    with torch.no_grad():
        assert torch.equal(blanked, plain_model(torch.zeros_like(x)).argmax(1) == y)


def test_accuracy_refuses_what_it_cannot_run(plain_model, test_data):
    x, y = test_data
    with pytest.raises(ValueError, match="Unknown attack"):
        evaluation.accuracy(plain_model, x, y, "pgd7", eps=EPS)
    with pytest.raises(ValueError, match="needs its budget eps"):
        evaluation.accuracy(plain_model, x, y, "pgd20")
    with pytest.raises(ValueError, match="takes no option"):
        evaluation.accuracy(plain_model, x, y, "pgd20", eps=EPS, steps=3)
    with pytest.raises(ValueError, match="ce\\+cas"):
        evaluation.accuracy(plain_model, x, y, "fgsm", eps=EPS, objective="ce+cas")
    with pytest.raises(ValueError, match="label tensor"):
        evaluation.accuracy(plain_model, x, y[:-1])


def _curve_by_hand(model, x, y, eps_values, steps, batch_size, seed):
    """The curve as plots.robustness_curve computed it before it moved here: one forked RNG, attacks outer."""
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]

    def correct(xb, yb):
        with torch.no_grad():
            return int((model(xb).argmax(1) == yb).sum())

    out = {"natural": sum(correct(xb, yb) for xb, yb in batches) / len(x)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for attack in ("fgsm", "pgd"):
            out[attack] = []
            for eps in eps_values:
                total = 0
                for xb, yb in batches:
                    x_adv = xb if eps == 0 else attack_lib.fgsm(model, xb, yb, eps, random_start=False) \
                        if attack == "fgsm" else attack_lib.pgd(model, xb, yb, eps, steps=steps)
                    total += correct(x_adv, yb)
                out[attack].append(total / len(x))
    return out


def test_robustness_curve_gives_the_numbers_of_the_loop_it_replaces(plain_model, test_data):
    x, y = test_data
    curve = evaluation.robustness_curve(plain_model, x, y, [0.0, 0.1, 0.2], steps=3, batch_size=24, seed=2,
                                        progress=False)
    expected = _curve_by_hand(plain_model, x, y, [0.0, 0.1, 0.2], steps=3, batch_size=24, seed=2)
    assert {k: curve[k] for k in expected} == expected
    assert curve["eps"] == [0.0, 0.1, 0.2] and curve["steps"] == 3 and curve["n"] == len(x)
    # the counts behind every accuracy, for Wilson intervals (evaluation.wilson_interval(count, n))
    assert curve["n_correct"]["natural"] / len(x) == curve["natural"]
    for attack in ("fgsm", "pgd"):
        assert all(isinstance(c, int) for c in curve["n_correct"][attack])
        assert [c / len(x) for c in curve["n_correct"][attack]] == curve[attack]
    other = evaluation.robustness_curve(plain_model, x, y, [0.0, 0.1, 0.2], attacks=("pgd",), steps=3,
                                        batch_size=24, seed=3, progress=False)
    assert "fgsm" not in other
    with pytest.raises(ValueError, match="Unknown attack"):
        evaluation.robustness_curve(plain_model, x, y, [0.1], attacks=("cw",))


def test_attack_accuracy_lets_the_main_head_stand_in_only_without_cas():
    plain = EvaluationReport(eps=0.1, n_examples=10, accuracy={"pgd20": {"ce": 0.4}, "pgd-st": {"ce": 0.3}})
    cas = EvaluationReport(eps=0.1, n_examples=10, has_cas=True,
                           accuracy={"pgd20": {"ce": 0.6, "ce+cas": 0.2}, "pgd-st": {"ce+cas": 0.1}})
    assert evaluation.attack_accuracy(plain, "pgd20") == 0.4
    assert evaluation.attack_accuracy(plain, "pgd-st", "ce+cas") == 0.3
    assert evaluation.attack_accuracy(cas, "pgd20") == 0.2 and evaluation.attack_accuracy(cas, "pgd20", "ce") == 0.6
    assert evaluation.attack_accuracy(cas.accuracy, "pgd-st") == 0.1  # the accuracy dict alone works too
    assert evaluation.attack_accuracy(plain, "cw") is None
    assert evaluation.attack_accuracy(cas, "pgd-st", "ce") is None  # ce never stands for ce+cas the other way
