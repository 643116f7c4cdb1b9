"""Tests for cas_edu.tables: the one markdown table and the one plain-text table."""
from __future__ import annotations

import pytest

from cas_edu.tables import markdown_table, text_table


def test_markdown_table_pads_every_column_and_aligns_numbers_right():
    table = markdown_table(["model", "acc %"], [["AT", 51.5], ["AT+CAS", "7"]])
    assert table.splitlines() == ["| model  | acc % |",
                                  "| ------ | ----: |",
                                  "| AT     |  51.5 |",
                                  "| AT+CAS |     7 |"]


def test_text_table_rule_gap_and_minimum_widths():
    assert text_table(["attack", "%"], [["FGSM", "12.50"]]).splitlines() == ["attack      %",
                                                                              "------  -----",
                                                                              "FGSM    12.50"]
    assert text_table(["q", "STD"], [["entropy", "0.5"]], gap=0, rule=False, min_widths=[0, 10]).splitlines() == [
        "q             STD", "entropy       0.5"]


def test_tables_refuse_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        markdown_table(["a", "b"], [["only one"]])
    with pytest.raises(ValueError, match="gap"):
        text_table(["a"], [], gap=-1)
