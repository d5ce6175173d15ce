"""A real browser: JupyterLab on loopback, notebook 01 run through the UI in headless Chromium.

Uses Debian's ``chromium`` (installed here with apt-get when missing) driven by Playwright's
Python package, which never downloads a browser of its own. Skipped, with the reason, only where
Chromium cannot be installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from microseg.notebook.chain import notebooks_dir

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and cannot be installed here (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"Chromium could not be installed: {' '.join(cmd)} said {done.stderr[-300:]}")
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab serving a copy of notebook 01 set to quick mode (the repository stays clean)."""
    work = tmp_path / "lab"
    work.mkdir()
    nb = nbformat.read(notebooks_dir() / "01_prepare_data.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("quick = False", "quick = True")
    nbformat.write(nb, work / "01_prepare_data.ipynb")
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", "--allow-root",
           f"--ServerApp.root_dir={work}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    yield url, work
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, again if no cell has started a minute later (a kernel that is
    still connecting on a loaded machine can drop the first request)."""
    started = ("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
               ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")
    for attempt in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(started, timeout=60_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def test_notebook_01_runs_all_cells_in_a_real_browser(jupyterlab, tmp_path):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    url, work = jupyterlab
    shot = Path(os.environ.get("MICROSEG_SCREENSHOT_DIR", tmp_path)) / "01_prepare_data.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/01_prepare_data.ipynb?reset", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.click(".jp-Notebook")
        page.keyboard.press("Escape")
        _run_all_cells(page)
        try:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                ".every(e => /\\[\\d+\\]/.test(e.textContent))",
                timeout=300_000,
            )
        except Exception:
            page.screenshot(path=str(shot.with_name("01_prepare_data-timeout.png")), full_page=True)
            prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
            pytest.fail(f"not every cell ran in 300 s; prompts {prompts}; screenshot "
                        f"{shot.with_name('01_prepare_data-timeout.png')}")
        widget_count = page.locator(".jupyter-widgets").count()
        page.keyboard.press("Control+s")
        time.sleep(2)
        page.screenshot(path=str(shot), full_page=False)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                              ":has-text('Traceback')").count()
        browser.close()
    saved = json.loads((work / "01_prepare_data.ipynb").read_text())
    error_outputs = [o for c in saved["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not error_outputs, error_outputs[0]["evalue"]
    assert errors == 0
    assert widget_count > 0, "the parameter form did not render"
    assert (work / "runs" / "demo" / "data" / "summary.json").is_file()
    assert shot.stat().st_size > 10_000
