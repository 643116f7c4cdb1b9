"""The course that ships with the package: the four notebooks (instructor edition), their student edition and the
course README, copied into a folder of the user's choice (``python -m cas_edu notebooks DIR``).

The wheel carries them as the data package ``cas_edu.notebooks`` (pyproject.toml maps it to the repository's
``notebooks/`` folder); a source checkout without an install reads that folder directly.

Imports: nothing from this package.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

#: What the course is made of, relative to the notebooks folder: the instructor edition, the student edition
#: (solutions removed) and the README that explains both.
COURSE_PATTERNS = ("0*.ipynb", "student/0*.ipynb", "README.md")


def course_root() -> Path:
    """The folder holding the shipped notebooks: the installed ``cas_edu.notebooks`` package data, or the
    ``notebooks/`` folder of a source checkout.

    Raises: ``FileNotFoundError`` when neither exists (a broken install).
    """
    spec = importlib.util.find_spec("cas_edu.notebooks")  # a namespace package: data only, no __init__.py
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    else:
        root = Path(__file__).resolve().parents[1] / "notebooks"
    if not any(root.glob("0*.ipynb")):
        raise FileNotFoundError(f"the course notebooks are missing from {root}; reinstall cas_edu.")
    return root


def course_files() -> list[Path]:
    """The course's files, relative to :func:`course_root`, sorted.

    Raises: ``FileNotFoundError`` as :func:`course_root`.
    """
    root = course_root()
    return sorted({path.relative_to(root) for pattern in COURSE_PATTERNS for path in root.glob(pattern)})


def copy_notebooks(destination: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy the course (:data:`COURSE_PATTERNS`) into ``destination`` (created if needed); return the written paths.

    Nothing is replaced unless ``overwrite``: when any file would be, nothing is copied at all.

    Raises: ``FileExistsError`` naming the first file that exists (without ``overwrite``); ``ValueError`` when
    ``destination`` is an existing file; ``FileNotFoundError`` as :func:`course_root`.
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"{destination} is a file; give a folder to copy the notebooks into.")
    root, files = course_root(), course_files()
    targets = [destination / name for name in files]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} of the {len(targets)} course files do); "
                              "choose an empty folder, or pass --overwrite to replace them.")
    for name, target in zip(files, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, target)
    return targets


__all__ = ["COURSE_PATTERNS", "copy_notebooks", "course_files", "course_root"]
