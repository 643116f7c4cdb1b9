"""Checkers for the notebooks' coding exercises.

Each ``check_*`` runs the learner's function on fresh random inputs (a new seed every call unless
``seed`` is given), compares it with the library's own implementation, prints ONE friendly line --
``✓ Right: ...`` or ``✗ Not yet: <what differs>`` -- and returns ``True`` / ``False``. Exceptions
raised by the learner's function are caught and reported in that line. Where a result matches a
common mistake (no clamp, absolute threshold, sum instead of mean ...) the line names it. Where several
answers are right (:func:`check_restart_selection`: any restart that breaks an example), the checker tests the
rule itself rather than one implementation.
"""
from __future__ import annotations

import secrets
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import activations, attacks, pipeline
from .cas import CASModule, cas_loss
from .evaluation import EvaluationReport
from .models import SmallCNN, eval_mode
from .runtime import seeded
from .validation import gradients_on

__all__ = ["check_fgsm", "check_targeted_fgsm", "check_pgd_projection", "check_restart_selection",
           "check_activation_counts", "check_channel_magnitudes", "check_cas_mask", "check_cas_loss", "check_cas_gains"]

_TRIALS = 3


class _NotYet(Exception):
    """A learner's result differs from the reference; the message says how."""


def _report(ok: bool, message: str) -> bool:
    print(("✓ Right: " if ok else "✗ Not yet: ") + message)
    return ok


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    """Turn a learner's result into a CPU tensor, or explain what was expected."""
    if isinstance(value, (tuple, list)) and len(value) > 0 and isinstance(value[0], torch.Tensor):
        value = value[0]  # e.g. (masked, aux_logits): the first element is the answer
    try:
        tensor = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
    except Exception:  # noqa: BLE001 - any unconvertible object gets the same friendly message
        raise _NotYet(f"your function should return {what}, got {type(value).__name__}.") from None
    return tensor.cpu()


def _check_shape(result: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    if tuple(result.shape) != tuple(expected.shape):
        raise _NotYet(f"{what} has shape {tuple(result.shape)}, expected {tuple(expected.shape)}.")


def _check_values(result: torch.Tensor, what: str, finite: bool = True) -> None:
    """A learner's result must hold real (and, with ``finite``, finite) numbers: a NaN compares unequal to
    everything, so it would otherwise slip past the range checks and end in a meaningless "difference nan"."""
    if result.is_complex():
        raise _NotYet(f"{what} has dtype {str(result.dtype).replace('torch.', '')}; return real numbers.")
    if finite and result.is_floating_point() and not bool(torch.isfinite(result).all()):
        bad = int((~torch.isfinite(result)).sum())
        raise _NotYet(f"{what} holds {bad} NaN or infinite value(s); check for a division by zero or a log of 0.")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = 0.0) -> bool:
    return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol))


