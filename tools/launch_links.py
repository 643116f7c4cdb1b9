"""Launch links from one place: the Binder and Colab badges and every notebook's Colab set-up cell.

The repository the links point to lives in ``pyproject.toml`` only::

    [tool.cas_edu]
    repository = "https://github.com/OWNER/cas_edu"
    branch = "main"

A fork changes those two values and runs ``make links`` (``python -m tools.launch_links``), which rewrites,
idempotently and without executing anything:

- ``README.md``: the block between the ``launch-links`` comment markers (the Binder and Colab badges);
- ``notebooks/0N_*.py`` (the jupytext sources): a markdown cell tagged ``launch`` right after the title cell (the
  Colab and Binder badges of that notebook; a cell of its own, so the tool replaces it whole and never edits the
  author's title) and a code cell tagged ``setup`` right before the config cell (:func:`setup_source`);
- then each changed notebook's ``.ipynb`` from its ``.py`` with ``jupytext --update --to ipynb`` (inputs only, the
  outputs stay; never ``--sync``, which can copy the other way).

Both badges open the student edition (``notebooks/student/``, built by ``make student``): what students run.
``python -m tools.launch_links --check`` changes nothing and exits 1 listing what is out of date
(``tests/test_launch_links.py`` runs the same check).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
STUDENT_DIR = "notebooks/student"
LAUNCH_TAG = "launch"
SETUP_TAG = "setup"
#: Datasets each notebook needs on the colab profile and the set-up cell fetches: 01-03 run on digits there
#: (bundled with scikit-learn), 04 trains CIFAR-10 (``presets.PROFILES["colab"]``).
COLAB_DATASETS: dict[str, tuple[str, ...]] = {"01": (), "02": (), "03": (), "04": ("cifar10",)}
#: Notebooks whose runs may live on Google Drive (``cas_edu.hosted.runs_dir``).
DRIVE_NOTEBOOKS = ("04",)
README_BEGIN = "<!-- launch-links: written by `make links` from [tool.cas_edu] in pyproject.toml; edit there -->"
README_END = "<!-- /launch-links -->"
PLACEHOLDER_OWNER = "OWNER"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
_REPOSITORY = re.compile(r"https://github\.com/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+)")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")
_CELL_MARKER = re.compile(r"^# %%")


@dataclass(frozen=True)
class Links:
    """The repository the launch links point to: ``https://github.com/<owner>/<repo>`` and a branch."""

    repository: str
    branch: str

    @property
    def owner(self) -> str:
        return _REPOSITORY.fullmatch(self.repository)["owner"]

    @property
    def repo(self) -> str:
        return _REPOSITORY.fullmatch(self.repository)["repo"]

    def colab_url(self, notebook: str) -> str:
        """Colab opening the student edition of ``notebook`` (a file name such as ``01_adversarial_examples.ipynb``)."""
        return (f"https://colab.research.google.com/github/{self.owner}/{self.repo}/blob/{self.branch}/"
                f"{STUDENT_DIR}/{notebook}")

    def binder_url(self, notebook: str) -> str:
        """mybinder.org building ``binder/`` at the branch, JupyterLab opened on the student edition of ``notebook``."""
        return (f"https://mybinder.org/v2/gh/{self.owner}/{self.repo}/{quote(self.branch, safe='')}"
                f"?urlpath=lab/tree/{STUDENT_DIR}/{notebook}")

    def pip_requirement(self) -> str:
        """What the set-up cell installs on Colab: cas_edu from the repository at the branch."""
        return f"cas_edu @ git+{self.repository}@{self.branch}"


def read_links(pyproject: Path = ROOT / "pyproject.toml") -> Links:
    """The ``[tool.cas_edu]`` repository and branch of ``pyproject``.

    Raises: ValueError when the table or a key is missing, or a value is not a GitHub repository URL / branch name.
    """
    table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("cas_edu")
    if not isinstance(table, dict) or not {"repository", "branch"} <= set(table):
        raise ValueError(f"{pyproject.name} needs [tool.cas_edu] with repository = \"https://github.com/OWNER/REPO\" "
                         "and branch = \"main\".")
    repository, branch = table["repository"], table["branch"]
    if not isinstance(repository, str) or not _REPOSITORY.fullmatch(repository) or repository.endswith(".git"):
        raise ValueError(f"[tool.cas_edu] repository must look like https://github.com/OWNER/REPO (no trailing "
                         f"slash or .git), got {repository!r}.")
    if not isinstance(branch, str) or not _BRANCH.fullmatch(branch) or branch.startswith("/"):
        raise ValueError(f"[tool.cas_edu] branch must be a git branch name such as \"main\", got {branch!r}.")
    return Links(repository, branch)


