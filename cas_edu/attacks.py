"""White-box L∞/L2 attacks: FGSM, PGD, CW∞ (PGD on the margin loss) and the TRADES KL attack.

Every attack takes ``(model, x, y, eps, ...)`` and returns adversarial images with
‖x_adv − x‖ ≤ ε and x_adv ∈ [0, 1]. The model runs in evaluation mode (BatchNorm statistics
frozen, CAS masks from the auxiliary predictions) and its mode is restored afterwards; only
input gradients are computed. ``objective="ce"`` attacks the main head alone;
``objective="ce+cas"`` adds β · mean CE of the auxiliary CAS heads, the official adaptive attack.
Models may be wrapped (``nn.Sequential``, DDP, ``torch.compile``): the auxiliary logits are then
collected with forward hooks on the CAS modules that :func:`cas_edu.cas.find_cas_modules` finds.

:func:`straight_through_pgd` is the attack built for CAS: :func:`pgd_restarts` through the
straight-through (BPDA) backward pass of :func:`cas_edu.cas.straight_through`, which lets the
gradient see the mask choice ``W[argmax aux]``; :func:`autoattack` runs pyautoattack, optionally
through the same straight-through model.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import cas as cas_lib
from .cas import DEFAULT_CAS_BETA

OBJECTIVES = ("ce", "ce+cas")
NORMS = ("linf", "l2")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def has_cas(model: nn.Module) -> bool:
    """Whether ``model`` carries CAS modules, also inside wrappers (see :func:`cas_edu.cas.find_cas_modules`)."""
    if not isinstance(model, nn.Module):
        return bool(getattr(model, "has_cas", False))
    return bool(cas_lib.find_cas_modules(model))


def forward_with_aux(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main logits (N×K) and the auxiliary logits of every CAS module (a list of N×K, in forward order).

    Uses ``model.forward_details`` when the model has one (our classifiers); otherwise, e.g. for
    ``nn.Sequential(preprocess, model)``, DDP or ``torch.compile`` wrappers, one plain ``model(x)``
    call with forward hooks on the CAS modules found inside it. The list is empty without CAS modules.
    """
    if callable(getattr(model, "forward_details", None)):
        details = model.forward_details(x)
        return details.logits, list(details.aux_logits)
    modules = cas_lib.find_cas_modules(model)
    aux: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _inputs, output: aux.append(output[1])) for m in modules]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return logits, aux


def validate_attack_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float,
                           objective: str = "ce", norm: str = "linf") -> None:
    """Raise ``ValueError`` with a plain sentence when an attack's arguments cannot be right."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating-point tensor of images shaped N×C×H×W.")
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point()):
        raise ValueError(f"y must be an integer label tensor of shape ({x.shape[0]},), got {tuple(y.shape)}.")
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
    if not (eps >= 0 and (eps <= 1 or norm == "l2")):
        raise ValueError(f"eps must lie in [0, 1] for L∞ images in [0, 1], got {eps}.")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x must hold images scaled to [0, 1]; divide uint8 images by 255.")
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    if objective == "ce+cas" and not has_cas(model):
        raise ValueError("objective 'ce+cas' needs a model with CAS modules; use objective='ce' for this model.")


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    r"""Per-example CW margin (N,): best wrong logit minus the true logit, capped at ``kappa``.

    With the default ``kappa = 0`` this is :math:`-\mathrm{ReLU}(z_y - \max_{j \ne y} z_j)`, the loss of the
    official ``_cw_whitebox`` (Trades/pgd_attack_cifar10_cas.py, github.com/bymavis/CAS_ICLR2021): it
    stops pushing an example once it is misclassified. (The official code sums the logits over the batch
    before the ReLU; we keep the cap per example.) ``logits`` is N×K, ``y`` holds N labels in [0, K).
    """
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    wrong_logit = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return (wrong_logit - true_logit).clamp(max=kappa)


def attack_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: str = "ce",
                     loss: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""The summed loss an attack ascends (a scalar): the main head's loss, plus for ``ce+cas``
    β · the mean over the S auxiliary heads of the same loss.

    ``loss="ce"``: :math:`\sum_i [CE(z_i, y_i) + \beta/S \sum_s CE(a_{s,i}, y_i)]`, the official adaptive PGD.
    ``loss="margin"`` (CW∞): :math:`\sum_i [m(z_i, y_i) + \beta/S \sum_s m(a_{s,i}, y_i)]` with
    :func:`margin_loss`'s :math:`m = -\mathrm{ReLU}(z_y - \max_{j\ne y} z_j)`, as the official ``_cw_whitebox``.
    Works on wrapped models (see :func:`forward_with_aux`).
    """
    if objective == "ce":
        logits, aux = model(x), []
    else:
        logits, aux = forward_with_aux(model, x)
        if not aux:
            raise ValueError("objective 'ce+cas' needs a model with CAS modules; use objective='ce' for this model.")
    per_loss = (lambda z: F.cross_entropy(z, y, reduction="none")) if loss == "ce" else (lambda z: margin_loss(z, y))
    if loss == "ce" and not aux:
        return F.cross_entropy(logits, y, reduction="sum")
    main = per_loss(logits)
    if aux:
        main = main + beta * torch.stack([per_loss(a) for a in aux]).mean(dim=0)
    return main.sum()


