"""What a reader sees without a kernel (GitHub, nbviewer, nbconvert's HTML): every plotly figure as an image, every
explorer followed by a static snapshot, every progress bar at its final state.

The fast checks read the committed notebooks' JSON; each is a function of a notebook that returns a list of problems,
so the tests below also point it at a broken copy. The browser test converts each committed notebook to HTML with
nbconvert (no execution) and opens it in headless Chromium with the network off (Debian's /usr/bin/chromium, never a
downloaded browser; full-page screenshots in test-artifacts/). Fix a missing image with `make static`
(tools/static_figures.py), a widget or a progress bar with `make notebook NB=0N`; see notebooks/README.md.
"""
from __future__ import annotations

import base64
import copy
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools import static_figures
from tools.static_figures import PLOTLY_MIME, PNG_MIME, SCALE, STAMP_KEY, StaticFiguresError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("CAS_EDU_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CONTAINER_TEXT = re.compile(r"^\s*[VH]Box\(")
# tqdm's text: "desc:  40%|████      | 2/5 [00:01<00:01, ...]"; a saved bar must show n == total.
PROGRESS_TEXT = re.compile(r"(\d{1,3})%\|[^|\n]*\|\s*(\d+)/(\d+)")
NO_CHROMIUM = f"no Chromium at {CHROMIUM}: apt-get install chromium"
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _texts(output) -> list[str]:
    """The text a static viewer may show for an output: a stream's text, or the text/plain of a rich output."""
    if output.output_type == "stream":
        return [output.text]
    plain = output.get("data", {}).get("text/plain")
    return [plain] if plain else []


# --------------------------------------------------------------------------- checks on the .ipynb JSON


def missing_images(path: Path) -> list[str]:
    """Plotly outputs without a current PNG of their figure at :data:`SCALE` × the size their metadata gives."""
    from PIL import Image

    problems = []
    for i, cell in enumerate(_read(path).cells):
        for output in cell.get("outputs", []):
            if PLOTLY_MIME not in output.get("data", {}):
                continue
            if PNG_MIME not in output.data:
                problems.append(f"cell {i}: a plotly figure without an image/png (make static)")
            elif not static_figures.image_is_current(output):
                problems.append(f"cell {i}: the image/png is not the image of this figure (make static)")
            else:
                size = output.metadata.get(PNG_MIME, {})
                try:
                    with Image.open(io.BytesIO(base64.b64decode(output.data[PNG_MIME]))) as image:
                        image.load()
                        drawn = image.size
                except (OSError, ValueError) as error:
                    problems.append(f"cell {i}: the image/png does not decode ({error}; make static)")
                    continue
                if drawn != (SCALE * size.get("width", 0), SCALE * size.get("height", 0)):
                    problems.append(f"cell {i}: a {drawn} PNG for a figure shown at {size}")
    return problems


def html_needing_plotly_js(path: Path) -> list[str]:
    """Outputs whose text/html would need plotly.js (from a CDN): any text/html next to a plotly figure, or one
    that mentions plotly or runs a script."""
    problems = []
    for i, cell in enumerate(_read(path).cells):
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html")
            if html is None:
                continue
            if PLOTLY_MIME in output.data:
                problems.append(f"cell {i}: text/html next to a plotly figure")
            elif re.search(r"plotly|<script", html, re.IGNORECASE):
                problems.append(f"cell {i}: text/html that needs plotly.js or runs a script: {html[:120]!r}")
    return problems


def explorers_without_snapshot(path: Path) -> list[str]:
    """Widget outputs other than progress bars (the explorers; a static viewer shows only their text) not followed,
    in the next code cell, by an image (``explorer.snapshot().show()`` with its PNG); and explorers whose text is
    ipywidgets' bare ``VBox(children=(HBox(...``."""
    cells = [cell for cell in _read(path).cells if cell.cell_type == "code"]
    problems = []
    for number, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/plain", "")
            if WIDGET_MIME not in output.get("data", {}) or PROGRESS_TEXT.search(text):
                continue
            if CONTAINER_TEXT.match(text):
                problems.append(f"code cell {number}: a widget shown as {text[:40]!r}... in a static view")
            following = cells[number + 1].get("outputs", []) if number + 1 < len(cells) else []
            if not any(PNG_MIME in later.get("data", {}) for later in following):
                problems.append(f"code cell {number}: a widget ({text[:40]!r}) not followed by a static snapshot "
                                "in the next code cell (explorer.snapshot().show())")
    return problems


def unfinished_progress(path: Path) -> list[str]:
    """Saved progress text that is not a bar's final state: a count below its total (tqdm's widget saves 0/N),
    or carriage returns left in a stream (a static viewer prints every state)."""
    problems = []
    for i, cell in enumerate(_read(path).cells):
        for output in cell.get("outputs", []):
            for text in _texts(output):
                if output.output_type == "stream" and re.search(r"\r(?!\n)", text):
                    problems.append(f"cell {i}: carriage returns left in the {output.name} stream")
                for match in PROGRESS_TEXT.finditer(text):
                    if match.group(2) != match.group(3) or re.search(r"(?<![\d.])0%\|", match.group(0)):
                        problems.append(f"cell {i}: a progress bar saved at {match.group(0)!r} "
                                        "(build with make notebook: CAS_EDU_PROGRESS=text)")
    return problems


JSON_CHECKS = [missing_images, html_needing_plotly_js, explorers_without_snapshot, unfinished_progress]


@pytest.mark.parametrize("check", JSON_CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name[:2])
def test_committed_notebook_reads_without_a_kernel(notebook, check):
    problems = check(notebook)
    assert not problems, f"{notebook.name}: " + "\n".join(problems)


def test_every_notebook_has_plotly_figures_to_check():
    assert len(NOTEBOOKS) == 4
    for path in NOTEBOOKS:
        assert static_figures.plotly_outputs(_read(path)), f"{path.name} has no plotly figure: is the glob right?"


# The checks must fail on a broken notebook: each case breaks a copy in tmp_path.


def _plotly_output(width: int = 320, height: int = 200, y=(1, 3, 2)) -> nbformat.NotebookNode:
    figure = {"data": [{"type": "bar", "y": list(y), "name": "bars"}],
              "layout": {"width": width, "height": height, "title": {"text": "a bar chart"}}}
    return nbformat.v4.new_output("display_data", data={PLOTLY_MIME: figure}, metadata={})


def _notebook(*outputs_per_cell) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for outputs in outputs_per_cell:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = list(outputs)
        nb.cells.append(cell)
    return nb


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


def _widget_output(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={
        WIDGET_MIME: {"model_id": "0" * 32, "version_major": 2, "version_minor": 0}, "text/plain": text})


def _with_image(output: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The output with a current image of its figure, as tools/static_figures.py stores it (a blank PNG here)."""
    from PIL import Image

    width, height = static_figures.figure_size(output.data[PLOTLY_MIME])
    buffer = io.BytesIO()
    Image.new("P", (SCALE * width, SCALE * height)).save(buffer, format="PNG")
    output.data[PNG_MIME] = base64.b64encode(buffer.getvalue()).decode("ascii")
    output.metadata[PNG_MIME] = {"width": width, "height": height}
    output.metadata[STAMP_KEY] = {"digest": static_figures.figure_digest(output.data[PLOTLY_MIME])}
    return output


def test_missing_images_flags_a_figure_without_or_with_a_stale_image(tmp_path):
    assert missing_images(_write(_notebook([_with_image(_plotly_output())]), tmp_path / "ok.ipynb")) == []
    without = _notebook([_plotly_output()])
    assert "without an image/png" in "".join(missing_images(_write(without, tmp_path / "no.ipynb")))
    stale = _with_image(_plotly_output())
    stale.data[PLOTLY_MIME]["layout"]["title"] = {"text": "changed"}
    assert "not the image of this figure" in "".join(missing_images(_write(_notebook([stale]), tmp_path / "st.ipynb")))
    resized = _with_image(_plotly_output())
    resized.metadata[PNG_MIME]["width"] += 1
    assert "PNG for a figure shown at" in "".join(missing_images(_write(_notebook([resized]), tmp_path / "rs.ipynb")))
    corrupt = _with_image(_plotly_output())
    corrupt.data[PNG_MIME] = "AAAA" + corrupt.data[PNG_MIME][8:]
    assert "does not decode" in "".join(missing_images(_write(_notebook([corrupt]), tmp_path / "bad.ipynb")))


def test_html_needing_plotly_js_flags_html_outputs(tmp_path):
    beside = _plotly_output()
    beside.data["text/html"] = "<div>figure</div>"
    script = nbformat.v4.new_output("display_data", data={"text/html": "<script src='https://cdn.plot.ly/x.js'>"})
    table = nbformat.v4.new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>"})
    problems = html_needing_plotly_js(_write(_notebook([beside], [script], [table]), tmp_path / "html.ipynb"))
    assert len(problems) == 2 and "cell 0" in problems[0] and "cell 1" in problems[1]


def test_explorers_without_snapshot_needs_an_image_in_the_next_code_cell(tmp_path):
    explorer = _widget_output("[EpsilonExplorer: interactive, run the notebook to use it]")
    bare = _widget_output("VBox(children=(HBox(children=(FloatSlider(value=0.1)")
    bar = _widget_output("evaluate: 100%|██████████| 6/6 [00:01<00:00]")
    snapshot = nbformat.v4.new_output("display_data", data={PNG_MIME: "iVBORw0KGgo=", "text/plain": "<Figure>"})
    assert explorers_without_snapshot(_write(_notebook([explorer], [snapshot], [bar]), tmp_path / "ok.ipynb")) == []
    assert explorers_without_snapshot(_write(_notebook([explorer], []), tmp_path / "no.ipynb"))
    assert explorers_without_snapshot(_write(_notebook([explorer]), tmp_path / "last.ipynb"))
    problems = explorers_without_snapshot(_write(_notebook([bare], [snapshot]), tmp_path / "bare.ipynb"))
    assert len(problems) == 1 and "VBox(children" in problems[0]


def test_unfinished_progress_flags_a_widget_bar_and_uncollapsed_text(tmp_path):
    widget_bar = _widget_output("evaluate:   0%|          | 0/6 [00:00<?, ?it/s]")
    raw = nbformat.v4.new_output("stream", name="stderr", text="\rwork:   0%|  | 0/5\rwork: 100%|██| 5/5 [00:00]\n")
    final = nbformat.v4.new_output("stream", name="stderr", text="work: 100%|██████| 5/5 [00:00<00:00, 9.1it/s]\n")
    assert unfinished_progress(_write(_notebook([final]), tmp_path / "final.ipynb")) == []
    assert "0/6" in "".join(unfinished_progress(_write(_notebook([widget_bar]), tmp_path / "widget.ipynb")))
    assert "carriage returns" in "".join(unfinished_progress(_write(_notebook([raw]), tmp_path / "raw.ipynb")))


# --------------------------------------------------------------------------- tools/static_figures.py


@needs_chromium
def test_add_static_images_adds_a_png_beside_the_figure_and_is_idempotent():
    pytest.importorskip("kaleido")
    from PIL import Image

    nb = _notebook([_plotly_output(width=320, height=200)], [_plotly_output(width=300, height=240, y=(2, 1))])
    assert static_figures.add_static_images(nb) == 2
    first = static_figures.plotly_outputs(nb)[0]
    assert set(first.data) == {PLOTLY_MIME, PNG_MIME}  # the figure stays for JupyterLab; no text/html
    assert first.metadata[PNG_MIME] == {"width": 320, "height": 200}
    with Image.open(io.BytesIO(base64.b64decode(first.data[PNG_MIME]))) as image:
        assert image.size == (640, 400) and image.mode == "P"
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16)) > 2  # drawn, not a blank page
    images = [output.data[PNG_MIME] for output in static_figures.plotly_outputs(nb)]
    assert images[0] != images[1]

    assert static_figures.add_static_images(nb) == 0  # current images are kept
    assert static_figures.add_static_images(nb, force=True) == 2  # rendered again: the same bytes
    assert [output.data[PNG_MIME] for output in static_figures.plotly_outputs(nb)] == images

    first.data[PLOTLY_MIME]["data"][0]["y"] = [5, 1, 5]  # a changed figure gets a new image
    assert static_figures.add_static_images(nb) == 1 and first.data[PNG_MIME] != images[0]


def test_a_missing_chromium_or_kaleido_fails_loudly(tmp_path, monkeypatch):
    nb = _notebook([_plotly_output()])
    with pytest.raises(StaticFiguresError, match=r"No Chromium at .*apt-get install chromium"):
        static_figures.add_static_images(nb, chromium=tmp_path / "no-chromium")
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido now raises ImportError
    with pytest.raises(StaticFiguresError, match="kaleido is not installed.*constraints.txt"):
        static_figures.add_static_images(nb, chromium=tmp_path / "no-chromium")
    assert PNG_MIME not in nb.cells[0].outputs[0].data


def test_nothing_to_render_needs_neither_chromium_nor_kaleido(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)
    assert static_figures.add_static_images(_notebook([]), chromium=tmp_path / "no-chromium") == 0


def _build(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """``nb`` executed in place as `make notebook` does (nbconvert with nbconvert_execute.py), then read back."""
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    _write(nb, path)
    env = {key: value for key, value in os.environ.items() if key != "CAS_EDU_PROGRESS"}
    subprocess.run([str(Path(sys.executable).with_name("jupyter")), "nbconvert", "--config",
                    str(ROOT / "nbconvert_execute.py"), "--to", "notebook", "--execute", "--inplace", str(path)],
                   check=True, cwd=ROOT, env=env, capture_output=True, timeout=600)
    return _read(path)


@pytest.mark.slow
def test_the_notebook_build_saves_a_progress_bar_as_its_final_line(tmp_path):
    """`make notebook`'s nbconvert configuration runs the kernel with text progress bars and collapses the stream."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import time\nfrom cas_edu.runtime import progress_bar\n"
        "for _ in progress_bar(range(5), desc='work', mininterval=0):\n    time.sleep(0.02)"))
    outputs = _build(nb, tmp_path / "progress.ipynb").cells[0].outputs
    assert [output.output_type for output in outputs] == ["stream"], outputs
    text = outputs[0].text
    assert "\r" not in text and text.count("\n") == 1 and "work: 100%|" in text and "5/5" in text
    assert unfinished_progress(tmp_path / "progress.ipynb") == []


# --------------------------------------------------------------------------- in a browser, network off

_VIEW_JS = """() => ({
  cells: Array.from(document.querySelectorAll('.jp-Cell')).map(cell => ({
    code: cell.classList.contains('jp-CodeCell'),
    outputs: Array.from(cell.querySelectorAll('.jp-OutputArea-child')).map(child => ({
      images: Array.from(child.querySelectorAll('img')).filter(
        img => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0).length,
      svgs: Array.from(child.querySelectorAll('svg')).filter(
        svg => svg.getBoundingClientRect().width > 0 && svg.querySelector('path, rect, text, image')).length,
    })),
  })),
  text: document.body.innerText,
})"""


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def static_view(browser, notebook: Path, html_dir: Path, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """The notebook as nbconvert's HTML shows it in Chromium with every request but file: and data: refused: for
    each cell its outputs' drawn images and SVGs, the page's visible text; and the refused URLs."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_filename(str(notebook))
    page_path = html_dir / f"{notebook.stem}.html"
    page_path.write_text(html, encoding="utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    refused: list[str] = []

    def only_local(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    try:
        page = context.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        view = page.evaluate(_VIEW_JS)
        if screenshot is not None:
            screenshot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()
    return view, refused


def static_view_problems(notebook: Path, view: dict, refused: list[str]) -> list[str]:
    """Plotly outputs not drawn as an image or SVG, widget text or unfinished progress on the page, plotly.js
    asked for."""
    cells = _read(notebook).cells
    problems = []
    if [cell.cell_type == "code" for cell in cells] != [cell["code"] for cell in view["cells"]]:
        return [f"the page shows {len(view['cells'])} cells, the notebook has {len(cells)}"]
    for i, (cell, shown) in enumerate(zip(cells, view["cells"])):
        outputs = cell.get("outputs", [])
        if len(shown["outputs"]) != len(outputs):
            problems.append(f"cell {i}: {len(shown['outputs'])} outputs on the page, {len(outputs)} in the notebook")
            continue
        for j, (output, drawn) in enumerate(zip(outputs, shown["outputs"])):
            if PLOTLY_MIME in output.get("data", {}) and drawn["images"] + drawn["svgs"] == 0:
                problems.append(f"cell {i}, output {j}: a plotly figure drawn as nothing (no loaded image or SVG)")
    if match := re.search(r"[VH]Box\(", view["text"]):
        problems.append(f"the page shows widget text: {view['text'][match.start():match.start() + 60]!r}")
    for match in PROGRESS_TEXT.finditer(view["text"]):
        if match.group(2) != match.group(3):
            problems.append(f"the page shows a progress bar at {match.group(0)!r}")
    problems += [f"the page asked for plotly.js: {url}" for url in refused if "plotly" in url.lower()]
    return problems


@pytest.mark.browser
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name[:2])
def test_static_html_draws_every_figure_offline(browser, notebook, tmp_path):
    view, refused = static_view(browser, notebook, tmp_path, ARTIFACTS / f"static_view_{notebook.stem}.png")
    problems = static_view_problems(notebook, view, refused)
    assert not problems, f"{notebook.name} as static HTML: " + "\n".join(problems)


@pytest.mark.browser
def test_static_view_check_fails_on_a_figure_without_image(browser, tmp_path):
    nb = _read(NOTEBOOKS[0])
    first, *others = static_figures.plotly_outputs(nb)
    first.data[PNG_MIME] = _with_image(_plotly_output()).data[PNG_MIME][:40]  # an <img> that cannot load
    for output in others:
        output.data.pop(PNG_MIME, None)
    broken = _write(nb, tmp_path / NOTEBOOKS[0].name)
    view, refused = static_view(browser, broken, tmp_path)
    problems = static_view_problems(broken, view, refused)
    assert sum("drawn as nothing" in problem for problem in problems) == len(static_figures.plotly_outputs(nb))


@pytest.mark.slow
@pytest.mark.browser
def test_a_notebook_built_like_the_course_reads_without_a_kernel(browser, tmp_path):
    """End to end on a small notebook using the library as the course does (an explorer and its snapshot, a
    robustness curve with its progress bar and figure): `make notebook`'s build passes every check above."""
    nb = nbformat.v4.new_notebook()
    for source in ["import torch\nfrom cas_edu import data, evaluation, models, plots, widgets\n"
                   "ds = data.load('digits')\ntorch.manual_seed(0)\n"
                   "model = models.build('small_cnn', in_channels=1).eval()\nx, y = ds.test.x[:20], ds.test.y[:20]",
                   "explorer = widgets.EpsilonExplorer(model, x[:3], y[:3], ds.classes)\nexplorer.widget",
                   "explorer.snapshot().show()",
                   "curve = evaluation.robustness_curve(model, x, y, [0.0, 0.1], steps=2)\n"
                   "plots.accuracy_vs_eps_figure({'untrained': curve}, title='accuracy vs ε')"]:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    path = tmp_path / "course.ipynb"
    built = _build(nb, path)
    assert len(static_figures.plotly_outputs(built)) == 2
    assert any(WIDGET_MIME in output.get("data", {}) for output in built.cells[1].outputs)
    assert built.cells[3].outputs[0].output_type == "stream"  # the progress bar, as text
    problems = [problem for check in JSON_CHECKS for problem in check(path)]
    view, refused = static_view(browser, path, tmp_path, ARTIFACTS / "static_view_built_example.png")
    problems += static_view_problems(path, view, refused)
    assert not problems, "\n".join(problems)
