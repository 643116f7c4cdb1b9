"""The committed notebooks are clean and match their jupytext pairs (notebooks/0N_*.ipynb <-> notebooks/0N_*.py).

Each check is a function of a notebook path that returns a list of problems, so the tests at the bottom can point
it at a broken copy in tmp_path and see it fail. Fix a failure with `make sync` (the pair differs, extra metadata) or
`make notebook NB=0N` (re-execute: errors, machine paths, execution order); see notebooks/README.md.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
CLEAN_NB_METADATA = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
CELL_METADATA_KEYS = {"jupyter", "tags"}  # collapsed source ({"source_hidden": true}) and tags ("solution")
MACHINE_PATH = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|site-packages|\.venv)")
# Cell metadata that jupytext keeps out of the text file or uses for its own layout: not compared between the pair.
JUPYTEXT_LAYOUT_KEYS = {"cell_marker", "lines_to_next_cell", "lines_to_end_of_cell_marker", "skipline", "noskipline",
                        "autoscroll", "collapsed", "scrolled", "trusted", "execution", "ExecuteTime"}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _strings(value, skip_keys=("bdata",)):
    """Every string inside an output (plotly's base64 arrays, `bdata`, are skipped: they could match by chance)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in skip_keys:
                yield from _strings(item, skip_keys)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, skip_keys)


def error_outputs(path: Path) -> list[str]:
    """Code cells whose outputs contain an error."""
    return [f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
            for i, cell in enumerate(_read(path).cells) if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"]


def machine_paths(path: Path) -> list[str]:
    """Outputs that show a path of the machine that ran the notebook (home folders, the venv, site-packages)."""
    found = []
    for i, cell in enumerate(_read(path).cells):
        for out in cell.get("outputs", []):
            out = {key: value for key, value in out.items() if key != "data"} | {
                "data": {mime: value for mime, value in out.get("data", {}).items() if not mime.startswith("image/")}}
            for text in _strings(out):
                if match := MACHINE_PATH.search(text):
                    found.append(f"cell {i}: {match.group()!r} in {text[max(0, match.start() - 60):match.end() + 60]!r}")
    return found


def metadata_problems(path: Path) -> list[str]:
    """Anything beyond the portable metadata: kernelspec python3, language name, cell tags and collapsed source."""
    nb = _read(path)
    problems = []
    if nb.metadata != CLEAN_NB_METADATA:
        problems.append(f"notebook metadata is {dict(nb.metadata)}, expected {CLEAN_NB_METADATA}")
    for i, cell in enumerate(nb.cells):
        if "execution" in cell.metadata:
            problems.append(f"cell {i}: execution timing metadata")
        if extra := set(cell.metadata) - CELL_METADATA_KEYS - {"execution"}:
            problems.append(f"cell {i}: unexpected metadata {sorted(extra)}")
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as error:
        problems.append(f"not a valid notebook: {error.message}")
    return problems


def execution_order_problems(path: Path) -> list[str]:
    """Code cells not numbered 1, 2, 3, ... (a notebook not run top to bottom in one fresh kernel)."""
    counts = [cell.execution_count for cell in _read(path).cells if cell.cell_type == "code"]
    expected = list(range(1, len(counts) + 1))
    return [] if counts == expected else [f"execution counts {counts}, expected {expected} (re-execute it)"]


def _comparable(metadata) -> dict:
    return {key: value for key, value in metadata.items() if key not in JUPYTEXT_LAYOUT_KEYS}


def pair_differences(path: Path) -> list[str]:
    """Where the notebook's cells (type, source, metadata) differ from those of its paired .py (jupytext percent)."""
    script = path.with_suffix(".py")
    if not script.exists():
        return [f"{script.name} is missing (make sync creates it)"]
    nb, text = _read(path), jupytext.read(script)
    problems = []
    if text.metadata.get("kernelspec") != nb.metadata.get("kernelspec"):
        problems.append(f"kernelspec: {text.metadata.get('kernelspec')} in the .py, {nb.metadata.get('kernelspec')}")
    if len(nb.cells) != len(text.cells):
        problems.append(f"{len(nb.cells)} cells in {path.name}, {len(text.cells)} in {script.name}")
    for i, (a, b) in enumerate(zip(nb.cells, text.cells)):
        if a.cell_type != b.cell_type:
            problems.append(f"cell {i}: {a.cell_type} in the .ipynb, {b.cell_type} in the .py")
        if a.source != b.source:
            problems.append(f"cell {i}: source differs: {a.source[:80]!r} vs {b.source[:80]!r}")
        if _comparable(a.metadata) != _comparable(b.metadata):
            problems.append(f"cell {i}: metadata {dict(a.metadata)} in the .ipynb, {dict(b.metadata)} in the .py")
    return problems


def script_syntax_errors(path: Path) -> list[str]:
    """The paired .py must be plain Python (jupytext comments out magics), so editors and linters can read it."""
    script = path.with_suffix(".py")
    try:
        ast.parse(script.read_text(encoding="utf-8"), filename=script.name)
    except SyntaxError as error:
        return [f"{script.name}:{error.lineno}: {error.msg}"]
    return []


CHECKS = [error_outputs, machine_paths, metadata_problems, execution_order_problems, pair_differences,
          script_syntax_errors]


def test_the_four_notebooks_are_paired_by_jupytext_toml():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    scripts = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
    assert [p.with_suffix(".ipynb") for p in scripts] == NOTEBOOKS
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(NOTEBOOKS_DIR))
    assert config is not None, "notebooks/jupytext.toml is missing"
    for path in [*NOTEBOOKS, *scripts]:
        assert config.default_formats(str(path)) == "ipynb,py:percent", f"{path.name} is not paired"


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name[:2])
def test_committed_notebook(notebook, check):
    problems = check(notebook)
    assert not problems, f"{notebook.name}: " + "\n".join(problems)


