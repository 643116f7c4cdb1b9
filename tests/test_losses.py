"""The training losses against the official CAS code, written out term by term in this file.

References (github.com/bymavis/CAS_ICLR2021): ``Standard_Adv_Training/train.py`` (PGD-AT + CAS),
``Trades/trades_reg.py`` (TRADES + CAS), ``MART/mart_reg.py`` (MART + CAS). The expected values below
use plain torch operations only — none of the library's loss helpers — on one fixed natural /
adversarial batch, with a small CNN carrying two CAS modules (so the mean over heads is exercised) in
train mode with true-label masks, as the official training forwards are.
"""
from __future__ import annotations

import copy

import pytest
import torch

from cas_edu import attacks, losses, training
from cas_edu.models import SmallCNN
from cas_edu.presets import make_config
from cas_edu.losses import mart_loss, trades_loss
from cas_edu.training import method_loss, training_attack, training_loss

EPS = 0.1
BETA = {"trades": 4.0, "mart": 5.0}  # the official TRADES 1/λ and MART β
CAS_BETA = 2.0


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Natural images x, a fixed adversarial batch x′ in the ε-ball ∩ [0, 1], labels y (every class present)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 8, 8, generator=g)
    x_adv = (x + EPS * torch.randint(-1, 2, x.shape, generator=g)).clamp(0, 1)
    y = torch.arange(20) % 10
    return x, x_adv, y


def small_model(cas: bool) -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(num_classes=10, in_channels=1, widths=(8, 16, 16),
                    cas_layers=["block2", "block3"] if cas else None)


def config(method: str, cas: bool):
    return make_config("digits", method=method, cas=cas, device="cpu", eps=EPS, attack_steps=2,
                       method_beta=BETA.get(method), cas_beta=CAS_BETA)


# --------------------------------------------------------------------------- the official formulas, by hand


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits, y): the batch mean of −log softmax at the label."""
    return -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()


def kl_rows(adv_logits: torch.Tensor, nat_probs: torch.Tensor, log_adv: torch.Tensor | None = None) -> torch.Tensor:
    """Row sums of nn.KLDivLoss(input=log q, target=p) = Σ_k p (log p − log q)."""
    log_q = torch.log_softmax(adv_logits, dim=1) if log_adv is None else log_adv
    return (torch.xlogy(nat_probs, nat_probs) - nat_probs * log_q).sum(dim=1)


def official_pgd_at(adv, y, cas_beta):
    """Standard_Adv_Training/train.py: CE(f(x′)) + β · (Σ_s CE(aux_s(x′))) / S."""
    loss = ce(adv.logits, y)
    if adv.aux_logits:
        loss = loss + cas_beta * sum(ce(a, y) for a in adv.aux_logits) / len(adv.aux_logits)
    return loss


def plain_trades(nat_logits, adv_logits, y, beta):
    """TRADES: CE(f(x)) + β · (1/B) · KL_sum(p(x) ‖ p(x′))."""
    batch_size = len(y)
    return ce(nat_logits, y) + beta * kl_rows(adv_logits, torch.softmax(nat_logits, dim=1)).sum() / batch_size


def official_trades(nat, adv, y, beta, cas_beta):
    """Trades/trades_reg.py, trades_loss after the attack."""
    batch_size, heads = len(y), len(nat.aux_logits)
    loss_natural = ce(nat.logits, y) + cas_beta * sum(ce(a, y) for a in nat.aux_logits) / heads
    loss_robust = (1.0 / batch_size) * kl_rows(adv.logits, torch.softmax(nat.logits, dim=1)).sum()
    extra_robust = sum((1.0 / batch_size) * kl_rows(a, torch.softmax(n, dim=1)).sum()
                       for a, n in zip(adv.aux_logits, nat.aux_logits)) / heads
    return loss_natural + beta * (loss_robust + cas_beta * extra_robust)


def boosted_ce(adv_logits, y):
    """CE + nll_loss(log(1.0001 − p(x′) + 1e-12), runner-up) with the runner-up from argsort as in the script."""
    adv_probs = torch.softmax(adv_logits, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    return ce(adv_logits, y) - torch.log(1.0001 - adv_probs + 1e-12).gather(1, new_y[:, None]).mean()


def mart_kl_term(adv_logits, nat_logits, true_probs):
    """(1/B) Σ_i KL(p(x_i) ‖ p(x′_i)) · (1.0000001 − p_y(x_i)), log q as log(softmax + 1e-12) as in the script."""
    nat_probs = torch.softmax(nat_logits, dim=1)
    log_adv = torch.log(torch.softmax(adv_logits, dim=1) + 1e-12)
    return (kl_rows(adv_logits, nat_probs, log_adv) * (1.0000001 - true_probs)).sum() / len(true_probs)


def plain_mart(nat_logits, adv_logits, y, beta):
    """MART: BCE(f(x′), y) + β · (1/B) Σ KL(p(x) ‖ p(x′)) · (1 − p_y(x))."""
    true_probs = torch.softmax(nat_logits, dim=1).gather(1, y[:, None]).squeeze(1)
    return boosted_ce(adv_logits, y) + beta * mart_kl_term(adv_logits, nat_logits, true_probs)


def official_mart(nat, adv, y, beta, cas_beta):
    """MART/mart_reg.py, mart_loss after the attack: p_y(x) is the *main* head's in the auxiliary terms too."""
    heads = len(adv.aux_logits)
    loss_adv = boosted_ce(adv.logits, y) + cas_beta * sum(boosted_ce(a, y) for a in adv.aux_logits) / heads
    true_probs = torch.softmax(nat.logits, dim=1).gather(1, y[:, None]).squeeze(1)
    loss_robust = mart_kl_term(adv.logits, nat.logits, true_probs)
    extra_robust = sum(mart_kl_term(a, n, true_probs) for a, n in zip(adv.aux_logits, nat.aux_logits)) / heads
    return loss_adv + beta * (loss_robust + cas_beta * extra_robust)


