"""The training objectives of the official CAS code: cross-entropy (standard / PGD-AT), TRADES and MART, each
with the CAS auxiliary term as the official scripts add it, and the pieces they share (KL per example, MART's
boosted cross-entropy).

Every function takes logits that are already computed (train-mode forwards with true-label CAS masks, as the
official training scripts run them); crafting x′ and choosing the objective for a config is the trainer's
business (:func:`cas_edu.training.training_loss`). The CAS term alone, β/S Σ_s CE(aux_s, y), is
:func:`cas_edu.cas.auxiliary_loss`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .cas import DEFAULT_CAS_BETA, auxiliary_loss

__all__ = ["cross_entropy_loss", "kl_per_example", "trades_loss", "boosted_cross_entropy", "mart_loss"]


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (bf16 autocast outputs are widened before softmax and losses)."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


def _mean_over_heads(terms: list[torch.Tensor]) -> torch.Tensor | float:
    """The mean of per-head scalars (the official ``/ len(extra_outputs)``); 0 without CAS heads."""
    return torch.stack(terms).mean() if terms else 0.0


def _check_heads(adv_aux: Sequence[torch.Tensor], natural_aux: Sequence[torch.Tensor]) -> None:
    if len(adv_aux) != len(natural_aux):
        raise ValueError(f"got {len(adv_aux)} adversarial and {len(natural_aux)} natural auxiliary logits; "
                         "pass one per CAS module for both inputs.")


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, aux_logits: Sequence[torch.Tensor] = (),
                       cas_beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""CE(f(x), y) + β_c · mean_s CE(aux_s(x), y): the standard-training objective on x and PGD-AT's on x′.

    ``aux_logits`` holds one N×K tensor per CAS module (empty: plain cross-entropy); bf16 / fp16 logits are
    widened to float32 first. The auxiliary term is :func:`cas_edu.cas.auxiliary_loss`.

    Shape: logits and each aux_logits[s] (N, K) float; y (N,) int64 class indices; returns a 0-d tensor
    (float32, or the logits' dtype when wider).
    Raises: nothing of its own (PyTorch's errors for mismatched shapes or labels outside [0, K)).
    Source: ``Standard_Adv_Training/train.py`` of github.com/bymavis/CAS_ICLR2021 (loss = CE + β · Σ_s CE_s / S);
    arXiv 2103.08307 §4 (the CAS training loss); PGD-AT: Madry et al. 2018.
    """
    return F.cross_entropy(_full(logits), y) + auxiliary_loss([_full(a) for a in aux_logits], y, cas_beta)


