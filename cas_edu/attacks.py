"""The attacks, and nothing else: FGSM, PGD (L∞/L2; untargeted or targeted, from one start or the worst case
over random restarts), CW∞ (PGD on the margin loss), the straight-through (BPDA) PGD built for CAS, the TRADES KL
attack, the AutoAttack wrapper, and the objective, restart score and projection they share
(:func:`attack_objective`, :func:`margin_loss`, :func:`targeted_margin`, :func:`restart_score`, :func:`project`).

Every attack takes ``(model, x, y, eps, ...)`` and returns adversarial images with
‖x_adv − x‖ ≤ ε and x_adv ∈ [0, 1], in the dtype of ``x``. Images and labels follow the input rule of
:mod:`cas_edu.validation` (finite images in [0, 1], any floating dtype, cast to the model's; integer labels
in [0, K), cast to int64); anything else raises ``ValueError``. The model runs in evaluation mode (BatchNorm
statistics frozen, CAS masks from the auxiliary predictions) and every submodule gets its own mode back
afterwards; only input gradients are computed, also when the caller is inside ``torch.no_grad()`` or
``torch.inference_mode()``. ``objective="ce"`` attacks the main head alone;
``objective="ce+cas"`` adds β · mean CE of the auxiliary CAS heads, the official adaptive attack.
Models may be wrapped (``nn.Sequential``, DDP, ``torch.compile``): the auxiliary logits are then
collected with forward hooks on the CAS modules that :func:`cas_edu.cas.find_cas_modules` finds; DDP and
``DataParallel`` are looked through (:func:`cas_edu.cas.unwrap_parallel`), giving the unwrapped model's numbers.

:func:`straight_through_pgd` is the attack built for CAS: :func:`pgd_restarts` through the
straight-through (BPDA) backward pass of :func:`cas_edu.cas.straight_through`, which lets the
gradient see the mask choice ``W[argmax aux]``; :func:`autoattack` runs pyautoattack, optionally
through the same straight-through model.

Model facts (device, CAS detection, evaluation mode, auxiliary logits) come from :mod:`cas_edu.models`; the
input rule from :mod:`cas_edu.validation`. Imports: cas, models, validation; evaluation, training, the
activation statistics and the presentation modules import from here.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

from . import cas as cas_lib
from .cas import DEFAULT_CAS_BETA, unwrap_parallel
from .models import eval_mode, forward_with_aux, has_cas, model_device, refuse_inference_parameters
from .models import classifier_details, find_classifier  # deprecated alias (moved to cas_edu.models), kept for one release
from .runtime import seeded
from .validation import autograd_ready, check_batch_size, check_inputs, check_seed, gradients_on

OBJECTIVES = ("ce", "ce+cas")
NORMS = ("linf", "l2")


def validate_attack_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float,
                           objective: str = "ce", norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check an attack's arguments and return ``(x, y)`` cast by the input rule of :mod:`cas_edu.validation`
    (x in the model's dtype, y int64 in [0, K); ``y=None`` is passed through).

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K) or None; returns x in the model's
    dtype (same shape) and y (N,) int64 on x's device (or None).
    Units: ε in pixel units of [0, 1] (L∞ unless norm='l2'); ε ≤ 1 for L∞, any finite ε ≥ 0 for L2.
    Raises: ``ValueError`` with a plain sentence for an unknown ``norm`` or ``objective``, an ε that is not a
    finite number in range, images or labels that break the input rule of :mod:`cas_edu.validation`, or
    ``objective="ce+cas"`` on a model without CAS modules.
    Source: this package (no paper).
    """
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {', '.join(NORMS)}.")
    if not isinstance(eps, Real) or isinstance(eps, bool) or not (
            math.isfinite(eps) and eps >= 0 and (eps <= 1 or norm == "l2")):
        raise ValueError(f"eps must lie in [0, 1] for L∞ images in [0, 1] (a finite number ≥ 0 for L2), got {eps}.")
    x, y = check_inputs(model, x, y, labels_required=False)
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    if objective == "ce+cas" and not has_cas(model):
        raise ValueError("objective 'ce+cas' needs a model with CAS modules; use objective='ce' for this model.")
    return x, y


