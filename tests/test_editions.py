"""The student edition (notebooks/student/) is what `make student` derives from the instructor edition (notebooks/),
shows no worked solution or its results, and keeps every output outside the exercises.

The checks of the committed files define the exercises independently of tools/student_edition.py (everything from the
first "Exercises" heading on, where all four notebooks keep them), so a change to the builder's rules shows up here
as well as in the sync test. Fix a failure with `make student` (out of sync) or in tools/student_edition.py.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from tools import student_edition

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STUDENT_DIR = NOTEBOOKS_DIR / "student"
INSTRUCTOR = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
NAMES = [path.name for path in INSTRUCTOR]
SUCCESS_MARK = "✓ Right"  # what every cas_edu.exercises checker prints for correct code
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
CLEAN_NB_METADATA = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _pair(name: str) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    return _read(NOTEBOOKS_DIR / name), _read(STUDENT_DIR / name)


def _output_text(output) -> str:
    """The readable text of one output (stream text, text/plain, text/markdown, text/html, errors); images skipped."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join([output.ename, output.evalue, *output.traceback])
    return "\n".join(value if isinstance(value, str) else "".join(value) for mime, value in output.get("data", {}).items()
                     if mime.startswith("text/"))


def _first_exercises_index(notebook) -> int:
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown" and re.search(r"^#+ .*\bExercises\b", cell.source, re.MULTILINE):
            return index
    raise AssertionError("no '## … Exercises' heading: this test assumes every notebook ends with its exercises")


def out_of_date(notebooks_dir: Path) -> list[str]:
    """Instructor notebooks whose student edition is missing or differs from what the builder makes; extra files."""
    instructor = {path.name: path for path in notebooks_dir.glob("[0-9][0-9]_*.ipynb")}
    student = {path.name: path for path in (notebooks_dir / "student").glob("[0-9][0-9]_*.ipynb")}
    problems = [f"{name}: no student edition" for name in sorted(instructor.keys() - student.keys())]
    problems += [f"student/{name}: no instructor notebook" for name in sorted(student.keys() - instructor.keys())]
    problems += [f"student/{name}: differs from what `make student` builds" for name in sorted(instructor.keys() & student.keys())
                 if student[name].read_text(encoding="utf-8") != student_edition.student_text(instructor[name])]
    return problems


def test_committed_student_edition_is_what_make_student_builds():
    assert INSTRUCTOR, "no instructor notebooks found"
    assert out_of_date(NOTEBOOKS_DIR) == [], "run `make student` and commit notebooks/student/"


def test_out_of_date_sees_an_edited_instructor_notebook_and_a_stale_file(tmp_path):
    shutil.copy(INSTRUCTOR[0], tmp_path / INSTRUCTOR[0].name)
    student_edition.build(tmp_path)
    assert out_of_date(tmp_path) == []
    notebook = _read(tmp_path / INSTRUCTOR[0].name)
    notebook.cells[0].source += "\n\nA new sentence."
    nbformat.write(notebook, tmp_path / INSTRUCTOR[0].name)
    shutil.copy(tmp_path / "student" / INSTRUCTOR[0].name, tmp_path / "student" / "99_gone.ipynb")
    assert out_of_date(tmp_path) == ["student/99_gone.ipynb: no instructor notebook",
                                     f"student/{INSTRUCTOR[0].name}: differs from what `make student` builds"]
    student_edition.build(tmp_path)
    assert out_of_date(tmp_path) == []


@pytest.mark.parametrize("name", NAMES)
def test_no_solution_cell_source_or_result_leaks(name):
    instructor, student = _pair(name)
    solutions = [cell for cell in instructor.cells if student_edition.is_solution(cell)]
    assert solutions, f"{name} has no cell tagged 'solution'"
    assert not [cell for cell in student.cells if "solution" in cell.metadata.get("tags", [])]
    shown_lines = {line.strip() for cell in instructor.cells if not student_edition.is_solution(cell)
                   for line in cell.source.splitlines()}
    solution_lines = {line.strip() for cell in solutions for line in cell.source.splitlines()
                      if len(line.strip()) >= 12} - shown_lines
    solution_outputs = {line.strip() for cell in solutions for output in cell.get("outputs", [])
                        for line in _output_text(output).splitlines() if len(line.strip()) >= 12}
    student_sources = "\n".join(cell.source for cell in student.cells)
    student_outputs = "\n".join(_output_text(output) for cell in student.cells for output in cell.get("outputs", []))
    assert [line for line in solution_lines if line in student_sources] == []
    assert [line for line in solution_outputs if line in student_outputs] == []
    assert SUCCESS_MARK not in student_outputs


