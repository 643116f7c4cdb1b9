"""Binder's environment (binder/) installs exactly the versions CI tests, with the CPU-only PyTorch build pinned.

mybinder.org cannot be reached from here: these tests check the files, not a Binder build.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {line} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


BINDER = _pins(ROOT / "binder" / "requirements.txt")
CONSTRAINTS = _pins(ROOT / "constraints.txt")


def test_torch_and_torchvision_are_the_cpu_builds_of_the_tested_versions():
    assert BINDER["torch"] == CONSTRAINTS["torch"] + "+cpu"
    assert BINDER["torchvision"] == CONSTRAINTS["torchvision"] + "+cpu"
    assert f"--extra-index-url {CPU_INDEX}" in (ROOT / "binder" / "requirements.txt").read_text().splitlines()


def test_every_other_binder_pin_is_the_constraint_ci_tests():
    for name, version in BINDER.items():
        if name not in ("torch", "torchvision"):
            assert CONSTRAINTS.get(name) == version, f"{name}: binder {version}, constraints {CONSTRAINTS.get(name)}"


def test_every_runtime_and_lab_dependency_is_pinned_for_binder_and_ci():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["lab"]
    for text in needed:
        name = canonicalize_name(Requirement(text).name)
        assert name in BINDER, f"{name} is not pinned in binder/requirements.txt"
        assert name in CONSTRAINTS, f"{name} is not pinned in constraints.txt"
        assert Requirement(text).specifier.contains(CONSTRAINTS[name]), f"{name} {CONSTRAINTS[name]} outside {text}"


def test_binder_installs_the_package_without_resolving_dependencies_again():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps" in post_build
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
