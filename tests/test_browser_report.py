"""The run's front page in a real browser: a complete 2D run, a partial 3D run (notebooks 01 and
02) and a complete 3D run folder written by hand, each opened from disk in headless Chromium.

Checked in the browser: one row per trained model in the models table, every image decoded
(``naturalWidth > 0``), every link pointing at a file that exists, nothing fetched from the
network. Screenshots go to the test's temporary folder (or ``$MICROSEG_SCREENSHOT_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from fake_runs import make_run
from microseg.notebook.chain import list_notebooks, run_chain
from microseg.runs import RunFolder
from test_browser import CHROMIUM_FLAGS, _chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def partial_3d_run(tmp_path_factory):
    """Notebooks 01 and 02 only, on 3D data, in quick mode."""
    run_dir = tmp_path_factory.mktemp("partial") / "run3d"
    first_two = list_notebooks()[:2]
    run_chain(run_dir, quick=True, parameters={"ndim": 3}, notebooks=first_two,
              html_export=False, log=lambda _: None)
    return run_dir


@pytest.fixture
def handmade_3d_run(tmp_path):
    return make_run(tmp_path / "handmade3d", ndim=3)


def _open_report(run_dir: Path, shot: Path) -> dict:
    """Load ``run_dir/index.html`` in Chromium; what the page shows, and a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        failed, requested = [], []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.on("request", lambda request: requested.append(request.url))
        page.goto((run_dir / "index.html").resolve().as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(shot), full_page=True)
        seen = page.evaluate("""() => ({
            images: [...document.images].map(i => ({src: i.currentSrc.slice(0, 80),
                                                    width: i.naturalWidth})),
            links: [...document.querySelectorAll('a[href]')].map(a => a.href),
            models: [...document.querySelectorAll('tr.model-row')].map(r => r.dataset.model),
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
            text: document.body.innerText,
        })""")
        browser.close()
    return {**seen, "failed": failed, "requested": requested}


def _check_page(seen: dict, run_dir: Path) -> None:
    broken = [i["src"] for i in seen["images"] if not i["width"]]
    assert seen["images"] and not broken, f"images that did not load: {broken}"
    targets = [urlparse(link) for link in seen["links"]]
    assert all(t.scheme == "file" for t in targets), "the page links outside the run folder"
    missing = [t.path for t in targets if not Path(unquote(t.path)).exists()]
    assert not missing, f"links to files that do not exist: {missing}"
    root = run_dir.resolve()
    assert all(Path(unquote(t.path)).resolve().is_relative_to(root) for t in targets)
    assert not seen["failed"]
    assert all(url.startswith(("file:", "data:")) for url in seen["requested"])
    assert seen["headings"][:4] == ["Notebooks", "Models", "Diagnostics of tiled prediction",
                                    "Deployment"]


def _shot(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("MICROSEG_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"run_report_{name}.png"


def test_complete_2d_run_report_in_a_real_browser(quick_chain, tmp_path):
    run_dir, results = quick_chain
    shot = _shot(tmp_path, "2d")
    seen = _open_report(run_dir, shot)
    _check_page(seen, run_dir)
    assert sorted(seen["models"]) == RunFolder(run_dir).model_names()
    assert len(seen["models"]) >= 6, "scratch, transfer, fine-tune, baselines, correction round"
    for result in results:
        assert result.name in seen["text"]
    assert "Not run yet" not in seen["text"]
    assert "Seamless" in seen["text"] or "seamless" in seen["text"]
    assert shot.stat().st_size > 50_000


def test_partial_3d_run_report_in_a_real_browser(partial_3d_run, tmp_path):
    seen = _open_report(partial_3d_run, _shot(tmp_path, "partial_3d"))
    _check_page(seen, partial_3d_run)
    assert seen["models"] == ["unet"] == RunFolder(partial_3d_run).model_names()
    assert "3D volumes" in seen["text"] and "not evaluated yet" in seen["text"]
    for number in ("06", "07"):
        assert f"Not run yet: notebook {number}" in seen["text"]


def test_handmade_3d_run_report_in_a_real_browser(handmade_3d_run, tmp_path):
    from microseg.reports.run_report import write_run_report

    write_run_report(handmade_3d_run)
    seen = _open_report(handmade_3d_run, _shot(tmp_path, "handmade_3d"))
    _check_page(seen, handmade_3d_run)
    models = RunFolder(handmade_3d_run).model_names()
    assert sorted(set(seen["models"])) == models
    assert len(seen["models"]) == len(models) + 1, "finetune is also evaluated on target images"
    assert "3D volumes" in seen["text"] and "1 error(s)" not in seen["text"]
