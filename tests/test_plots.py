"""Error bars of cas_edu.plots: every accuracy drawn with its 95 % Wilson interval
(cas_edu.evaluation.wilson_interval)."""
from __future__ import annotations

import pytest
import torch

from cas_edu import evaluation, plots
from cas_edu.evaluation import EvaluationReport


def _curve(n: int = 50) -> dict:
    """A robustness_curve result with the counts behind each accuracy (as robustness_curve returns it)."""
    counts = {"natural": 45, "fgsm": [45, 30, 12], "pgd": [45, 20, 0]}
    return {"eps": [0.0, 0.1, 0.2], "steps": 10, "n": n, "natural": counts["natural"] / n,
            "fgsm": [c / n for c in counts["fgsm"]], "pgd": [c / n for c in counts["pgd"]], "n_correct": counts}


def _bars(trace) -> list[tuple[float, float]]:
    """(low, high) in % that a trace's asymmetric error bars draw around its y values."""
    error = trace.error_y
    assert error.symmetric is False and error.type == "data"
    return [(y - minus, y + plus) for y, plus, minus in zip(trace.y, error.array, error.arrayminus)]


def test_accuracy_vs_eps_figure_draws_wilson_error_bars():
    curve = _curve()
    fig = plots.accuracy_vs_eps_figure({"STD": curve})
    assert [t.name for t in fig.data] == ["STD · natural", "STD · FGSM", "STD · PGD-10"]
    natural, fgsm, pgd = fig.data
    for trace, counts in ((fgsm, curve["n_correct"]["fgsm"]), (pgd, curve["n_correct"]["pgd"]),
                          (natural, [curve["n_correct"]["natural"]] * 2)):
        for (low, high), count in zip(_bars(trace), counts):
            ci = evaluation.wilson_interval(count, curve["n"])
            assert low == pytest.approx(100 * ci.low) and high == pytest.approx(100 * ci.high)
    assert _bars(pgd)[2][0] == pytest.approx(0.0) and _bars(pgd)[2][1] > 0  # 0 of 50 still has a width


def test_accuracy_vs_eps_figure_without_counts_draws_no_error_bars():
    """A curve saved before robustness_curve recorded its counts still draws (as before, without bars)."""
    curve = {k: v for k, v in _curve().items() if k != "n_correct"}
    fig = plots.accuracy_vs_eps_figure(curve)
    assert all(t.error_y.array is None for t in fig.data)


def test_robustness_comparison_figure_draws_wilson_error_bars_for_reports():
    n = 8
    natural = torch.tensor([True] * 7 + [False])
    pgd_ce, pgd_cas = torch.tensor([True] * 5 + [False] * 3), torch.tensor([True] * 2 + [False] * 6)
    cas = EvaluationReport(eps=0.1, n_examples=n, has_cas=True,
                           accuracy={"natural": {"ce": 7 / 8}, "pgd20": {"ce": 5 / 8, "ce+cas": 2 / 8}},
                           correct={"natural": {"ce": natural}, "pgd20": {"ce": pgd_ce, "ce+cas": pgd_cas}})
    plain = EvaluationReport(eps=0.1, n_examples=n, accuracy={"natural": {"ce": 7 / 8}, "pgd20": {"ce": 3 / 8}},
                             correct={"natural": {"ce": natural}, "pgd20": {"ce": torch.arange(n) < 3}})
    fig = plots.robustness_comparison_figure({"AT": plain, "AT+CAS": cas, "dict": plain.accuracy})
    expected = {"AT": [(7, n), (3, n), (3, n)],  # no CAS: the main-head result stands in for the adaptive bar
                "AT+CAS": [(7, n), (5, n), (2, n)]}
    for trace in fig.data[:2]:
        for (low, high), (k, total) in zip(_bars(trace), expected[trace.name]):
            ci = evaluation.wilson_interval(k, total)
            assert low == pytest.approx(100 * ci.low) and high == pytest.approx(100 * ci.high)
    assert fig.data[2].error_y.array is None  # an accuracy dict has nothing to count