def by_hand(model, x, x_adv, y, method, cas):
    """The reference loss: train-mode forwards of x then x′ with true-label masks, then the formula above."""
    model.train()
    nat, adv = model.forward_details(x, y), model.forward_details(x_adv, y)
    if method == "standard":
        return official_pgd_at(nat, y, CAS_BETA)
    if method == "pgd_at":
        return official_pgd_at(adv, y, CAS_BETA)
    if not cas:
        plain = plain_trades if method == "trades" else plain_mart
        return plain(nat.logits, adv.logits, y, BETA[method])
    official = official_trades if method == "trades" else official_mart
    return official(nat, adv, y, BETA[method], CAS_BETA)


# --------------------------------------------------------------------------- the library equals the formulas


@pytest.mark.parametrize("cas", [False, True], ids=["plain", "cas"])
@pytest.mark.parametrize("method", ["standard", "pgd_at", "trades", "mart"])
def test_method_loss_equals_the_official_formula(batch, method, cas):
    x, x_adv, y = batch
    model = small_model(cas)
    assert len(model.cas) == (2 if cas else 0)
    expected = by_hand(copy.deepcopy(model), x, x_adv, y, method, cas)
    loss, logits = method_loss(model, x, x_adv, y, config(method, cas))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    model.eval()
    assert logits.shape == (20, 10) and model.training is False


def test_the_cas_terms_change_the_loss_the_way_the_official_code_does(batch):
    """TRADES+CAS puts the auxiliary CE on x (not x′) and adds an auxiliary KL term weighted β_T·β_c; MART+CAS
    weights the auxiliary KL by the main head's 1 − p_y(x). Each alternative reading gives another value."""
    x, x_adv, y = batch
    model = small_model(True)
    model.train()
    nat, adv = model.forward_details(x, y), model.forward_details(x_adv, y)
    trades = trades_loss(adv.logits, nat.logits, y, BETA["trades"], adv.aux_logits, nat.aux_logits, CAS_BETA)
    aux_ce_on_adversarial = (plain_trades(nat.logits, adv.logits, y, BETA["trades"])
                             + CAS_BETA * sum(ce(a, y) for a in adv.aux_logits) / 2)  # the old library's loss
    assert abs(trades.item() - aux_ce_on_adversarial.item()) > 1e-3
    mart = mart_loss(adv.logits, nat.logits, y, BETA["mart"], adv.aux_logits, nat.aux_logits, CAS_BETA)
    main_true_probs = torch.softmax(nat.logits, dim=1).gather(1, y[:, None]).squeeze(1)
    own_true_probs = [torch.softmax(n, dim=1).gather(1, y[:, None]).squeeze(1) for n in nat.aux_logits]
    own_weight = (boosted_ce(adv.logits, y) + CAS_BETA * sum(boosted_ce(a, y) for a in adv.aux_logits) / 2
                  + BETA["mart"] * (mart_kl_term(adv.logits, nat.logits, main_true_probs)
                                    + CAS_BETA * sum(mart_kl_term(a, n, p) for a, n, p in
                                                     zip(adv.aux_logits, nat.aux_logits, own_true_probs)) / 2))
    assert abs(mart.item() - own_weight.item()) > 1e-4


def test_training_loss_is_the_training_attack_then_the_method_loss(batch):
    """training_loss = method_loss on the x′ that training_attack crafts from the same random state."""
    x, _, y = batch
    for method in ("pgd_at", "trades", "mart"):
        cfg = config(method, True)
        model = small_model(True)
        twin = copy.deepcopy(model)
        torch.manual_seed(1)
        loss, _ = training_loss(model, x, y, cfg)
        torch.manual_seed(1)
        x_adv = training_attack(twin, x, y, cfg)
        expected, _ = method_loss(twin, x, x_adv, y, cfg)
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_training_attacks_start_where_the_official_scripts_start(batch):
    """MART from x + 0.001·N(0, 1) (MART/mart_reg.py); PGD-AT uniformly in the ε-ball (train.py, random_start=True)."""
    x, _, y = batch
    model = small_model(True)
    for method, start, other in (("mart", "normal", "uniform"), ("pgd_at", "uniform", "normal")):
        cfg = config(method, True)
        torch.manual_seed(2)
        crafted = training_attack(model, x, y, cfg)
        torch.manual_seed(2)
        same = attacks.pgd(model, x, y, EPS, cfg.step_size, cfg.attack_steps, random_start=start,
                           objective="ce+cas", beta=CAS_BETA)
        torch.manual_seed(2)
        different = attacks.pgd(model, x, y, EPS, cfg.step_size, cfg.attack_steps, random_start=other,
                                objective="ce+cas", beta=CAS_BETA)
        assert torch.equal(crafted, same), method
        assert not torch.equal(crafted, different), method