def _random_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        noise = torch.empty_like(x).uniform_(-eps, eps)
    else:
        direction = torch.randn_like(x)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype).view(-1, *[1] * (x.dim() - 1))
        noise = direction * radius * eps
    return (x + noise).clamp(0, 1)


def _l2_step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
    """One ascent step of L2 length ``step_size`` along the gradient (not yet projected)."""
    grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
    return x_adv + step_size * grad / grad_norm


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project onto the ε-ball around ``x`` intersected with [0, 1]."""
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        x_adv = x + delta * scale.view(-1, *[1] * (x.dim() - 1))
    return x_adv.clamp(0, 1)


def _wide_dtype(x: torch.Tensor) -> torch.dtype:
    """The type in which budget checks run: float64, or float32 on MPS (which has no float64)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _linf_step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float, low: torch.Tensor,
               high: torch.Tensor) -> torch.Tensor:
    """One signed-gradient ascent step, clipped to the L∞ ball ∩ [0, 1] given as its bounds ``(low, high)``."""
    return torch.clamp(x_adv.detach() + step_size * grad.sign(), low, high)


def _linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L∞ ball around ``x`` intersected with [0, 1], as per-pixel bounds, computed once per attack."""
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def _exceeds(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Where |x_adv − x| > ε exactly (float32 differences are exact in float64; float64 ones use TwoSum)."""
    wide = _wide_dtype(x)
    a, b = x_adv.to(wide), x.to(wide)
    diff = a - b
    if x.dtype != wide:
        return diff.abs() > eps
    z = diff - a
    error = (a - (diff - z)) - (b + z)  # diff + error == a − b exactly
    return torch.where(diff >= 0, (diff - eps) + error > 0, (-diff - eps) - error > 0)


def _exact_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip to bounds x ± ε rounded towards x, so ‖x_adv − x‖∞ ≤ ε holds exactly despite float rounding."""
    wide = _wide_dtype(x)
    if x.dtype != wide:
        low, high = x.to(wide) - eps, x.to(wide) + eps
        low_n, high_n = low.to(x.dtype), high.to(x.dtype)
        low_n = torch.where(low_n.to(wide) < low, torch.nextafter(low_n, x), low_n)
        high_n = torch.where(high_n.to(wide) > high, torch.nextafter(high_n, x), high_n)
        x_adv = torch.minimum(torch.maximum(x_adv, low_n), high_n)
    over = _exceeds(x_adv, x, eps)
    for _ in range(8):  # the last-ulp cases left by rounding in the wide type
        if not over.any():
            return x_adv
        x_adv = torch.where(over, torch.nextafter(x_adv, x), x_adv)
        over = _exceeds(x_adv, x, eps)
    return torch.where(over, x, x_adv)


def _exact_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Shrink rows whose ‖x_adv − x‖₂ exceeds ε after float rounding (ε near the pixels' ulp); rows that
    still exceed after a few shrinks fall back to x."""
    wide = _wide_dtype(x)
    shape = (-1, *[1] * (x.dim() - 1))
    for _ in range(8):
        delta = x_adv.to(wide) - x.to(wide)
        norms = delta.flatten(1).norm(dim=1)
        over = norms > eps
        if not over.any():
            return x_adv
        shrunk = (x.to(wide) + delta * ((eps / norms).clamp(max=1) * (1 - 1e-6)).view(shape)).to(x.dtype).clamp(0, 1)
        x_adv = torch.where(over.view(shape), shrunk, x_adv)
    over = (x_adv.to(wide) - x.to(wide)).flatten(1).norm(dim=1) > eps
    return torch.where(over.view(shape), x, x_adv)


#: Starting points of :func:`pgd`: ``"uniform"`` in the ε-ball (``random_start=True``), ``"normal"``
#: x + 0.001·N(0, 1) (the official MART and TRADES training attacks), ``"none"`` x itself (``False``).
RANDOM_STARTS = ("uniform", "normal", "none")


