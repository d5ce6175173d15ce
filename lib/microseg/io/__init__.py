"""Reading and writing image data, pairing ``images/`` with ``labels/``, Fiji ROI import.

Importing this package loads only NumPy; tifffile, Zarr, roifile and scikit-image are imported
by the functions that need them.

>>> from microseg.io import pair_folder, read_image        # doctest: +SKIP
"""

from microseg.io.images import (
    SUPPORTED_EXTENSIONS,
    VALID_AXES,
    ImageHeader,
    canonical_axes,
    canonical_shape,
    guess_axes,
    image_stem,
    is_grey_rgb,
    open_image,
    read_header,
    read_image,
    read_label,
    to_canonical,
    validate_axes,
    write_image,
)
from microseg.io.pairing import ImagePair, list_images, pair_folder
from microseg.io.roi import import_roi_folder, rois_to_labels

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "VALID_AXES",
    "ImageHeader",
    "ImagePair",
    "canonical_axes",
    "canonical_shape",
    "guess_axes",
    "image_stem",
    "import_roi_folder",
    "is_grey_rgb",
    "list_images",
    "open_image",
    "pair_folder",
    "read_header",
    "read_image",
    "read_label",
    "rois_to_labels",
    "to_canonical",
    "validate_axes",
    "write_image",
]
