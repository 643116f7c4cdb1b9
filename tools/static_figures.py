"""Static images of the notebooks' plotly figures, added when the notebooks are built, for readers without a kernel.

Plotly saves a figure as ``application/vnd.plotly.v1+json``, which GitHub, nbviewer and nbconvert's HTML do not draw.
:class:`StaticFiguresPreprocessor` (an nbconvert preprocessor; ``nbconvert_execute.py`` runs it, so ``make notebook``,
``make notebooks``, ``make sync`` and ``make static`` do) renders each such output with plotly's static export
(kaleido >= 1, driving Debian's Chromium, never a downloaded browser) and adds an ``image/png`` to the SAME output
bundle: JupyterLab keeps drawing the interactive figure, a static viewer shows the image. No ``text/html`` is added
(nbconvert and nbviewer would prefer it, and plotly's HTML needs plotly.js from a CDN).

The image is a PNG at twice the figure's layout size (sharp on high-density screens; ``metadata["image/png"]`` gives
the layout size, at which viewers show it), reduced to a 256-colour palette. Measured on the 15 figures of the four
notebooks: 0.58 MB in all, against 0.88 MB for plain PNGs at 1× (blurry when zoomed), 2.2 MB at 2×, and 1.2 MB as
SVG (large for bar charts of 128–256 channels and for heatmaps, and not byte-reproducible: plotly's SVG draws random
clip-path ids). Kaleido's PNG is the same bytes for the same figure; each image also records a digest of its figure
and of these settings (``metadata["static_figure"]``), so a run over an unchanged figure keeps its image without
starting Chromium, and a changed figure gets a new one.

Source: this repository (no paper).
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from base64 import b64encode
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

PLOTLY_MIME = "application/vnd.plotly.v1+json"
PNG_MIME = "image/png"
#: Output metadata key holding the digest of the figure and settings the image was made from.
STAMP_KEY = "static_figure"
#: Where Chromium is looked for (tests/test_browser.py reads the same variable).
CHROMIUM_ENV = "CAS_EDU_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
#: Pixels per layout pixel of the PNG, and the size of its palette.
SCALE = 2
PALETTE_COLORS = 256
#: Plotly's figure size when the layout sets none (layout pixels).
DEFAULT_SIZE = (700, 500)
RENDER_TIMEOUT_S = 120
_SETTINGS = {"format": "png", "scale": SCALE, "palette_colors": PALETTE_COLORS}
_INSTALL_HINT = ("Static figure images need the kaleido package (>= 1) and Chromium: "
                 "pip install -c constraints.txt -e '.[test]' and apt-get install chromium "
                 f"(or set {CHROMIUM_ENV} to a Chromium or Chrome executable).")


class StaticFiguresError(RuntimeError):
    """A figure could not be rendered: kaleido or Chromium is missing, or the browser failed."""


def plotly_outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """Every output of the notebook's code cells that carries a plotly figure, in order."""
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
            if PLOTLY_MIME in output.get("data", {})]


def figure_size(figure: Mapping[str, Any]) -> tuple[int, int]:
    """The figure's (width, height) in layout pixels: its layout's, its template's, or plotly's default."""
    layout = figure.get("layout", {})
    template = layout.get("template", {}).get("layout", {})
    width = layout.get("width") or template.get("width") or DEFAULT_SIZE[0]
    height = layout.get("height") or template.get("height") or DEFAULT_SIZE[1]
    return int(width), int(height)


