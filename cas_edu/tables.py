"""Tables for people: GitHub-flavoured markdown (:func:`markdown_table`) and aligned plain text (:func:`text_table`).

Both take a header row and body rows of cells (anything ``str`` can write) and align the first column left, the
others right. The report of :func:`cas_edu.evaluation.evaluate` (``EvaluationReport.table``), notebook 04's
comparison (:func:`cas_edu.pipeline.results_table`), the activation summary of :mod:`cas_edu.plots` and the
benchmark scripts all print through these two functions.

Imports: nothing from this package (a leaf module).
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["markdown_table", "text_table"]


def _cells(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """Header and rows as strings, each row as long as the header (``ValueError`` otherwise)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    for i, row in enumerate(cells[1:]):
        if len(row) != len(cells[0]):
            raise ValueError(f"row {i} has {len(row)} cells but there are {len(cells[0])} headers.")
    return cells


def _align(row: Sequence[str], widths: Sequence[int]) -> list[str]:
    """The first cell padded on the right, the others on the left, to ``widths``."""
    return [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table: the first column left-aligned, the others right-aligned (``---:``).

    Every cell is padded to its column's width, so the table also reads well as plain text.

    Raises: ``ValueError`` when a row has another number of cells than ``headers``.
    """
    cells = _cells(headers, rows)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i else "-" * w for i, w in enumerate(widths)) + " |"
    return "\n".join(["| " + " | ".join(_align(cells[0], widths)) + " |", rule]
                     + ["| " + " | ".join(_align(r, widths)) + " |" for r in cells[1:]])


def text_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *, gap: int = 2, rule: bool = True,
               min_widths: Sequence[int] = ()) -> str:
    """An aligned plain-text table: columns ``gap`` spaces apart, the first left-aligned, the others right-aligned,
    with a line of dashes under the header when ``rule``.

    Column ``i`` is at least ``min_widths[i]`` characters wide (columns beyond ``min_widths`` fit their cells).

    Raises: ``ValueError`` when a row has another number of cells than ``headers`` or ``gap`` is negative.
    """
    if gap < 0:
        raise ValueError(f"gap must be at least 0 spaces, got {gap}.")
    cells = _cells(headers, rows)
    minimum = list(min_widths) + [0] * (len(cells[0]) - len(min_widths))
    widths = [max([minimum[i]] + [len(r[i]) for r in cells]) for i in range(len(cells[0]))]
    lines = [(" " * gap).join(_align(cells[0], widths))]
    if rule:
        lines.append((" " * gap).join("-" * w for w in widths))
    lines += [(" " * gap).join(_align(r, widths)) for r in cells[1:]]
    return "\n".join(lines)
