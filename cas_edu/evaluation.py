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

The pieces: the attack registry (:data:`REGISTRY` of :class:`Attack`: each attack's labels, cost, kind and how it
runs; :data:`ATTACKS`, :data:`DEFAULT_ATTACKS`, :data:`REPORT_ATTACKS`, :data:`WHITE_BOX`,
:data:`STRAIGHT_THROUGH`, :data:`COSTLY`, :data:`LABELS`, :data:`NO_CAS_LABELS` derive from it); per-example
correctness :func:`accuracy` (natural, a registry attack or any callable), on which :func:`evaluate`,
:func:`robustness_curve` and ``cas_edu.training.accuracy`` are built; the report (:class:`EvaluationReport`,
:func:`attack_accuracy`); the 95 % Wilson interval of every reported accuracy (:func:`wilson_interval`,
:class:`AccuracyInterval`, :meth:`EvaluationReport.interval`); paired comparisons of two models on the same
examples (:func:`paired_difference`, :func:`paired_interval`); gradient-masking warnings (:func:`masking_warnings`).

Imports: :mod:`cas_edu.attacks`, :mod:`cas_edu.models`, :mod:`cas_edu.cas`, :mod:`cas_edu.runtime`,
:mod:`cas_edu.validation` and the leaf :mod:`cas_edu.tables`; no plotting or widget package.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from numbers import Real
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from . import attacks as attack_lib
from .cas import unwrap_parallel
from .models import eval_mode, has_cas, model_device
from .runtime import progress_bar, seeded
from .tables import text_table
from .validation import check_batch_size, check_inputs, check_seed, check_whole_number

#: Steps and restarts of the straight-through PGD (``pgd-st``).
ST_STEPS, ST_RESTARTS = 100, 5


# --------------------------------------------------------------------------- the attack registry


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str,
          random_start: bool = True) -> torch.Tensor:
    return attack_lib.fgsm(model, x, y, eps, random_start=random_start, objective=objective)


def _pgd20(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str) -> torch.Tensor:
    return attack_lib.pgd(model, x, y, eps, step_size=eps / 10, steps=20, objective=objective)


def _cw(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str) -> torch.Tensor:
    return attack_lib.cw_inf(model, x, y, eps, step_size=eps / 10, steps=20, objective=objective)


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str,
         steps: int = 10) -> torch.Tensor:
    return attack_lib.pgd(model, x, y, eps, steps=steps, objective=objective)


def _pgd_st(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str) -> torch.Tensor:
    """PGD-100 with 5 restarts through the straight-through masks (:func:`cas_edu.attacks.straight_through_pgd`,
    objective CE(main) + β · mean CE(aux)); without CAS, plain PGD-100 on CE with 5 restarts
    (:func:`cas_edu.attacks.pgd_restarts`, the same per-example selection)."""
    if has_cas(model):
        return attack_lib.straight_through_pgd(model, x, y, eps, steps=ST_STEPS, restarts=ST_RESTARTS)
    return attack_lib.pgd_restarts(model, x, y, eps, steps=ST_STEPS, restarts=ST_RESTARTS)


def _autoattack(suite: list[str] | None, straight_through: bool):
    """A whole-set craft running packaged AutoAttack (``suite`` None: the standard suite); ``straight_through``
    goes through the BPDA masks on CAS models (plain AutoAttack without CAS)."""
    def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, objective: str, *,
              batch_size: int = 256, seed: int = 0, square_queries: int = 5000) -> torch.Tensor:
        return attack_lib.autoattack(model, x, y, eps, attacks=suite, batch_size=batch_size, seed=seed,
                                     square_queries=square_queries, straight_through=straight_through and has_cas(model))
    return craft