def _check_steps(steps: int, name: str = "steps") -> None:
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {steps!r}.")


def _check_schedule(steps: int, step_size: float, eps: float) -> None:
    """Raise ``ValueError`` unless ``steps`` is a whole number ≥ 1 and ``step_size`` finite and positive
    (any finite value when ``eps`` is 0: nothing can move)."""
    _check_steps(steps)
    if not isinstance(step_size, Real) or isinstance(step_size, bool) or not math.isfinite(step_size) \
            or (step_size <= 0 and eps > 0):
        raise ValueError(f"step_size must be a finite positive number, got {step_size!r}.")


def _check_device(model: nn.Module, x: torch.Tensor) -> None:
    device = model_device(model)
    if x.device != device:
        raise ValueError(f"x is on {x.device} but the model on {device}; move the images with x.to({str(device)!r}).")


def _in_caller_dtype(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """``x_adv`` (computed in the model's dtype) in the dtype of the caller's images ``x``, clipped again so the
    budget holds exactly against ``x`` itself."""
    if x_adv.dtype == x.dtype:
        return x_adv
    x = x.detach()
    x_adv = x_adv.to(x.dtype)
    return _exact_linf(x_adv, x, eps) if norm == "linf" else _exact_l2(x_adv, x, eps)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    r"""Per-example CW margin (N,): best wrong logit minus the true logit, capped at ``kappa``.

    With the default ``kappa = 0`` this is :math:`-\mathrm{ReLU}(z_y - \max_{j \ne y} z_j)`, the loss of the
    official ``_cw_whitebox`` (Trades/pgd_attack_cifar10_cas.py, github.com/bymavis/CAS_ICLR2021): it
    stops pushing an example once it is misclassified. (The official code sums the logits over the batch
    before the ReLU; we keep the cap per example.)

    Shape: logits (N, K) float; y (N,) int64 in [0, K); returns (N,) in logits' dtype.
    Raises: nothing of its own (torch's errors for mismatched shapes or labels out of range).
    Source: Carlini & Wagner 2017 (the margin objective, κ cap); github.com/bymavis/CAS_ICLR2021,
    Trades/pgd_attack_cifar10_cas.py (``_cw_whitebox``).
    """
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    wrong_logit = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return (wrong_logit - true_logit).clamp(max=kappa)


def targeted_margin(logits: torch.Tensor, target: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    r"""Per-example targeted CW margin (N,): the target logit minus the best other logit, capped at ``kappa``.

    :math:`\min(z_t - \max_{j \ne t} z_j, \kappa)`: ascending it pulls the target class up until it wins by
    κ (with κ = 0, until the example is classified as the target), the negative of Carlini & Wagner's targeted
    :math:`f_6 = \max(\max_{j \ne t} z_j - z_t, -\kappa)`, which they minimise.

    Shape: logits (N, K) float; target (N,) int64 in [0, K); returns (N,) in logits' dtype.
    Raises: nothing of its own (torch's errors for mismatched shapes or labels out of range).
    Source: Carlini & Wagner 2017 (objective f6, targeted).
    """
    return (-margin_loss(logits, target, kappa=math.inf)).clamp(max=kappa)


def attack_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: str = "ce",
                     loss: str = "ce", beta: float = DEFAULT_CAS_BETA, targeted: bool = False) -> torch.Tensor:
    r"""The summed loss an attack ascends (a scalar): the main head's loss, plus for ``ce+cas``
    β · the mean over the S auxiliary heads of the same loss.

    ``loss="ce"``: :math:`\sum_i [CE(z_i, y_i) + \beta/S \sum_s CE(a_{s,i}, y_i)]`, the official adaptive PGD.
    ``loss="margin"`` (CW∞): :math:`\sum_i [m(z_i, y_i) + \beta/S \sum_s m(a_{s,i}, y_i)]` with
    :func:`margin_loss`'s :math:`m = -\mathrm{ReLU}(z_y - \max_{j\ne y} z_j)`, as the official ``_cw_whitebox``.
    ``targeted=True`` reads ``y`` as target classes and turns each term towards them: CE becomes −CE (ascending
    it descends the cross-entropy to the target), the margin becomes :func:`targeted_margin` (target logit
    minus best other, capped at 0), and for ``ce+cas`` the auxiliary heads are pulled to the target too -- in
    evaluation the mask is ``W[argmax aux]``, so that also steers the mask towards the target's row.
    Works on wrapped models (see :func:`cas_edu.models.forward_with_aux`). Arguments are not checked here:
    any ``objective`` other than ``"ce"`` is read as ``"ce+cas"``, any ``loss`` other than ``"ce"`` as the
    margin (the attacks check both first).
    Shape: x (N, C, H, W) in the model's dtype and device; y (N,) int64; returns a scalar (0-dim) tensor.
    Raises: ``ValueError`` for ``"ce+cas"`` when the forward pass yields no auxiliary logits (no CAS modules).
    Source: Madry et al. 2018 (CE); for ``"ce+cas"`` the official adaptive attack ``_pgd_whitebox``
    (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py; also Standard_Adv_Training/attack/
    reg_attack.py), CE(main) + β · mean CE(aux), summed over the batch here; targeted: Kurakin, Goodfellow &
    Bengio 2017 (descending CE to a target class), Carlini & Wagner 2017 (the targeted margin).
    """
    if objective == "ce":
        logits, aux = model(x), []
    else:
        logits, aux = forward_with_aux(model, x)
        if not aux:
            raise ValueError("objective 'ce+cas' needs a model with CAS modules; use objective='ce' for this model.")
    if targeted:
        per_loss = (lambda z: -F.cross_entropy(z, y, reduction="none")) if loss == "ce" else \
            (lambda z: targeted_margin(z, y))
    else:
        per_loss = (lambda z: F.cross_entropy(z, y, reduction="none")) if loss == "ce" else (lambda z: margin_loss(z, y))
    if loss == "ce" and not aux:
        total = F.cross_entropy(logits, y, reduction="sum")
        return -total if targeted else total
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
    """Project onto the ε-ball around ``x`` intersected with [0, 1].

    ``norm="linf"`` clips each pixel to [x − ε, x + ε]; any other ``norm`` is read as L2 and rescales each
    example's perturbation to length at most ε. The result is then clamped to [0, 1].
    Shape: x_adv and x of one shape (N, ...), values in [0, 1]; returns that shape in x_adv's dtype.
    Units: ε in pixel units of [0, 1] (L∞ unless norm='l2').
    Raises: nothing of its own (torch's errors for mismatched shapes).
    Source: Madry et al. 2018 (the projection step of PGD).
    """
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


def _check_restarts(restarts: int, start: str) -> None:
    """Raise ``ValueError`` unless ``restarts`` is a whole number ≥ 1, and > 1 only from a random start."""
    _check_steps(restarts, "restarts")
    if restarts > 1 and start == "none":
        raise ValueError(f"restarts={restarts} needs a random start: every restart from x itself finds the same "
                         "images; pass random_start=True (or 'normal'), or restarts=1.")


def restart_score(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per example, how far the model's prediction is from what the attack wants: the score :func:`pgd` keeps the
    highest of over restarts.

    Untargeted: the best wrong logit minus the true logit (positive when the example is misclassified);
    targeted (``y`` the targets): the target logit minus the best other logit (positive when the example is
    classified as its target). The logits are the deployed model's (its main head), whatever the attack ascended.
    Shape: logits (N, K) float; y (N,) int64 in [0, K); returns (N,) in logits' dtype.
    Raises: nothing of its own (torch's errors for mismatched shapes or labels out of range).
    Source: Madry et al. 2018 (the worst case over random restarts); the margin of Carlini & Wagner 2017.
    """
    margin = margin_loss(logits, y, kappa=math.inf)
    return -margin if targeted else margin


def _pgd_from(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
              start: str, objective: str, beta: float, norm: str, loss: str, targeted: bool,
              low: torch.Tensor | None, high: torch.Tensor | None) -> torch.Tensor:
    """One run of PGD from one start (drawn here), projected exactly onto the ball ∩ [0, 1]."""
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
        objective_value = attack_objective(model, x_adv, y, objective, loss, beta, targeted)
        (grad,) = torch.autograd.grad(objective_value, x_adv)
        if norm == "linf":
            x_adv = _linf_step(x_adv, grad, step_size, low, high)
        else:
            x_adv = project(_l2_step(x_adv.detach(), grad, step_size), x, eps, norm)
    return _exact_linf(x_adv, x, eps) if norm == "linf" else _exact_l2(x_adv, x, eps)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float | None = None,
        steps: int = 10, random_start: bool | str = True, objective: str = "ce", beta: float = DEFAULT_CAS_BETA,
        norm: str = "linf", loss: str = "ce", targeted: bool = False, restarts: int = 1) -> torch.Tensor:
    """Projected gradient ascent on the chosen loss (descent towards ``y`` when ``targeted``), from ``restarts``
    starts keeping the worst case per example; ``step_size`` defaults to 2.5·ε/steps.

    ``random_start``: ``True``/``"uniform"`` starts uniformly in the ε-ball (L∞) or ball (L2);
    ``"normal"`` starts at x + 0.001·N(0, 1) projected onto the ball ∩ [0, 1], as the official
    MART+CAS training attack does (MART/mart_reg.py); ``False``/``"none"`` starts at x.
    ``objective="ce"`` ascends CE of the main head; ``"ce+cas"`` adds β · mean CE of the auxiliary heads
    (:func:`attack_objective`); ``loss="margin"`` swaps CE for :func:`margin_loss` (that is :func:`cw_inf`).
    ``targeted=True``: ``y`` holds the *target* classes and each step descends CE(f(x), y) -- x − α·sign(∇ CE)
    for L∞ -- pulling the prediction towards them; with ``"ce+cas"`` the auxiliary heads (and so the test-time
    mask ``W[argmax aux]``) are pulled towards the target as well, and with ``loss="margin"`` the step ascends
    :func:`targeted_margin` (the targeted CW∞). Success means ``model(x_adv).argmax(1) == y``.
    ``restarts=n`` runs PGD from n random starts, one after another from the same RNG (the first is the start
    ``restarts=1`` would draw), and keeps per example the restart with the highest :func:`restart_score` of the
    deployed model's logits: untargeted, an example is misclassified if any restart misclassifies it (else the
    restart closest to it); targeted, it reaches its target if any restart does. The score is the main head's
    margin rather than the ascended loss, so that restarts compare on the prediction that is evaluated whatever
    the objective (a higher CE+CAS can come from the auxiliary heads alone).
    The model runs in evaluation mode (:func:`cas_edu.models.eval_mode`); only input gradients are computed.
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K) (cast to int64; the targets when
    ``targeted``); returns x_adv of x's shape in the caller's dtype, with ‖x_adv − x‖ ≤ ε and values in [0, 1].
    Units: ε and step_size in pixel units of [0, 1] (L∞ unless norm='l2'; L∞ ε in [0, 1], L2 any finite ε ≥ 0).
    Raises: ``ValueError`` for inputs breaking the rule of :mod:`cas_edu.validation` (targets included), missing
    labels, an ε out of range, ``steps`` or ``restarts`` not a whole number ≥ 1, ``restarts`` > 1 without a
    random start, a ``targeted`` that is not a bool, a step size that is not finite and positive, an unknown
    ``norm``, ``objective``, ``loss`` or ``random_start``, ``"ce+cas"`` on a model without CAS modules, ``x`` on
    another device than the model, or model parameters made inside ``torch.inference_mode()``.
    Source: Madry et al. 2018 (PGD, and the worst case over random restarts); ``objective="ce+cas"`` follows the
    official adaptive attack ``_pgd_whitebox`` (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py);
    targeted: Kurakin, Goodfellow & Bengio 2017 (descending CE to a target class) and Carlini & Wagner 2017
    (targeted margin).
    """
    start = _start_kind(random_start)
    _check_restarts(restarts, start)
    if not isinstance(targeted, bool):
        raise ValueError(f"targeted must be True or False, got {targeted!r}.")
    model = unwrap_parallel(model)
    caller_x = x
    try:
        x, y = validate_attack_inputs(model, x, y, eps, objective, norm)
    except ValueError as err:
        if targeted and str(err).startswith("y must"):
            raise ValueError(f"{err} With targeted=True, y holds the target classes.") from None
        raise
    if y is None:
        raise ValueError("This attack needs the target classes y (an integer tensor of shape (N,))." if targeted
                         else "This attack needs the true labels y (an integer tensor of shape (N,)).")
    _check_steps(steps)
    if loss not in ("ce", "margin"):
        raise ValueError(f"Unknown loss {loss!r}; choose 'ce' or 'margin'.")
    if step_size is None:
        step_size = 2.5 * eps / steps or eps  # a subnormal ε can underflow the default to 0
    _check_schedule(steps, step_size, eps)
    _check_device(model, x)
    refuse_inference_parameters(model)
    with gradients_on(), eval_mode(model):
        x, y = autograd_ready(x.detach()), autograd_ready(y)
        low, high = _linf_bounds(x, eps) if norm == "linf" else (None, None)
        best, best_score = None, None
        for _ in range(restarts):
            x_adv = _pgd_from(model, x, y, eps, step_size, steps, start, objective, beta, norm, loss, targeted,
                              low, high)
            if restarts == 1:
                best = x_adv
                break
            with torch.no_grad():
                score = restart_score(model(x_adv), y, targeted)
            if best is None:
                best, best_score = x_adv, score
                continue
            better = score > best_score
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_score = torch.where(better, score, best_score)
    return _in_caller_dtype(best, caller_x, eps, norm)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, random_start: bool = False,
         objective: str = "ce", beta: float = DEFAULT_CAS_BETA, targeted: bool = False) -> torch.Tensor:
    """One signed-gradient step of size ε (from a uniform random start when ``random_start``, as the official evaluation).

    :func:`pgd` with ``steps=1`` and ``step_size=eps``. ``targeted=True``: ``y`` holds target classes and the
    step goes *down* the cross-entropy to them, x − ε·sign(∇ₓ CE(f(x), y)), clamped to [0, 1] (the targeted
    FGSM of Kurakin et al. 2017).
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K); returns x_adv of x's shape in the
    caller's dtype, within ε of x (L∞) and in [0, 1].
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for inputs breaking the rule of :mod:`cas_edu.validation` and the other bad
    arguments :func:`pgd` refuses.
    Source: Goodfellow et al. 2015 (FGSM); the official evaluation runs it as ``_pgd_whitebox`` with one step
    of ε from a random start (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py); targeted:
    Kurakin, Goodfellow & Bengio 2017.
    """
    return pgd(model, x, y, eps, step_size=eps, steps=1, random_start=random_start, objective=objective, beta=beta,
               targeted=targeted)


def cw_inf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float | None = None,
           steps: int = 20, random_start: bool = True, objective: str = "ce",
           beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    r"""CW∞: L∞ PGD on the margin loss, as the official ``_cw_whitebox`` (Trades/pgd_attack_cifar10_cas.py).

    Ascends :math:`-\mathrm{ReLU}(z_y - \max_{j \ne y} z_j)` on the main head (κ = 0) and, for
    ``objective="ce+cas"``, β · the mean of the same term over the auxiliary heads (see
    :func:`attack_objective`). Same for models without CAS (the official code has no other CW).
    Departures from the official code: the cap is per example (the official sums logits over the batch
    before the ReLU) and the random start is clipped to [0, 1] before the first gradient.
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K); returns x_adv of x's shape in the
    caller's dtype, within ε of x (L∞) and in [0, 1].
    Units: ε and step_size in pixel units of [0, 1] (L∞); step_size defaults to 2.5·ε/steps.
    Raises: ``ValueError`` for inputs breaking the rule of :mod:`cas_edu.validation` and the other bad
    arguments :func:`pgd` refuses.
    Source: Carlini & Wagner 2017 (margin loss); github.com/bymavis/CAS_ICLR2021,
    Trades/pgd_attack_cifar10_cas.py (``_cw_whitebox``).
    """
    return pgd(model, x, y, eps, step_size, steps, random_start, objective, beta, loss="margin")


def trades_kl_attack(model: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int = 10,
                     objective: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """The TRADES inner maximisation: KL(p(x) ‖ p(x_adv)) from a 0.001·N(0, 1) start (plus the aux-head KLs for ``ce+cas``).

    ``F.kl_div(log p(x_adv), p(x))`` as in the official code, i.e. the natural prediction is the reference
    distribution (the same direction as the TRADES loss's regulariser).

    Needs no labels: it pushes the prediction away from the model's own prediction on ``x``.
    Shape: x (N, C, H, W) float in [0, 1]; returns x_adv of x's shape in the caller's dtype, within ε of x (L∞)
    and in [0, 1].
    Units: ε and step_size in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for images breaking the rule of :mod:`cas_edu.validation`, an ε out of [0, 1],
    ``steps`` < 1, a step size that is not finite and positive, an unknown ``objective``, ``"ce+cas"`` on a
    model without CAS modules, ``x`` on another device than the model, or parameters made inside
    ``torch.inference_mode()``.
    Source: Zhang et al. 2019 (TRADES); github.com/bymavis/CAS_ICLR2021, Trades/trades_reg.py (with the
    auxiliary-head KLs for ``ce+cas``).
    """
    model = unwrap_parallel(model)
    caller_x = x
    x, _ = validate_attack_inputs(model, x, None, eps, objective)
    _check_schedule(steps, step_size, eps)
    _check_device(model, x)
    refuse_inference_parameters(model)
    with gradients_on(), eval_mode(model):
        x = autograd_ready(x.detach())
        with torch.no_grad():
            natural_logits, natural_aux = forward_with_aux(model, x) if objective == "ce+cas" else (model(x), [])
            natural_probs = natural_logits.softmax(dim=1)
            natural_aux = [a.softmax(dim=1) for a in natural_aux]
        low, high = _linf_bounds(x, eps)
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
        x_adv = _exact_linf(x_adv, x, eps)
    return _in_caller_dtype(x_adv, caller_x, eps)


def pgd_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                 restarts: int = 5, step_size: float | None = None, objective: str = "ce", loss: str = "ce",
                 beta: float = DEFAULT_CAS_BETA, targeted: bool = False) -> torch.Tensor:
    """L∞ :func:`pgd` from ``restarts`` uniform random starts (default PGD-100 × 5), keeping per example the worst
    case over restarts: ``pgd(..., random_start=True, restarts=restarts)`` with this function's defaults.

    Per example the restart with the largest :func:`restart_score` of the model's forward pass wins (untargeted:
    best wrong logit minus true logit, so an example counts as broken when any restart breaks it). Arguments as
    in :func:`pgd`.
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K); returns x_adv of x's shape in the
    caller's dtype, within ε of x (L∞) and in [0, 1].
    Units: ε and step_size in pixel units of [0, 1] (L∞); step_size defaults to 2.5·ε/steps.
    Raises: ``ValueError`` for ``restarts`` < 1, inputs breaking the rule of :mod:`cas_edu.validation`, and
    the other bad arguments :func:`pgd` refuses.
    Source: Madry et al. 2018 (PGD with random restarts); ``objective="ce+cas"`` as the official adaptive attack
    (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py).
    """
    return pgd(model, x, y, eps, step_size=step_size, steps=steps, random_start=True, objective=objective,
               beta=beta, loss=loss, targeted=targeted, restarts=restarts)


def straight_through_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100,
                         restarts: int = 5, step_size: float | None = None, objective: str = "ce+cas",
                         loss: str = "ce", beta: float = DEFAULT_CAS_BETA) -> torch.Tensor:
    """The adaptive attack built for CAS: :func:`pgd_restarts` through the straight-through (BPDA) CAS model.

    Every restart runs inside :func:`cas_edu.cas.straight_through`, so the gradient differentiates the
    softmax-weighted mask where the model uses ``W[argmax aux]`` (Athalye, Carlini & Wagner, ICML 2018,
    BPDA); the forward pass, and so the margin that picks the worst restart per example, is the deployed
    hard-mask model's. ``step_size`` defaults to 2.5·ε/steps; ``objective`` and ``loss`` as in :func:`pgd`
    (default CE(main) + β · mean CE(aux), the official adaptive attack's objective).
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K); returns x_adv of x's shape in the
    caller's dtype, within ε of x (L∞) and in [0, 1].
    Units: ε and step_size in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for inputs breaking the rule of :mod:`cas_edu.validation`, the other bad arguments
    :func:`pgd_restarts` refuses, or a model without CAS modules.
    Source: Athalye et al. 2018 (BPDA, §4.1) for the straight-through backward pass; objective from the
    official adaptive attack (github.com/bymavis/CAS_ICLR2021, Trades/pgd_attack_cifar10_cas.py).
    """
    model = unwrap_parallel(model)
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
    """Adversarial images (shaped like ``x``, in its dtype, on the model's device) from pyautoattack's L∞ AutoAttack.

    ``attacks=None`` runs the standard suite (APGD-CE, APGD-T, FAB-T, Square with ``square_queries``);
    a list (e.g. ``["apgd-ce", "apgd-t"]``) runs those alone (version "custom"). With
    ``straight_through=True`` the attack runs inside :func:`cas_edu.cas.straight_through`: every
    ``model(x)`` call AutoAttack makes has the same outputs but BPDA gradients through the CAS masks.
    Per-example correctness is ``model(x_adv).argmax(1) == y`` (the forward pass is the deployed model's
    in either case).
    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer labels in [0, K); returns x_adv of x's shape in the
    caller's dtype on the model's device, within ε of x (L∞) and in [0, 1].
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for inputs breaking the rule of :mod:`cas_edu.validation`, missing labels, an ε out
    of [0, 1], a bad ``batch_size`` or ``seed``, ``straight_through`` on a model without CAS modules, or
    parameters made inside ``torch.inference_mode()``; ``ImportError`` when pyautoattack is not installed.
    Source: Croce & Hein 2020 (AutoAttack, via pyautoattack); Athalye et al. 2018 (BPDA) for
    ``straight_through``.
    """
    from contextlib import nullcontext
    import logging

    from pyautoattack import AutoAttack

    model = unwrap_parallel(model)
    caller_x = x
    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    x, y = validate_attack_inputs(model, x, y, eps)
    if y is None:
        raise ValueError("AutoAttack needs the true labels y (an integer tensor of shape (N,)).")
    if straight_through and not has_cas(model):
        raise ValueError("straight_through=True needs a model with CAS modules; pass straight_through=False.")
    refuse_inference_parameters(model)
    device = model_device(model)
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    context = cas_lib.straight_through(model) if straight_through else nullcontext()
    # pyautoattack seeds torch's global RNG itself: fork it so that the caller's random state is left untouched
    with gradients_on(), eval_mode(model), context, seeded(seed, device):
        version = "standard" if attacks is None else "custom"
        adversary = AutoAttack(model, norm="Linf", eps=eps, version=version, attacks=attacks, device=device, seed=seed)
        adversary.square.n_queries = square_queries
        adversary.verbose = False
        x_dev, y_dev = autograd_ready(x.detach().to(device)), autograd_ready(y.to(device))
        x_adv, _ = adversary.run_standard_evaluation(x_dev, y_dev, batch_size=batch_size)
    return _in_caller_dtype(x_adv, caller_x.to(device), eps)