def _check_adversarial_images(result: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """Raise :class:`_NotYet` unless ``result`` is shaped like ``expected``, finite, floating point, in [0, 1]
    and within ε of ``x`` (L∞)."""
    _check_shape(result, expected, "x_adv")
    _check_values(result, "x_adv")
    if not result.is_floating_point():
        raise _NotYet(f"x_adv has dtype {result.dtype}; images should stay floating point.")
    if result.min() < -1e-6 or result.max() > 1 + 1e-6:
        raise _NotYet(f"values outside [0, 1] (min {result.min():.3f}, max {result.max():.3f}): "
                      "clamp x_adv to the valid image range.")
    moved = (result.double() - x.double()).abs().max().item()
    if moved > eps + 1e-5:
        raise _NotYet(f"some pixels moved by {moved:.3f}, more than ε = {eps:.3f}.")


def _which_mistake(result: torch.Tensor, mistakes: dict[str, torch.Tensor], atol: float, rtol: float = 0.0) -> str:
    """The hint of the first known mistake that ``result`` reproduces, else an empty string."""
    for hint, wrong in mistakes.items():
        if tuple(wrong.shape) == tuple(result.shape) and _close(result, wrong, atol, rtol):
            return hint
    return ""


def _run(fn: Callable, args: tuple, name: str) -> Any:
    try:
        return fn(*args)
    except _NotYet:
        raise
    except Exception as err:  # noqa: BLE001 - report the learner's error in one line
        raise _NotYet(f"your {name} raised {type(err).__name__}: {err}".rstrip(": ")) from None


def _checked(run_trials: Callable[[torch.Generator], str], seed: int | None) -> bool:
    """Run the trials on fresh inputs without touching the global RNG; print one line."""
    seed = secrets.randbits(31) if seed is None else int(seed)
    with seeded(seed), gradients_on():  # a checker called inside torch.no_grad() still grades
        generator = torch.Generator().manual_seed(seed)
        try:
            message = run_trials(generator)
        except _NotYet as err:
            return _report(False, str(err))
    return _report(True, message)


def _fresh_model(generator: torch.Generator, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    model = SmallCNN(num_classes=num_classes, in_channels=1, widths=(8, 16, 16))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval and train mode differ
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


def _fresh_images(generator: torch.Generator, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=generator)
    x[x < 0.25] = 0.0  # digits have many exactly-black and exactly-white pixels
    x[x > 0.85] = 1.0
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y


# --------------------------------------------------------------------------- notebook 01


def check_fgsm(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor],
               seed: int | None = None) -> bool:
    """Check ``fn(model, x, y, eps) -> x_adv`` against ``attacks.fgsm(..., random_start=False)`` on fresh inputs.

    Shape: fn gets a small CNN, x (16, 1, 8, 8) in [0, 1], y (16,) int64 and ε, and returns x_adv shaped like x.
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            model = _fresh_model(generator)
            x, y = _fresh_images(generator)
            eps = float(torch.empty(1).uniform_(0.05, 0.3, generator=generator))
            expected = attacks.fgsm(model, x, y, eps, random_start=False)
            result = _as_tensor(_run(fn, (model, x.clone(), y.clone(), eps), "FGSM"), "a tensor of adversarial images")
            _check_adversarial_images(result, expected, x, eps)
            if not _close(result, expected, atol=1e-5):
                with eval_mode(model), torch.enable_grad():
                    xg = x.clone().requires_grad_(True)
                    grad, = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), xg)
                    model.train()
                    xt = x.clone().requires_grad_(True)
                    grad_train, = torch.autograd.grad(nn.functional.cross_entropy(model(xt), y), xt)
                mistakes = {
                    "you stepped down the loss; FGSM steps *up*: x + ε·sign(∇ₓ loss).":
                        (x - eps * grad.sign()).clamp(0, 1),
                    "you used the raw gradient; FGSM steps by ε·sign(gradient).": (x + eps * grad).clamp(0, 1),
                    "the gradient was taken in training mode; call the model in eval mode (model.eval()).":
                        (x + eps * grad_train.sign()).clamp(0, 1),
                }
                hint = _which_mistake(result, mistakes, atol=1e-5)
                raise _NotYet(hint or f"max abs difference {_max_diff(result, expected):.4f} from cas_edu.attacks.fgsm "
                                      "(expected x + ε·sign(∇ₓ CE), clamped to [0, 1]).")
        return f"your FGSM matches cas_edu.attacks.fgsm on {_TRIALS} fresh models and batches."

    return _checked(trials, seed)


def check_targeted_fgsm(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor],
                        seed: int | None = None) -> bool:
    """Check ``fn(model, x, target, eps) -> x_adv``, one targeted FGSM step x − ε·sign(∇ₓ CE(f(x), target))
    clamped to [0, 1], against ``attacks.fgsm(..., targeted=True, random_start=False)`` on fresh inputs.

    Named mistakes: stepping up the loss (the untargeted step), pushing away from the model's own prediction,
    the raw gradient instead of its sign, the gradient of the training-mode model, no clamp to [0, 1].
    Shape: fn gets a small CNN, x (16, 1, 8, 8) in [0, 1], target (16,) int64 (classes other than the model's
    prediction) and ε, and returns x_adv shaped like x.
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            model = _fresh_model(generator)
            x, _ = _fresh_images(generator)
            with torch.no_grad():
                predicted = model(x).argmax(1)
            target = (predicted + torch.randint(1, 10, predicted.shape, generator=generator)) % 10
            eps = float(torch.empty(1).uniform_(0.05, 0.3, generator=generator))
            expected = attacks.fgsm(model, x, target, eps, random_start=False, targeted=True)
            result = _as_tensor(_run(fn, (model, x.clone(), target.clone(), eps), "targeted FGSM"),
                                "a tensor of adversarial images")
            _check_adversarial_images(result, expected, x, eps)
            if not _close(result, expected, atol=1e-5):
                with eval_mode(model), torch.enable_grad():
                    grads = {}
                    for name, labels in (("target", target), ("predicted", predicted)):
                        xg = x.clone().requires_grad_(True)
                        grads[name], = torch.autograd.grad(nn.functional.cross_entropy(model(xg), labels), xg)
                    model.train()
                    xt = x.clone().requires_grad_(True)
                    grad_train, = torch.autograd.grad(nn.functional.cross_entropy(model(xt), target), xt)
                grad = grads["target"]
                mistakes = {
                    "you stepped *up* the loss to the target; a targeted step goes down it: "
                    "x − ε·sign(∇ₓ CE(f(x), target)).": (x + eps * grad.sign()).clamp(0, 1),
                    "you pushed away from the model's own prediction (an untargeted step); pull towards the target: "
                    "x − ε·sign(∇ₓ CE(f(x), target)).": (x + eps * grads["predicted"].sign()).clamp(0, 1),
                    "you used the raw gradient; the step is ε·sign(gradient).": (x - eps * grad).clamp(0, 1),
                    "the gradient was taken in training mode; call the model in eval mode (model.eval()).":
                        (x - eps * grad_train.sign()).clamp(0, 1),
                }
                hint = _which_mistake(result, mistakes, atol=1e-5)
                raise _NotYet(hint or f"max abs difference {_max_diff(result, expected):.4f} from "
                                      "cas_edu.attacks.fgsm(..., targeted=True) (expected x − ε·sign(∇ₓ CE(f(x), "
                                      "target)), clamped to [0, 1]).")
        return (f"your targeted FGSM matches cas_edu.attacks.fgsm(..., targeted=True) on {_TRIALS} fresh models "
                "and batches.")

    return _checked(trials, seed)


def check_pgd_projection(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor],
                         seed: int | None = None) -> bool:
    """Check ``fn(x_adv, x, eps) -> projected`` (onto the L∞ ε-ball around x, within [0, 1]) against ``attacks.project``.

    Shape: fn gets x_adv and x (16, 1, 8, 8) and ε, and returns the projection shaped like x.
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            x, _ = _fresh_images(generator)
            eps = float(torch.empty(1).uniform_(0.05, 0.3, generator=generator))
            x_adv = x + torch.empty_like(x).uniform_(-3 * eps, 3 * eps, generator=generator)
            expected = attacks.project(x_adv, x, eps)
            result = _as_tensor(_run(fn, (x_adv.clone(), x.clone(), eps), "projection"), "a tensor of images")
            _check_shape(result, expected, "the projection")
            _check_values(result, "the projection")
            if _close(result, expected, atol=1e-6):
                continue
            mistakes = {
                "values outside [0, 1]: after clipping to the ε-ball, also clamp to the image range.":
                    torch.minimum(torch.maximum(x_adv, x - eps), x + eps),
                "you only clamped to [0, 1]; first clip every pixel to [x − ε, x + ε].": x_adv.clamp(0, 1),
                "you clipped the perturbation δ itself to [0, 1]... clip δ to [−ε, ε], then x + δ to [0, 1].":
                    (x + (x_adv - x).clamp(0, 1)).clamp(0, 1),
            }
            hint = _which_mistake(result, mistakes, atol=1e-6)
            if not hint and (result.min() < -1e-6 or result.max() > 1 + 1e-6):
                hint = f"values outside [0, 1] (min {result.min():.3f}, max {result.max():.3f})."
            if not hint and (result.double() - x.double()).abs().max() > eps + 1e-6:
                hint = "some pixels are still further than ε from x."
            raise _NotYet(hint or f"max abs difference {_max_diff(result, expected):.4f} from cas_edu.attacks.project.")
        return f"your projection matches cas_edu.attacks.project on {_TRIALS} fresh batches."

    return _checked(trials, seed)


def _linear_classifier(generator: torch.Generator) -> nn.Module:
    """A random linear classifier of 8×8 images into 10 classes, whose predictions small perturbations flip."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 64, generator=generator))
        model[1].bias.zero_()
    return model.eval()