# The checks must fail on a broken notebook: each case breaks a copy of notebook 01 (and its .py) in tmp_path.

def _edit_py(old: str, new: str):
    def edit(ipynb: Path) -> None:
        script = ipynb.with_suffix(".py")
        text = script.read_text(encoding="utf-8")
        assert old in text
        script.write_text(text.replace(old, new, 1), encoding="utf-8")
    return edit


def _edit_nb(change):
    def edit(ipynb: Path) -> None:
        nb = _read(ipynb)
        change(nb)
        nbformat.write(nb, ipynb)
    return edit


def _first_code(nb):
    return next(cell for cell in nb.cells if cell.cell_type == "code")


def _add_output(out):
    return _edit_nb(lambda nb: _first_code(nb).outputs.append(out))


BREAKAGES = {
    "py source edited": (pair_differences, _edit_py("# # 01 · Adversarial", "# # 01 · Adversarial (edited)")),
    "py tag edited": (pair_differences, _edit_py('tags=["solution"]', 'tags=["answer"]')),
    "py cell type changed": (pair_differences, _edit_py("# %% [markdown]\n# ## Configuration", "# %%\n# ## Configuration")),
    "py cell removed": (pair_differences, _edit_py("# %% [markdown]\n# ## Configuration", "# ## Configuration")),
    "ipynb collapsed flag dropped": (pair_differences, _edit_nb(
        lambda nb: next(c for c in nb.cells if "jupyter" in c.metadata).metadata.pop("jupyter"))),
    "py syntax error": (script_syntax_errors, _edit_py("SEED = 0", "SEED = = 0")),
    "py missing": (pair_differences, lambda ipynb: ipynb.with_suffix(".py").unlink()),
    "error output": (error_outputs, _add_output(nbformat.v4.new_output(
        "error", ename="ValueError", evalue="boom", traceback=["ValueError: boom"]))),
    "machine path in stdout": (machine_paths, _add_output(nbformat.v4.new_output(
        "stream", name="stdout", text="saved to /home/ada/cas/runs/model.pt\n"))),
    "venv path in a warning": (machine_paths, _add_output(nbformat.v4.new_output(
        "stream", name="stderr", text="/opt/x/.venv/lib/python3.11/site-packages/torch/nn.py:1: UserWarning\n"))),
    "machine path in html": (machine_paths, _add_output(nbformat.v4.new_output(
        "display_data", data={"text/html": "<pre>/Users/ada/data</pre>", "text/plain": "<HTML>"}))),
    "execution timing": (metadata_problems, _edit_nb(lambda nb: _first_code(nb).metadata.update(
        execution={"iopub.execute_input": "2026-01-01T00:00:00Z"}))),
    "full language_info": (metadata_problems, _edit_nb(lambda nb: nb.metadata.language_info.update(
        version="3.11.2", codemirror_mode={"name": "ipython", "version": 3}))),
    "widget state": (metadata_problems, _edit_nb(lambda nb: nb.metadata.update(
        widgets={"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}}))),
    "other kernel": (metadata_problems, _edit_nb(lambda nb: nb.metadata.kernelspec.update(name="conda-env-cas"))),
    "jupytext formats in ipynb": (metadata_problems, _edit_nb(lambda nb: nb.metadata.update(
        jupytext={"formats": "ipynb,py:percent"}))),
    "stray cell metadata": (metadata_problems, _edit_nb(lambda nb: _first_code(nb).metadata.update(scrolled=True))),
    "cells run out of order": (execution_order_problems, _edit_nb(
        lambda nb: _first_code(nb).update(execution_count=42))),
}


@pytest.mark.parametrize("case", BREAKAGES)
def test_checks_fail_on_a_broken_copy(tmp_path, case):
    check, breakage = BREAKAGES[case]
    original = NOTEBOOKS[0]
    notebook = tmp_path / original.name
    shutil.copy(original, notebook)
    shutil.copy(original.with_suffix(".py"), notebook.with_suffix(".py"))
    assert check(notebook) == [], "the unbroken copy passes"
    breakage(notebook)
    assert check(notebook), f"{check.__name__} missed: {case}"
