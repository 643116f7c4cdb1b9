"""Helpers for the notebook generators: build cells, execute with nbclient (cwd notebooks/), clean metadata.

Usage (repository root): ``PYTHONPATH=. .venv/bin/python notebooks/_build/make_01.py`` writes and executes
``notebooks/01_adversarial_examples.ipynb``; add ``--no-execute`` to only write it, or ``--dry-run`` to
execute and time it without writing. Runs land in ``notebooks/runs/`` (git-ignored) and are reused.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CHECK = "# NBVAL_CHECK_OUTPUT\n"
_MACHINE_PATH = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|site-packages|\.venv)")


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, check: bool = False) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell((CHECK if check else "") + text.strip("\n"))


def solution(text: str) -> nbformat.NotebookNode:
    """A worked solution: source collapsed in JupyterLab / Notebook 7, tagged, never output-checked."""
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    cell.metadata = {"jupyter": {"source_hidden": True}, "tags": ["solution"]}
    return cell


def solution_md(text: str) -> nbformat.NotebookNode:
    """A worked answer in prose, collapsed like :func:`solution`."""
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    cell.metadata = {"jupyter": {"source_hidden": True}, "tags": ["solution"]}
    return cell


def clean(nb: nbformat.NotebookNode) -> None:
    """Keep only portable metadata and refuse error outputs or machine paths."""
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                raise RuntimeError(f"cell {i} has an error output: {out.ename}: {out.evalue}")
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            if _MACHINE_PATH.search(text):
                raise RuntimeError(f"cell {i} output shows a machine path: {text[:300]!r}")


def _cell_seconds(nb: nbformat.NotebookNode) -> list[tuple[float, int]]:
    from datetime import datetime

    found = []
    for cell in nb.cells:
        timing = cell.metadata.get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            found.append(((end - start).total_seconds(), cell.execution_count))
    return found


def write_and_run(cells: list, name: str, execute: bool = True) -> float:
    """Write ``notebooks/<name>``, execute it in place (cwd notebooks/), clean it; returns execution seconds."""
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    seconds = 0.0
    if execute and "--no-execute" not in sys.argv:
        env_profile = os.environ.get("CAS_EDU_PROFILE")
        if env_profile not in (None, "cpu"):
            raise RuntimeError("build committed notebooks with the default cpu profile (unset CAS_EDU_PROFILE)")
        root = str(NOTEBOOKS.parent)  # the kernel runs in notebooks/: make cas_edu importable without installing it
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        client = NotebookClient(nb, timeout=900, kernel_name="python3", store_widget_state=False,
                                record_timing=True, resources={"metadata": {"path": str(NOTEBOOKS)}})
        started = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - started
        print(f"{name}: slowest cells (s): " + ", ".join(f"[{i}] {t:.1f}" for t, i in sorted(_cell_seconds(nb), reverse=True)[:6]))
    clean(nb)
    nbformat.validate(nb)
    if "--dry-run" in sys.argv:  # execute and time only (e.g. with OMP_NUM_THREADS=1); keep the committed file
        print(f"{name}: executed in {seconds:.1f} s (not written)")
        return seconds
    nbformat.write(nb, NOTEBOOKS / name)
    print(f"{name}: executed in {seconds:.1f} s" if seconds else f"{name}: written (not executed)")
    return seconds