def setup_source(links: Links, datasets: tuple[str, ...] = (), drive: bool = False) -> str:
    """The set-up cell: on Colab, install cas_edu when missing, then ``hosted.set_up_colab``; elsewhere nothing.

    Plain Python (no ``!`` or ``%`` magics), so the jupytext source stays a Python file.
    """
    names = ", ".join(f'"{name}"' for name in datasets) + ("," if len(datasets) == 1 else "")
    call = f"hosted.set_up_colab(datasets=({names}))" if datasets else "hosted.set_up_colab()"
    lines = [
        "# Set-up for Google Colab, written by `make links`: there it installs cas_edu when it is missing, picks the",
        "# colab profile, turns widgets on and fetches the data this notebook needs. Anywhere else it does nothing.",
        "import importlib",
        "import importlib.util",
        "import subprocess",
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        '    if importlib.util.find_spec("cas_edu") is None:',
        '        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",',
        f'                        "{links.pip_requirement()}"], check=True)',
        "        importlib.invalidate_caches()",
        "    from cas_edu import hosted",
        "",
    ]
    if drive:
        lines += [
            "    # To keep the runs on Google Drive, so that a new session resumes an interrupted training, uncomment:",
            '    # from google.colab import drive; drive.mount("/content/drive")',
        ]
    lines.append(f"    {call}")
    return "\n".join(lines)


def launch_source(links: Links, notebook: str) -> str:
    """The badge cell of ``notebook`` (an ``.ipynb`` file name): Open in Colab and Binder, on the student edition."""
    return (f"[![Open In Colab]({COLAB_BADGE})]({links.colab_url(notebook)}) "
            f"[![Binder]({BINDER_BADGE})]({links.binder_url(notebook)})\n"
            "\n"
            "Run it online: Colab gives a free GPU (the set-up cell before the configuration installs cas_edu\n"
            "there), Binder JupyterLab on a CPU. Both badges open the student edition of this notebook.")


def readme_block(links: Links, notebooks: list[str]) -> str:
    """The README's badge block, markers included: Binder and Colab on notebook 01, then Colab for each notebook."""
    first = notebooks[0]
    each = " · ".join(f"[{name[:2]}]({links.colab_url(name)})" for name in notebooks)
    lines = [
        README_BEGIN,
        f"[![Binder]({BINDER_BADGE})]({links.binder_url(first)})",
        f"[![Open In Colab]({COLAB_BADGE})]({links.colab_url(first)})",
        "",
        f"Both badges open the student edition of notebook {first[:2]} (`{STUDENT_DIR}/`): Binder in JupyterLab on a",
        "CPU with `binder/`'s environment, Colab with a free GPU, where each notebook's set-up cell installs cas_edu",
        "from this repository ([notebooks/README.md](notebooks/README.md#colab-and-binder)). Each notebook in Colab:",
        f"{each}.",
    ]
    if links.owner == PLACEHOLDER_OWNER:
        lines += [f"`{PLACEHOLDER_OWNER}` stands for the GitHub account the project will be published under, not "
                  "known yet: set",
                  "`repository` under `[tool.cas_edu]` in pyproject.toml, then run `make links`."]
    lines.append(README_END)
    return "\n".join(lines)


# --------------------------------------------------------------------------- rewriting files


def _split_cells(text: str) -> tuple[str, list[str]]:
    """A percent-format script as its header and its cells, each cell's text from its ``# %%`` line to the next."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _CELL_MARKER.match(line)]
    if not starts:
        return text, []
    bounds = [*starts, len(lines)]
    return "".join(lines[:starts[0]]), ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def _marker(cell: str) -> str:
    return cell.split("\n", 1)[0]


def _has_tag(cell: str, tag: str) -> bool:
    match = re.search(r"tags=(\[[^\]]*\])", _marker(cell))
    return bool(match) and tag in json.loads(match.group(1))


def _is_markdown(cell: str) -> bool:
    return _marker(cell).startswith("# %% [markdown]")


def _markdown_cell(source: str, tag: str) -> str:
    body = "".join(f"# {line}\n" if line else "#\n" for line in source.split("\n"))
    return f'# %% [markdown] tags=["{tag}"]\n{body}\n'


def _code_cell(source: str, tag: str) -> str:
    return f'# %% tags=["{tag}"]\n{source}\n\n'


def notebook_cells(links: Links, script: Path) -> tuple[str, str]:
    """The launch cell's and the set-up cell's sources for the notebook whose jupytext source is ``script``."""
    number = script.name[:2]
    return (launch_source(links, script.with_suffix(".ipynb").name),
            setup_source(links, COLAB_DATASETS.get(number, ()), number in DRIVE_NOTEBOOKS))


def rewrite_script(links: Links, script: Path) -> str:
    """The text of ``script`` (a jupytext percent source) with its launch and set-up cells as ``links`` makes them.

    Raises: ValueError when the script has no markdown title cell first, or no config (code) cell.
    """
    header, cells = _split_cells(script.read_text(encoding="utf-8"))
    cells = [c for c in cells if not (_has_tag(c, LAUNCH_TAG) or _has_tag(c, SETUP_TAG))]
    if not cells or not _is_markdown(cells[0]):
        raise ValueError(f"{script.name}: the first cell must be the markdown title cell.")
    config = next((i for i, c in enumerate(cells) if not _is_markdown(c)), None)
    if config is None:
        raise ValueError(f"{script.name}: no code cell, so no config cell to put the set-up cell before.")
    launch, setup = notebook_cells(links, script)
    cells.insert(config, _code_cell(setup, SETUP_TAG))
    cells.insert(1, _markdown_cell(launch, LAUNCH_TAG))
    return header + "".join(cells)


def rewrite_readme(links: Links, readme: Path, notebooks: list[str]) -> str:
    """The text of ``readme`` with its launch-links block as ``links`` makes it.

    The block replaces the one between the markers; a README without markers gets it in place of the paragraph that
    holds a mybinder.org badge, else right after the title line.
    Raises: nothing of its own.
    """
    text = readme.read_text(encoding="utf-8")
    block = readme_block(links, notebooks)
    if README_BEGIN in text and README_END in text:
        start = text.index(README_BEGIN)
        end = text.index(README_END, start) + len(README_END)
        return text[:start] + block + text[end:]
    paragraphs = text.split("\n\n")
    for i, paragraph in enumerate(paragraphs):
        if paragraph.lstrip().startswith("[![Binder]"):
            paragraphs[i] = block
            return "\n\n".join(paragraphs)
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{block}\n{rest}"


def scripts(root: Path = ROOT) -> list[Path]:
    """The notebooks' jupytext sources, ``notebooks/0N_*.py``, sorted."""
    return sorted((root / "notebooks").glob(NOTEBOOK_GLOB))