def _restart_candidates(generator: torch.Generator, restarts: int = 4, n: int = 64):
    """(model, x, y, candidates): ``restarts`` one-step PGD runs from random starts on a random linear classifier,
    with y its own predictions, drawn again until each usual mistake shows: no single restart breaks every
    example some restart breaks, some example survives every restart, and keeping the highest-cross-entropy
    restart misses an example that another restart breaks."""
    for _ in range(100):
        model = _linear_classifier(generator)
        x, _ = _fresh_images(generator, n)
        with torch.no_grad():
            y = model(x).argmax(1)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        candidates = [attacks.pgd(model, x, y, 0.1, step_size=0.025, steps=1) for _ in range(restarts)]
        with torch.no_grad():
            logits = torch.stack([model(c) for c in candidates])
        wrong = logits.argmax(2) != y
        broken = wrong.any(0)
        highest_ce = torch.stack([nn.functional.cross_entropy(z, y, reduction="none") for z in logits]).argmax(0)
        ce_misses = bool((broken & ~wrong[highest_ce, torch.arange(n)]).any())
        if ce_misses and not broken.all() and not any(bool(torch.equal(w, broken)) for w in wrong):
            break
    return model, x, y, candidates


def check_restart_selection(fn: Callable[[nn.Module, list, torch.Tensor], torch.Tensor],
                            seed: int | None = None) -> bool:
    """Check ``fn(model, candidates, y) -> x_adv``: from the adversarial images of several random restarts, keep
    per example one restart's image that the model misclassifies whenever any restart's image is misclassified
    (the worst case over restarts of :func:`cas_edu.attacks.pgd` with ``restarts``).

    Any restart is accepted for an example that no restart breaks, and any breaking restart where several do.
    Named mistakes: averaging the restarts, keeping one whole restart for every example, keeping the restart of
    the highest cross-entropy (which need not be a misclassified one), images that are no restart's.
    Shape: fn gets a model of 8×8 images, candidates a list of 4 tensors (64, 1, 8, 8) in [0, 1] and y (64,) int64
    (the true labels), and returns x_adv (64, 1, 8, 8).
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            model, x, y, candidates = _restart_candidates(generator)
            stacked = torch.stack(candidates)
            with torch.no_grad():
                logits = torch.stack([model(c) for c in candidates])
            wrong = logits.argmax(2) != y
            result = _as_tensor(_run(fn, (model, [c.clone() for c in candidates], y.clone()), "restart selection"),
                                "a tensor of adversarial images")
            _check_shape(result, x, "x_adv")
            _check_values(result, "x_adv")
            rows = stacked.double().flatten(2)
            same = ((rows - result.double().flatten(1)[None]).abs() <= 1e-6).all(2)  # (restarts, N)
            if not same.any(0).all():
                if _close(result, stacked.mean(0), atol=1e-6):
                    raise _NotYet("you averaged the restarts; keep, per example, the image of one restart "
                                  "(an average of adversarial images need not fool the model).")
                missing = int((~same.any(0)).sum())
                raise _NotYet(f"{missing} example(s) got an image that is none of the restarts'; return, per "
                              "example, the image of one restart.")
            with torch.no_grad():
                result_wrong = model(result.to(x.dtype)).argmax(1) != y
            missed = wrong.any(0) & ~result_wrong
            if not missed.any():
                continue
            whole = [j for j in range(len(candidates)) if bool(same[j].all())]
            highest_ce = torch.stack([nn.functional.cross_entropy(z, y, reduction="none") for z in logits]).argmax(0)
            if whole:
                hint = (f"you kept restart {whole[0] + 1} of {len(candidates)} for every example; choose the restart "
                        "per example (the one that breaks that example, if any does).")
            elif bool(same[highest_ce, torch.arange(len(y))].all()):
                hint = ("you kept the restart of the highest cross-entropy, but a restart with a lower loss can be "
                        "the one that misclassifies the example; keep a misclassifying restart when there is one "
                        "(its margin, best wrong logit − true logit, is > 0).")
            else:
                hint = (f"{int(missed.sum())} example(s) are misclassified by some restart but not by your choice; "
                        "keep, per example, a restart that misclassifies it if any does.")
            raise _NotYet(hint)
        return (f"your selection keeps the worst case over restarts per example on {_TRIALS} fresh sets of "
                "restarts.")

    return _checked(trials, seed)


# --------------------------------------------------------------------------- notebook 02


def _fresh_activations(generator: torch.Generator, n: int = 40, c: int = 32) -> torch.Tensor:
    """Non-negative N×C activations with per-example scales over five orders of magnitude and exact zeros."""
    acts = torch.rand(n, c, generator=generator) ** 3
    acts[torch.rand(n, c, generator=generator) < 0.3] = 0.0
    acts *= 10 ** torch.empty(n, 1).uniform_(-3, 2, generator=generator)
    acts[:, int(torch.randint(0, c, (1,), generator=generator))] = 0.0  # a channel no example activates
    return acts


def check_activation_counts(fn: Callable[[torch.Tensor], torch.Tensor], seed: int | None = None) -> bool:
    """Check ``fn(acts N×C) -> counts C`` (Figure 2) against ``activations.activation_counts``.

    Shape: fn gets acts (40, 32) non-negative and returns counts (32,).
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            acts = _fresh_activations(generator)
            expected = activations.activation_counts(acts)
            result = _as_tensor(_run(fn, (acts.clone(),), "count function"), "a vector of C counts")
            _check_shape(result, expected, "counts")
            _check_values(result, "counts")
            if _close(result, expected, atol=1e-6):
                continue
            mistakes = {
                "that is an absolute threshold; a channel is activated when it exceeds 1% of *that example's* "
                "largest channel.": (acts > 0.01).sum(0),
                "that counts every non-zero channel; the threshold is 1% of each example's largest channel.":
                    (acts > 0).sum(0),
                "you counted per example (over channels); Figure 2 counts per channel, over examples.":
                    (acts > 0.01 * acts.amax(1, keepdim=True)).sum(1),
                "the 1% threshold should use each example's largest channel, not the largest value overall.":
                    (acts > 0.01 * acts.max()).sum(0),
                "the 1% threshold should use each example's largest channel, not each channel's largest value.":
                    (acts > 0.01 * acts.amax(0, keepdim=True)).sum(0),
            }
            hint = _which_mistake(result, mistakes, atol=1e-6)
            wrong = int((result.double() - expected.double()).abs().gt(1e-6).sum())
            raise _NotYet(hint or f"{wrong} of {expected.numel()} channel counts differ from "
                                  f"cas_edu.activations.activation_counts (max difference {_max_diff(result, expected):.0f}).")
        return f"your counts match cas_edu.activations.activation_counts on {_TRIALS} fresh activation sets."

    return _checked(trials, seed)


