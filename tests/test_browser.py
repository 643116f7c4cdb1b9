"""Real-browser checks: JupyterLab renders the notebooks' widgets, and moving a control redraws the figure.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``; `.ci/run` installs it) and the
``playwright`` package; no browser is ever downloaded. Screenshots go to ``test-artifacts/``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CAS_EDU_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"),
]

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_MS = int(float(os.environ.get("CAS_EDU_BROWSER_TIMEOUT_S", "600")) * 1000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free localhost port, serving a copy of the notebooks; stopped afterwards."""
    root = tmp_path_factory.mktemp("lab")
    for notebook in ("01_adversarial_examples.ipynb", "02_channel_activation_statistics.ipynb"):
        shutil.copy(ROOT / "notebooks" / notebook, root / notebook)
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--allow-root", "--LabServerApp.extension_manager=readonly"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CAS_EDU_PROFILE": "cpu"})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start; see {root / 'server.log'}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


def _open_and_run_all(browser, lab, notebook: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(RUN_TIMEOUT_MS)
    try:
        _run_all(page, lab, notebook)
    except Exception:
        _screenshot(page, f"{Path(notebook).stem}_failure.png")
        raise
    return page


def _run_all(page, lab, notebook: str) -> None:
    url, token = lab
    page.goto(f"{url}/lab/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    try:  # JupyterLab may ask which kernel to start; the default is this environment's python3
        page.locator(".jp-Dialog button:has-text('Select')").click(timeout=20_000)
    except playwright_api.TimeoutError:
        pass
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click("li.lm-Menu-item:has-text('Run All Cells')")
    # queued and running cells show [*]; the run is over when none does and the kernel is idle
    star = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => p.textContent.includes('*'))"
    page.wait_for_function(f"() => {star}", timeout=60_000)
    page.wait_for_function(
        f"() => !({star}) && document.querySelector(\".jp-Notebook-ExecutionIndicator[data-status='idle']\") !== null",
        polling=1000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Traceback")
    assert errors.count() == 0, f"{notebook} raised in the browser: {errors.first.text_content()[:800]}"


def _paths(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('d'))")


def _control(page, kind: str, label: str):
    return page.locator(kind).filter(has=page.locator("label.widget-label", has_text=re.compile(f"^{label}$"))).first


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


EPSILON_STEP = 0.01  # the ε slider's step in notebook 01 (EpsilonExplorer's default eps_step)


def test_notebook_01_eps_slider_redraws_the_figure_at_the_new_eps(browser, lab):
    """Moving the ε slider in the browser makes the kernel recompute the view and the figure redraw at the new ε.

    The figure's title names the ε of the view it draws, so the test waits for the slider's new readout to appear
    there. (The probability bars alone are no proof: when the model is ~100 % sure at both ε values they are
    drawn identically, and a redraw in progress can differ from both states for a moment.)"""
    page = _open_and_run_all(browser, lab, "01_adversarial_examples.ipynb")
    slider = _control(page, ".widget-slider", "ε")
    slider.scroll_into_view_if_needed()
    figure = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]").locator(".plotly").first
    figure.locator(".bars path").first.wait_for()
    title = figure.locator(".gtitle").first
    readout_before = slider.locator(".widget-readout").inner_text()
    page.wait_for_function("([el, want]) => (el.querySelector('.gtitle')?.textContent || '').includes(want)",
                           arg=[figure.element_handle(), f"ε = {readout_before}"], timeout=60_000)
    slider.locator(".noUi-handle").focus()
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    readout_after = f"{float(readout_before) + 8 * EPSILON_STEP:.3f}"  # the slider's last value, not one on the way
    page.wait_for_function("([el, want]) => el.textContent.trim() === want",
                           arg=[slider.locator(".widget-readout").element_handle(), readout_after], timeout=60_000)
    page.wait_for_function("([el, want]) => (el.querySelector('.gtitle')?.textContent || '').includes(want)",
                           arg=[figure.element_handle(), f"ε = {readout_after}"], timeout=60_000)
    _screenshot(page, "01_eps_slider.png")
    assert f"ε = {readout_after}" in title.text_content()
    assert figure.locator(".bars path").count() > 0, "the probability bars are drawn after the redraw"
    assert page.get_by_text("Error displaying widget").count() == 0
    page.close()


def test_notebook_02_class_picker_redraws_activation_curves(browser, lab):
    page = _open_and_run_all(browser, lab, "02_channel_activation_statistics.ipynb")
    picker = _control(page, ".widget-dropdown", "class")
    picker.scroll_into_view_if_needed()
    figure = picker.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]").locator(".plotly").first
    figure.locator(".scatterlayer path.js-line").first.wait_for()
    before = figure.locator(".scatterlayer path.js-line").evaluate_all("els => els.map(e => e.getAttribute('d'))")
    select = picker.locator("select")
    current = select.input_value()
    other = next(v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current)
    select.select_option(other)
    page.wait_for_function(
        "([el, old]) => JSON.stringify([...el.querySelectorAll('.scatterlayer path.js-line')].map(e => e.getAttribute('d'))) !== old",
        arg=[figure.element_handle(), json.dumps(before)], timeout=60_000)
    after = figure.locator(".scatterlayer path.js-line").evaluate_all("els => els.map(e => e.getAttribute('d'))")
    _screenshot(page, "02_class_picker.png")
    assert after != before
    assert page.get_by_text("Error displaying widget").count() == 0
    page.close()
