"""The release: a wheel and an sdist that build, pass ``twine check``, and work when installed — not editable.

The wheel goes into a fresh virtual environment that reuses this environment's installed dependencies (a ``.pth``
file pointing at its site-packages; ``--no-deps``: never a second torch download), then ``pip check``. Inside it, from
a folder outside the repository: ``python -m cas_edu --help``, a one-epoch digits training and its evaluation,
every module the notebooks import, and ``python -m cas_edu notebooks DIR``. A missing package file or dependency
fails here. The sdist must be a working copy (MANIFEST.in: the tests with their fixtures, tools/, binder/, the
benchmarks, the files the Makefile reads; unpacked, its tests collect) without trained runs, results or caches.
Needs a git checkout (the archives are built from its git-listed files); in an unpacked sdist these tests skip.
"""
from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import jupytext
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import cas_edu

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*command, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


# What a working tree that has been used holds besides the repository's files (all git-ignored): trained runs,
# benchmark results, the course site, a virtual environment, caches. None of it may reach the sdist or the wheel.
LEFTOVERS = ["notebooks/runs/cpu/digits_pgd_at/checkpoint.pt", "benchmarks/results/train_digits.json",
             "site/index.html", ".venv/pyvenv.cfg", "runs/x/best.pt", "test-artifacts/shot.png",
             "tests/__pycache__/conftest.cpython-311.pyc", "notebooks/.ipynb_checkpoints/01-checkpoint.ipynb",
             "benchmarks/.oracle-venv/pyvenv.cfg"]


def _git_toplevel() -> Path | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:  # no git at all
        return None
    return Path(result.stdout.strip()).resolve() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Wheel and sdist built from a clean copy of the repository's files (tracked, or new and not ignored), as from
    a fresh clone: no stale build/ or *.egg-info (whose SOURCES.txt setuptools would reuse) can hide a gap. The
    copy also gets the ``LEFTOVERS`` of a used working tree, which must stay out. The build's output is kept in
    ``build.log`` (outside the folder of archives)."""
    if _git_toplevel() != ROOT:
        pytest.skip("the release is built from the repository's git-listed files: needs a git checkout, not an "
                    "unpacked sdist")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    for name in LEFTOVERS:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("left over from a previous run\n")
    result = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source, cwd=out)
    (out.parent / "build.log").write_text(result.stdout + result.stderr)
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (path,) = dist.glob("cas_edu-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A virtual environment holding only the wheel, seeing this environment's packages through a .pth file."""
    env = tmp_path_factory.mktemp("venv")
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    _run(base_python, "-m", "venv", "--without-pip", env, cwd=env)
    python = env / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=env).stdout.strip())
    (purelib / "_cas_edu_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=env)
    return env


def test_version_has_one_source(wheel, dist):
    assert wheel.name.startswith(f"cas_edu-{cas_edu.__version__}-")
    assert (dist / f"cas_edu-{cas_edu.__version__}.tar.gz").is_file()
    assert f"version: {cas_edu.__version__}" in (ROOT / "CITATION.cff").read_text()
    assert f"## {cas_edu.__version__} " in (ROOT / "CHANGELOG.md").read_text()


def test_twine_check_passes(dist):
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()), cwd=dist)
    assert result.stdout.count("PASSED") == 2


def test_wheel_carries_the_package_the_course_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"cas_edu/{p.name}" for p in (ROOT / "cas_edu").glob("*.py")}
    assert modules <= names
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
    assert len(notebooks) == 4
    for name in notebooks:
        assert f"cas_edu/notebooks/{name}" in names and f"cas_edu/notebooks/student/{name}" in names
    assert "cas_edu/notebooks/README.md" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # only the course from the package data: no sdist-only file (jupytext.toml), no trained run or cache
    course = {n for n in names if n.startswith("cas_edu/notebooks/")}
    expected = ({f"cas_edu/notebooks/{n}" for n in notebooks} | {f"cas_edu/notebooks/student/{n}" for n in notebooks}
                | {f"cas_edu/notebooks/{p.name}" for p in (ROOT / "notebooks").glob("0*.py")}
                | {"cas_edu/notebooks/README.md"})
    assert course == expected


def test_build_declares_every_package(wheel, dist):
    """Every folder of the wheel is a package listed in pyproject.toml: setuptools warns ("Package would be
    ignored") when package data lives in a folder that is not one (notebooks/student/ before
    cas_edu.notebooks.student was listed), and the build log has no such warning."""
    setuptools_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {str(PurePosixPath(n).parent).replace("/", ".") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("cas_edu/")}
    assert folders == set(setuptools_config["packages"])
    log = (dist.parent / "build.log").read_text()
    assert "is absent from the `packages` configuration" not in log and "would be ignored" not in log


def _sdist_names(dist: Path) -> set[str]:
    (sdist,) = dist.glob("cas_edu-*.tar.gz")
    return {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}


def test_sdist_carries_the_sources_tests_and_notebooks(dist):
    names = _sdist_names(dist)
    assert {"LICENSE", "pyproject.toml", "README.md", "cas_edu/course.py", "notebooks/03_cas_module.ipynb",
            "notebooks/03_cas_module.py", "notebooks/student/03_cas_module.ipynb"} <= names


