"""The course site: the student notebooks as static HTML pages with an index, built without executing anything.

``make site`` (``python -m tools.course_site``) converts ``notebooks/student/0N_*.ipynb`` (the student edition, as
committed: outputs included, solutions left out) with nbconvert's HTML exporter and its JupyterLab template into
``site/`` (git-ignored):

- ``index.html`` lists the notebooks; every page links to the index and to the previous and next notebook;
- figures are the images saved in the notebooks' outputs, embedded in the pages; a markdown image from the web
  (the Colab and Binder badges of the launch cell) becomes its alt text in a box, still a link, so no page loads
  it;
- maths is typeset by MathJax 2.7 copied from the ``jupyter-server-mathjax`` package into ``site/mathjax/``, so the
  site needs no network: the template drops the require.js and mermaid scripts that would come from a CDN, and
  MathJax uses its STIX-Web fonts (the only ones that package ships).

Open ``site/index.html`` in a browser or publish the folder as it is.
"""
from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

from tools.static_figures import plotly_outputs
from tools.student_edition import NOTEBOOK_GLOB, markdown_headings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOKS = ROOT / "notebooks" / "student"
DEFAULT_OUT = ROOT / "site"
INDEX_NAME = "index.html"
MATHJAX_DIRNAME = "mathjax"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
SITE_MARKER = ".course-site"  # marks a folder this tool may delete and rebuild
SITE_TITLE = "Adversarial robustness and Channel-wise Activation Suppressing (CAS)"
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")

_REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*(?:https?:)?//[^)]*\)")

TEMPLATE_NAME = "course_site.html.j2"
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}

{%- macro course_nav(nav, where) -%}
<nav class="course-nav course-nav-{{ where }}" aria-label="course navigation">
  <a class="course-index" href="{{ nav.index }}">Course index</a>
  {%- if nav.prev %}<a rel="prev" href="{{ nav.prev.href }}">← {{ nav.prev.title | e }}</a>{% endif -%}
  {%- if nav.next %}<a rel="next" href="{{ nav.next.href }}">{{ nav.next.title | e }} →</a>{% endif %}
</nav>
{%- endmacro -%}

{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}

{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [["$", "$"], ["\\(", "\\)"]], displayMath: [["$$", "$$"], ["\\[", "\\]"]],
            processEscapes: true, processEnvironments: true},
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  displayAlign: "center",
  messageStyle: "none"
});
</script>
<script src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}

{%- block extra_css -%}
<style type="text/css">
  nav.course-nav { display: flex; gap: 1.5em; flex-wrap: wrap; padding: 0.6em 1em; margin: 0 0 1em 0;
                   font-family: var(--jp-ui-font-family); font-size: var(--jp-ui-font-size1);
                   border-bottom: 1px solid var(--jp-border-color2); }
  nav.course-nav-bottom { border-bottom: none; border-top: 1px solid var(--jp-border-color2); margin: 1em 0 0 0; }
  nav.course-nav a[rel="next"] { margin-left: auto; }
  .course-badge { display: inline-block; padding: 0 0.5em; border: 1px solid var(--jp-border-color1);
                  border-radius: 3px; font-size: var(--jp-ui-font-size1); }
</style>
{%- endblock extra_css -%}

{%- block body_header -%}
{{ super() }}
{{ course_nav(resources.course_nav, "top") }}
{%- endblock body_header -%}

{%- block body_footer -%}
{{ course_nav(resources.course_nav, "bottom") }}
{{ super() }}
{%- endblock body_footer -%}
"""


@dataclass(frozen=True)
class Page:
    """One page of the site: the notebook it shows (an in-memory one for the index), its file name and its title."""

    notebook: nbformat.NotebookNode
    html_name: str
    title: str


def notebook_title(notebook: nbformat.NotebookNode, fallback: str) -> str:
    """The text of the notebook's first markdown heading, or ``fallback`` when it has none."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and (headings := markdown_headings(cell.source)):
            return headings[0][1]
    return fallback


def figures_without_image(notebook: nbformat.NotebookNode) -> int:
    """How many plotly figure outputs carry no static image (they show blank in a static page)."""
    return sum(1 for output in plotly_outputs(notebook) if not any(m in output["data"] for m in IMAGE_MIMES))