def expected_files(root: Path = ROOT) -> dict[Path, str]:
    """Every text file ``make links`` writes under ``root``, mapped to the content it should have.

    Raises: ValueError as :func:`read_links` and :func:`rewrite_script`.
    """
    links = read_links(root / "pyproject.toml")
    sources = scripts(root)
    expected = {path: rewrite_script(links, path) for path in sources}
    expected[root / "README.md"] = rewrite_readme(links, root / "README.md",
                                                  [p.with_suffix(".ipynb").name for p in sources])
    return expected


def _tagged(nb: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def notebook_problems(links: Links, script: Path) -> list[str]:
    """Where the ``.ipynb`` paired with ``script`` lacks the launch or set-up cell ``links`` makes (place or text)."""
    path = script.with_suffix(".ipynb")
    nb = nbformat.read(path, as_version=4)
    launch, setup = notebook_cells(links, script)
    launch_at, setup_at = _tagged(nb, LAUNCH_TAG), _tagged(nb, SETUP_TAG)
    config = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in setup_at), None)
    problems = []
    if launch_at != [1] or nb.cells[1].source != launch:
        problems.append(f"{path.name}: the launch cell is not the cell after the title, or its links are stale")
    if config is None or setup_at != [config - 1] or nb.cells[config - 1].source != setup:
        problems.append(f"{path.name}: the set-up cell is not the cell before the config cell, or it is stale")
    return problems


def check(root: Path = ROOT) -> list[str]:
    """Every file under ``root`` that ``make links`` would change, one line each (empty when all are in sync).

    Raises: ValueError as :func:`expected_files`.
    """
    problems = [f"{path.relative_to(root)}: out of date with [tool.cas_edu] in pyproject.toml"
                for path, text in expected_files(root).items() if path.read_text(encoding="utf-8") != text]
    links = read_links(root / "pyproject.toml")
    for script in scripts(root):
        problems += [f"notebooks/{problem}" for problem in notebook_problems(links, script)]
    return problems


def update_notebooks(changed: list[Path]) -> None:
    """Bring each ``.ipynb`` paired with a script in ``changed`` up to date with it: ``jupytext --update --to ipynb``.

    Raises: subprocess.CalledProcessError when jupytext fails.
    """
    if changed:
        subprocess.run([sys.executable, "-m", "jupytext", "--update", "--to", "ipynb", *map(str, changed)], check=True)


def write(root: Path = ROOT, update_ipynb: bool = True) -> list[Path]:
    """Rewrite the files under ``root`` that are out of date; return those written (README and scripts).

    With ``update_ipynb``, every notebook whose ``.ipynb`` lacks the current cells is updated from its script.
    Raises: ValueError as :func:`expected_files`; subprocess.CalledProcessError from jupytext.
    """
    written = []
    for path, text in expected_files(root).items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    if update_ipynb:
        links = read_links(root / "pyproject.toml")
        update_notebooks([script for script in scripts(root) if notebook_problems(links, script)])
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tools.launch_links [--check]``; exit 1 when ``--check`` finds stale files, 2 on bad
    input (one line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; list the files make links would change")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.root)
            for problem in problems:
                print(problem)
            return 1 if problems else 0
        written = write(args.root)
    except ValueError as error:
        print(f"launch_links: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(args.root)}")
    links = read_links(args.root / "pyproject.toml")
    if links.owner == PLACEHOLDER_OWNER:
        print(f"note: the links name the placeholder owner {PLACEHOLDER_OWNER}; set repository under [tool.cas_edu] "
              "in pyproject.toml once the GitHub owner is known, then run make links again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
