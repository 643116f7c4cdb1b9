"""tools/launch_links.py: the README's and the notebooks' launch links and set-up cells follow [tool.cas_edu].

The first test fails whenever README.md, a notebook's .py or its .ipynb disagrees with pyproject.toml (fix: `make
links`). The others run the tool on copies in tmp_path: a changed repository or branch reaches every file, a second
run changes nothing, bad settings are refused.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest

from tools import launch_links

ROOT = launch_links.ROOT


def test_readme_and_notebooks_follow_pyproject():
    problems = launch_links.check()
    assert not problems, "run `make links`:\n" + "\n".join(problems)


@pytest.mark.parametrize("script", launch_links.scripts(), ids=lambda p: p.name[:2])
def test_badges_follow_the_title_and_the_setup_cell_precedes_the_config_cell(script):
    cells = jupytext.read(script).cells
    tags = [c.metadata.get("tags", []) for c in cells]
    assert cells[0].source.startswith("# ") and cells[1].cell_type == "markdown" and tags[1] == ["launch"]
    setup = next(i for i, t in enumerate(tags) if "setup" in t)
    assert cells[setup].cell_type == "code"
    assert all(c.cell_type == "markdown" for c in cells[:setup]), "the set-up cell comes before every other code cell"
    assert "PROFILE = presets.get_profile(" in cells[setup + 1].source, "the config cell follows the set-up cell"
    assert sum("setup" in t for t in tags) == sum("launch" in t for t in tags) == 1


@pytest.mark.parametrize("script", launch_links.scripts(), ids=lambda p: p.name[:2])
def test_setup_cell_is_plain_python(script):
    source = next(c.source for c in jupytext.read(script).cells if "setup" in c.metadata.get("tags", []))
    ast.parse(source)
    assert not any(line.lstrip().startswith(("!", "%")) for line in source.splitlines())


def _copy(tmp_path: Path, notebooks: str = "0") -> Path:
    """The files make links reads and writes, copied into tmp_path (only the notebooks whose name starts so)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "notebooks").mkdir()
    for path in (ROOT / "notebooks").glob(f"{notebooks}*_*.*"):
        if path.suffix in (".py", ".ipynb"):
            shutil.copy(path, tmp_path / "notebooks")
    shutil.copy(ROOT / "notebooks" / "jupytext.toml", tmp_path / "notebooks")
    return tmp_path


def _set(root: Path, old: str, new: str) -> None:
    path = root / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_run_changes_nothing(tmp_path):
    root = _copy(tmp_path)
    before = _snapshot(root)
    assert launch_links.write(root) == []
    assert _snapshot(root) == before


def test_a_new_branch_reaches_every_file_and_the_check_fails_until_then(tmp_path):
    root = _copy(tmp_path, notebooks="04")
    _set(root, 'branch = "main"', 'branch = "fall-2027"')
    stale = launch_links.check(root)
    assert {line.split(":")[0] for line in stale} == {
        "README.md", "notebooks/04_gpu_adversarial_training.py", "notebooks/04_gpu_adversarial_training.ipynb"}

    launch_links.write(root, update_ipynb=False)
    still_stale = [line.split(":")[0] for line in launch_links.check(root)]
    assert still_stale == ["notebooks/04_gpu_adversarial_training.ipynb"] * 2, "the .py are done, the .ipynb not yet"

    old = nbformat.read(root / "notebooks" / "04_gpu_adversarial_training.ipynb", as_version=4)
    launch_links.write(root)  # jupytext --update --to ipynb
    assert launch_links.check(root) == []
    new = nbformat.read(root / "notebooks" / "04_gpu_adversarial_training.ipynb", as_version=4)
    assert "blob/fall-2027/notebooks/student/04_" in new.cells[1].source
    assert "@fall-2027\"" in new.cells[2].source
    old_outputs = [c.outputs for c in old.cells if c.cell_type == "code" and "setup" not in c.metadata.get("tags", [])]
    new_outputs = [c.outputs for c in new.cells if c.cell_type == "code" and "setup" not in c.metadata.get("tags", [])]
    assert new_outputs == old_outputs, "updating the inputs keeps every output"
    assert "fall-2027" in (root / "README.md").read_text() and "blob/main/" not in (root / "README.md").read_text()


def test_a_fork_is_named_in_every_link():
    links = launch_links.Links("https://github.com/ada/cas-course", "fall/2027")
    assert links.colab_url("01_a.ipynb") == \
        "https://colab.research.google.com/github/ada/cas-course/blob/fall/2027/notebooks/student/01_a.ipynb"
    assert links.binder_url("01_a.ipynb") == \
        "https://mybinder.org/v2/gh/ada/cas-course/fall%2F2027?urlpath=lab/tree/notebooks/student/01_a.ipynb"
    assert "cas_edu @ git+https://github.com/ada/cas-course@fall/2027" in launch_links.setup_source(links)
    block = launch_links.readme_block(links, ["01_a.ipynb"])
    assert "OWNER" not in block, "the placeholder note is only for the placeholder owner"


def test_a_readme_without_markers_gets_the_block_in_place_of_its_old_binder_badge(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/"
                      "cas_edu/main)\n(an old note)\n\nThe text.\n", encoding="utf-8")
    links = launch_links.Links("https://github.com/ada/cas_edu", "main")
    text = launch_links.rewrite_readme(links, readme, ["01_a.ipynb"])
    assert text == "# title\n\n" + launch_links.readme_block(links, ["01_a.ipynb"]) + "\n\nThe text.\n"
    readme.write_text(text, encoding="utf-8")
    assert launch_links.rewrite_readme(links, readme, ["01_a.ipynb"]) == text


@pytest.mark.parametrize("table", [
    "",
    '[tool.cas_edu]\nbranch = "main"\n',
    '[tool.cas_edu]\nrepository = "https://gitlab.com/ada/cas_edu"\nbranch = "main"\n',
    '[tool.cas_edu]\nrepository = "https://github.com/ada/cas_edu.git/"\nbranch = "main"\n',
    '[tool.cas_edu]\nrepository = "https://github.com/ada/cas_edu.git"\nbranch = "main"\n',
    '[tool.cas_edu]\nrepository = "https://github.com/ada/cas_edu"\nbranch = "a branch"\n',
])
def test_bad_settings_are_refused_with_exit_code_2_and_one_line(tmp_path, table, capsys):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n' + table, encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[tool.cas_edu\]"):
        launch_links.read_links(tmp_path / "pyproject.toml")
    assert launch_links.main(["--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("launch_links: ") and err.count("\n") == 1


def test_check_exit_code(tmp_path, capsys):
    root = _copy(tmp_path)
    assert launch_links.main(["--check", "--root", str(root)]) == 0
    _set(root, "OWNER/cas_edu", "ada/cas_edu")
    assert launch_links.main(["--check", "--root", str(root)]) == 1
    assert "README.md: out of date" in capsys.readouterr().out