def without_remote_images(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with every markdown image from the web replaced by its alt text in a box (a badge link stays a
    link)."""
    notebook = nbformat.from_dict(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = _REMOTE_IMAGE.sub(
                lambda image: f'<span class="course-badge">{html.escape(image.group(1))}</span>', cell.source)
    return notebook


def mathjax_dir() -> Path:
    """The MathJax 2.7 files of the ``jupyter-server-mathjax`` package.

    Raises: ValueError if the package is not installed.
    """
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise ValueError("jupyter-server-mathjax is not installed: pip install -c constraints.txt -e '.[test]' "
                         "(the course site serves its MathJax files)") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _exporter() -> HTMLExporter:
    return HTMLExporter(template_name="lab", template_file=TEMPLATE_NAME,
                        extra_loaders=[jinja2.DictLoader({TEMPLATE_NAME: TEMPLATE})],
                        mathjax_url=f"{MATHJAX_DIRNAME}/MathJax.js?config={MATHJAX_CONFIG}")


def _index_notebook(pages: list[Page]) -> nbformat.NotebookNode:
    lines = [f"# {SITE_TITLE}", "",
             "Four notebooks on adversarial examples, the channel-wise activation observations behind CAS "
             "(Bai et al., ICLR 2021), the CAS module and how to evaluate it honestly. These pages show the "
             "**student edition** as it was executed, without running it again: the worked solutions are left "
             "out and the exercise cells are unrun. To run the notebooks and do the exercises, open them in "
             "JupyterLab (`make lab` in the repository).", ""]
    lines += [f"{number}. [{page.title}]({page.html_name})" for number, page in enumerate(pages, start=1)]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("\n".join(lines), id="course-index")])
    notebook.metadata["title"] = SITE_TITLE
    return notebook


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir() or (not (out / SITE_MARKER).exists() and any(out.iterdir())):
            raise ValueError(f"{out} exists and is not a course site built by this tool: remove it or choose "
                             "another --out folder.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / SITE_MARKER).write_text("built by tools/course_site.py; rebuilt (deleted first) by `make site`\n")


def build_site(out: Path = DEFAULT_OUT, notebooks_dir: Path = DEFAULT_NOTEBOOKS) -> list[Path]:
    """Write the course site into ``out`` (replacing a site built there before); return the HTML pages written.

    Raises: ValueError if ``notebooks_dir`` holds no ``0N_*.ipynb`` notebook, if ``out`` is a non-empty folder this
    tool did not build, or if ``jupyter-server-mathjax`` is not installed.
    """
    sources = sorted(Path(notebooks_dir).glob(NOTEBOOK_GLOB))
    if not sources:
        raise ValueError(f"no {NOTEBOOK_GLOB} notebooks in {notebooks_dir}: pass the student edition's folder "
                         "(notebooks/student, written by `make student`).")
    mathjax = mathjax_dir()
    out = Path(out)
    _prepare_out(out)
    shutil.copytree(mathjax, out / MATHJAX_DIRNAME, ignore=shutil.ignore_patterns("__pycache__"))
    pages = []
    for source in sources:
        notebook = without_remote_images(nbformat.read(source, as_version=4))
        notebook.metadata["title"] = notebook_title(notebook, source.stem)
        pages.append(Page(notebook, source.with_suffix(".html").name, notebook.metadata["title"]))
    exporter = _exporter()
    written = [_write_page(exporter, Page(_index_notebook(pages), INDEX_NAME, SITE_TITLE), out, None, pages[0])]
    for position, page in enumerate(pages):
        previous = pages[position - 1] if position > 0 else None
        following = pages[position + 1] if position + 1 < len(pages) else None
        written.append(_write_page(exporter, page, out, previous, following))
    return written


def _write_page(exporter: HTMLExporter, page: Page, out: Path, previous: Page | None, following: Page | None) -> Path:
    nav = {"index": INDEX_NAME,
           "prev": previous and {"href": previous.html_name, "title": previous.title},
           "next": following and {"href": following.html_name, "title": following.title}}
    with warnings.catch_warnings():  # outputs with plotly data only: counted and reported once by main()
        warnings.filterwarnings("ignore", message="Your element with mimetype")
        page_html, _ = exporter.from_notebook_node(page.notebook, resources={"course_nav": nav})
    target = out / page.html_name
    target.write_text(page_html, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tools.course_site [--out DIR] [--notebooks DIR]``; exit code 2 with one line on
    bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: site/)")
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS,
                        help="folder of the executed notebooks to show (default: notebooks/student/)")
    args = parser.parse_args(argv)
    try:
        pages = build_site(args.out, args.notebooks)
    except ValueError as error:
        print(f"course_site: {error}", file=sys.stderr)
        return 2
    blank = sum(figures_without_image(nbformat.read(path, as_version=4))
                for path in sorted(args.notebooks.glob(NOTEBOOK_GLOB)))
    if blank:
        print(f"course_site: warning: {blank} figures have no static image and show blank; save images in the "
              "notebooks (notebooks/README.md) and rebuild", file=sys.stderr)
    print(f"wrote {len(pages)} pages to {args.out}/ (open {args.out / INDEX_NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
