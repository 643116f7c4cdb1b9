"""Robustness evaluation: natural, FGSM, PGD-20, CW∞, Square, AutoAttack and the straight-through (BPDA) attacks,
with a per-example worst case, paired comparisons and gradient-masking checks.

For CAS models every white-box attack runs twice: against the main head alone (``ce``) and with the
adaptive objective (``ce+cas``, the official attack). Square (black-box) and AutoAttack attack the
deployed classifier through ``forward(x)``. The straight-through attacks (``pgd-st``, ``autoattack-st``)
run inside :func:`cas_edu.cas.straight_through`, whose backward pass sees the mask choice
``W[argmax aux]`` (BPDA, Athalye et al., ICML 2018).

Every attack keeps, per example, whether the model still classified it correctly. The headline robust
accuracy is the **per-example worst case**: an example counts only if it is classified correctly
naturally and every attack (and objective) failed on it -- never above the lowest per-attack accuracy.
Each (attack, objective) runs from its own seed, a stable function of ``(seed, attack, objective)``,
so adding or removing an attack never changes another attack's result.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from numbers import Real
from statistics import NormalDist
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import attacks as attack_lib
from .cas import unwrap_parallel
from .validation import check_batch_size, check_seed, check_whole_number, model_device

ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st", "autoattack-st")
DEFAULT_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square")
WHITE_BOX = ("fgsm", "pgd20", "cw")
#: Attacks through the straight-through (BPDA) backward pass of the CAS masks.
STRAIGHT_THROUGH = ("pgd-st", "autoattack-st")
#: The costly attacks, which ``subset_n`` restricts to a seeded, class-balanced subset.
COSTLY = ("square", "autoattack", "pgd-st", "autoattack-st")
#: Steps and restarts of the straight-through PGD (``pgd-st``).
ST_STEPS, ST_RESTARTS = 100, 5
LABELS = {"natural": "natural", "fgsm": "FGSM", "pgd20": "PGD-20", "cw": "CW∞", "square": "Square (black-box)",
          "autoattack": "AutoAttack", "apgd-ce": "APGD-CE",
          "pgd-st": f"PGD-{ST_STEPS}×{ST_RESTARTS} straight-through (BPDA)",
          "autoattack-st": "AutoAttack straight-through (BPDA)", "worst_case": "worst case (per example)"}
#: Row labels of the straight-through attacks on a model without CAS (nothing to go straight through).
NO_CAS_LABELS = {"pgd-st": f"PGD-{ST_STEPS}×{ST_RESTARTS} (no CAS: plain PGD)",
                 "autoattack-st": "AutoAttack (no CAS: plain, own seed)"}
CORRECT_LEGEND = ("one character per example of x: 1 = classified correctly under the attack, 0 = not, "
                  "- = not evaluated (outside the attack's subset)")


def attack_seed(seed: int, attack: str, objective: str) -> int:
    """The seed of one (attack, objective): CRC-32 of ``"seed/attack/objective"``, the same in every process
    (unlike Python's ``hash``), so each attack's random starts do not depend on which other attacks ran."""
    return zlib.crc32(f"{int(seed)}/{attack}/{objective}".encode())


def examples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short SHA-256 fingerprint of the images and labels, to check that two reports saw the same examples."""
    h = hashlib.sha256()
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def balanced_indices(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending, int64) of a seeded, class-balanced subset of ``n`` examples of labels ``y``.

    Every class present in ``y`` gets ``n // K`` examples; the ``n % K`` left over go to classes drawn
    with the same seed. ``n >= len(y)`` returns every index. Raises ``ValueError`` when ``n < 1`` or a
    class has fewer examples than its share (ask for a smaller ``n``).
    """
    n, seed = check_whole_number(n, "n", 1), check_seed(seed)
    y = y.detach().cpu()
    if n >= len(y):
        return torch.arange(len(y))
    generator = torch.Generator().manual_seed(int(seed))
    classes = torch.unique(y)
    quota = torch.full((len(classes),), n // len(classes), dtype=torch.long)
    quota[torch.randperm(len(classes), generator=generator)[:n % len(classes)]] += 1
    chosen = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = (y == c).nonzero().flatten()
        if len(members) < q:
            raise ValueError(f"class {c} has only {len(members)} examples but a balanced subset of {n} needs {q}; "
                             "ask for a smaller n.")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:q]])
    return torch.cat(chosen).sort().values


def _plain(value):
    """``value`` with every numpy scalar, 0-d array or 0-d tensor inside it (dicts, lists, tuples) turned into the
    Python number it holds, so that a report always serialises to JSON."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if not isinstance(value, (str, bytes)) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


@dataclass
class EvaluationReport:
    """Accuracies by attack and objective, which examples stayed correct, the per-example worst case, warnings.

    ``correct[attack][objective]`` is a CPU bool tensor with one entry per example of ``examples[attack]``
    (int64 indices into the evaluated ``x``, ascending; every index unless the attack ran on a subset);
    ``accuracy`` is its mean. Reports built by hand from ``accuracy`` alone (no ``correct``) fall back to
    the lowest per-attack accuracy for :attr:`worst_case`, an upper bound of the per-example worst case.
    """

    eps: float
    n_examples: int
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    has_cas: bool = False
    correct: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    digest: str | None = None
    seed: int | None = None
    checkpoint: str | None = None  # the checkpoint file evaluated, when known

    def count(self, attack: str) -> int:
        """How many examples ``attack`` ran on."""
        if attack in self.examples:
            return len(self.examples[attack])
        return self.n_examples

    @property
    def counts(self) -> dict[str, int]:
        """Examples per attack."""
        return {a: self.count(a) for a in self.accuracy}

    def _full(self, attack: str, objective: str) -> torch.Tensor:
        """Per example of x: 1 correct, 0 not, -1 not evaluated (int8)."""
        out = torch.full((self.n_examples,), -1, dtype=torch.int8)
        index = self.examples.get(attack, torch.arange(self.n_examples))
        out[index] = self.correct[attack][objective].to(torch.int8)
        return out

    def worst_case_correct(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(indices, correct)``: the examples every attack ran on and whether each survived all of them
        (natural accuracy included); None without per-example results or without any attack."""
        attacks = [a for a in self.accuracy if a != "natural"]
        if not attacks or not all(a in self.correct for a in self.accuracy):
            return None
        evaluated = torch.ones(self.n_examples, dtype=torch.bool)
        survived = torch.ones(self.n_examples, dtype=torch.bool)
        for attack, by in self.correct.items():
            for objective in by:
                full = self._full(attack, objective)
                evaluated &= full >= 0
                survived &= full == 1
        index = evaluated.nonzero().flatten()
        return index, survived[index]

    @property
    def worst_case(self) -> float | None:
        """Per-example worst-case robust accuracy: correct naturally and under every attack and objective."""
        found = self.worst_case_correct()
        if found is not None:
            index, survived = found
            return survived.double().mean().item() if len(index) else None
        values = [v for a, by in self.accuracy.items() if a != "natural" for v in by.values()]
        return min(values) if values else None

    @property
    def worst_case_n(self) -> int:
        """Examples behind :attr:`worst_case` (those every attack ran on)."""
        found = self.worst_case_correct()
        return len(found[0]) if found is not None else min([self.count(a) for a in self.accuracy] or [0])

    def common_accuracy(self) -> dict[str, dict[str, float]]:
        """Accuracies restricted to the examples every attack ran on (equal to ``accuracy`` without subsets)."""
        found = self.worst_case_correct()
        if found is None or len(found[0]) == self.n_examples or len(found[0]) == 0:
            return self.accuracy
        index = found[0]
        return {a: {o: (self._full(a, o)[index] == 1).double().mean().item() for o in by}
                for a, by in self.correct.items()}

    def to_dict(self) -> dict:
        out = {"eps": self.eps, "n_examples": self.n_examples, "has_cas": self.has_cas, "seed": self.seed,
               "digest": self.digest, "accuracy": self.accuracy, "n": self.counts, "worst_case": self.worst_case,
               "worst_case_n": self.worst_case_n, "seconds": self.seconds, "warnings": self.warnings}
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
        if self.correct:
            out["correct_legend"] = CORRECT_LEGEND
            out["correct"] = {a: {o: "".join("-" if v < 0 else str(v) for v in self._full(a, o).tolist())
                                  for o in by} for a, by in self.correct.items()}
        return _plain(out)  # plain Python numbers: a report built by hand with numpy values still serialises

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluationReport":
        """Rebuild a report from :meth:`to_dict` (e.g. a saved ``eval.json``), per-example results included."""
        report = cls(eps=d["eps"], n_examples=d["n_examples"], accuracy=d["accuracy"], seconds=d.get("seconds", {}),
                     warnings=d.get("warnings", []), has_cas=d.get("has_cas", False), digest=d.get("digest"),
                     seed=d.get("seed"), checkpoint=d.get("checkpoint"))
        for attack, by in d.get("correct", {}).items():
            for objective, text in by.items():
                chars = torch.tensor([{"1": 1, "0": 0, "-": -1}[c] for c in text], dtype=torch.int8)
                report.examples[attack] = (chars >= 0).nonzero().flatten()
                report.correct.setdefault(attack, {})[objective] = chars[chars >= 0] == 1
        return report

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A plain-text table for people: accuracy in %, one row per attack with its example count n, then the
        per-example worst case."""
        objectives = [o for o in ("ce", "ce+cas") if any(o in by for by in self.accuracy.values())]
        headers = ["attack"] + [{"ce": "main head (ce) %", "ce+cas": "adaptive (ce+cas) %"}[o] for o in objectives]
        headers.append("n")
        labels = {**LABELS, **({} if self.has_cas else NO_CAS_LABELS)}
        rows = [[labels.get(a, a)] + [f"{by[o] * 100:.2f}" if o in by else "–" for o in objectives] + [str(self.count(a))]
                for a, by in self.accuracy.items()]
        worst = self.worst_case
        if worst is not None and any(a != "natural" for a in self.accuracy):
            rows.append([LABELS["worst_case"]] + [f"{worst * 100:.2f}"] + ["–"] * (len(objectives) - 1)
                        + [str(self.worst_case_n)])
        widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
        lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.append(f"eps = {self.eps:.4g} (L∞), {self.n_examples} examples; worst case: correct naturally and under "
                     "every attack and objective, per example")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of model A minus model B on the same examples, with a confidence interval (fractions, not %)."""

    difference: float
    low: float
    high: float
    n: int
    a_only: int  # examples A got right and B wrong
    b_only: int  # examples B got right and A wrong
    confidence: float = 0.95
    method: str = "Bonett & Price (2012) adjusted Wald interval for paired proportions"

    def __str__(self) -> str:
        return (f"{100 * self.difference:+.1f} points ({self.confidence:.0%} CI {100 * self.low:+.1f} to "
                f"{100 * self.high:+.1f}; n = {self.n}, {self.a_only} vs {self.b_only} discordant)")


def paired_interval(a_correct: torch.Tensor, b_correct: torch.Tensor, confidence: float = 0.95) -> PairedDifference:
    r"""Difference of two accuracies measured on the same examples, with the Bonett-Price adjusted Wald interval.

    ``a_correct`` and ``b_correct`` are bool tensors (N,) of per-example outcomes. With :math:`n_{12}` the
    examples only A gets right and :math:`n_{21}` those only B gets right, the difference is
    :math:`(n_{12} - n_{21})/N`; the interval is :math:`\tilde d \pm z\sqrt{(\tilde p_{12} + \tilde p_{21} -
    \tilde d^2)/(N + 2)}` with :math:`\tilde p_{12} = (n_{12} + 1)/(N + 2)`, :math:`\tilde p_{21} = (n_{21} + 1)/(N + 2)`,
    :math:`\tilde d = \tilde p_{12} - \tilde p_{21}`, clipped to [−1, 1]: D. G. Bonett & R. M. Price, "Adjusted Wald
    confidence interval for a difference of binomial proportions based on paired data", J. Educational and
    Behavioral Statistics 37:479-488 (2012), one of the intervals Fagerland, Lydersen & Laake recommend
    (Statistics in Medicine 33:2850-2875, 2014). Unlike Newcombe's hybrid score interval it keeps a
    non-zero width when no example is discordant. Raises ``ValueError`` for empty or mismatched inputs or a
    confidence outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence}.")
    a_correct, b_correct = torch.as_tensor(a_correct).bool().flatten(), torch.as_tensor(b_correct).bool().flatten()
    if a_correct.shape != b_correct.shape or len(a_correct) == 0:
        raise ValueError(f"need two non-empty outcome vectors of the same length, got {len(a_correct)} and {len(b_correct)}.")
    n = len(a_correct)
    a_only = int((a_correct & ~b_correct).sum())
    b_only = int((~a_correct & b_correct).sum())
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p12, p21 = (a_only + 1) / (n + 2), (b_only + 1) / (n + 2)
    adjusted = p12 - p21
    half = z * math.sqrt(max(0.0, p12 + p21 - adjusted ** 2) / (n + 2))
    return PairedDifference(difference=(a_only - b_only) / n, low=max(-1.0, adjusted - half),
                            high=min(1.0, adjusted + half), n=n, a_only=a_only, b_only=b_only, confidence=confidence)


def _outcomes(report: EvaluationReport, attack: str, objective: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, correct) of one report for ``attack`` (or ``worst_case``)."""
    if attack == "worst_case":
        found = report.worst_case_correct()
        if found is None:
            raise ValueError("this report has no per-example results; evaluate it with cas_edu.evaluation.evaluate.")
        return found
    if attack not in report.correct:
        raise ValueError(f"attack {attack!r} has no per-example results in this report; choose one of "
                         f"{', '.join(['worst_case', *report.correct])}.")
    by = report.correct[attack]
    objective = objective or ("ce+cas" if "ce+cas" in by else "ce")
    if objective not in by:
        raise ValueError(f"attack {attack!r} was not run with objective {objective!r}; choose one of {', '.join(by)}.")
    return report.examples.get(attack, torch.arange(report.n_examples)), by[objective]


def paired_difference(report_a: EvaluationReport, report_b: EvaluationReport, attack: str = "worst_case",
                      objective: str | None = None, confidence: float = 0.95) -> PairedDifference:
    """Accuracy of A minus B (fractions) under ``attack`` on the examples both reports evaluated, with a
    ``confidence`` interval for paired binary outcomes (:func:`paired_interval`, Bonett & Price 2012).

    ``attack="worst_case"`` compares the per-example worst cases. ``objective`` defaults, per report, to
    its adaptive ``ce+cas`` when it has one, else ``ce`` (each model's own strongest white-box objective).
    Raises ``ValueError`` when the reports were computed on different images or share no example.
    """
    if report_a.n_examples != report_b.n_examples or (report_a.digest and report_b.digest
                                                      and report_a.digest != report_b.digest):
        raise ValueError("the two reports were computed on different examples; evaluate both models on the same x, y "
                         "(and the same subset) to compare them.")
    index_a, correct_a = _outcomes(report_a, attack, objective)
    index_b, correct_b = _outcomes(report_b, attack, objective)
    full_a = torch.full((report_a.n_examples,), -1, dtype=torch.int8)
    full_b = full_a.clone()
    full_a[index_a], full_b[index_b] = correct_a.to(torch.int8), correct_b.to(torch.int8)
    both = (full_a >= 0) & (full_b >= 0)
    if not both.any():
        raise ValueError("the two reports share no evaluated example; use the same subset seed and size.")
    return paired_interval(full_a[both] == 1, full_b[both] == 1, confidence)


# --------------------------------------------------------------------------- attacks


def _white_box(name: str, eps: float, objective: str):
    if name == "fgsm":
        return lambda m, x, y: attack_lib.fgsm(m, x, y, eps, random_start=True, objective=objective)
    if name == "pgd20":
        return lambda m, x, y: attack_lib.pgd(m, x, y, eps, step_size=eps / 10, steps=20, objective=objective)
    return lambda m, x, y: attack_lib.cw_inf(m, x, y, eps, step_size=eps / 10, steps=20, objective=objective)


def _straight_through_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, cas: bool) -> torch.Tensor:
    """PGD-100 with 5 restarts through the straight-through masks (:func:`cas_edu.attacks.straight_through_pgd`,
    objective CE(main) + β · mean CE(aux)); without CAS, plain PGD-100 on CE with 5 restarts
    (:func:`cas_edu.attacks.pgd_restarts`, the same per-example selection)."""
    if cas:
        return attack_lib.straight_through_pgd(model, x, y, eps, steps=ST_STEPS, restarts=ST_RESTARTS)
    return attack_lib.pgd_restarts(model, x, y, eps, steps=ST_STEPS, restarts=ST_RESTARTS)


def _predict_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, craft) -> torch.Tensor:
    """Per example (CPU bool), whether ``model`` classifies ``craft(x_batch, y_batch)`` correctly."""
    device = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        x_eval = craft(xb, yb)
        with torch.no_grad(), attack_lib.eval_mode(model):
            out.append((model(x_eval).argmax(1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def autoattack_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                       attacks: list[str] | None = None, batch_size: int = 256, seed: int = 0,
                       square_queries: int = 5000, straight_through: bool = False) -> torch.Tensor:
    """Per example (CPU bool), robustness under packaged AutoAttack (:func:`cas_edu.attacks.autoattack`): the
    standard suite, or ``attacks`` alone; ``straight_through`` runs it through the BPDA masks (CAS models).
    Images and labels by the input rule of :mod:`cas_edu.validation`; raises ``ValueError`` for bad inputs."""
    model = unwrap_parallel(model)
    if y is None:
        raise ValueError("AutoAttack needs the true labels y (an integer tensor of shape (N,)).")
    x, y = attack_lib.validate_attack_inputs(model, x, y, eps)  # cast once, so x_adv is in the model's dtype
    x_adv = attack_lib.autoattack(model, x, y, eps, attacks=attacks, batch_size=batch_size, seed=seed,
                                  square_queries=square_queries, straight_through=straight_through)
    return _predict_correct(model, x_adv, y, batch_size, lambda xb, yb: xb)


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks: list[str] | None = None,
                        batch_size: int = 256, seed: int = 0, square_queries: int = 5000) -> float:
    """Robust accuracy under packaged AutoAttack (``pyautoattack``): the standard suite, or ``attacks`` alone."""
    return autoattack_correct(model, x, y, eps, attacks, batch_size, seed, square_queries).float().mean().item()


# --------------------------------------------------------------------------- gradient-masking warnings


def _strength_groups(accuracy: dict[str, dict[str, float]], reference: str):
    """(weak, white-box reference, strong) entries as (attack, objective, words) lists."""
    def present(attack, objective):
        return objective in accuracy.get(attack, {})

    words = {"pgd20": "PGD-20", "cw": "CW∞"}
    reference_group = [(a, reference, f"{reference} {words[a]}") for a in ("pgd20", "cw") if present(a, reference)]
    weak = [("square", "ce", "the black-box Square attack")] if present("square", "ce") else []
    weak += [("fgsm", o, "single-step FGSM" + ("" if o == reference else f" ({o})")) for o in ("ce", "ce+cas")
             if present("fgsm", o)]
    if reference == "ce+cas":
        weak += [(a, "ce", f"the main-head-only {words[a]}") for a in ("pgd20", "cw") if present(a, "ce")]
    strong = [(a, o, LABELS[a]) for a in ("autoattack", "pgd-st", "autoattack-st") for o in ("ce", "ce+cas")
              if present(a, o)]
    return weak, reference_group, strong


def masking_warnings(accuracy: dict[str, dict[str, float]], reference: str, tolerance: float) -> list[str]:
    """Warnings when an attack that should be weaker beats a stronger one by more than ``tolerance``.

    Each weaker attack is compared with the strongest (lowest-accuracy) of the attacks it should not beat:
    Square, FGSM and (``reference = "ce+cas"``) the main-head-only PGD-20/CW∞ with the adaptive white-box
    attacks PGD-20/CW∞ under ``reference`` and the straight-through PGD -- beating them is a sign of gradient
    masking; AutoAttack and the straight-through attacks with the white-box PGD-20/CW∞ -- beating them shows
    that PGD-20 is too weak; a straight-through attack beating plain AutoAttack shows that the argmax mask
    hides gradients from it. ``accuracy`` maps attack → objective → accuracy (fractions).
    """
    weak, reference_group, strong = _strength_groups(accuracy, reference)
    found = []

    def strongest(group):
        group = [(accuracy[a][o], w) for a, o, w in group]
        return min(group) if group else None

    gradient_group = reference_group + [e for e in strong if e[0] == "pgd-st"]
    best = strongest(gradient_group)
    for attack, objective, words in weak:
        value = accuracy[attack][objective]
        if best is not None and value < best[0] - tolerance:
            found.append(f"{words} reaches {value:.1%} accuracy, below the {best[1]}'s {best[0]:.1%}: "
                         "white-box gradients are misleading (likely gradient masking); trust the lower number.")
    best = strongest(reference_group)
    for attack, objective, words in strong:
        value = accuracy[attack][objective]
        if best is not None and value < best[0] - tolerance:
            if attack == "autoattack":
                found.append(f"AutoAttack reaches {value:.1%} accuracy, below the {best[1]}'s {best[0]:.1%}: "
                             "PGD-20 and CW∞ are too weak here (each overstates robustness); report AutoAttack. "
                             "(A stronger attack finding more is not by itself gradient masking; Square or FGSM "
                             "beating PGD-20 would be.)")
            else:
                found.append(f"{words} reaches {value:.1%} accuracy, below the {best[1]}'s {best[0]:.1%}: "
                             "PGD-20 and CW∞ are too weak here (each overstates robustness); "
                             "report the straight-through number.")
    plain = accuracy.get("autoattack", {}).get("ce")
    for attack, objective, words in strong:
        value = accuracy[attack][objective]
        if attack in STRAIGHT_THROUGH and plain is not None and value < plain - tolerance:
            found.append(f"{words} reaches {value:.1%} accuracy, below plain AutoAttack's {plain:.1%}: the argmax "
                         "that picks the CAS mask hides gradients from standard attacks (gradient masking by the "
                         "mask); report the straight-through number.")
    return found


# --------------------------------------------------------------------------- evaluate


def _rng_devices(model: nn.Module) -> list:
    device = model_device(model)
    return [device] if device.type == "cuda" else []


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
             attacks: Sequence[str] = DEFAULT_ATTACKS, objective: str = "both", batch_size: int = 256,
             seed: int = 0, square_queries: int = 5000, tolerance: float = 0.01,
             progress: bool | None = False, subset_n: int | None = None) -> EvaluationReport:
    """Evaluate ``model`` on ``(x, y)`` (images N×C×H×W in [0, 1], labels (N,)) under each named attack at L∞
    budget ``eps``; ``objective`` is ``ce``, ``ce+cas`` or ``both`` (white-box attacks on CAS models).

    ``natural`` is always evaluated (the worst case needs it). ``subset_n`` runs the costly attacks
    (:data:`COSTLY`: Square, AutoAttack and the straight-through attacks) on a seeded, class-balanced subset
    of that many examples (:func:`balanced_indices`), the others on all of ``x``; each row of the report
    says how many examples it used, and the per-example worst case uses the examples every attack ran on.
    Every (attack, objective) is seeded with :func:`attack_seed` inside a forked RNG, so the global random
    state is untouched. ``pgd-st`` on a model without CAS is plain PGD-100 with 5 restarts; ``autoattack-st``
    there is plain AutoAttack. Images and labels follow the input rule of :mod:`cas_edu.validation` (x is cast
    to the model's dtype, y to int64); ``model`` may be wrapped (``nn.Sequential``, ``torch.compile``; DDP and
    ``DataParallel`` are looked through) and gives the unwrapped model's numbers. Evaluating inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` is fine (the attacks turn gradients on for themselves).
    Raises ``ValueError`` for unknown attacks or objectives and bad inputs.
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"Unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}.")
    if objective not in ("ce", "ce+cas", "both"):
        raise ValueError(f"Unknown objective {objective!r}; choose ce, ce+cas or both.")
    model = unwrap_parallel(model)
    cas = attack_lib.has_cas(model)
    if y is None:
        raise ValueError("evaluate needs the true labels y (an integer tensor of shape (N,)).")
    x, y = attack_lib.validate_attack_inputs(model, x, y, eps, "ce")
    eps = float(eps)  # a plain number in the report (numpy and other Real scalars pass the check above)
    if len(x) == 0:
        raise ValueError("x holds no examples; pass at least one image.")
    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    square_queries = check_whole_number(square_queries, "square_queries", 1)
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 <= tolerance <= 1:
        raise ValueError(f"tolerance must be a number in [0, 1] (an accuracy difference), got {tolerance!r}.")
    tolerance = float(tolerance)
    if objective == "ce+cas" and not cas:
        raise ValueError("objective 'ce+cas' needs a model with CAS modules; use --objective ce.")
    if subset_n is not None:
        subset_n = check_whole_number(subset_n, "subset_n", 1, what=" (or None for every example)")
    objectives = ["ce", "ce+cas"] if objective == "both" and cas else ["ce"] if objective != "ce+cas" else ["ce+cas"]
    x, y = x.detach().cpu(), y.detach().cpu()
    report = EvaluationReport(eps=eps, n_examples=len(x), has_cas=cas, digest=examples_digest(x, y), seed=seed)
    everything = torch.arange(len(x))
    subset = balanced_indices(y, subset_n, seed) if subset_n is not None else everything
    for name in tqdm(list(dict.fromkeys(["natural", *attacks])), desc="evaluate", disable=not progress):
        started = time.perf_counter()
        index = subset if name in COSTLY else everything
        xs, ys = (x, y) if len(index) == len(x) else (x[index], y[index])
        runs = objectives if name in WHITE_BOX else ["ce+cas"] if name == "pgd-st" and cas else ["ce"]
        report.correct[name] = {}
        for o in runs:
            with torch.random.fork_rng(devices=_rng_devices(model)):
                torch.manual_seed(attack_seed(seed, name, o))
                if name == "natural":
                    correct = _predict_correct(model, xs, ys, batch_size, lambda xb, yb: xb)
                elif name in WHITE_BOX:
                    craft = _white_box(name, eps, o)
                    correct = _predict_correct(model, xs, ys, batch_size, lambda xb, yb: craft(model, xb, yb))
                elif name == "pgd-st":
                    correct = _predict_correct(model, xs, ys, batch_size,
                                               lambda xb, yb: _straight_through_pgd(model, xb, yb, eps, cas))
                else:
                    suite = ["square"] if name == "square" else None
                    correct = autoattack_correct(model, xs, ys, eps, suite, batch_size, attack_seed(seed, name, o),
                                                 square_queries, straight_through=name == "autoattack-st" and cas)
            report.correct[name][o] = correct
        if len(index) != len(x):
            report.examples[name] = index
        report.accuracy[name] = {o: c.double().mean().item() for o, c in report.correct[name].items()}
        report.seconds[name] = time.perf_counter() - started
    reference = "ce+cas" if "ce+cas" in objectives else "ce"
    common = report.common_accuracy()
    report.warnings = masking_warnings(common, reference, tolerance)
    if common is not report.accuracy:
        n = report.worst_case_n
        report.warnings = [f"{w} (compared on the {n} examples every attack ran on)" for w in report.warnings]
    return report


__all__ = ["ATTACKS", "COSTLY", "DEFAULT_ATTACKS", "EvaluationReport", "LABELS", "PairedDifference",
           "STRAIGHT_THROUGH", "WHITE_BOX", "attack_seed", "autoattack_accuracy", "autoattack_correct",
           "balanced_indices", "evaluate", "examples_digest", "masking_warnings", "paired_difference",
           "paired_interval"]
