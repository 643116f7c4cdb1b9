"""Robustness evaluation: natural, FGSM, PGD-20, CW∞, Square and AutoAttack, with gradient-masking checks.

For CAS models every white-box attack runs twice: against the main head alone (``ce``) and with
the adaptive objective (``ce+cas``). Square (black-box) and AutoAttack attack the deployed
classifier through ``forward(x)``. When an attack that should be weaker finds *lower* accuracy than
the adaptive PGD-20, the white-box gradients are misleading and the report says so.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import attacks as attack_lib
from .runtime import seed_everything

ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square", "autoattack")
DEFAULT_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square")
WHITE_BOX = ("fgsm", "pgd20", "cw")
LABELS = {"natural": "natural", "fgsm": "FGSM", "pgd20": "PGD-20", "cw": "CW∞", "square": "Square (black-box)",
          "autoattack": "AutoAttack", "apgd-ce": "APGD-CE"}


@dataclass
class EvaluationReport:
    """Accuracies by attack and objective, plus gradient-masking warnings."""

    eps: float
    n_examples: int
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    has_cas: bool = False

    def to_dict(self) -> dict:
        return {"eps": self.eps, "n_examples": self.n_examples, "has_cas": self.has_cas,
                "accuracy": self.accuracy, "seconds": self.seconds, "warnings": self.warnings}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A plain-text table for people: accuracy in %, one row per attack."""
        objectives = [o for o in ("ce", "ce+cas") if any(o in by for by in self.accuracy.values())]
        headers = ["attack"] + [{"ce": "main head (ce) %", "ce+cas": "adaptive (ce+cas) %"}[o] for o in objectives]
        rows = [[LABELS.get(a, a)] + [f"{by[o] * 100:.2f}" if o in by else "–" for o in objectives]
                for a, by in self.accuracy.items()]
        widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
        lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.append(f"eps = {self.eps:.4g} (L∞), {self.n_examples} examples")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _batched_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, craft) -> float:
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        x_eval = craft(xb, yb)
        with torch.no_grad(), attack_lib.eval_mode(model):
            correct += (model(x_eval).argmax(1) == yb).sum().item()
    return correct / len(x)


def _white_box(name: str, eps: float, objective: str):
    if name == "fgsm":
        return lambda m, x, y: attack_lib.fgsm(m, x, y, eps, random_start=True, objective=objective)
    if name == "pgd20":
        return lambda m, x, y: attack_lib.pgd(m, x, y, eps, step_size=eps / 10, steps=20, objective=objective)
    return lambda m, x, y: attack_lib.cw_inf(m, x, y, eps, step_size=eps / 10, steps=20, objective=objective)


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks: list[str] | None = None,
                        batch_size: int = 256, seed: int = 0, square_queries: int = 5000) -> float:
    """Robust accuracy under packaged AutoAttack (``pyautoattack``): the standard suite, or ``attacks`` alone."""
    from pyautoattack import AutoAttack

    device = next(model.parameters()).device
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    with attack_lib.eval_mode(model):
        version = "standard" if attacks is None else "custom"
        adversary = AutoAttack(model, norm="Linf", eps=eps, version=version, attacks=attacks, device=device, seed=seed)
        adversary.square.n_queries = square_queries
        adversary.verbose = False
        x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    return _batched_accuracy(model, x_adv, y, batch_size, lambda xb, yb: xb)


def masking_warnings(accuracy: dict[str, dict[str, float]], reference: str, tolerance: float) -> list[str]:
    """Warnings when another attack beats the ``reference`` PGD-20 by more than ``tolerance``: signs of gradient
    masking (an attack that should be weaker does better), or AutoAttack showing that PGD-20 is too weak."""
    if "pgd20" not in accuracy:
        return []
    strongest = accuracy["pgd20"][reference]
    found = []
    checks = [("square", "ce", "the black-box Square attack"), ("fgsm", reference, "single-step FGSM"),
              ("autoattack", "ce", "AutoAttack")]
    if reference == "ce+cas":
        checks.append(("pgd20", "ce", "the main-head-only PGD-20"))
    for attack, objective, words in checks:
        value = accuracy.get(attack, {}).get(objective)
        if value is None or value >= strongest - tolerance:
            continue
        if attack == "autoattack":
            found.append(f"AutoAttack reaches {value:.1%} accuracy, below the {reference} PGD-20's {strongest:.1%}: "
                         "PGD-20 overstates robustness here; report AutoAttack. (A stronger attack finding more "
                         "is not by itself gradient masking; Square or FGSM beating PGD-20 would be.)")
        else:
            found.append(f"{words} reaches {value:.1%} accuracy, below the {reference} PGD-20's {strongest:.1%}: "
                         "white-box gradients are misleading (likely gradient masking); trust the lower number.")
    return found


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             attacks: tuple[str, ...] | list[str] = DEFAULT_ATTACKS, objective: str = "both", batch_size: int = 256,
             seed: int = 0, square_queries: int = 5000, tolerance: float = 0.01,
             progress: bool | None = False) -> EvaluationReport:
    """Evaluate ``model`` on ``(x, y)`` under each named attack; ``objective`` is ``ce``, ``ce+cas`` or ``both``."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"Unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}.")
    if objective not in ("ce", "ce+cas", "both"):
        raise ValueError(f"Unknown objective {objective!r}; choose ce, ce+cas or both.")
    cas = attack_lib.has_cas(model)
    attack_lib.validate_attack_inputs(model, x, y, eps, "ce")
    if len(x) == 0:
        raise ValueError("x holds no examples; pass at least one image.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if objective == "ce+cas" and not cas:
        raise ValueError("objective 'ce+cas' needs a model with CAS modules; use --objective ce.")
    objectives = ["ce", "ce+cas"] if objective == "both" and cas else ["ce"] if objective != "ce+cas" else ["ce+cas"]
    report = EvaluationReport(eps=eps, n_examples=len(x), has_cas=cas)
    seed_everything(seed)
    for name in tqdm(attacks, desc="evaluate", disable=not progress):
        started = time.perf_counter()
        if name == "natural":
            report.accuracy[name] = {"ce": _batched_accuracy(model, x, y, batch_size, lambda xb, yb: xb)}
        elif name in WHITE_BOX:
            report.accuracy[name] = {
                o: _batched_accuracy(model, x, y, batch_size, lambda xb, yb, o=o: _white_box(name, eps, o)(model, xb, yb))
                for o in objectives}
        else:
            suite = ["square"] if name == "square" else None
            report.accuracy[name] = {"ce": autoattack_accuracy(model, x, y, eps, suite, batch_size, seed, square_queries)}
        report.seconds[name] = time.perf_counter() - started
    report.warnings = masking_warnings(report.accuracy, "ce+cas" if "ce+cas" in objectives else "ce", tolerance)
    return report