def check_channel_magnitudes(fn: Callable[[torch.Tensor], torch.Tensor], seed: int | None = None) -> bool:
    """Check ``fn(acts N×C) -> magnitudes C`` (Figure 1, channel order) against ``activations.channel_magnitudes``.

    Shape: fn gets acts (40, 32) non-negative and returns magnitudes (32,).
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            acts = _fresh_activations(generator)
            expected = activations.channel_magnitudes(acts)
            result = _as_tensor(_run(fn, (acts.clone(),), "magnitude function"), "a vector of C magnitudes")
            _check_shape(result, expected, "magnitudes")
            _check_values(result, "magnitudes", finite=False)  # a NaN gets its own hint below
            if not result.is_floating_point():
                result = result.double()
            if torch.isnan(result).any():
                raise _NotYet("NaN in your result: a channel that no example activates should get magnitude 0.")
            _check_values(result, "magnitudes")
            if _close(result, expected, atol=1e-6, rtol=1e-4):
                continue
            on = activations.activated(acts)
            counts = on.sum(0).double()
            safe = counts.clamp_min(1)
            mistakes = {
                "you divided by the number of examples; Figure 1 divides by each channel's activated count.":
                    acts.double().sum(0) / acts.shape[0],
                "you summed only the activated values; the official numerator sums all examples' values.":
                    torch.where(counts > 0, (acts.double() * on).sum(0) / safe, 0.0),
                "those are sorted; return the magnitudes in channel order (the figure sorts them later).":
                    expected.double().sort(descending=True).values,
            }
            hint = _which_mistake(result, mistakes, atol=1e-6, rtol=1e-4)
            rel = ((result.double() - expected.double()).abs() / expected.double().abs().clamp_min(1e-12)).max().item()
            raise _NotYet(hint or f"max relative difference {rel:.3g} from cas_edu.activations.channel_magnitudes "
                                  "(sum over examples ÷ activated count; 0 for never-activated channels).")
        return f"your magnitudes match cas_edu.activations.channel_magnitudes on {_TRIALS} fresh activation sets."

    return _checked(trials, seed)


# --------------------------------------------------------------------------- notebook 03


def check_cas_mask(fn: Callable[[CASModule, torch.Tensor, torch.Tensor], torch.Tensor], seed: int | None = None) -> bool:
    """Check ``fn(cas_module, features, y) -> masked features`` (training mode: true-label weight rows) against CASModule.

    Shape: fn gets a CASModule (12 channels, 5 classes), features (8, 12, 3, 3) and y (8,) int64, and returns the
    masked features shaped like ``features`` (a tuple's first element counts).
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for _ in range(_TRIALS):
            channels, classes = 12, 5
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            module = CASModule(channels, classes)
            features = torch.randn(8, channels, 3, 3, generator=generator).relu()
            y = torch.randint(0, classes, (8,), generator=generator)
            with torch.no_grad():
                expected, aux = module.train()(features, y)
            module.train()
            result = _as_tensor(_run(fn, (module, features.clone(), y.clone()), "CAS mask"), "the masked feature map")
            _check_shape(result, expected, "the masked features")
            _check_values(result, "the masked features")
            if _close(result, expected, atol=1e-5, rtol=1e-4):
                continue
            weight, bias = module.classifier.weight.detach(), module.classifier.bias.detach()
            predicted = aux.argmax(1)
            mistakes = {
                "you used the auxiliary prediction; in training the mask is the weight row of the *true* label y.":
                    features * weight[predicted][:, :, None, None],
                "no sigmoid: the official mask is the raw, signed weight row W[y].":
                    features * weight[y].sigmoid()[:, :, None, None],
                "no abs: the official mask is the raw, signed weight row W[y].":
                    features * weight[y].abs()[:, :, None, None],
                "the bias does not enter the mask; multiply by W[y] only.":
                    features * (weight[y] + bias[y, None])[:, :, None, None],
            }
            hint = _which_mistake(result, mistakes, atol=1e-5, rtol=1e-4)
            raise _NotYet(hint or f"max abs difference {_max_diff(result, expected):.4f} from CASModule in training mode "
                                  "(expected features × W[y] broadcast over H×W).")
        return f"your CAS mask matches cas_edu.cas.CASModule (training mode) on {_TRIALS} fresh modules."

    return _checked(trials, seed)


def check_cas_loss(fn: Callable[[torch.Tensor, list, torch.Tensor, float], torch.Tensor], seed: int | None = None) -> bool:
    """Check ``fn(logits, aux_logits_list, y, beta) -> scalar`` against ``cas.cas_loss`` (CE + β/S Σ_s CE(aux_s)).

    Shape: fn gets logits (10, 6), a list of S tensors (10, 6) (S = 1, 2, 3), y (10,) int64 and β, and returns a
    scalar (one element).
    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """

    def trials(generator: torch.Generator) -> str:
        for trial in range(_TRIALS):
            n, classes, heads = 10, 6, [2, 1, 3][trial % 3]
            beta = [2.0, 0.5, 3.0][trial % 3]
            logits = torch.randn(n, classes, generator=generator) * 3
            aux = [torch.randn(n, classes, generator=generator) * 3 for _ in range(heads)]
            y = torch.randint(0, classes, (n,), generator=generator)
            expected = cas_loss(logits, aux, y, beta)
            result = _as_tensor(_run(fn, (logits.clone(), [a.clone() for a in aux], y.clone(), beta), "CAS loss"),
                                "a scalar loss")
            if result.numel() != 1:
                raise _NotYet(f"the loss should be one number (a scalar), got shape {tuple(result.shape)}.")
            _check_values(result, "the loss")
            result = result.reshape(()).double()
            if _close(result, expected, atol=1e-5, rtol=1e-5):
                continue
            ce = torch.nn.functional.cross_entropy
            aux_ce = torch.stack([ce(a, y) for a in aux])
            mistakes = {
                "you summed the auxiliary terms; the paper uses β/S · Σ_s (the mean over the S heads).":
                    ce(logits, y) + beta * aux_ce.sum(),
                "β is missing: the auxiliary part is β/S · Σ_s CE(aux_s, y).": ce(logits, y) + aux_ce.mean(),
                "the main-head cross-entropy CE(logits, y) is missing.": beta * aux_ce.mean(),
            }
            hint = _which_mistake(result.reshape(1), {k: v.reshape(1) for k, v in mistakes.items()}, atol=1e-5, rtol=1e-5)
            raise _NotYet(hint or f"got {result.item():.4f}, expected {expected.item():.4f} "
                                  f"(CE(main) + β/S Σ_s CE(aux_s), S = {heads}, β = {beta}).")
        return f"your CAS loss matches cas_edu.cas.cas_loss on {_TRIALS} fresh cases (S = 1, 2, 3 heads)."

    return _checked(trials, seed)


# --------------------------------------------------------------------------- notebook 04


def check_cas_gains(fn: Callable[[Mapping[str, EvaluationReport]], Mapping[str, float]],
                    reports: Mapping[str, EvaluationReport]) -> bool:
    """Check ``fn(reports) -> {method label: CAS gain in worst-case points}`` against
    :func:`cas_edu.pipeline.cas_gains` (within 0.15 points); prints one line, with the paired 95 % intervals when
    right.

    ``reports`` are notebook 04's evaluation reports by run name (``pgd_at``, ``pgd_at+cas``, ...); the gain of a
    method is its worst-case accuracy with CAS minus without, in percentage points.

    Raises: nothing of its own: whatever ``fn`` raises is caught and reported in the printed line.
    """
    expected = pipeline.cas_gains(reports)
    try:
        answer = fn(reports)
    except Exception as err:  # noqa: BLE001 - report the learner's error in one line
        print(f"✗ Not yet: your function raised {type(err).__name__}: {err}")
        return False
    if not isinstance(answer, Mapping):
        print(f"✗ Not yet: return a dict such as {{'AT': 1.5, ...}}, got {type(answer).__name__}.")
        return False
    answer = {str(k): v for k, v in answer.items()}
    missing = [k for k in expected if k not in answer]
    if missing:
        print(f"✗ Not yet: missing method(s) {missing}; use the labels {list(expected)}.")
        return False
    try:
        answer = {k: float(answer[k]) for k in expected}
    except (TypeError, ValueError) as err:
        print(f"✗ Not yet: every gain must be a number of percentage points ({err}).")
        return False
    wrong = {k: answer[k] for k in expected if abs(answer[k] - expected[k]) > 0.15}
    if wrong:
        sign_flip = all(abs(answer[k] + expected[k]) <= 0.15 for k in wrong)
        hint = "the sign is flipped: gain = with CAS − without." if sign_flip else \
            "compare the 'worst case' column (the per-example worst case), in percentage points."
        print(f"✗ Not yet: {', '.join(wrong)} differ(s) from the table; {hint}")
        return False
    intervals = pipeline.cas_gain_intervals(reports)
    parts = [f"{k} {v:+.1f}" + (f" (95% CI {100 * intervals[k].low:+.1f} to {100 * intervals[k].high:+.1f})"
                                if k in intervals else "") for k, v in expected.items()]
    print(f"✓ Right: CAS gains in worst-case robust accuracy: {', '.join(parts)} points.")
    return True
