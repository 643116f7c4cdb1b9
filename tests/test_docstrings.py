"""Every public function and class of every cas_edu module is documented in one template (cas_edu/__init__.py):

    One line: what it computes.

    (more prose when needed)

    Shape: ...     when a parameter or the result is a tensor (N×C×H×W images in [0, 1], int64 labels (N,), ...)
    Units: ...     when a parameter is a perturbation budget or step (ε and step sizes in pixel units of [0, 1])
    Raises: ...    what it raises and when ("nothing of its own" when it raises nothing itself)
    Source: ...    in the science modules: the paper section/equation, the official file, or the method's paper

Public = the module's ``__all__`` when it has one, else every name without a leading underscore defined in it.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import cas_edu

#: Modules that implement the paper or a method; their public names must cite a source.
SCIENCE = {"activations", "attacks", "cas", "evaluation", "gradient_masking", "losses", "models", "observations", "presets",
           "training"}
TENSOR = re.compile(r"\bTensor\b")
UNIT_PARAMETERS = {"eps", "step_size", "eps_values", "epsilon"}
SECTION = "^ *{}:"


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(cas_edu.__path__) if m.name != "__main__")


def public(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, o in vars(module).items() if not n.startswith("_") and getattr(o, "__module__", None) == module.__name__]
    return [(n, getattr(module, n)) for n in names
            if (inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n)))
            and getattr(module, n).__module__ == module.__name__]


def missing_sections(obj: object, science: bool) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return ["docstring"]
    wanted = ["Raises"]
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
        annotations = [str(p.annotation) for p in signature.parameters.values()] + [str(signature.return_annotation)]
        parameters = set(signature.parameters)
    except (TypeError, ValueError):
        annotations, parameters = [], set()
    if any(TENSOR.search(a) for a in annotations):
        wanted.append("Shape")
    if parameters & UNIT_PARAMETERS:
        wanted.append("Units")
    if science:
        wanted.append("Source")
    return [s for s in wanted if not re.search(SECTION.format(s), doc, re.MULTILINE)]


def test_the_template_check_can_fail():
    def bare(x: "torch.Tensor", eps: float) -> "torch.Tensor":  # noqa: F821
        """Only a summary line."""

    assert missing_sections(bare, science=True) == ["Raises", "Shape", "Units", "Source"]

    def complete(x: "torch.Tensor", eps: float) -> "torch.Tensor":  # noqa: F821
        """Summary.

        Shape: x (N, C, H, W); the result has x's shape.
        Units: eps in pixel units of [0, 1].
        Raises: ValueError for bad inputs.
        Source: Madry et al. 2018.
        """

    assert missing_sections(complete, science=True) == []


@pytest.mark.parametrize("name", modules())
def test_public_names_follow_the_docstring_template(name):
    module = importlib.import_module(f"cas_edu.{name}")
    assert (inspect.getdoc(module) or "").strip(), f"cas_edu.{name} has no module docstring"
    problems = {n: m for n, obj in public(module) if (m := missing_sections(obj, name in SCIENCE))}
    assert not problems, f"cas_edu.{name}: sections missing (see tests/test_docstrings.py): {problems}"


def test_docstrings_cite_nothing_outside_the_repository():
    for name in modules():
        source = inspect.getsource(importlib.import_module(f"cas_edu.{name}"))
        assert "GUIDE.md" not in source and "../shared" not in source, f"cas_edu.{name} cites a file outside the repo"