@dataclass(frozen=True)
class Attack:
    """One attack of the registry: its name, labels, cost and kind, and how it crafts adversarial images.

    ``craft(model, x, y, eps, objective, **options)`` returns the adversarial images; a ``whole_set`` attack
    (AutoAttack and Square, through pyautoattack) takes every example at once and also ``batch_size``, ``seed``
    and ``square_queries``, the others one batch. ``white_box`` attacks run once per objective (``ce``, and
    ``ce+cas`` on CAS models); the others run once, recorded under ``cas_objective`` on CAS models and ``ce``
    without. ``costly`` attacks run on the ``subset_n`` subset of :func:`evaluate`; ``straight_through`` ones
    backpropagate through the CAS masks (BPDA). ``label`` names the attack in reports, ``short`` in table
    columns, ``no_cas_label`` on a model without CAS (None: ``label``). ``in_suite`` attacks are the ones
    :func:`evaluate` accepts (:data:`ATTACKS`); the others serve :func:`robustness_curve`.

    Shape: craft takes x (N, C, H, W) in [0, 1] and y (N,) int64 and returns (N, C, H, W) in x's dtype.
    Raises: nothing of its own (a dataclass).
    Source: each attack's paper: FGSM Goodfellow et al. 2015; PGD Madry et al. 2018; CW∞ Carlini & Wagner 2017;
    Square Andriushchenko et al. 2020; AutoAttack Croce & Hein 2020; BPDA Athalye et al. 2018; the suite and
    the adaptive ``ce+cas`` objective follow arXiv 2103.08307 §5 (Table 2).
    """

    name: str
    label: str
    short: str
    craft: Callable[..., torch.Tensor] | None
    white_box: bool = False
    straight_through: bool = False
    costly: bool = False
    whole_set: bool = False
    cas_objective: str = "ce"
    no_cas_label: str | None = None
    in_suite: bool = True

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options ``craft`` takes besides model, x, y, eps and objective."""
        if self.craft is None:
            return ()
        parameters = list(inspect.signature(self.craft).parameters)
        return tuple(parameters[5:])

    def objectives(self, has_cas: bool, white_box: Sequence[str] = ("ce", "ce+cas")) -> list[str]:
        """The objectives it runs with in :func:`evaluate`: ``white_box`` (those asked for) for white-box attacks,
        else ``cas_objective`` on a CAS model and ``ce`` without.

        Raises: nothing of its own.
        """
        if self.white_box:
            return list(white_box)
        return [self.cas_objective if has_cas else "ce"]


REGISTRY: dict[str, Attack] = {a.name: a for a in (
    Attack("natural", "natural", "natural", None),
    Attack("fgsm", "FGSM", "FGSM", _fgsm, white_box=True),
    Attack("pgd20", "PGD-20", "PGD-20", _pgd20, white_box=True),
    Attack("cw", "CW∞", "CW∞", _cw, white_box=True),
    Attack("square", "Square (black-box)", "Square", _autoattack(["square"], False), costly=True, whole_set=True),
    Attack("autoattack", "AutoAttack", "AutoAttack", _autoattack(None, False), costly=True, whole_set=True),
    Attack("pgd-st", f"PGD-{ST_STEPS}×{ST_RESTARTS} straight-through (BPDA)",
           f"PGD-{ST_STEPS}×{ST_RESTARTS} straight-through", _pgd_st, straight_through=True, costly=True,
           cas_objective="ce+cas", no_cas_label=f"PGD-{ST_STEPS}×{ST_RESTARTS} (no CAS: plain PGD)"),
    Attack("autoattack-st", "AutoAttack straight-through (BPDA)", "AutoAttack straight-through",
           _autoattack(None, True), straight_through=True, costly=True, whole_set=True,
           no_cas_label="AutoAttack (no CAS: plain, own seed)"),
    Attack("pgd", "PGD-10", "PGD", _pgd, in_suite=False),
)}

#: What :func:`evaluate` accepts, in report order.
ATTACKS = tuple(name for name, a in REGISTRY.items() if a.in_suite)
#: What :func:`evaluate` runs by default: the paper's attacks plus the black-box Square.
DEFAULT_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "square")
#: What ``python -m cas_edu evaluate RUN`` reports by default: the paper's attacks plus standard AutoAttack (which
#: includes Square); CAS models also get the straight-through attacks (:func:`report_attacks`).
REPORT_ATTACKS = ("natural", "fgsm", "pgd20", "cw", "autoattack")
WHITE_BOX = tuple(name for name, a in REGISTRY.items() if a.white_box and a.in_suite)
#: Attacks through the straight-through (BPDA) backward pass of the CAS masks.
STRAIGHT_THROUGH = tuple(name for name, a in REGISTRY.items() if a.straight_through)
#: The costly attacks, which ``subset_n`` restricts to a seeded, class-balanced subset.
COSTLY = tuple(name for name, a in REGISTRY.items() if a.costly)
#: The attacks of :func:`robustness_curve` and the ε explorer: FGSM without random start, seeded PGD-``steps``.
CURVE_ATTACKS = ("fgsm", "pgd")
LABELS = {**{name: a.label for name, a in REGISTRY.items()}, "apgd-ce": "APGD-CE",
          "worst_case": "worst case (per example)"}
#: Row labels of the straight-through attacks on a model without CAS (nothing to go straight through).
NO_CAS_LABELS = {name: a.no_cas_label for name, a in REGISTRY.items() if a.no_cas_label is not None}
#: Table-column suffix of each objective of a white-box attack.
OBJECTIVE_WORDS = {"ce": "main head", "ce+cas": "adaptive"}
CORRECT_LEGEND = ("one character per example of x: 1 = classified correctly under the attack, 0 = not, "
                  "- = not evaluated (outside the attack's subset)")


def attack_entry(name: str) -> Attack:
    """The registry's :class:`Attack` called ``name``.

    Raises: ``ValueError`` naming the known attacks when ``name`` is not one of them.
    Source: this package (no paper).
    """
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"Unknown attack {name!r}; choose one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def report_attacks(has_cas: bool) -> tuple[str, ...]:
    """The attacks ``python -m cas_edu evaluate`` runs without ``--attacks``: :data:`REPORT_ATTACKS`, plus for CAS
    models the straight-through PGD-100×5 and AutoAttack (:data:`STRAIGHT_THROUGH`).

    Raises: nothing of its own.
    Source: the paper's attacks (arXiv 2103.08307 §5) plus AutoAttack (Croce & Hein 2020) and BPDA (Athalye et
    al. 2018).
    """
    return REPORT_ATTACKS + (STRAIGHT_THROUGH if has_cas else ())


def column_label(attack: str, objective: str = "ce") -> str:
    """A table column's header for one (attack, objective): the attack's short label, and for white-box attacks
    the objective's words, e.g. ``PGD-20 main head`` (``ce``) or ``PGD-20 adaptive`` (``ce+cas``).

    Raises: ``ValueError`` for an unknown attack or objective.
    Source: this package (no paper).
    """
    entry = attack_entry(attack)
    if objective not in OBJECTIVE_WORDS:
        raise ValueError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVE_WORDS)}.")
    return f"{entry.short} {OBJECTIVE_WORDS[objective]}" if entry.white_box else entry.short


def curve_options(attack: str, steps: int = 10) -> dict:
    """The options :func:`accuracy` and :func:`craft` take for a :data:`CURVE_ATTACKS` attack in
    :func:`robustness_curve` and the ε explorer: FGSM without random start, PGD with ``steps`` steps.

    Raises: ``ValueError`` for an attack outside :data:`CURVE_ATTACKS`.
    Source: FGSM as Goodfellow et al. 2015 (no random start); PGD as Madry et al. 2018.
    """
    if attack not in CURVE_ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; choose one of {', '.join(CURVE_ATTACKS)}.")
    return {"random_start": False} if attack == "fgsm" else {"steps": steps}


def _batch_craft(attack, eps, objective: str, options: dict):
    """``(entry or None, craft)`` for :func:`accuracy`: craft(model, xb, yb) -> adversarial xb, None for natural."""
    if attack is None or (isinstance(attack, str) and attack == "natural"):
        if options:
            raise ValueError(f"natural accuracy takes no attack options, got {', '.join(options)}.")
        return None, None
    if callable(attack):
        if options:
            raise ValueError(f"options {', '.join(options)} are for registry attacks; a callable attack takes none.")
        return None, attack
    entry = attack_entry(attack)
    unknown = [k for k in options if k not in entry.options]
    if unknown:
        raise ValueError(f"attack {attack!r} takes no option(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(entry.options) or 'none'}.")
    if eps is None:
        raise ValueError(f"attack {attack!r} needs its budget eps (an L∞ radius in [0, 1]).")
    if entry.whole_set:
        return entry, None
    return entry, lambda model, xb, yb: entry.craft(model, xb, yb, eps, objective, **options)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str | Callable | None = None, *,
             eps: float | None = None, objective: str = "ce", batch_size: int = 256, seed: int | None = None,
             **options) -> torch.Tensor:
    """Per example, whether ``model`` classifies it correctly: naturally (``attack`` None), or under a registry
    attack (a name of :data:`REGISTRY`, with its ``options``) or a callable ``attack(model, x_batch, y_batch) ->
    x_adv``.

    Examples are attacked and predicted ``batch_size`` at a time on the model's device (a ``whole_set`` attack,
    AutoAttack or Square, crafts all of them at once with its own batching). The model is in eval mode throughout
    and every submodule's mode is restored afterwards; wrapped models (``nn.Sequential``, ``torch.compile``, DDP,
    ``DataParallel``) give the unwrapped model's answer. With ``seed`` the attack draws its random numbers from
    ``torch.manual_seed(seed)`` in a forked RNG (the caller's generators are untouched; AutoAttack also gets it
    as its seed); without, from the global generator. ``options`` are the attack's (e.g. ``random_start`` for
    ``fgsm``, ``steps`` for ``pgd``, ``square_queries`` for ``square``/``autoattack``).

    Shape: x (N, C, H, W) float in [0, 1] (cast to the model's dtype); y (N,) integer in [0, K); returns (N,)
    bool on the CPU.
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for bad images or labels (:mod:`cas_edu.validation`), a missing y, an unknown attack,
    option or objective, a registry attack without ``eps``, ``ce+cas`` on a model without CAS, a bad
    ``batch_size`` or ``seed``.
    Source: this package (no paper); the attacks follow their papers (:class:`Attack`).
    """
    batch_size = check_batch_size(batch_size)
    seed = check_seed(seed) if seed is not None else None
    model = unwrap_parallel(model)
    if y is None:
        raise ValueError("accuracy needs the true labels y (an integer tensor of shape (N,)).")
    entry, craft = _batch_craft(attack, eps, objective, options)
    if entry is not None:
        x, y = attack_lib.validate_attack_inputs(model, x, y, eps, objective)
    else:
        x, y = check_inputs(model, x, y)
    device = model_device(model)
    out = []
    with seeded(seed, device) if seed is not None else nullcontext(), eval_mode(model):
        if entry is not None and entry.whole_set:
            x = entry.craft(model, x, y, eps, objective, batch_size=batch_size, seed=seed if seed is not None else 0,
                            **options)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            x_eval = xb if craft is None else craft(model, xb, yb)
            with torch.no_grad():
                out.append((model(x_eval).argmax(1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, *, eps: float, objective: str = "ce",
          seed: int | None = None, **options) -> torch.Tensor:
    """The adversarial images one registry attack crafts for ``(x, y)`` in one call (no batching), on the model's
    device, in x's dtype; with ``seed`` drawn from ``torch.manual_seed(seed)`` in a forked RNG.

    ``eps = 0`` returns x on the model's device unchanged (after the input checks).

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer in [0, K); returns (N, C, H, W) in x's dtype.
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` as :func:`accuracy`, also for ``natural`` (nothing to craft).
    Source: the attack's paper (:class:`Attack`).
    """
    entry, _ = _batch_craft(attack, eps, objective, options)
    if entry is None or entry.craft is None:
        raise ValueError(f"craft needs an attack of the registry other than natural, got {attack!r}.")
    seed = check_seed(seed) if seed is not None else None
    model = unwrap_parallel(model)
    checked_x, y = attack_lib.validate_attack_inputs(model, x, y, eps, objective)
    if y is None:
        raise ValueError("craft needs the true labels y (an integer tensor of shape (N,)).")
    device = model_device(model)
    if eps == 0:
        return x.to(device)
    with seeded(seed, device) if seed is not None else nullcontext():
        if entry.whole_set:
            return entry.craft(model, x.to(device), y.to(device), eps, objective,
                               seed=seed if seed is not None else 0, **options)
        return entry.craft(model, x.to(device), y.to(device), eps, objective, **options)


def robustness_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
                     attacks: Sequence[str] = CURVE_ATTACKS, steps: int = 10, batch_size: int = 512,
                     seed: int = 0, progress: bool | None = None) -> dict:
    """Accuracy (fractions) under FGSM (no random start) and PGD-``steps`` for every ε in ``eps_values``, seeded.

    One forked RNG seeded with ``seed`` serves every (attack, ε) in order (attacks outer, ε inner), so the same
    seed gives the same curve and the caller's generators are untouched; ε = 0 is natural accuracy. Returns
    ``{"eps": [...], "natural": float, "fgsm": [...], "pgd": [...], "steps": steps, "n": N, "n_correct": {"natural":
    int, "fgsm": [...], "pgd": [...]}}`` (only the attacks asked for): accuracies as fractions and the counts of
    correctly classified examples behind them, from which ``wilson_interval(curve["n_correct"]["pgd"][i],
    curve["n"])`` gives each point's interval -- the data behind :func:`cas_edu.plots.accuracy_vs_eps_figure`
    and its error bars.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer in [0, K).
    Units: ε values in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for an attack outside :data:`CURVE_ATTACKS`, bad inputs, batch size or seed.
    Source: FGSM Goodfellow et al. 2015; PGD Madry et al. 2018 (accuracy-vs-ε curves as in arXiv 2103.08307 §5).
    """
    unknown = [a for a in attacks if a not in CURVE_ATTACKS]
    if unknown:
        raise ValueError(f"Unknown attack(s) {unknown}; choose 'fgsm' and/or 'pgd'.")
    batch_size, seed = check_batch_size(batch_size), check_seed(seed)
    n = len(x)
    natural = int(accuracy(model, x, y, batch_size=batch_size).sum())
    curve: dict = {"eps": [float(e) for e in eps_values], "steps": steps, "n": n, "natural": natural / n}
    jobs = [(a, float(e)) for a in attacks for e in eps_values]
    counts: dict[str, list[int]] = {a: [] for a in attacks}
    with seeded(seed, model_device(model)):
        for attack, eps in progress_bar(jobs, desc="accuracy vs ε", disable=progress is False):
            correct = accuracy(model, x, y, batch_size=batch_size) if eps == 0 else \
                accuracy(model, x, y, attack, eps=eps, batch_size=batch_size, **curve_options(attack, steps))
            counts[attack].append(int(correct.sum()))
    curve.update({a: [c / n for c in by] for a, by in counts.items()})
    curve["n_correct"] = {"natural": natural, **counts}
    return curve


def attack_seed(seed: int, attack: str, objective: str) -> int:
    """The seed of one (attack, objective): CRC-32 of ``"seed/attack/objective"``, the same in every process
    (unlike Python's ``hash``), so each attack's random starts do not depend on which other attacks ran.

    Raises: ``TypeError`` or ``ValueError`` when ``int(seed)`` does (a seed that is not a number).
    Source: this package (no paper).
    """
    return zlib.crc32(f"{int(seed)}/{attack}/{objective}".encode())


def examples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short SHA-256 fingerprint (16 hex digits) of the images and labels, to check that two reports saw the same
    examples; the images are hashed as float32 on the CPU.

    Shape: x (N, C, H, W) (any shape); y (N,) (any integer shape).
    Raises: nothing of its own (tensors that cannot be converted to numpy raise torch's error).
    Source: this package (no paper).
    """
    h = hashlib.sha256()
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def balanced_indices(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending, int64) of a seeded, class-balanced subset of ``n`` examples of labels ``y``.

    Every class present in ``y`` gets ``n // K`` examples; the ``n % K`` left over go to classes drawn
    with the same seed. ``n >= len(y)`` returns every index.

    Shape: y (N,) integer labels; returns (min(n, N),) int64 on the CPU.
    Raises: ``ValueError`` when ``n < 1``, ``seed`` is not a seed, or a class has fewer examples than its share
    (ask for a smaller ``n``).
    Source: this package (no paper); the costly attacks' subset (AutoAttack's 1,000-image evaluations, Croce &
    Hein 2020).
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


def _objective_run(attack: str, by_objective: Mapping, objective: str | None) -> str:
    """``objective``, or by default ``ce+cas`` when ``attack`` ran with it, else ``ce``; ``ValueError`` when the
    attack did not run with it (``by_objective`` maps the objectives it ran with to their results)."""
    objective = objective or ("ce+cas" if "ce+cas" in by_objective else "ce")
    if objective not in by_objective:
        raise ValueError(f"attack {attack!r} was not run with objective {objective!r}; "
                         f"choose one of {', '.join(by_objective)}.")
    return objective


@dataclass
class EvaluationReport:
    """Accuracies by attack and objective, which examples stayed correct, the per-example worst case, warnings.

    ``correct[attack][objective]`` is a CPU bool tensor with one entry per example of ``examples[attack]``
    (int64 indices into the evaluated ``x``, ascending; every index unless the attack ran on a subset);
    ``accuracy`` is its mean. Reports built by hand from ``accuracy`` alone (no ``correct``) fall back to
    the lowest per-attack accuracy for :attr:`worst_case`, an upper bound of the per-example worst case.

    Shape: ``correct[attack][objective]`` (n,) bool on the CPU, n = ``count(attack)``; ``examples[attack]`` (n,) int64.
    Units: ``eps`` in pixel units of [0, 1] (L∞); accuracies are fractions in [0, 1] (the table prints %).
    Raises: nothing on construction; :meth:`from_dict` raises ``KeyError`` for a dict without ``eps``,
    ``n_examples`` or ``accuracy``.
    Source: the attack suite of arXiv 2103.08307 §5 (Table 2) plus AutoAttack (Croce & Hein 2020); the
    per-example worst case follows Croce & Hein 2020 (robust accuracy counts an example only if every attack fails).
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

    def interval(self, attack: str, objective: str | None = None, confidence: float = 0.95) -> AccuracyInterval:
        """The accuracy of one (attack, objective) -- or of ``"worst_case"`` -- with its Wilson interval
        (:func:`wilson_interval`) over the examples that attack ran on.

        ``objective`` defaults to ``ce+cas`` when the attack ran with it, else ``ce``. The interval comes from the
        per-example results; a report built by hand from ``accuracy`` alone uses accuracy × n when that is a
        whole number of examples.

        Raises: ``ValueError`` for an attack or objective not in the report, or a hand-built report whose
        accuracy × n is not a whole number (no per-example results to count).
        """
        if attack == "worst_case":
            found = self.worst_case_correct()
            if found is not None:
                return wilson_interval(found[1], confidence=confidence)
            if self.worst_case is None:
                raise ValueError("this report ran no attack, so it has no worst case.")
            return _interval_from_fraction(self.worst_case, self.worst_case_n, confidence)
        if attack not in self.accuracy:
            raise ValueError(f"attack {attack!r} is not in this report; choose one of "
                             f"{', '.join(['worst_case', *self.accuracy])}.")
        by = self.accuracy[attack]
        objective = _objective_run(attack, by, objective)
        if objective in self.correct.get(attack, {}):
            return wilson_interval(self.correct[attack][objective], confidence=confidence)
        return _interval_from_fraction(by[objective], self.count(attack), confidence)

    def _interval_or_none(self, attack: str, objective: str | None = None) -> AccuracyInterval | None:
        try:
            return self.interval(attack, objective)
        except ValueError:
            return None

    @property
    def worst_case_interval(self) -> AccuracyInterval | None:
        """:attr:`worst_case` with its 95 % Wilson interval (:meth:`interval`); None when it cannot be counted."""
        return self._interval_or_none("worst_case")

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
        intervals = {a: {o: [ci.low, ci.high] for o in by if (ci := self._interval_or_none(a, o)) is not None}
                     for a, by in self.accuracy.items()}
        worst = self.worst_case_interval
        out["intervals"] = {a: by for a, by in intervals.items() if by}
        out["worst_case_interval"] = None if worst is None else [worst.low, worst.high]
        out["interval_method"] = "Wilson (1927) score interval, 95 %"
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

    def _cell(self, value: float, interval: AccuracyInterval | None) -> str:
        """One accuracy of the table in %, with its 95 % Wilson interval when it can be counted."""
        return f"{value * 100:.2f}" if interval is None else f"{value * 100:.2f} {interval.bounds(1)}"

    def table(self) -> str:
        """A plain-text table for people: accuracy in % with its 95 % Wilson interval in brackets
        (:meth:`interval`), one row per attack with its example count n, then the per-example worst case."""
        objectives = [o for o in ("ce", "ce+cas") if any(o in by for by in self.accuracy.values())]
        headers = ["attack"] + [{"ce": "main head (ce) % [95 % CI]", "ce+cas": "adaptive (ce+cas) % [95 % CI]"}[o]
                                for o in objectives]
        headers.append("n")
        labels = {**LABELS, **({} if self.has_cas else NO_CAS_LABELS)}
        rows = [[labels.get(a, a)] + [self._cell(by[o], self._interval_or_none(a, o)) if o in by else "–"
                                      for o in objectives] + [str(self.count(a))]
                for a, by in self.accuracy.items()]
        worst = self.worst_case
        if worst is not None and any(a != "natural" for a in self.accuracy):
            rows.append([LABELS["worst_case"]] + [self._cell(worst, self.worst_case_interval)]
                        + ["–"] * (len(objectives) - 1) + [str(self.worst_case_n)])
        lines = [text_table(headers, rows)]
        lines.append(f"eps = {self.eps:.4g} (L∞), {self.n_examples} examples; worst case: correct naturally and under "
                     "every attack and objective, per example; [95 % CI]: Wilson score interval over the row's n "
                     "examples")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def attack_accuracy(report: "EvaluationReport | Mapping[str, Mapping[str, float]]", attack: str,
                    objective: str = "ce+cas") -> float | None:
    """The accuracy (a fraction) of one (attack, objective) in a report, where a model without CAS -- which has no
    adaptive objective -- lets its main-head (``ce``) value stand in for ``ce+cas``; None when not run.

    ``report`` is an :class:`EvaluationReport` or its ``accuracy`` dict (attack → objective → accuracy). This is
    the rule of the comparison table (:func:`cas_edu.pipeline.results_rows`) and the comparison figure
    (:func:`cas_edu.plots.robustness_comparison_figure`): for a model without CAS the main-head attack is its
    strongest white-box attack. ``pgd-st`` records ``ce+cas`` on CAS models and ``ce`` without, so one column
    holds both.

    Raises: nothing of its own.
    Source: this package (no paper); the adaptive objective is arXiv 2103.08307 §5.
    """
    by = getattr(report, "accuracy", report).get(attack, {})
    used = _stand_in_objective(by, objective)
    return None if used is None else by[used]


def attack_interval(report: "EvaluationReport | Mapping[str, Mapping[str, float]]", attack: str,
                    objective: str = "ce+cas") -> "AccuracyInterval | None":
    """The 95 % Wilson interval of the accuracy :func:`attack_accuracy` reads (the same stand-in rule), or None
    for an ``accuracy`` dict, an (attack, objective) not run, or a value the report cannot count.

    Raises: nothing of its own.
    Source: this package (no paper).
    """
    if not isinstance(report, EvaluationReport):
        return None
    used = _stand_in_objective(report.accuracy.get(attack, {}), objective)
    if used is None:
        return None
    try:
        return report.interval(attack, used)
    except ValueError:
        return None


def _stand_in_objective(by: Mapping[str, float], objective: str) -> str | None:
    """The objective whose value :func:`attack_accuracy` reads from one attack's ``{objective: accuracy}``:
    ``objective`` itself, else ``ce`` standing in for ``ce+cas`` (a model without CAS), else None."""
    if by.get(objective) is not None:
        return objective
    if objective == "ce+cas" and by.get("ce") is not None:
        return "ce"
    return None


# --------------------------------------------------------------------------- accuracy intervals


@dataclass(frozen=True)
class AccuracyInterval:
    """An accuracy with its Wilson score confidence interval (fractions, not %), from :func:`wilson_interval`.

    ``str()`` reads ``84.0 % [76.2, 89.5] (n = 100)``: the accuracy and the interval's ends in percent, and the
    number of examples behind them (a confidence other than 95 % is named: ``(90 % CI, n = 100)``).

    Raises: nothing of its own (a frozen dataclass).
    Source: E. B. Wilson, "Probable inference, the law of succession, and statistical inference", J. American
    Statistical Association 22:209-212 (1927).
    """

    accuracy: float
    low: float
    high: float
    n: int
    correct: int
    confidence: float = 0.95
    method: str = "Wilson (1927) score interval"

    def bounds(self, digits: int = 1) -> str:
        """The interval's ends in percent, e.g. ``[76.2, 89.5]``."""
        return f"[{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"

    def format(self, digits: int = 1, show_n: bool = True) -> str:
        """The accuracy in percent with the interval, e.g. ``84.0 % [76.2, 89.5] (n = 100)``."""
        text = f"{100 * self.accuracy:.{digits}f} % {self.bounds(digits)}"
        if not show_n:
            return text
        level = "" if self.confidence == 0.95 else f"{100 * self.confidence:g} % CI, "
        return f"{text} ({level}n = {self.n})"

    def __str__(self) -> str:
        return self.format()


def _whole(value, what: str) -> int:
    """``value`` as an int when it is a whole number (Python, numpy or 0-d tensor), else ``ValueError``."""
    if getattr(value, "ndim", 0) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what} must be a whole number, got {value!r}.")
    return int(value)


def _interval_from_fraction(accuracy: float, n: int, confidence: float) -> AccuracyInterval:
    """:func:`wilson_interval` of ``round(accuracy · n)`` of ``n`` when that product is a whole number (a report
    built by hand from accuracies alone), else ``ValueError``."""
    count = accuracy * n
    if n < 1 or abs(count - round(count)) > 1e-6:
        raise ValueError(f"accuracy {accuracy!r} of {n} examples is not a whole number of examples; the report needs "
                         "per-example results for an interval.")
    return wilson_interval(round(count), n, confidence)


def wilson_interval(correct, n: int | None = None, confidence: float = 0.95) -> AccuracyInterval:
    r"""An accuracy and its Wilson score interval, from per-example outcomes or from a count of correct examples.

    ``wilson_interval(outcomes)`` takes one bool (or 0/1) value per example; ``wilson_interval(k, n)`` takes the
    number of correct examples k out of n. With :math:`\hat p = k/n` and z the standard normal quantile of
    :math:`(1 + \text{confidence})/2`, the interval is

    .. math:: \frac{\hat p + z^2/(2n) \pm z\sqrt{\hat p(1-\hat p)/n + z^2/(4n^2)}}{1 + z^2/n},

    which stays inside [0, 1] and keeps a non-zero width at 0/n and n/n (unlike the Wald interval
    :math:`\hat p \pm z\sqrt{\hat p(1-\hat p)/n}`, which collapses there and undercovers for small n). It is the
    interval Brown, Cai & DasGupta recommend for small n (Statistical Science 16:101-133, 2001), and scipy's
    ``binomtest(k, n).proportion_ci(method="wilson")``. For the difference of two accuracies on the same
    examples use :func:`paired_interval` instead (the two are not independent).

    Shape: ``correct`` (N,) bool or 0/1 (a tensor, array or list; flattened), or a whole number with ``n``.
    Raises: ``ValueError`` for no examples (N = 0 or n = 0), values other than 0/1, a count that is not a whole
    number in [0, n], outcomes passed together with ``n``, or a confidence outside (0, 1).
    Source: E. B. Wilson, J. American Statistical Association 22:209-212 (1927).
    """
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence!r}.")
    if n is None:
        outcomes = torch.as_tensor(correct)
        if outcomes.ndim == 0:
            raise ValueError(f"got the single number {correct!r} without n; pass the count with n, "
                             "wilson_interval(correct, n), or the per-example outcomes.")
        outcomes = outcomes.flatten()
        if outcomes.is_complex() or not bool(((outcomes == 0) | (outcomes == 1)).all()):
            raise ValueError("per-example outcomes must be True/False or 0/1; for a count pass "
                             "wilson_interval(correct, n).")
        n, k = outcomes.numel(), int(outcomes.sum().item())
    else:
        if getattr(correct, "ndim", 0) != 0:
            raise ValueError("pass either per-example outcomes (without n) or a count of correct examples with n.")
        n, k = _whole(n, "n"), _whole(correct, "the count of correct examples")
        if n < 0:
            raise ValueError(f"n must be at least 1 example, got {n}.")
        if not 0 <= k <= n:
            raise ValueError(f"the count of correct examples must lie in [0, n] = [0, {n}], got {k}.")
    if n == 0:
        raise ValueError("no examples: an accuracy needs at least one example.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return AccuracyInterval(accuracy=p, low=low, high=high, n=n, correct=k, confidence=float(confidence))


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of model A minus model B on the same examples, with a confidence interval (fractions, not %).

    Raises: nothing of its own (a frozen dataclass).
    Source: D. G. Bonett & R. M. Price, J. Educational and Behavioral Statistics 37:479-488 (2012).
    """

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
    non-zero width when no example is discordant.

    Shape: a_correct, b_correct (N,) bool (anything ``torch.as_tensor`` takes; flattened).
    Raises: ``ValueError`` for empty or mismatched inputs or a confidence outside (0, 1).
    Source: Bonett & Price (2012), as above.
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
    objective = _objective_run(attack, by, objective)
    return report.examples.get(attack, torch.arange(report.n_examples)), by[objective]


def paired_difference(report_a: EvaluationReport, report_b: EvaluationReport, attack: str = "worst_case",
                      objective: str | None = None, confidence: float = 0.95) -> PairedDifference:
    """Accuracy of A minus B (fractions) under ``attack`` on the examples both reports evaluated, with a
    ``confidence`` interval for paired binary outcomes (:func:`paired_interval`, Bonett & Price 2012).

    ``attack="worst_case"`` compares the per-example worst cases. ``objective`` defaults, per report, to
    its adaptive ``ce+cas`` when it has one, else ``ce`` (each model's own strongest white-box objective).

    Raises: ``ValueError`` when the reports were computed on different images or share no example, or lack
    per-example results for ``attack`` / ``objective``.
    Source: the interval of :func:`paired_interval` (Bonett & Price 2012).
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


def autoattack_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                       attacks: list[str] | None = None, batch_size: int = 256, seed: int = 0,
                       square_queries: int = 5000, straight_through: bool = False) -> torch.Tensor:
    """Per example, robustness under packaged AutoAttack (:func:`cas_edu.attacks.autoattack`): the standard suite,
    or ``attacks`` alone; ``straight_through`` runs it through the BPDA masks (CAS models).

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer in [0, K); returns (N,) bool on the CPU.
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` for bad inputs (:mod:`cas_edu.validation`), a missing y, or ``straight_through`` on a
    model without CAS modules.
    Source: Croce & Hein 2020 (AutoAttack); BPDA Athalye et al. 2018.
    """
    model = unwrap_parallel(model)
    if y is None:
        raise ValueError("AutoAttack needs the true labels y (an integer tensor of shape (N,)).")
    x, y = attack_lib.validate_attack_inputs(model, x, y, eps)  # cast once, so x_adv is in the model's dtype
    x_adv = attack_lib.autoattack(model, x, y, eps, attacks=attacks, batch_size=batch_size, seed=seed,
                                  square_queries=square_queries, straight_through=straight_through)
    return accuracy(model, x_adv, y, batch_size=batch_size)


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks: list[str] | None = None,
                        batch_size: int = 256, seed: int = 0, square_queries: int = 5000) -> float:
    """Robust accuracy (a fraction) under packaged AutoAttack (``pyautoattack``): the standard suite, or ``attacks``
    alone; the mean of :func:`autoattack_correct`.

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer in [0, K).
    Units: ε in pixel units of [0, 1] (L∞).
    Raises: ``ValueError`` as :func:`autoattack_correct`.
    Source: Croce & Hein 2020 (AutoAttack).
    """
    return autoattack_correct(model, x, y, eps, attacks, batch_size, seed, square_queries).float().mean().item()


# --------------------------------------------------------------------------- gradient-masking warnings


def _strength_groups(accuracy: dict[str, dict[str, float]], reference: str):
    """(weak, white-box reference, strong) entries as (attack, objective, words) lists."""
    def present(attack, objective):
        return objective in accuracy.get(attack, {})

    words = {a: REGISTRY[a].short for a in ("pgd20", "cw")}
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

    Raises: nothing of its own (only the attacks present in ``accuracy`` are compared).
    Source: the gradient-masking checks of Athalye et al. 2018 and Croce & Hein 2020 (a weaker attack beating a
    stronger one); the adaptive objective of arXiv 2103.08307 §5.
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
    Each attack runs through :func:`accuracy` with its registry entry (:data:`REGISTRY`).

    Shape: x (N, C, H, W) float in [0, 1]; y (N,) integer in [0, K); the report's per-example results are (n,)
    bool per attack (n = N, or ``subset_n`` for the costly attacks).
    Units: ε in pixel units of [0, 1] (L∞); ``tolerance`` an accuracy difference (a fraction).
    Raises: ``ValueError`` for unknown attacks or objectives, ``ce+cas`` on a model without CAS, bad inputs,
    batch size, seed, ``square_queries``, ``tolerance`` or ``subset_n``, and no examples.
    Source: arXiv 2103.08307 §5 (FGSM, PGD-20, CW∞ with the adaptive objective; official
    Trades/pgd_attack_cifar10_cas.py), Square (Andriushchenko et al. 2020), AutoAttack (Croce & Hein 2020),
    BPDA (Athalye et al. 2018).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"Unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}.")
    if objective not in ("ce", "ce+cas", "both"):
        raise ValueError(f"Unknown objective {objective!r}; choose ce, ce+cas or both.")
    model = unwrap_parallel(model)
    cas = has_cas(model)
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
    for name in progress_bar(list(dict.fromkeys(["natural", *attacks])), desc="evaluate", disable=not progress):
        started = time.perf_counter()
        entry = REGISTRY[name]
        index = subset if entry.costly else everything
        xs, ys = (x, y) if len(index) == len(x) else (x[index], y[index])
        options = {"square_queries": square_queries} if entry.whole_set else {}
        report.correct[name] = {
            o: accuracy(model, xs, ys, None if entry.craft is None else name, eps=eps, objective=o,
                        batch_size=batch_size, seed=attack_seed(seed, name, o), **options)
            for o in entry.objectives(cas, objectives)}
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


__all__ = ["ATTACKS", "AccuracyInterval", "Attack", "COSTLY", "CURVE_ATTACKS", "DEFAULT_ATTACKS",
           "EvaluationReport", "LABELS", "NO_CAS_LABELS", "PairedDifference", "REGISTRY", "REPORT_ATTACKS",
           "STRAIGHT_THROUGH", "WHITE_BOX", "accuracy", "attack_accuracy", "attack_entry", "attack_interval", "attack_seed",
           "autoattack_accuracy", "autoattack_correct", "balanced_indices", "column_label", "craft", "curve_options",
           "evaluate", "examples_digest", "masking_warnings", "paired_difference", "paired_interval",
           "report_attacks", "robustness_curve", "wilson_interval"]
