"""Tests for the straight-through (BPDA) CAS attack: cas.straight_through, cas.find_cas_modules,
models.forward_with_aux on wrapped models, attacks.straight_through_pgd and attacks.autoattack.

The exact tests use a tiny CAS module with the soft mask written out by hand; the strength tests use a
digits PGD-AT+CAS small CNN trained once for the module (fast preset) and 200 test digits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import DDPLike, Unregistered, tiny_cnn

from cas_edu import attacks, cas, models
from cas_edu.cas import CASModule, find_cas_modules, straight_through
from cas_edu.models import SmallCNN

C, K = 5, 4


def _module(seed: int = 0) -> CASModule:
    torch.manual_seed(seed)
    module = CASModule(C, K).eval()
    with torch.no_grad():
        module.classifier.weight.mul_(3.0)  # confident but not saturated auxiliary softmax
    return module


def _features(n: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(n, C, 3, 2, generator=g)
    f[torch.arange(n), torch.arange(n) % C] += 2.0  # varied auxiliary predictions
    return f


def _hand_soft_mask_gradient(module: CASModule, f: torch.Tensor, g_out: torch.Tensor, g_aux: torch.Tensor):
    """d/df of Σ g_out ⊙ out + Σ g_aux ⊙ aux when out = f ⊙ m, with the value of m the hard mask W[argmax a]
    and its derivative that of the soft mask s = Σ_k softmax(a)_k W[k], a = W·mean_hw(f) + b. Written out:
    g_out ⊙ W[k̂] + (1/HW) Wᵀ[p ⊙ (v − p·v) + g_aux], with u_c = Σ_hw g_out f and v = W u."""
    W, b = module.classifier.weight.detach(), module.classifier.bias.detach()
    hw = f.shape[2] * f.shape[3]
    a = f.mean(dim=(2, 3)) @ W.T + b
    p = torch.exp(a - torch.logsumexp(a, dim=1, keepdim=True))
    hard = W[a.argmax(dim=1)]
    u = (g_out * f).sum(dim=(2, 3))             # N×C
    v = u @ W.T                                 # N×K: dL/dp
    da = p * (v - (p * v).sum(dim=1, keepdim=True)) + g_aux  # softmax Jacobian, plus the aux logits' own path
    d_pooled = da @ W                           # N×C
    return g_out * hard[:, :, None, None] + (d_pooled / hw)[:, :, None, None]


# --------------------------------------------------------------------------- (a) exact properties

def test_straight_through_forward_equals_the_hard_mask_forward_bit_for_bit():
    module = _module()
    f = _features()
    hard_out, hard_aux = module(f)
    with straight_through(module):
        st_out, st_aux = module(f.clone().requires_grad_(True))
    assert torch.equal(st_out, hard_out) and torch.equal(st_aux, hard_aux)
    assert not module.straight_through  # restored


def test_straight_through_forward_is_exact_on_a_trained_size_model():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 32), cas_layers=["block2", "block3"]).eval()
    x = torch.rand(64, 1, 8, 8)
    reference = model(x)
    with straight_through(model):
        assert torch.equal(model(x.clone().requires_grad_(True)), reference)


def test_straight_through_gradient_is_the_soft_mask_gradient():
    module = _module()
    f = _features()
    g = torch.Generator().manual_seed(2)
    g_out, g_aux = torch.randn(f.shape, generator=g), torch.randn(f.shape[0], K, generator=g)
    expected = _hand_soft_mask_gradient(module, f, g_out, g_aux)
    with straight_through(module):
        f_req = f.clone().requires_grad_(True)
        out, aux = module(f_req)
        (grad,) = torch.autograd.grad((g_out * out).sum() + (g_aux * aux).sum(), f_req)
    torch.testing.assert_close(grad, expected)
    # the hard mask's gradient is different: it ignores how f moves the auxiliary prediction through the mask
    f_req = f.clone().requires_grad_(True)
    out, aux = module(f_req)
    (hard_grad,) = torch.autograd.grad((g_out * out).sum() + (g_aux * aux).sum(), f_req)
    assert not torch.allclose(hard_grad, expected)
    # and the soft mask the module uses is Σ_k p_k W[k], written out
    a = f.mean(dim=(2, 3)) @ module.classifier.weight.T + module.classifier.bias
    torch.testing.assert_close(module.soft_mask(a), torch.stack(
        [sum(a[i].softmax(0)[k] * module.classifier.weight[k] for k in range(K)) for i in range(len(f))]))


def test_straight_through_leaves_training_masks_alone():
    module = _module().train()
    f, y = _features(), torch.tensor([0, 1, 2, 3, 0, 1])
    f_plain = f.clone().requires_grad_(True)
    out, _ = module(f_plain, y)
    (plain_grad,) = torch.autograd.grad(out.sum(), f_plain)
    with straight_through(module):
        f_st = f.clone().requires_grad_(True)
        out_st, _ = module(f_st, y)
        (st_grad,) = torch.autograd.grad(out_st.sum(), f_st)
    assert torch.equal(out_st, out) and torch.equal(st_grad, plain_grad)
    torch.testing.assert_close(out, f * module.classifier.weight[y][:, :, None, None], rtol=0, atol=0)


def test_straight_through_restores_each_module_after_an_error():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 16), cas_layers=["block2", "block3"])
    model.cas["block2"].straight_through = True  # a previous setting to restore, not just False
    with pytest.raises(RuntimeError, match="boom"):
        with straight_through(model):
            assert all(m.straight_through for m in find_cas_modules(model))
            raise RuntimeError("boom")
    assert [m.straight_through for m in find_cas_modules(model)] == [True, False]


def test_straight_through_on_a_model_without_cas_raises_value_error():
    with pytest.raises(ValueError, match="CAS"):
        with straight_through(SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 16))):
            pass


# --------------------------------------------------------------------------- (b) finding CAS modules in wrappers

WRAPPERS = {
    "bare": lambda m: m,
    "sequential": lambda m: nn.Sequential(nn.Identity(), m),
    "ddp_like": DDPLike,
    "nested": lambda m: DDPLike(nn.Sequential(nn.Identity(), DDPLike(m))),
    "unregistered": Unregistered,
}


@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_find_cas_modules_looks_inside_wrappers(wrap):
    model = tiny_cnn(cas_layers=["block2", "block3"])
    wrapped = WRAPPERS[wrap](model)
    found = find_cas_modules(wrapped)
    assert [id(m) for m in found] == [id(model.cas["block2"]), id(model.cas["block3"])]
    assert models.has_cas(wrapped)
    assert not models.has_cas(WRAPPERS[wrap](SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 16))))


@pytest.mark.parametrize("wrap", [w for w in WRAPPERS if w != "bare"])
def test_adaptive_objective_and_straight_through_work_on_wrapped_models(wrap):
    model = tiny_cnn(cas_layers=["block2", "block3"])
    wrapped = WRAPPERS[wrap](model)
    x, y = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.arange(8)
    for loss in ("ce", "margin"):
        assert torch.equal(attacks.attack_objective(wrapped, x, y, "ce+cas", loss),
                           attacks.attack_objective(model, x, y, "ce+cas", loss))
    logits, aux = models.forward_with_aux(wrapped, x)
    details = model.forward_details(x)
    assert torch.equal(logits, details.logits) and len(aux) == 2
    assert all(torch.equal(a, b) for a, b in zip(aux, details.aux_logits))
    with straight_through(wrapped):
        assert all(m.straight_through for m in find_cas_modules(model))
        x_req = x.clone().requires_grad_(True)
        (g_wrapped,) = torch.autograd.grad(attacks.attack_objective(wrapped, x_req, y, "ce+cas"), x_req)
        (g_bare,) = torch.autograd.grad(attacks.attack_objective(model, x_req, y, "ce+cas"), x_req)
    assert torch.equal(g_wrapped, g_bare)
    assert not any(m.straight_through for m in find_cas_modules(model))
    assert not any(m._forward_hooks for m in find_cas_modules(model))  # hooks removed


def test_find_cas_modules_inside_torch_compile():
    model = tiny_cnn(cas_layers=["block2", "block3"])
    try:
        compiled = torch.compile(model, backend="eager")
    except Exception as error:  # pragma: no cover - depends on the platform's torch build
        pytest.skip(f"torch.compile unavailable: {error}")
    found = find_cas_modules(compiled)
    assert [id(m) for m in found] == [id(model.cas["block2"]), id(model.cas["block3"])]
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    torch.testing.assert_close(attacks.attack_objective(compiled, x, y, "ce+cas"),
                               attacks.attack_objective(model, x, y, "ce+cas"))


def test_find_cas_modules_rejects_non_modules():
    with pytest.raises(ValueError, match="nn.Module"):
        find_cas_modules(lambda x: x)


# --------------------------------------------------------------------------- (c, d) strength on a trained model

EPS = 0.1
SUBSET = 200


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@pytest.fixture(scope="module")
def trained_cas():
    """A digits PGD-AT+CAS small CNN (fast preset, 6 of its 12 epochs) and the first SUBSET test digits."""
    from cas_edu import data
    from cas_edu.presets import make_config
    from cas_edu.training import train

    dataset = data.load("digits")
    model, _ = train(make_config("digits", method="pgd_at", cas=True, epochs=6, device="cpu"), progress=False,
                     dataset=dataset)
    model.eval()
    x, y = dataset.test.x[:SUBSET], dataset.test.y[:SUBSET]
    torch.manual_seed(0)
    pgd20 = _accuracy(model, attacks.pgd(model, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce+cas"), y)
    return {"model": model, "x": x, "y": y, "natural": _accuracy(model, x, y), "pgd20_cas": pgd20}


def _hard_soft_mask(self: CASModule, aux_logits: torch.Tensor) -> torch.Tensor:
    """The straight-through backward broken on purpose: the 'soft' mask is the hard one (no gradient)."""
    return self.mask_for(aux_logits.argmax(dim=1))


@pytest.fixture(params=["straight-through", "hard backward"])
def backward(request, monkeypatch):
    """Run a test with the real straight-through backward, and again with it replaced by the hard mask."""
    if request.param == "hard backward":
        monkeypatch.setattr(CASModule, "soft_mask", _hard_soft_mask)
    return request.param


@pytest.fixture(scope="module")
def default_report(trained_cas):
    """``evaluate`` with the CLI's default attacks for a CAS model (``cli.default_attacks``) on the SUBSET digits:
    natural, FGSM, PGD-20, CW∞ (both objectives), AutoAttack, PGD-100×5 and AutoAttack through the
    straight-through masks. About five minutes of CPU: AutoAttack's FAB-T and Square dominate."""
    from cas_edu.cli import default_attacks
    from cas_edu.evaluation import evaluate

    return evaluate(trained_cas["model"], trained_cas["x"], trained_cas["y"], EPS, attacks=default_attacks(True))


