"""The course site (`make site`, tools/course_site.py): pages, navigation, figures and maths, with no network.

The HTML checks run everywhere. The checks in Chromium (marked ``browser``) need Debian's Chromium at
/usr/bin/chromium (``apt-get install chromium``) and the ``playwright`` package; no browser is ever downloaded. They open
every page over file:// with every request that is not for a local file blocked (and recorded: one fails the test),
and save screenshots to ``test-artifacts/``.
"""
from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from tools import course_site, static_figures

CHROMIUM = Path(os.environ.get("CAS_EDU_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
STUDENT = sorted((ROOT / "notebooks" / "student").glob("[0-9][0-9]_*.ipynb"))
PAGES = [path.with_suffix(".html").name for path in STUDENT]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]  # no name resolves: the network is off for the browser
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
NAVIGATION_TIMEOUT_MS = 15_000  # a local file opens at once; typesetting (the default timeout) takes longer
MATHJAX_IDLE = ("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue && MathJax.Hub.queue.pending === 0"
                " && !MathJax.Hub.queue.running")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    course_site.build_site(out)
    return out


class _Links(HTMLParser):
    """Every (tag, attribute, value) of a page's src/href attributes, and the navigation links by place and rel."""

    def __init__(self):
        super().__init__()
        self.resources: list[tuple[str, str, str]] = []
        self.nav: dict[str, dict[str, str]] = {}
        self._nav_place: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.resources.append((tag, name, attrs[name]))
        if tag == "nav" and "course-nav" in attrs.get("class", ""):
            self._nav_place = attrs["class"].split("course-nav-")[-1]
            self.nav[self._nav_place] = {}
        elif tag == "a" and self._nav_place:
            self.nav[self._nav_place][attrs.get("rel") or "index"] = attrs["href"]

    def handle_endtag(self, tag):
        if tag == "nav":
            self._nav_place = None


def _links(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_site_has_an_index_and_one_page_per_student_notebook(site):
    assert PAGES, "no student notebooks: run `make student`"
    assert sorted(path.name for path in site.glob("*.html")) == sorted(["index.html", *PAGES])
    index_targets = [value for tag, name, value in _links(site / "index.html").resources if tag == "a"]
    assert list(dict.fromkeys(target for target in index_targets if target in PAGES)) == PAGES
    for page in PAGES:
        assert "Student edition" in (site / page).read_text(encoding="utf-8")


def test_every_page_links_to_the_index_and_its_neighbours(site):
    order = ["index.html", *PAGES]
    for position, page in enumerate(order):
        expected = {"index": "index.html"}
        if position > 1:
            expected["prev"] = order[position - 1]
        if position + 1 < len(order):
            expected["next"] = order[position + 1]
        assert _links(site / page).nav == {"top": expected, "bottom": expected}, page


def test_no_page_refers_to_a_resource_on_the_network(site):
    for page in ["index.html", *PAGES]:
        html = (site / page).read_text(encoding="utf-8")
        remote = [(tag, name, value) for tag, name, value in _links(site / page).resources
                  if tag != "a" and re.match(r"^(https?:)?//", value)]
        assert remote == [], page
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", html), page
    mathjax = re.search(r'<script src="([^"?]+)\?config=([^"]+)"', (site / PAGES[0]).read_text(encoding="utf-8"))
    assert mathjax and (site / mathjax.group(1)).is_file()
    assert all((site / "mathjax" / "config" / f"{name}.js").is_file() for name in mathjax.group(2).split(","))


def test_badge_images_from_the_web_become_text_links(site):
    badge = re.compile(r"\[!\[([^\]]*)\]\((?:https?:)?//[^)]*\)\]\(([^)\s]+)\)")  # [![alt](image)](target)
    seen = 0
    for path, page in zip(STUDENT, PAGES):
        anchors = {value for tag, name, value in _links(site / page).resources if tag == "a"}
        html = (site / page).read_text(encoding="utf-8")
        for cell in nbformat.read(path, as_version=4).cells:
            for alt, target in badge.findall(cell.source) if cell.cell_type == "markdown" else []:
                seen += 1
                assert target in anchors and f'<span class="course-badge">{alt}</span>' in html, (page, alt)
    if not seen:
        pytest.skip("no badge in the student notebooks")


def test_build_refuses_to_replace_a_folder_it_did_not_build(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a course site built by this tool"):
        course_site.build_site(tmp_path)
    assert (tmp_path / "notes.txt").exists()
    assert course_site.main(["--out", str(tmp_path / "out"), "--notebooks", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("course_site: no [0-9][0-9]_*.ipynb notebooks") and "\n" not in error


def test_a_rebuild_replaces_the_previous_site(site, tmp_path):
    out = tmp_path / "site"
    course_site.build_site(out)
    (out / "stale.html").write_text("old")
    course_site.build_site(out)
    assert not (out / "stale.html").exists() and (out / "index.html").exists()


# ---------------------------------------------------------------------------------------------------- in Chromium

def _figure_count(notebook_path: Path) -> int:
    """Outputs that are figures: a plotly figure or an image (a static view should show each as an image)."""
    return sum(1 for cell in nbformat.read(notebook_path, as_version=4).cells for output in cell.get("outputs", [])
               if any(mime == static_figures.PLOTLY_MIME or mime.startswith("image/") for mime in output.get("data", {})))


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright is not installed (pip install -e '.[test]')")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def offline(browser):
    """A browser page that may load local files only; every other request is blocked and must not be attempted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    attempted: list[str] = []

    def local_only(route):
        if route.request.url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
    assert attempted == [], f"the site tried to reach the network: {attempted}"


def _open(page, site: Path, name: str) -> None:
    """Go to a page and wait until MathJax (a script in its head, so defined once the page has loaded) is idle."""
    page.goto((site / name).as_uri())
    assert page.evaluate("() => window.MathJax !== undefined"), f"{name}: MathJax did not load"
    page.wait_for_function(MATHJAX_IDLE)


BROWSER = [pytest.mark.browser,
           pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium")]


@pytest.mark.parametrize("name", PAGES)
class TestInChromium:
    pytestmark = BROWSER

    def test_maths_is_typeset_with_local_fonts(self, offline, site, name):
        _open(offline, site, name)
        sources = offline.eval_on_selector_all("script[type^='math/tex']", "els => els.length")
        typeset = offline.eval_on_selector_all("span.MathJax", "els => els.length")
        assert sources > 0 and typeset == sources, f"{typeset} of {sources} formulas typeset"
        assert offline.eval_on_selector_all(".MathJax_Error, merror", "els => els.length") == 0
        raw = offline.evaluate("""() => [...document.querySelectorAll('.jp-RenderedMarkdown')].map(cell => {
            const copy = cell.cloneNode(true);
            copy.querySelectorAll('script, code, pre, .MJX_Assistive_MathML, .MathJax_Preview').forEach(e => e.remove());
            return copy.textContent; }).filter(text => /\\$[^$\\s][^$]*\\$/.test(text))""")
        assert raw == [], f"markdown with untypeset $…$: {[text[:120] for text in raw]}"
        assert offline.evaluate(
            "() => [...document.fonts].some(f => f.family.startsWith('STIXMathJax') && f.status === 'loaded')")
        offline.locator("span.MathJax").first.scroll_into_view_if_needed()
        _screenshot(offline, f"course_site_{Path(name).stem}_maths.png")

    def test_every_figure_shows_a_loaded_image(self, offline, site, name):
        offline.goto((site / name).as_uri())
        expected = _figure_count(next(path for path in STUDENT if path.with_suffix(".html").name == name))
        offline.wait_for_function("() => [...document.images].every(img => img.complete)")
        widths = offline.eval_on_selector_all(".jp-OutputArea-output img", "imgs => imgs.map(img => img.naturalWidth)")
        if widths:
            offline.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
            _screenshot(offline, f"course_site_{Path(name).stem}_figure.png")
        assert len(widths) == expected, (f"{name}: {expected} figure outputs but {len(widths)} images "
                                         "(figures without a static image show blank)")
        assert all(width > 0 for width in widths), f"{name}: images that did not load: {widths}"

    def test_navigation_reaches_the_index_and_the_neighbours(self, offline, site, name):
        order = ["index.html", *PAGES]
        position = order.index(name)
        offline.goto((site / "index.html").as_uri())
        offline.locator("a", has_text=course_site.notebook_title(
            nbformat.read(STUDENT[position - 1], as_version=4), "")).first.click()
        offline.wait_for_url(f"**/{name}", timeout=NAVIGATION_TIMEOUT_MS)
        _screenshot(offline, f"course_site_{Path(name).stem}.png")
        for rel, step in (("prev", -1), ("next", +1)):
            link = offline.locator(f"nav.course-nav-bottom a[rel='{rel}']")
            if not 0 < position + step < len(order):
                assert link.count() == 0
                continue
            link.click()
            offline.wait_for_url(f"**/{order[position + step]}", timeout=NAVIGATION_TIMEOUT_MS)
            offline.go_back()
            offline.wait_for_url(f"**/{name}", timeout=NAVIGATION_TIMEOUT_MS)
        offline.locator("nav.course-nav-top a.course-index").click()
        offline.wait_for_url("**/index.html", timeout=NAVIGATION_TIMEOUT_MS)


def test_figures_without_image_counts_the_figures_a_static_page_leaves_blank():
    figure = {"data": [], "layout": {}}
    bare = nbformat.v4.new_output("display_data", data={static_figures.PLOTLY_MIME: figure, "text/plain": "Figure"})
    drawn = nbformat.v4.new_output("display_data", data={static_figures.PLOTLY_MIME: figure, "image/png": "iVBORw0KGgo="})
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[bare]),
                                               nbformat.v4.new_code_cell("fig", outputs=[drawn])])
    assert course_site.figures_without_image(notebook) == 1