def _start_kind(random_start: bool | str | None) -> str:
    """``random_start`` as one of :data:`RANDOM_STARTS` (``True`` → uniform, ``False``/``None`` → none)."""
    if not isinstance(random_start, str):
        return "uniform" if random_start else "none"
    if random_start in RANDOM_STARTS:
        return random_start
    raise ValueError(f"Unknown random_start {random_start!r}; use True/False or one of {', '.join(RANDOM_STARTS)}.")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float | None = None,
        steps: int = 10, random_start: bool | str = True, objective: str = "ce", beta: float = DEFAULT_CAS_BETA,
        norm: str = "linf", loss: str = "ce") -> torch.Tensor:
    """Projected gradient ascent on the chosen loss; ``step_size`` defaults to 2.5·ε/steps.

    ``random_start``: ``True``/``"uniform"`` starts uniformly in the ε-ball (L∞) or ball (L2);
    ``"normal"`` starts at x + 0.001·N(0, 1) projected onto the ball ∩ [0, 1], as the official
    MART+CAS training attack does (MART/mart_reg.py); ``False``/``"none"`` starts at x.
    Raises ``ValueError`` for any other value.
    """
    start = _start_kind(random_start)
    validate_attack_inputs(model, x, y, eps, objective, norm)
    if y is None:
        raise ValueError("This attack needs the true labels y (an integer tensor of shape (N,)).")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if loss not in ("ce", "margin"):
        raise ValueError(f"Unknown loss {loss!r}; choose 'ce' or 'margin'.")
    if step_size is None:
        step_size = 2.5 * eps / steps or eps  # a subnormal ε can underflow the default to 0
    if step_size <= 0 and eps > 0:
        raise ValueError(f"step_size must be positive, got {step_size}.")
    x = x.detach()
    low, high = _linf_bounds(x, eps) if norm == "linf" else (None, None)
    with eval_mode(model):
        if start == "none" or eps == 0:
            x_adv = x.clone()
        elif start == "uniform":
            x_adv = _random_start(x, eps, norm)
        elif norm == "linf":
            x_adv = torch.clamp(x + 0.001 * torch.randn_like(x), low, high)
        else:
            x_adv = project(x + 0.001 * torch.randn_like(x), x, eps, norm)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            objective_value = attack_objective(model, x_adv, y, objective, loss, beta)
            (grad,) = torch.autograd.grad(objective_value, x_adv)
            if norm == "linf":
                x_adv = _linf_step(x_adv, grad, step_size, low, high)
            else:
                x_adv = project(_l2_step(x_adv.detach(), grad, step_size), x, eps, norm)
    return _exact_linf(x_adv, x, eps) if norm == "linf" else _exact_l2(x_adv, x, eps)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, random_start: bool = False,
         objective: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """One signed-gradient step of size ε (from a uniform random start when ``random_start``, as the official evaluation)."""
    return pgd(model, x, y, eps, step_size=eps, steps=1, random_start=random_start, objective=objective, beta=beta)