@pytest.mark.slow
def test_straight_through_pgd_is_at_least_as_strong_as_the_adaptive_pgd20(trained_cas, default_report):
    """(c) The straight-through PGD alone, at the CLI default budget (≥ 100 steps, ≥ 5 restarts), scores no higher
    than the official ce+cas PGD-20 alone (measured on 3 training seeds, 200 digits: 93.0 vs 93.5, 93.0 vs 94.0,
    93.5 vs 93.5 %; in the default report 90.5 vs 90.5 and 90.5 vs 92.0 on 2 seeds). Ties happen, and the trained
    model depends on the machine's floating-point details, so one example (0.5 point) of slack keeps the test
    from failing at random while a weak straight-through attack still fails it."""
    from cas_edu.evaluation import ST_RESTARTS, ST_STEPS

    assert ST_STEPS >= 100 and ST_RESTARTS >= 5
    assert trained_cas["natural"] >= 0.95 and trained_cas["pgd20_cas"] <= trained_cas["natural"] - 0.02
    accuracy = default_report.accuracy
    assert accuracy["pgd-st"]["ce+cas"] <= accuracy["pgd20"]["ce+cas"] + 1 / SUBSET
    model, x, y = trained_cas["model"], trained_cas["x"][:32], trained_cas["y"][:32]
    torch.manual_seed(0)
    x_adv = attacks.straight_through_pgd(model, x, y, EPS, steps=5, restarts=2)
    assert (x_adv - x).abs().max() <= EPS and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not any(m.straight_through for m in find_cas_modules(model))


