"""microseg: train, evaluate and deploy segmentation models for microscopy images.

Importing the package is cheap: heavy dependencies (torch, MONAI, Dask) are imported by the
modules that need them. Typical entry points:

>>> from microseg.data.synthetic import write_synthetic_dataset
>>> from microseg.io import pair_folder, read_image
"""

from microseg.errors import ConfigError, DataError, MicrosegError, OutputExistsError, RunOrderError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "MicrosegError",
    "OutputExistsError",
    "RunOrderError",
    "__version__",
]
