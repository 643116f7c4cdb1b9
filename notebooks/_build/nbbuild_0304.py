"""Tiny helpers to write, execute and clean notebooks 03 and 04 (used by make_03.py and make_04.py)."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, hidden: bool = False, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if hidden:
        cell.metadata["jupyter"] = {"source_hidden": True}
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution_md(text: str) -> nbformat.NotebookNode:
    cell = md(text)
    cell.metadata["jupyter"] = {"source_hidden": True}
    cell.metadata["tags"] = ["solution"]
    return cell


def solution(text: str) -> nbformat.NotebookNode:
    return code(text, hidden=True, tags=("solution",))


def _clean(nb: nbformat.NotebookNode) -> None:
    # No stored widget state: plotly's FigureWidget state embeds plotly.js (megabytes); widgets render on re-run.
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def build(cells: list, path: str | Path, execute: bool = True, timeout: int = 3600) -> float:
    """Write the notebook, execute it in its folder with nbclient, clean the metadata; returns seconds."""
    import time

    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    started = time.perf_counter()
    if execute:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                       record_timing=False).execute()
    seconds = time.perf_counter() - started
    _clean(nb)
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: error output {out.get('ename')}")
            text = str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
            if re.search(r"/(work|tmp|home|root)/", text):
                problems.append(f"cell {i}: machine path in output: {text[:200]!r}")
    nbformat.validate(nb)
    nbformat.write(nb, path)
    if problems:
        raise RuntimeError("\n".join(problems))
    return seconds