# --------------------------------------------------------------------------- underflowing probabilities


def gapped_logits(generator: torch.Generator, gap: float = 200.0) -> torch.Tensor:
    """8×10 logits where one class leads by ``gap``: in float32 the other probabilities underflow to exactly 0."""
    logits = torch.randn(8, 10, generator=generator)
    logits[torch.arange(8), torch.arange(8) % 10] += gap
    return logits.requires_grad_(True)


@pytest.mark.parametrize("loss_fn", [trades_loss, mart_loss], ids=["trades", "mart"])
def test_losses_keep_finite_gradients_when_a_probability_underflows(loss_fn):
    g = torch.Generator().manual_seed(0)
    natural, adversarial = gapped_logits(g), gapped_logits(g)
    natural_aux, adversarial_aux = [gapped_logits(g), gapped_logits(g)], [gapped_logits(g), gapped_logits(g)]
    assert (torch.softmax(natural.detach(), dim=1) == 0).any(), "the test needs probabilities that underflow"
    y = (torch.arange(8) + 1) % 10  # not the leading class, so the KL and CE terms are large
    loss = loss_fn(adversarial, natural, y, 5.0, adversarial_aux, natural_aux, CAS_BETA)
    assert torch.isfinite(loss)
    loss.backward()
    for tensor in (natural, adversarial, *natural_aux, *adversarial_aux):
        assert torch.isfinite(tensor.grad).all()


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_a_model_with_huge_logit_gaps_gets_finite_weight_gradients(batch, method):
    x, x_adv, y = batch
    model = small_model(True)
    with torch.no_grad():
        model.fc.weight.mul_(1e4)  # natural logit gaps of hundreds: softmax underflows to 0
        model.train()
        assert (torch.softmax(model.forward_details(x, y).logits, dim=1) == 0).any()
    loss, _ = method_loss(model, x, x_adv, y, config(method, True))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- cas_edu.losses, function by function


def test_cross_entropy_loss_is_the_official_pgd_at_loss(batch):
    """Standard_Adv_Training/train.py: CE(main) + β_c · mean over heads of CE(aux), also without heads."""
    x, x_adv, y = batch
    for cas in (True, False):
        model = small_model(cas)
        model.train()
        adv = model.forward_details(x_adv, y)
        torch.testing.assert_close(losses.cross_entropy_loss(adv.logits, y, adv.aux_logits, CAS_BETA),
                                   official_pgd_at(adv, y, CAS_BETA), rtol=1e-6, atol=1e-6)


def test_cross_entropy_loss_widens_bf16_logits():
    g = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(6, 10, generator=g), [torch.randn(6, 10, generator=g)]
    y = torch.arange(6)
    half = losses.cross_entropy_loss(logits.bfloat16(), y, [a.bfloat16() for a in aux], CAS_BETA)
    assert half.dtype == torch.float32
    expected = losses.cross_entropy_loss(logits.bfloat16().float(), y, [a.bfloat16().float() for a in aux], CAS_BETA)
    assert torch.equal(half, expected)


def test_kl_per_example_is_each_rows_kl_divergence():
    g = torch.Generator().manual_seed(1)
    natural, adversarial = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    kl = losses.kl_per_example(natural, adversarial)
    assert kl.shape == (5,)
    torch.testing.assert_close(kl, kl_rows(adversarial, torch.softmax(natural, dim=1)), rtol=1e-5, atol=1e-6)
    assert torch.all(losses.kl_per_example(natural, natural).abs() < 1e-6)


@pytest.mark.parametrize("loss_fn", [losses.trades_loss, losses.mart_loss], ids=["trades", "mart"])
def test_losses_refuse_different_numbers_of_heads(loss_fn):
    logits, y = torch.randn(4, 10), torch.arange(4)
    with pytest.raises(ValueError, match="auxiliary"):
        loss_fn(logits, logits, y, 1.0, [logits, logits], [logits], CAS_BETA)


def test_the_old_training_names_still_reach_the_losses():
    """Deprecated aliases, kept for one release: notebook 04 and the README name training.trades_loss."""
    assert training.trades_loss is losses.trades_loss and training.mart_loss is losses.mart_loss
    assert training.kl_per_example is losses.kl_per_example
    assert training.boosted_cross_entropy is losses.boosted_cross_entropy
