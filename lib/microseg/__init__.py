"""microseg: train, evaluate and deploy segmentation models for microscopy images.

Importing the package is cheap: heavy dependencies (torch, MONAI, Dask) are imported by the
modules that need them. Typical entry points:

>>> from microseg.data.synthetic import write_synthetic_dataset
>>> from microseg.io import pair_folder, read_image

The layers and what each may import: ``docs/architecture.md``. Modules that moved into the
notebook layer (:mod:`microseg.notebook`) or the reports (:mod:`microseg.reports`) are still
imported by their old names, with a FutureWarning naming the new place (:data:`MOVED`).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from microseg.errors import ConfigError, DataError, MicrosegError, OutputExistsError, RunOrderError

__version__ = "0.1.0"

__all__ = [
    "MOVED",
    "ConfigError",
    "DataError",
    "MicrosegError",
    "OutputExistsError",
    "RunOrderError",
    "__version__",
]

MOVED = {
    "microseg.chain": "microseg.notebook.chain",
    "microseg.colab": "microseg.notebook.colab",
    "microseg.demo": "microseg.notebook.demo",
    "microseg.parameter_names": "microseg.notebook.parameters",
    "microseg.widgets": "microseg.notebook.forms",
    "microseg.report": "microseg.reports.evaluation_report",
    "microseg.run_report": "microseg.reports.run_report",
    "microseg.run_report_html": "microseg.reports.front_page",
    "microseg.viz": "microseg.reports.figures",
    "microseg.viz_eval": "microseg.reports.evaluation_figures",
}
"""Old module name → where it is now."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name (:data:`MOVED`) as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 (the finder protocol)
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):  # noqa: D102
        return None

    def exec_module(self, module):  # noqa: D102
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} is now {new}: import it from there (the old name "
                      f"will be removed)", FutureWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