@pytest.mark.slow
def test_default_evaluation_worst_case_is_the_straight_through_worst_case(default_report):
    """(c) The default ``evaluate`` worst case is within 1 point of the per-example worst case of the
    straight-through PGD-100×5 combined with AutoAttack through the straight-through model: the other attacks
    (FGSM, PGD-20, CW∞, AutoAttack on the hard mask) find almost nothing those two miss. And AutoAttack through
    the straight-through masks beats AutoAttack on the deployed hard-mask model by at least 1 point.

    Measured (200 digits, fast-preset model, 6 epochs): seeds 0 and 1 both give worst case 90.5 % = the two
    straight-through attacks' 90.5 %; AutoAttack 94.0 / 95.0 % vs through the straight-through masks 90.5 / 90.5 %
    (3.5 and 4.5 points). With the straight-through backward replaced by the hard mask (seed 0, checked once
    by hand with ``CASModule.soft_mask`` patched as in ``_hard_soft_mask``: five more minutes, so not in CI),
    AutoAttack "through" the masks gives 94.5 % against 94.0 %, and the second assertion fails."""
    report = default_report
    correct = report.correct
    assert set(correct) == {"natural", "fgsm", "pgd20", "cw", "autoattack", "pgd-st", "autoattack-st"}
    assert report.worst_case_n == SUBSET
    combined = correct["natural"]["ce"] & correct["pgd-st"]["ce+cas"] & correct["autoattack-st"]["ce"]
    combined_accuracy = combined.double().mean().item()
    assert report.worst_case <= combined_accuracy  # the default suite holds both attacks
    assert report.worst_case >= combined_accuracy - 0.01, (report.worst_case, combined_accuracy)
    assert report.accuracy["autoattack-st"]["ce"] <= report.accuracy["autoattack"]["ce"] - 0.01, report.accuracy


