"""Running the notebooks on Google Colab: the install cell, the Google Drive cell and the badge.

Every notebook starts with :data:`COLAB_CELL`. On Colab it installs this exact version of
microseg from its git tag, with every dependency held to the versions of
``containers/requirements.lock`` (the pins of every other environment), then asks for a session
restart if Colab had already imported an older numpy or torch. Anywhere else it does nothing, so
the same notebook runs unchanged in JupyterLab, the container, Binder and papermill.

Colab brings its own notebook server and kernel, so the cell installs the library without the
``notebooks`` extra: replacing Colab's ``ipykernel`` or ``jupyter_server`` breaks its runtime.

>>> colab_badge("notebooks/01_prepare_data.ipynb").startswith("[![Open In Colab]")
True
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from microseg import __version__
from microseg.errors import ConfigError

__all__ = [
    "COLAB_CELL",
    "DRIVE_CELL",
    "DRIVE_MARKDOWN",
    "INSTALL_REQUIREMENT",
    "LOCK_URL",
    "REPOSITORY",
    "colab_badge",
    "colab_cells",
    "refresh_colab_cells",
]

REPOSITORY = "microseg/microseg"
"""The project's GitHub repository (owner/name)."""

INSTALL_REQUIREMENT = f"microseg @ git+https://github.com/{REPOSITORY}@v{__version__}"
"""What pip installs on Colab: this version of the library, from its release tag."""

LOCK_URL = (
    f"https://raw.githubusercontent.com/{REPOSITORY}/v{__version__}/containers/requirements.lock"
)
"""The lock file of the same release, used as pip constraints on Colab."""

# Modules Colab may have imported before the install replaced them; they only reload on restart.
_RELOAD_ON_RESTART = '{"numpy", "scipy", "pandas", "matplotlib", "PIL", "torch", "skimage"}'

COLAB_CELL = f'''\
# On Google Colab: install microseg {__version__} with the project's pinned dependencies.
# Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    from importlib import metadata

    try:
        _microseg_installed = metadata.version("microseg")
    except metadata.PackageNotFoundError:
        _microseg_installed = None
    if _microseg_installed != "{__version__}":
        get_ipython().run_line_magic(
            "pip",
            "install --quiet -c {LOCK_URL}"
            " '{INSTALL_REQUIREMENT}'",
        )
        _imported_before = sorted({_RELOAD_ON_RESTART} & set(sys.modules))
        if _imported_before:
            raise SystemExit(
                "microseg is installed. Restart the session (Runtime > Restart session), then "
                "run all cells again: Colab had already imported " + ", ".join(_imported_before)
            )
'''
"""Source of the first code cell of every notebook (plain Python, no magics outside Colab)."""

DRIVE_MARKDOWN = """\
### Your own images on Colab
Colab starts with the built-in synthetic data, so nothing is needed to try the notebooks. For your
own data, either set `use_google_drive = True` in the next cell (Colab asks for permission to read
your Google Drive, which then appears under `/content/drive/MyDrive/`), or upload a zip of your
`images/` and `labels/` folders with the Files pane on the left and unzip it
(`!unzip data.zip -d /content/data`). Then give those folders in the parameters cell. Files in
`/content` disappear when the Colab session ends: keep results on Google Drive (set `run_dir` to a
folder under `/content/drive/MyDrive/`).
"""
"""Markdown cell explaining how to bring data into Colab; comes before :data:`DRIVE_CELL`."""

DRIVE_CELL = """\
# On Colab: set use_google_drive = True to read images from (and save results to) Google Drive.
import sys

use_google_drive = False
if use_google_drive and "google.colab" in sys.modules:
    from google.colab import drive

    drive.mount("/content/drive")
"""
"""Source of the code cell that mounts Google Drive on request (does nothing elsewhere)."""


def colab_badge(notebook_path: str | PurePath) -> str:
    """Markdown for an "Open in Colab" badge that opens ``notebook_path`` from the main branch.

    Only the file name is used: every notebook lives in ``notebooks/`` of the repository.

    Raises
    ------
    ConfigError
        If ``notebook_path`` does not name a ``.ipynb`` file.

    Example
    -------
    >>> colab_badge("notebooks/02_train_from_scratch.ipynb")  # doctest: +NORMALIZE_WHITESPACE
    '[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/microseg/microseg/blob/main/notebooks/02_train_from_scratch.ipynb)'
    """
    name = PurePath(notebook_path).name
    if not name.endswith(".ipynb"):
        raise ConfigError(
            f"colab_badge needs a notebook file (*.ipynb), got {str(notebook_path)!r}; "
            f"pass e.g. 'notebooks/01_prepare_data.ipynb'"
        )
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def colab_cells(notebook_path: str | PurePath) -> list[Any]:
    """The four cells that open a notebook on Colab, as ``nbformat`` v4 cells, tagged ``colab``.

    In order: the badge (markdown), :data:`COLAB_CELL`, :data:`DRIVE_MARKDOWN`,
    :data:`DRIVE_CELL`. They go right after the title cell, before the ``parameters`` cell. The
    ``colab`` tag lets a script find and replace them when the notebook is regenerated.

    Raises
    ------
    ConfigError
        If ``notebook_path`` does not name a ``.ipynb`` file.
    """
    from nbformat import v4

    cells = [
        v4.new_markdown_cell(colab_badge(notebook_path)),
        v4.new_code_cell(COLAB_CELL),
        v4.new_markdown_cell(DRIVE_MARKDOWN),
        v4.new_code_cell(DRIVE_CELL),
    ]
    for cell in cells:
        cell.metadata["tags"] = ["colab"]
    return cells


def refresh_colab_cells(notebook_path: str | PurePath) -> bool:
    """Put the current :func:`colab_cells` right after the title cell of a notebook file.

    Cells tagged ``colab`` are replaced, so running it again changes nothing. Returns True when
    the file changed. Run it after editing this module:
    ``python -c "from microseg.notebook.colab import refresh_colab_cells as r; import glob;
    [r(p) for p in glob.glob('notebooks/*.ipynb')]"``.
    """
    import nbformat

    nb = nbformat.read(str(notebook_path), as_version=4)
    kept = [c for c in nb.cells if "colab" not in c.metadata.get("tags", [])]
    cells = kept[:1] + colab_cells(notebook_path) + kept[1:]
    if [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in nb.cells]:
        return False
    nb.cells = cells
    nbformat.write(nb, str(notebook_path))
    return True