def cw_inf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float | None = None,
           steps: int = 20, random_start: bool = True, objective: str = "ce",
           beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""CW∞: L∞ PGD on the margin loss, as the official ``_cw_whitebox`` (Trades/pgd_attack_cifar10_cas.py).

    Ascends :math:`-\mathrm{ReLU}(z_y - \max_{j \ne y} z_j)` on the main head (κ = 0) and, for
    ``objective="ce+cas"``, β · the mean of the same term over the auxiliary heads (see
    :func:`attack_objective`). Same for models without CAS (the official code has no other CW).
    Departures from the official code: the cap is per example (the official sums logits over the batch
    before the ReLU) and the random start is clipped to [0, 1] before the first gradient.
    Returns adversarial images shaped like ``x``; raises ``ValueError`` for bad arguments.
    """
    return pgd(model, x, y, eps, step_size, steps, random_start, objective, beta, loss="margin")


def trades_kl_attack(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int = 10,
                     objective: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """The TRADES inner maximisation: KL(p(x_adv) ‖ p(x)) from a 0.001·N(0, 1) start (plus the aux-head KLs for ``ce+cas``)."""
    validate_attack_inputs(model, x, None, eps, objective)
    x = x.detach()
    with eval_mode(model), torch.no_grad():
        natural_logits, natural_aux = forward_with_aux(model, x) if objective == "ce+cas" else (model(x), [])
        natural_probs = natural_logits.softmax(dim=1)
        natural_aux = [a.softmax(dim=1) for a in natural_aux]
    low, high = _linf_bounds(x, eps)
    with eval_mode(model):
        x_adv = torch.clamp(x + 0.001 * torch.randn_like(x), low, high)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            if objective == "ce+cas":
                logits, aux = forward_with_aux(model, x_adv)
            else:
                logits, aux = model(x_adv), []
            kl = F.kl_div(logits.log_softmax(dim=1), natural_probs, reduction="sum")
            if aux:
                kl = kl + beta * torch.stack([F.kl_div(a.log_softmax(dim=1), p, reduction="sum")
                                              for a, p in zip(aux, natural_aux)]).mean()
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = _linf_step(x_adv, grad, step_size, low, high)
    return _exact_linf(x_adv, x, eps)


def pgd_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                 restarts: int = 5, step_size: float | None = None, objective: str = "ce", loss: str = "ce",
                 beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """L∞ :func:`pgd` from ``restarts`` uniform random starts, keeping per example the worst case over restarts:
    the restart with the largest margin (best wrong logit minus true logit) of the model's forward pass, so an
    example counts as broken when any restart breaks it. Arguments as in :func:`pgd`; ``x``: N×C×H×W in
    [0, 1], ``eps`` in pixel units. Returns adversarial images shaped like ``x``. Raises ``ValueError`` for
    bad arguments."""
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}.")
    x = x.detach()
    best, best_margin = x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
    for _ in range(restarts):
        x_adv = pgd(model, x, y, eps, step_size=step_size, steps=steps, random_start=True, objective=objective,
                    beta=beta, loss=loss)
        with torch.no_grad(), eval_mode(model):
            margin = margin_loss(model(x_adv), y, kappa=float("inf"))
        better = margin > best_margin
        best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
        best_margin = torch.where(better, margin, best_margin)
    return best


def straight_through_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                         restarts: int = 5, step_size: float | None = None, objective: str = "ce+cas",
                         loss: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """The adaptive attack built for CAS: :func:`pgd_restarts` through the straight-through (BPDA) CAS model.

    Every restart runs inside :func:`cas_edu.cas.straight_through`, so the gradient differentiates the
    softmax-weighted mask where the model uses ``W[argmax aux]`` (Athalye, Carlini & Wagner, ICML 2018,
    BPDA); the forward pass, and so the margin that picks the worst restart per example, is the deployed
    hard-mask model's. ``step_size`` defaults to 2.5·ε/steps; ``objective`` and ``loss`` as in :func:`pgd`
    (default CE(main) + β · mean CE(aux)). ``x``: N×C×H×W in [0, 1]; ``eps`` in pixel units.
    Raises ``ValueError`` for bad arguments or a model without CAS modules.
    """
    validate_attack_inputs(model, x, y, eps, objective)
    if y is None:
        raise ValueError("This attack needs the true labels y (an integer tensor of shape (N,)).")
    if not has_cas(model):
        raise ValueError("straight_through_pgd needs a model with CAS modules; use pgd_restarts for this model.")
    with cas_lib.straight_through(model):
        return pgd_restarts(model, x, y, eps, steps=steps, restarts=restarts, step_size=step_size,
                            objective=objective, loss=loss, beta=beta)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks: list[str] | None = None,
               batch_size: int = 256, seed: int = 0, square_queries: int = 5000,
               straight_through: bool = False) -> torch.Tensor:
    """Adversarial images (shaped like ``x``, on the model's device) from pyautoattack's L∞ AutoAttack.

    ``attacks=None`` runs the standard suite (APGD-CE, APGD-T, FAB-T, Square with ``square_queries``);
    a list (e.g. ``["apgd-ce", "apgd-t"]``) runs those alone (version "custom"). With
    ``straight_through=True`` the attack runs inside :func:`cas_edu.cas.straight_through`: every
    ``model(x)`` call AutoAttack makes has the same outputs but BPDA gradients through the CAS masks.
    Per-example correctness is ``model(x_adv).argmax(1) == y`` (the forward pass is the deployed model's
    in either case). Source: Croce & Hein (ICML 2020). Raises ``ValueError`` for bad arguments, or for
    ``straight_through`` on a model without CAS modules.
    """
    from contextlib import nullcontext
    import logging

    from pyautoattack import AutoAttack

    validate_attack_inputs(model, x, y, eps)
    if y is None:
        raise ValueError("AutoAttack needs the true labels y (an integer tensor of shape (N,)).")
    if straight_through and not has_cas(model):
        raise ValueError("straight_through=True needs a model with CAS modules; pass straight_through=False.")
    device = next(model.parameters()).device
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    context = cas_lib.straight_through(model) if straight_through else nullcontext()
    with eval_mode(model), context:
        version = "standard" if attacks is None else "custom"
        adversary = AutoAttack(model, norm="Linf", eps=eps, version=version, attacks=attacks, device=device, seed=seed)
        adversary.square.n_queries = square_queries
        adversary.verbose = False
        x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    return x_adv