@pytest.mark.slow
def test_straight_through_lets_a_main_head_attack_move_the_mask(trained_cas, backward):
    """(d) With the main-head objective alone, the hard mask hides the mask choice from the gradient and PGD-20
    stays weak; through the straight-through masks the same PGD-20 does at least 1 point better (measured on 3
    training seeds, 200 digits: 4.0, 4.0 and 2.5 points better). With the backward replaced by the hard mask the
    two attacks are the same computation and give the same accuracy, so the first assertion fails."""
    model, x, y = trained_cas["model"], trained_cas["x"], trained_cas["y"]
    torch.manual_seed(0)
    plain = _accuracy(model, attacks.pgd(model, x, y, EPS, step_size=EPS / 10, steps=20, objective="ce"), y)
    torch.manual_seed(0)
    through = _accuracy(model, attacks.straight_through_pgd(model, x, y, EPS, steps=20, restarts=1,
                                                            step_size=EPS / 10, objective="ce"), y)
    if backward == "straight-through":
        assert through <= plain - 0.01, (through, plain)
    else:
        assert through == plain, (through, plain)


def test_straight_through_input_gradient_differs_from_the_hard_one(trained_cas, backward):
    """(d) On the trained model the straight-through input gradient of the adaptive objective differs from the
    hard-mask gradient for many digits (where the auxiliary softmax is not saturated: 20 of 32 when written, we
    ask for 8); with the backward replaced by the hard mask they are equal."""
    model, x, y = trained_cas["model"], trained_cas["x"][:32], trained_cas["y"][:32]
    x_req = x.clone().requires_grad_(True)
    (hard,) = torch.autograd.grad(attacks.attack_objective(model, x_req, y, "ce+cas"), x_req)
    with straight_through(model):
        (through,) = torch.autograd.grad(attacks.attack_objective(model, x_req, y, "ce+cas"), x_req)
    differs = ~torch.isclose(through, hard, rtol=1e-4, atol=1e-7).flatten(1).all(dim=1)
    if backward == "straight-through":
        assert differs.sum() >= 8, differs
    else:
        assert torch.equal(through, hard)