def kl_per_example(natural_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(p(x) ‖ p(x′)) of each example, from natural and adversarial logits (bf16 widened to float32).

    Computed from log-probabilities (``log_target=True``) so that a natural probability that underflows
    to 0 (logit gaps beyond ~104 in float32) contributes 0 with a finite gradient; the usual
    ``kl_div(log q, p)`` form gives NaN gradients there.

    Shape: natural_logits and adv_logits (N, K) float; returns (N,) float32 (or the logits' dtype when wider).
    Raises: nothing of its own (PyTorch's error when the two shapes differ).
    Source: the ``nn.KLDivLoss(size_average=False)`` term of ``Trades/trades_reg.py`` and ``MART/mart_reg.py``
    (github.com/bymavis/CAS_ICLR2021), summed over classes per example; Zhang et al. 2019 (TRADES).
    """
    return F.kl_div(_full(adv_logits).log_softmax(dim=1), _full(natural_logits).log_softmax(dim=1),
                    reduction="none", log_target=True).sum(dim=1)


def trades_loss(adv_logits: torch.Tensor, natural_logits: torch.Tensor, y: torch.Tensor, beta: float,
                adv_aux: Sequence[torch.Tensor] = (), natural_aux: Sequence[torch.Tensor] = (),
                cas_beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""TRADES + CAS exactly as the official ``Trades/trades_reg.py`` computes it:

    :math:`[CE(f(x), y) + β_c · mean_s CE(aux_s(x), y)] + β · [(1/B) KL(p(x) ‖ p(x′))
    + β_c · mean_s (1/B) KL(p_{aux_s}(x) ‖ p_{aux_s}(x′))]`.

    Natural logits come from x and adversarial ones from x′, all from train-mode forwards with true-label
    masks; ``beta`` is TRADES' 1/λ, ``cas_beta`` CAS' β. Without auxiliary heads this is plain TRADES.
    Gradients flow through both the natural and the adversarial logits, as in the official code.

    Shape: adv_logits, natural_logits and every adv_aux[s] / natural_aux[s] (N, K) float; y (N,) int64;
    returns a 0-d tensor (float32, or the logits' dtype when wider).
    Raises: ValueError when ``adv_aux`` and ``natural_aux`` hold different numbers of heads.
    Source: ``Trades/trades_reg.py`` (github.com/bymavis/CAS_ICLR2021), ``trades_loss`` after the attack;
    Zhang et al. 2019 (TRADES); arXiv 2103.08307 §4 for the CAS terms.
    """
    _check_heads(adv_aux, natural_aux)
    natural = F.cross_entropy(_full(natural_logits), y) + cas_beta * _mean_over_heads(
        [F.cross_entropy(_full(a), y) for a in natural_aux])
    robust = kl_per_example(natural_logits, adv_logits).mean() + cas_beta * _mean_over_heads(
        [kl_per_example(n, a).mean() for a, n in zip(adv_aux, natural_aux)])
    return natural + beta * robust


def boosted_cross_entropy(adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MART's boosted cross-entropy: CE(p(x′), y) − log(1.0001 − p_r(x′)), r the most likely wrong class,
    batch mean; finite with finite gradients for any finite logits.

    Shape: adv_logits (N, K) float; y (N,) int64; returns a 0-d tensor (float32, or the logits' dtype when wider).
    Raises: nothing of its own (PyTorch's errors for labels outside [0, K)).
    Source: ``MART/mart_reg.py`` (github.com/bymavis/CAS_ICLR2021), ``loss_adv``; Wang et al. 2020 (MART).
    """
    logits = _full(adv_logits)
    probs = logits.softmax(dim=1)
    wrong = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), -1.0)
    runner_up = wrong.max(dim=1).values
    return F.cross_entropy(logits, y) - torch.log(1.0001 - runner_up + 1e-12).mean()


def mart_loss(adv_logits: torch.Tensor, natural_logits: torch.Tensor, y: torch.Tensor, beta: float,
              adv_aux: Sequence[torch.Tensor] = (), natural_aux: Sequence[torch.Tensor] = (),
              cas_beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""MART + CAS exactly as the official ``MART/mart_reg.py`` computes it:

    :math:`[BCE(f(x′), y) + β_c · mean_s BCE(aux_s(x′), y)] + β · [(1/B) Σ KL(p(x) ‖ p(x′)) · (1 − p_y(x))
    + β_c · mean_s (1/B) Σ KL(p_{aux_s}(x) ‖ p_{aux_s}(x′)) · (1 − p_y(x))]`

    with BCE the boosted CE (:func:`boosted_cross_entropy`) and p_y(x) the *main* head's natural
    probability of the true class in every term, auxiliary ones included (a quirk of the official code,
    kept); the official 1.0000001 − p_y is used for 1 − p_y. Logits come from train-mode forwards with
    true-label masks. Without auxiliary heads this is plain MART.

    Shape: adv_logits, natural_logits and every adv_aux[s] / natural_aux[s] (N, K) float; y (N,) int64;
    returns a 0-d tensor (float32, or the logits' dtype when wider).
    Raises: ValueError when ``adv_aux`` and ``natural_aux`` hold different numbers of heads.
    Source: ``MART/mart_reg.py`` (github.com/bymavis/CAS_ICLR2021), ``mart_loss`` after the attack;
    Wang et al. 2020 (MART); arXiv 2103.08307 §4 for the CAS terms.
    """
    _check_heads(adv_aux, natural_aux)
    true_prob = _full(natural_logits).softmax(dim=1).gather(1, y[:, None]).squeeze(1)
    weight = 1.0000001 - true_prob

    def robust(natural: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        return (kl_per_example(natural, adversarial) * weight).mean()

    adversarial = boosted_cross_entropy(adv_logits, y) + cas_beta * _mean_over_heads(
        [boosted_cross_entropy(a, y) for a in adv_aux])
    regulariser = robust(natural_logits, adv_logits) + cas_beta * _mean_over_heads(
        [robust(n, a) for a, n in zip(adv_aux, natural_aux)])
    return adversarial + beta * regulariser
