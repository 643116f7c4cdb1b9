"""The exercise checkers accept the library's own implementations and reject subtly wrong ones, in one line."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cas_edu import activations, attacks, cas, exercises


def _fgsm(model, x, y, eps, clamp=True, sign=1.0, train=False):
    if train:
        model.train()
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    out = x + sign * eps * grad.sign()
    return (out.clamp(0, 1) if clamp else out).detach()


def _targeted_fgsm(model, x, target, eps, clamp=True, sign=-1.0, train=False, raw=False):
    if train:
        model.train()
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), target), x)
    out = x + sign * eps * (grad if raw else grad.sign())
    return (out.clamp(0, 1) if clamp else out).detach()


def _pick(candidates, index):
    """Per example i, the image of restart index[i]."""
    return torch.stack(candidates)[index, torch.arange(len(index))]


def _scores(model, candidates, y, score):
    with torch.no_grad():
        return torch.stack([score(model(c), y) for c in candidates])


def _by_margin(model, candidates, y):
    return _pick(candidates, _scores(model, candidates, y, attacks.restart_score).argmax(0))


def _misclassified_first_then_highest_ce(model, candidates, y):
    wrong = _scores(model, candidates, y, lambda z, t: (z.argmax(1) != t).double())
    ce = _scores(model, candidates, y, lambda z, t: F.cross_entropy(z, t, reduction="none").double())
    return _pick(candidates, (wrong * 1e6 + ce).argmax(0))


def _highest_ce(model, candidates, y):
    return _pick(candidates, _scores(model, candidates, y, lambda z, t: F.cross_entropy(z, t, reduction="none"))
                 .argmax(0))


def _lowest_margin(model, candidates, y):
    return _pick(candidates, _scores(model, candidates, y, attacks.restart_score).argmin(0))


def _aux_mean(l, a, y, b):
    return F.cross_entropy(l, y) + b * torch.stack([F.cross_entropy(z, y) for z in a]).mean()


RIGHT = [
    (exercises.check_fgsm, lambda m, x, y, e: attacks.fgsm(m, x, y, e, random_start=False)),
    (exercises.check_fgsm, _fgsm),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: attacks.fgsm(m, x, t, e, targeted=True)),
    (exercises.check_targeted_fgsm, _targeted_fgsm),
    (exercises.check_restart_selection, _by_margin),
    (exercises.check_restart_selection, _misclassified_first_then_highest_ce),
    (exercises.check_pgd_projection, attacks.project),
    (exercises.check_pgd_projection, lambda a, x, e: (x + (a - x).clamp(-e, e)).clamp(0, 1)),
    (exercises.check_activation_counts, activations.activation_counts),
    (exercises.check_activation_counts, lambda a: (a > 0.01 * a.amax(1, keepdim=True)).float().sum(0).numpy()),
    (exercises.check_channel_magnitudes, activations.channel_magnitudes),
    (exercises.check_cas_mask, lambda m, f, y: m(f, y)),
    (exercises.check_cas_mask, lambda m, f, y: f * m.classifier.weight[y][:, :, None, None]),
    (exercises.check_cas_loss, cas.cas_loss),
    (exercises.check_cas_loss, _aux_mean),
]

WRONG = [
    (exercises.check_fgsm, lambda m, x, y, e: _fgsm(m, x, y, e, clamp=False), "clamp x_adv to the valid image range"),
    (exercises.check_fgsm, lambda m, x, y, e: _fgsm(m, x, y, e, sign=-1.0), "up"),
    (exercises.check_fgsm, lambda m, x, y, e: _fgsm(m, x, y, e, train=True), "eval mode"),
    (exercises.check_fgsm, lambda m, x, y, e: x, "difference"),
    (exercises.check_fgsm, lambda m, x, y, e: x[:, 0], "shape"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: _targeted_fgsm(m, x, t, e, sign=1.0), "down"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: _targeted_fgsm(m, x, t, e, clamp=False),
     "clamp x_adv to the valid image range"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: _targeted_fgsm(m, x, t, e, train=True), "eval mode"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: _targeted_fgsm(m, x, t, e, raw=True), "raw gradient"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: _targeted_fgsm(m, x, m(x).argmax(1), e, sign=1.0),
     "untargeted"),
    (exercises.check_targeted_fgsm, lambda m, x, t, e: x, "difference"),
    (exercises.check_restart_selection, lambda m, c, y: c[0], "restart 1 of 4 for every example"),
    (exercises.check_restart_selection, lambda m, c, y: c[-1], "restart 4 of 4 for every example"),
    (exercises.check_restart_selection, lambda m, c, y: torch.stack(c).mean(0), "averaged"),
    (exercises.check_restart_selection, _highest_ce, "highest cross-entropy"),
    (exercises.check_restart_selection, _lowest_margin, "misclassified by some restart but not by your choice"),
    (exercises.check_restart_selection, lambda m, c, y: c[0] + 0.01, "none of the restarts'"),
    (exercises.check_restart_selection, lambda m, c, y: c[0][:, 0], "shape"),
    (exercises.check_pgd_projection, lambda a, x, e: torch.minimum(torch.maximum(a, x - e), x + e), "[0, 1]"),
    (exercises.check_pgd_projection, lambda a, x, e: a.clamp(0, 1), "ε"),
    (exercises.check_activation_counts, lambda a: (a > 0.01).sum(0), "absolute threshold"),
    (exercises.check_activation_counts, lambda a: (a > 0).sum(0), "non-zero"),
    (exercises.check_activation_counts, lambda a: (a > 0.01 * a.amax(0, keepdim=True)).sum(0), "channel's largest"),
    (exercises.check_activation_counts, lambda a: (a > 0.01 * a.amax(1, keepdim=True)).sum(1), "shape"),
    (exercises.check_channel_magnitudes, lambda a: a.mean(0), "number of examples"),
    (exercises.check_channel_magnitudes, lambda a: a.sum(0) / activations.activation_counts(a), "NaN"),
    (exercises.check_channel_magnitudes, activations.sorted_magnitudes, "sorted"),
    (exercises.check_channel_magnitudes,
     lambda a: torch.nan_to_num((a * activations.activated(a)).sum(0) / activations.activation_counts(a)),
     "activated values"),
    (exercises.check_cas_mask, lambda m, f, y: m.eval()(f, y), "true"),
    (exercises.check_cas_mask, lambda m, f, y: f * m.classifier.weight[y].sigmoid()[:, :, None, None], "sigmoid"),
    (exercises.check_cas_mask, lambda m, f, y: f * m.classifier.weight[y].abs()[:, :, None, None], "abs"),
    (exercises.check_cas_loss,
     lambda l, a, y, b: F.cross_entropy(l, y) + b * sum(F.cross_entropy(z, y) for z in a), "mean"),
    (exercises.check_cas_loss, lambda l, a, y, b: F.cross_entropy(l, y) + cas.auxiliary_loss(a, y, 1.0), "β"),
    (exercises.check_cas_loss, lambda l, a, y, b: torch.stack([cas.cas_loss(l, a, y, b)] * 2), "scalar"),
]


def _one_line(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


@pytest.mark.parametrize("checker, fn", RIGHT)
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checker_accepts_right_implementation(checker, fn, seed, capsys):
    assert checker(fn, seed=seed) is True
    assert _one_line(capsys).startswith("✓ Right:")


@pytest.mark.parametrize("checker, fn, hint", WRONG)
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checker_rejects_subtly_wrong_implementation(checker, fn, hint, seed, capsys):
    assert checker(fn, seed=seed) is False
    line = _one_line(capsys)
    assert line.startswith("✗ Not yet:")
    assert hint.lower() in line.lower(), line


@pytest.mark.parametrize("checker, nargs", [(exercises.check_fgsm, 4), (exercises.check_targeted_fgsm, 4),
                                            (exercises.check_pgd_projection, 3),
                                            (exercises.check_restart_selection, 3),
                                            (exercises.check_activation_counts, 1),
                                            (exercises.check_channel_magnitudes, 1), (exercises.check_cas_mask, 3),
                                            (exercises.check_cas_loss, 4)])
def test_checker_reports_exceptions_and_none_in_one_line(checker, nargs, capsys):
    def raises(*args):
        assert len(args) == nargs
        raise NotImplementedError("write me")

    assert checker(raises) is False
    line = _one_line(capsys)
    assert "NotImplementedError" in line and "write me" in line
    assert checker(lambda *args: None) is False
    assert _one_line(capsys).startswith("✗ Not yet:")


def test_checkers_leave_the_global_rng_alone(capsys):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    exercises.check_fgsm(lambda m, x, y, e: attacks.fgsm(m, x, y, e))
    exercises.check_cas_mask(lambda m, f, y: m(f, y))
    exercises.check_targeted_fgsm(lambda m, x, t, e: attacks.fgsm(m, x, t, e, targeted=True))
    exercises.check_restart_selection(_by_margin)
    assert torch.equal(state, torch.get_rng_state())
    capsys.readouterr()


def test_cas_gains_checker_answers_a_non_number_in_one_line(capsys):
    from cas_edu.evaluation import EvaluationReport

    def report(worst, cas):
        return EvaluationReport(eps=0.1, n_examples=10, has_cas=cas,
                                accuracy={"natural": {"ce": 1.0}, "pgd20": {"ce": worst}})

    reports = {"pgd_at": report(0.4, False), "pgd_at+cas": report(0.5, True)}
    assert exercises.check_cas_gains(lambda r: {"AT": 10.0}, reports)
    assert _one_line(capsys).startswith("✓ Right:")
    assert exercises.check_cas_gains(lambda r: {"AT": "ten"}, reports) is False
    assert _one_line(capsys).startswith("✗ Not yet: every gain must be a number")
    assert exercises.check_cas_gains(lambda r: {"AT": -10.0}, reports) is False
    assert "sign is flipped" in _one_line(capsys)