@pytest.mark.parametrize("name", NAMES)
def test_every_output_before_the_exercises_is_kept_and_the_exercises_are_unrun(name):
    instructor, student = _pair(name)
    start = _first_exercises_index(instructor)
    by_id = {cell.id: cell for cell in student.cells}
    for cell in instructor.cells[:start]:
        assert cell.id in by_id, f"cell {cell.id} ({cell.source[:40]!r}) is missing from the student edition"
        kept = by_id[cell.id]
        assert (kept.source, kept.cell_type) == (cell.source, cell.cell_type)
        if cell.cell_type == "code":
            assert kept.outputs == cell.outputs, f"cell {cell.id} ({cell.source[:40]!r}) lost or changed outputs"
            assert kept.execution_count == cell.execution_count
    exercises = [by_id[cell.id] for cell in instructor.cells[start:] if not student_edition.is_solution(cell)]
    assert [cell.id for cell in student.cells if cell.id != student_edition.NOTE_CELL_ID] == \
        [cell.id for cell in instructor.cells if not student_edition.is_solution(cell)]
    assert [(cell.id, cell.outputs) for cell in exercises if cell.cell_type == "code" and cell.outputs] == []


@pytest.mark.parametrize("name", NAMES)
def test_student_edition_says_what_it_is_and_keeps_metadata_clean(name):
    instructor, student = _pair(name)
    assert student.cells[0].source == instructor.cells[0].source
    note = student.cells[1]
    assert note.id == student_edition.NOTE_CELL_ID and "Student edition" in note.source and name in note.source
    assert student.metadata == CLEAN_NB_METADATA
    assert all(set(cell.metadata) <= {"jupyter", "tags"} for cell in student.cells)


def _defined_and_used(source: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(source)
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
    return defined, used


@pytest.mark.parametrize("name", NAMES)
def test_no_student_cell_needs_a_name_only_a_solution_defines(name):
    """A student runs the edition top to bottom without the solutions: nothing may rely on what they defined."""
    instructor, _ = _pair(name)
    defined_by = {"solution": set(), "other": set()}
    for cell in instructor.cells:
        if cell.cell_type == "code":
            kind = "solution" if student_edition.is_solution(cell) else "other"
            defined_by[kind] |= _defined_and_used(cell.source)[0]
    only_in_solutions = defined_by["solution"] - defined_by["other"]
    needed = {(cell.id, name_used) for cell in instructor.cells
              if cell.cell_type == "code" and not student_edition.is_solution(cell)
              for name_used in _defined_and_used(cell.source)[1] & only_in_solutions}
    assert needed == set()


def _cell(kind: str, source: str, solution: bool = False):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source, metadata={"tags": ["solution"]} if solution else {})
    if kind == "code":
        cell.outputs = [nbformat.v4.new_output("stream", text=f"output of {source}\n")]
        cell.execution_count = 1
    return cell


def test_builder_rules_on_a_small_notebook():
    cells = [
        _cell("markdown", "# Title"),
        _cell("markdown", "## 1 · Inline exercise"),
        _cell("code", "stub_1"),
        _cell("code", "solution_1", solution=True),
        _cell("code", "check_1"),                      # ran after the solution: cleared
        _cell("markdown", "```python\n# Exercises in a code fence are not a heading\n```\n### 1.1 · Figures"),
        _cell("code", "figure"),                       # a heading ended the solution's reach: kept
        _cell("markdown", "## 2 · Exercises\n\n### Exercise 1"),
        _cell("code", "stub_2"),                       # every code cell of the Exercises section: cleared
        _cell("markdown", "answer", solution=True),
        _cell("markdown", "### Exercise 2"),
        _cell("code", "stub_3"),
        _cell("markdown", "## 3 · After the exercises"),
        _cell("code", "summary"),                      # a heading of the same level ends the section: kept
    ]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, "extra": 1})
    student = student_edition.student_edition(notebook, "00_small.ipynb")
    sources = [cell.source for cell in student.cells]
    assert "solution_1" not in sources and "answer" not in sources and len(sources) == len(cells) - 1
    assert sources[1] == student_edition.edition_note("00_small.ipynb")
    with_outputs = {cell.source for cell in student.cells if cell.cell_type == "code" and cell.outputs}
    assert with_outputs == {"stub_1", "figure", "summary"}
    assert student.metadata == {"kernelspec": KERNELSPEC}
    assert len(notebook.cells) == len(cells) and notebook.cells[4].outputs, "the instructor notebook was modified"


def test_cli_refuses_a_folder_without_notebooks(tmp_path, capsys):
    assert student_edition.main(["--notebooks", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("student_edition: no [0-9][0-9]_*.ipynb notebooks") and "\n" not in error
