"""A real browser on this machine drives JupyterLab running inside the microseg container.

``containers/test_container.sh`` (``make test-container``) builds the image, starts JupyterLab in
it through ``containers/run.sh`` and then runs this file with the server's address, token and
results folder in ``MICROSEG_LAB_*``. Without them there is no server to drive, and the test is
skipped with that reason (``make test`` deselects the ``container`` marker).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from test_browser import CHROMIUM_FLAGS, _chromium

pytestmark = [pytest.mark.container, pytest.mark.browser]



@pytest.fixture
def lab() -> dict[str, str]:
    """The server test_container.sh started: MICROSEG_LAB_URL, _TOKEN, _RESULTS, _DATA, _IMAGE."""
    if not os.environ.get("MICROSEG_LAB_URL"):
        pytest.skip("no JupyterLab in a container to drive: containers/test_container.sh starts one "
                    "and sets MICROSEG_LAB_URL")
    return {key: os.environ[f"MICROSEG_LAB_{key.upper()}"]
            for key in ("url", "token", "results", "data", "image")}


def _edit_like_a_user(notebook: Path, run_dir: str) -> None:
    """Notebook 01's parameters set to quick mode on the mounted /data, into its own run folder.

    The file keeps its owner (the container's user), who must be able to save it from the browser.
    """
    owner = notebook.stat()
    nb = nbformat.read(notebook, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for old, new in (("quick = False", "quick = True"), ("data_dir = None", 'data_dir = "/data"'),
                     ('run_dir = "runs/demo"', f'run_dir = "{run_dir}"')):
        assert old in params.source, f"notebook 01's parameters no longer hold {old!r}"
        params.source = params.source.replace(old, new)
    nbformat.write(nb, notebook)
    os.chown(notebook, owner.st_uid, owner.st_gid)


def _run_all_cells(url: str, token: str, screenshot: Path) -> tuple[int, int]:
    """Open notebook 01, Run All Cells, save, screenshot; returns (widgets, error outputs) seen."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/notebooks/01_prepare_data.ipynb?reset&token={token}",
                  timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # The execution indicator says idle before any kernel is attached: wait for the kernel's
        # name in the toolbar too, or Run All can go to no kernel on a freshly started server.
        page.wait_for_selector(".jp-KernelName:has-text('Python')", timeout=180_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
        page.click(".jp-Notebook")
        page.keyboard.press("Escape")
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
            ".every(e => /\\[\\d+\\]/.test(e.textContent))",
            timeout=600_000,
        )
        widgets = page.locator(".jupyter-widgets").count()
        page.keyboard.press("Control+s")
        time.sleep(3)
        if widgets:  # the parameter form in view; JupyterLab draws scrolled-to cells lazily
            form = page.locator(".jupyter-widgets").first
            form.scroll_into_view_if_needed()
            form.wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(2_000)
        page.screenshot(path=str(screenshot), full_page=False)
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                              ":has-text('Traceback')").count()
        browser.close()
    return widgets, errors


def test_notebook_01_runs_all_cells_in_jupyterlab_inside_the_container(lab, tmp_path):
    results = Path(lab["results"])
    notebook = results / "notebooks" / "01_prepare_data.ipynb"
    assert notebook.is_file(), "the image's entrypoint did not copy the notebooks into /results"
    _edit_like_a_user(notebook, "runs/browser")
    screenshot = Path(os.environ.get("MICROSEG_SCREENSHOT_DIR", tmp_path)) / "01_prepare_data.png"

    widgets, errors = _run_all_cells(lab["url"], lab["token"], screenshot)

    saved = json.loads(notebook.read_text())
    error_outputs = [o for c in saved["cells"] if c["cell_type"] == "code"
                     for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not error_outputs, error_outputs[0]["evalue"]
    assert all(c.get("execution_count") for c in saved["cells"] if c["cell_type"] == "code"), \
        "the saved notebook has cells that did not run"
    assert errors == 0
    assert widgets > 0, "the parameter form did not render"
    run = results / "notebooks" / "runs" / "browser"
    summary = json.loads((run / "data" / "summary.json").read_text())
    images = Path(lab["data"]) / "images"
    assert summary["data_dir"].startswith("/data")
    assert summary["n_images"] == len(list(images.iterdir()))
    environment = json.loads((run / "environment.json").read_text())
    assert environment["container_image"] == lab["image"]
    assert screenshot.stat().st_size > 10_000