def test_sdist_carries_what_its_tests_and_make_need(dist):
    """Unpacked, the sdist is a working copy: MANIFEST.in adds the test fixtures, the build tools, Binder's
    environment, the benchmarks and the files the Makefile and the tests read."""
    names = _sdist_names(dist)
    tracked = _run("git", "ls-files", "tests", "tools", "binder", "benchmarks", cwd=ROOT).stdout.split()
    assert {"tests/conftest.py", "tests/helpers.py", "tools/__init__.py", "binder/requirements.txt"} <= set(tracked)
    missing = set(tracked) - names
    assert not missing, f"not in the sdist: {sorted(missing)}"
    assert {"constraints.txt", "Makefile", "CHANGELOG.md", "CITATION.cff", "nbconvert_execute.py",
            "notebooks/jupytext.toml", "notebooks/README.md"} <= names


def test_sdist_leaves_out_runs_results_and_caches(dist):
    names = _sdist_names(dist)
    assert {n for n in names if n.startswith(("notebooks/runs", "benchmarks/results"))} == set()
    assert not set(LEFTOVERS) & names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or ".ipynb_checkpoints" in n]


def test_unpacked_sdist_collects_its_tests(dist, tmp_path):
    """The symptom MANIFEST.in fixes: in an unpacked sdist without tests/conftest.py, tests/helpers.py or tools/,
    pytest stopped at collection errors. Collection imports every test module (and cas_edu from the unpacked
    folder, which pytest's ``pythonpath = ["."]`` puts first); nothing is run."""
    (sdist,) = dist.glob("cas_edu-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=unpacked, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    assert collected == {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}


def test_installed_wheel_passes_pip_check(venv):
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "check", cwd=venv)


def test_installed_wheel_is_the_one_imported(venv, tmp_path):
    where = _run(venv / "bin" / "python", "-c", "import cas_edu; print(cas_edu.__file__)", cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(venv)


def test_installed_cli_trains_and_evaluates(venv, tmp_path):
    python = venv / "bin" / "python"
    assert "train" in _run(python, "-m", "cas_edu", "--help", cwd=tmp_path).stdout
    _run(python, "-m", "cas_edu", "train", "--dataset", "digits", "--method", "standard", "--epochs", "1",
         "--out", tmp_path / "run", cwd=tmp_path)
    result = _run(python, "-m", "cas_edu", "evaluate", tmp_path / "run", "--attacks", "natural,fgsm", "--n", "40",
                  "--json", cwd=tmp_path)
    assert "natural" in json.loads(result.stdout)["accuracy"]


def _notebook_imports() -> set[str]:
    modules = set()
    for path in sorted((ROOT / "notebooks").glob("0*.py")):
        for cell in jupytext.read(path).cells:
            if cell.cell_type != "code":
                continue
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules.add(node.module)
                    if node.module == "cas_edu":
                        modules.update(f"cas_edu.{alias.name}" for alias in node.names)
    return modules


def _package_imports() -> set[str]:
    modules = set()
    for path in (ROOT / "cas_edu").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module)
    return modules


def _closure(requirements: list[Requirement]) -> set[str]:
    """The distributions ``requirements`` install, transitively (markers evaluated without extras)."""
    seen, todo = set(), [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        name = canonicalize_name(todo.pop().name)
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement)
    return seen


def test_every_imported_package_is_a_declared_dependency(wheel):
    """Each third-party module the package or the notebooks import comes from a distribution that installing the
    wheel pulls in (its Requires-Dist, transitively): a dependency missing from pyproject.toml fails here even
    though this environment happens to have it."""
    (metadata,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA")]
    message = email.message_from_string(zipfile.ZipFile(wheel).read(metadata).decode())
    installed = _closure([Requirement(text) for text in message.get_all("Requires-Dist")])
    owners = importlib.metadata.packages_distributions()
    tops = {m.split(".")[0] for m in _package_imports() | _notebook_imports()} - set(sys.stdlib_module_names) - {"cas_edu"}
    undeclared = {top: owners.get(top) for top in tops
                  if not {canonicalize_name(d) for d in owners.get(top, [])} & installed}
    assert not undeclared, f"imported but not installed by the wheel's dependencies: {undeclared}"


def test_installed_wheel_imports_everything_the_notebooks_import(venv, tmp_path):
    modules = sorted(_notebook_imports())
    assert {"cas_edu.attacks", "cas_edu.widgets", "plotly.graph_objects", "torch"} <= set(modules)
    _run(venv / "bin" / "python", "-c", "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]",
         *modules, cwd=tmp_path)


def test_installed_wheel_copies_the_course(venv, tmp_path):
    python = venv / "bin" / "python"
    _run(python, "-m", "cas_edu", "notebooks", tmp_path / "course", cwd=tmp_path)
    copied = sorted(str(p.relative_to(tmp_path / "course")) for p in (tmp_path / "course").rglob("*") if p.is_file())
    expected = sorted([p.name for p in (ROOT / "notebooks").glob("0*.ipynb")] + ["README.md"]
                      + [f"student/{p.name}" for p in (ROOT / "notebooks" / "student").glob("0*.ipynb")])
    assert copied == expected
    again = subprocess.run([str(python), "-m", "cas_edu", "notebooks", str(tmp_path / "course")], cwd=tmp_path,
                           capture_output=True, text=True)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "--overwrite" in again.stderr