def figure_digest(figure: Mapping[str, Any]) -> str:
    """A digest of the figure's data and layout and of the image settings: the image is current while it matches."""
    drawn = {"data": figure.get("data", []), "layout": figure.get("layout", {}), "settings": _SETTINGS}
    text = json.dumps(drawn, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_is_current(output: Mapping[str, Any]) -> bool:
    """Whether a plotly output already holds the image of its figure (made with the current settings)."""
    stamp = output.get("metadata", {}).get(STAMP_KEY, {})
    return PNG_MIME in output.get("data", {}) and stamp.get("digest") == figure_digest(output["data"][PLOTLY_MIME])


def chromium_path(chromium: str | os.PathLike | None = None) -> Path:
    """The Chromium to drive: ``chromium``, else ``$CAS_EDU_CHROMIUM``, else /usr/bin/chromium.

    Raises: StaticFiguresError when it is not an executable file.
    """
    path = Path(chromium or os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StaticFiguresError(f"No Chromium at {path}. {_INSTALL_HINT}")
    return path


def _plotly_js() -> Path:
    """The plotly.js that plotly.py ships (kaleido would otherwise fall back to a CDN)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise StaticFiguresError(f"plotly.py's own plotly.js is missing ({path}); reinstall plotly.")
    return path


def _palette_png(png: bytes) -> bytes:
    """The PNG reduced to a palette of :data:`PALETTE_COLORS` colours, without dithering (same bytes each time)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        reduced = image.convert("RGB").quantize(PALETTE_COLORS, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    reduced.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_pngs(figures: Sequence[Mapping[str, Any]], chromium: str | os.PathLike | None = None) -> list[bytes]:
    """One palette PNG per plotly figure dict (at :data:`SCALE` × its layout size), rendered by kaleido in one
    headless Chromium without network (plotly.js from plotly.py, no MathJax).

    Raises: StaticFiguresError when kaleido or Chromium is missing, or when a figure fails to render.
    """
    if not figures:
        return []
    try:
        import kaleido
    except ImportError:
        raise StaticFiguresError(f"kaleido is not installed. {_INSTALL_HINT}") from None
    browser, plotly_js = chromium_path(chromium), _plotly_js()

    async def render() -> list[bytes]:
        images = []
        async with kaleido.Kaleido(n=1, timeout=RENDER_TIMEOUT_S, plotlyjs=plotly_js, mathjax=False,
                                   path=str(browser)) as renderer:
            for figure in figures:
                width, height = figure_size(figure)
                images.append(await renderer.calc_fig(
                    {"data": figure.get("data", []), "layout": figure.get("layout", {})},
                    opts={"format": "png", "width": width, "height": height, "scale": SCALE}))
        return images

    try:  # in a thread of its own: the caller (nbconvert, a kernel) may already run an event loop
        with ThreadPoolExecutor(max_workers=1) as pool:
            pngs = pool.submit(asyncio.run, render()).result()
    except StaticFiguresError:
        raise
    except Exception as error:
        raise StaticFiguresError(f"kaleido could not render the figures with {browser}: "
                                 f"{type(error).__name__}: {error}") from error
    return [_palette_png(png) for png in pngs]


def add_static_images(nb: nbformat.NotebookNode, chromium: str | os.PathLike | None = None,
                      force: bool = False) -> int:
    """Add (or replace) the PNG of every plotly output whose image is missing or stale (all of them with
    ``force``); outputs keep their plotly figure and gain no ``text/html``. Returns how many images were made.

    Raises: StaticFiguresError as :func:`render_pngs` (only when an image has to be made).
    """
    stale = [output for output in plotly_outputs(nb) if force or not image_is_current(output)]
    figures = [output.data[PLOTLY_MIME] for output in stale]
    for output, figure, png in zip(stale, figures, render_pngs(figures, chromium)):
        width, height = figure_size(figure)
        output.data[PNG_MIME] = b64encode(png).decode("ascii")
        output.setdefault("metadata", nbformat.NotebookNode())
        output.metadata[PNG_MIME] = {"width": width, "height": height}
        output.metadata[STAMP_KEY] = {"digest": figure_digest(figure)}
    return len(stale)


class StaticFiguresPreprocessor(Preprocessor):
    """nbconvert preprocessor: :func:`add_static_images` on the notebook (after execution when nbconvert executes).

    Raises: StaticFiguresError when an image has to be made and kaleido or Chromium is missing.
    """

    enabled = Bool(True).tag(config=True)
    chromium = Unicode("", help=f"Chromium executable (default: ${CHROMIUM_ENV}, else {DEFAULT_CHROMIUM}).").tag(
        config=True)
    force = Bool(False, help="Render every figure again, even those whose image is current.").tag(config=True)

    def preprocess(self, nb: nbformat.NotebookNode, resources: dict) -> tuple[nbformat.NotebookNode, dict]:
        made = add_static_images(nb, self.chromium or None, self.force)
        if made:
            self.log.info("static figures: %d image(s) added", made)
        return nb, resources
