"""The Colab cells: install the pinned release on Colab only, and the "Open in Colab" badge."""

from __future__ import annotations

import shlex
import sys
import tomllib
import types
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from microseg.notebook import colab

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


class FakeIPython:
    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name: str, line: str) -> None:
        self.magics.append((name, line))


def run_cell(source: str) -> FakeIPython:
    shell = FakeIPython()
    exec(compile(source, "<cell>", "exec"), {"get_ipython": lambda: shell, "__name__": "__cell__"})
    return shell


@pytest.fixture
def on_colab(monkeypatch):
    google = types.ModuleType("google")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


@pytest.fixture
def microseg_not_installed(monkeypatch):
    real_version = metadata.version

    def version(name):
        if name == "microseg":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)


def test_install_cell_does_nothing_outside_colab():
    assert "google.colab" not in sys.modules
    assert run_cell(colab.COLAB_CELL).magics == []


def test_install_cell_skips_an_installed_matching_version(on_colab):
    assert metadata.version("microseg") == VERSION
    assert run_cell(colab.COLAB_CELL).magics == []


def test_install_cell_installs_the_tagged_release_with_the_lock_as_constraints(
    on_colab, microseg_not_installed, monkeypatch
):
    for name in ("numpy", "scipy", "pandas", "matplotlib", "PIL", "torch", "skimage"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    shell = run_cell(colab.COLAB_CELL)
    assert len(shell.magics) == 1
    magic, line = shell.magics[0]
    args = shlex.split(line)
    assert magic == "pip" and args[0] == "install"
    lock_url = args[args.index("-c") + 1]
    assert lock_url == (f"https://raw.githubusercontent.com/microseg/microseg/v{VERSION}"
                        "/containers/requirements.lock")
    assert lock_url.endswith("/" + (ROOT / "containers" / "requirements.lock").relative_to(ROOT).as_posix())
    requirement = Requirement(args[-1])
    assert (requirement.name, requirement.url) == (
        "microseg", f"git+https://github.com/microseg/microseg@v{VERSION}")
    assert not requirement.extras  # Colab keeps its own notebook server and kernel


def test_install_cell_asks_for_a_restart_when_numpy_was_already_imported(
    on_colab, microseg_not_installed
):
    assert "numpy" in sys.modules
    with pytest.raises(SystemExit, match=r"Restart the session.*numpy"):
        run_cell(colab.COLAB_CELL)


def test_drive_cell_mounts_only_when_asked_on_colab(on_colab, monkeypatch):
    mounted = []
    drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setattr(sys.modules["google.colab"], "drive", drive, raising=False)
    run_cell(colab.DRIVE_CELL)
    assert mounted == []
    run_cell(colab.DRIVE_CELL.replace("use_google_drive = False", "use_google_drive = True"))
    assert mounted == ["/content/drive"]


def test_colab_badge_links_the_notebook_on_main():
    assert colab.colab_badge(Path("notebooks") / "05_evaluate.ipynb") == (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/microseg/microseg/blob/main/notebooks/05_evaluate.ipynb)"
    )


def test_colab_badge_rejects_other_files():
    with pytest.raises(ValueError, match="notebook file"):
        colab.colab_badge("notebooks/README.md")


def test_colab_cells_are_tagged_and_in_order():
    import nbformat

    cells = colab.colab_cells("notebooks/01_prepare_data.ipynb")
    assert [c.cell_type for c in cells] == ["markdown", "code", "markdown", "code"]
    assert [c.source for c in cells[1:]] == [colab.COLAB_CELL, colab.DRIVE_MARKDOWN, colab.DRIVE_CELL]
    assert all(c.metadata["tags"] == ["colab"] for c in cells)
    cells[0].metadata["tags"].append("other")
    assert cells[1].metadata["tags"] == ["colab"]
    notebook = nbformat.v4.new_notebook(cells=cells)
    nbformat.validate(notebook)
