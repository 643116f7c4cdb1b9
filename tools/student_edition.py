"""The student edition of the notebooks: the instructor's notebooks without worked solutions or their results.

``make student`` (``python -m tools.student_edition``) writes ``notebooks/student/0N_*.ipynb`` from
``notebooks/0N_*.ipynb``, without executing anything:

- every cell tagged ``solution`` (code or markdown) is removed;
- every code cell of an *Exercises* section (from a heading "Exercises" or "6 · Exercises" to the next heading of the
  same or a higher level) loses its outputs and execution count, and so does every code cell that follows a solution
  cell up to the next heading. In the instructor edition these cells ran in a kernel where the worked solutions
  had run (or would have, had the exercise cells been in another order), so their outputs may show a checker's
  "✓ Right" or a solution's printed answers for code the student has not written; a cleared exercise reads as
  "not run yet", which is what a student opening the notebook has;
- every other output is kept unchanged (figures, tables, printed results), so the edition reads well in a static
  viewer; a short note after the title says which edition this is and where its source is.

Metadata is trimmed with the same masks as ``nbconvert_execute.py`` (kernelspec and language name; cells keep
``jupyter`` and ``tags``).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
STUDENT_DIRNAME = "student"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
SOLUTION_TAG = "solution"
NOTE_CELL_ID = "student-edition-note"
NB_METADATA_MASK = {("kernelspec",), ("language_info", "name")}
CELL_METADATA_MASK = {("jupyter",), ("tags",)}

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_EXERCISES = re.compile(r"^(?:[\d.]+\s*[·.:)—–-]?\s*)?exercises\b", re.IGNORECASE)  # "Exercises", "6 · Exercises"


def is_solution(cell: nbformat.NotebookNode) -> bool:
    """Whether a cell holds a worked solution (it carries the ``solution`` tag)."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def markdown_headings(source: str) -> list[tuple[int, str]]:
    """The ATX headings of a markdown source as ``(level, text)``, in order; lines inside code fences are skipped."""
    headings, fence = [], None
    for line in source.splitlines():
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
        elif opening:
            fence = opening.group(1)
        elif match := _HEADING.match(line):
            headings.append((len(match.group(1)), match.group(2)))
    return headings


def cells_to_clear(cells: list[nbformat.NotebookNode]) -> set[int]:
    """Indices of the code cells whose outputs the student edition drops: an Exercises section, and the cells that
    follow a solution cell up to the next heading (solution cells themselves are removed, not listed)."""
    cleared: set[int] = set()
    exercises_level: int | None = None
    after_solution = False
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown":
            for level, text in markdown_headings(cell.source):
                after_solution = False
                if exercises_level is not None and level <= exercises_level:
                    exercises_level = None
                if _EXERCISES.match(text):
                    exercises_level = level
        if is_solution(cell):
            after_solution = True
        elif cell.cell_type == "code" and (exercises_level is not None or after_solution):
            cleared.add(index)
    return cleared


def edition_note(instructor_name: str) -> str:
    """The markdown of the note placed after the title of a student notebook."""
    return (f"> **Student edition.** This copy leaves out the worked solutions (the collapsed solution cells the "
            f"exercises mention are in the instructor edition) and shows its exercise cells unrun: write your code, "
            f"run the cell, and the checker tells you whether it is right. It is generated from the instructor "
            f"edition, `notebooks/{instructor_name}` in the repository, by `make student`; edit that notebook, not "
            f"this one.")


def student_edition(instructor: nbformat.NotebookNode, instructor_name: str) -> nbformat.NotebookNode:
    """The student edition of an instructor notebook: solution cells removed, exercise outputs cleared, a note added.

    The argument is not modified. ``instructor_name`` is the instructor notebook's file name, quoted in the note.
    Raises: ValueError if the notebook is not nbformat 4 (convert it with ``jupyter nbconvert --to notebook``).
    """
    if instructor.get("nbformat") != 4:
        raise ValueError(f"{instructor_name} is nbformat {instructor.get('nbformat')}; the student edition needs "
                         "nbformat 4: convert it with `jupyter nbconvert --to notebook` first.")
    notebook = nbformat.from_dict(instructor)
    clear = cells_to_clear(notebook.cells)
    kept = []
    for index, cell in enumerate(notebook.cells):
        if is_solution(cell):
            continue
        if index in clear:
            cell.outputs, cell.execution_count = [], None
        kept.append(cell)
    title_end = 1 if kept and kept[0].cell_type == "markdown" else 0
    kept.insert(title_end, nbformat.v4.new_markdown_cell(edition_note(instructor_name), id=NOTE_CELL_ID))
    notebook.cells = kept
    for cell in notebook.cells:  # the preprocessor below trims code cells only
        if cell.cell_type != "code":
            cell.metadata = {key: value for key, value in cell.metadata.items() if (key,) in CELL_METADATA_MASK}
    notebook, _ = ClearMetadataPreprocessor(preserve_nb_metadata_mask=NB_METADATA_MASK,
                                            preserve_cell_metadata_mask=CELL_METADATA_MASK).preprocess(notebook, {})
    nbformat.validate(notebook)
    return notebook


def student_text(instructor_path: Path) -> str:
    """The exact file content of the student edition of the notebook at ``instructor_path``."""
    instructor = nbformat.read(instructor_path, as_version=4)
    return nbformat.writes(student_edition(instructor, instructor_path.name)) + "\n"


def build(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Write ``<notebooks_dir>/student/0N_*.ipynb`` for every ``0N_*.ipynb`` there; return the paths written.

    Student notebooks whose instructor notebook no longer exists are deleted.
    Raises: ValueError if ``notebooks_dir`` holds no ``0N_*.ipynb`` notebook.
    """
    sources = sorted(notebooks_dir.glob(NOTEBOOK_GLOB))
    if not sources:
        raise ValueError(f"no {NOTEBOOK_GLOB} notebooks in {notebooks_dir}: pass the folder of the instructor "
                         "notebooks (the repository's notebooks/).")
    out_dir = notebooks_dir / STUDENT_DIRNAME
    out_dir.mkdir(exist_ok=True)
    written = []
    for source in sources:
        target = out_dir / source.name
        target.write_text(student_text(source), encoding="utf-8")
        written.append(target)
    for stale in set(out_dir.glob(NOTEBOOK_GLOB)) - set(written):
        stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tools.student_edition [--notebooks DIR]``; exit code 2 with one line on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS_DIR,
                        help="folder of the instructor notebooks (default: the repository's notebooks/)")
    args = parser.parse_args(argv)
    try:
        written = build(args.notebooks)
    except ValueError as error:
        print(f"student_edition: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
