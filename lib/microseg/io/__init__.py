"""Reading and writing image data, pairing ``images/`` with ``labels/``, and the formats of
the tools microscopists use.

- images and labels: :mod:`~microseg.io.images` (TIFF, PNG, NumPy, Zarr, OME-Zarr),
  :mod:`~microseg.io.pairing`; pixel size and channel names: :mod:`~microseg.io.ome`;
  vendor files (CZI, ND2, LIF) through bioio: :mod:`~microseg.io.vendor`;
- annotations in: :mod:`~microseg.io.annotations` (format guess, one import call) over
  :mod:`~microseg.io.roi` (Fiji), :mod:`~microseg.io.qupath`, :mod:`~microseg.io.cellpose`,
  :mod:`~microseg.io.masks` (one mask per object), :mod:`~microseg.io.ctc`,
  :mod:`~microseg.io.coco`;
- results out: :mod:`~microseg.io.tables` (object tables), :mod:`~microseg.io.label_export`
  (Fiji ROI sets via :mod:`~microseg.io.roi_export`, QuPath GeoJSON, OME-Zarr with NGFF labels
  via :mod:`~microseg.io.ngff`).

Importing this package loads only NumPy; tifffile, Zarr, roifile, scikit-image, pandas and
bioio are imported by the functions that need them.

>>> from microseg.io import pair_folder, read_image
"""

from microseg.io.annotations import (
    ANNOTATION_FORMATS,
    ImportedAnnotations,
    guess_annotation_format,
    import_annotations,
)
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
from microseg.io.label_export import LABEL_EXPORT_FORMATS, export_labels, export_prediction_labels
from microseg.io.ome import ImageMetadata, image_metadata, pixel_size, write_ome_tiff
from microseg.io.pairing import ImagePair, list_images, pair_folder
from microseg.io.roi import import_roi_folder, rois_to_labels
from microseg.io.tables import (
    object_table,
    write_object_table,
    write_object_tables,
    write_prediction_tables,
)

__all__ = [
    "ANNOTATION_FORMATS",
    "ImageHeader",
    "ImageMetadata",
    "ImagePair",
    "ImportedAnnotations",
    "LABEL_EXPORT_FORMATS",
    "SUPPORTED_EXTENSIONS",
    "VALID_AXES",
    "canonical_axes",
    "canonical_shape",
    "export_labels",
    "export_prediction_labels",
    "guess_annotation_format",
    "guess_axes",
    "image_metadata",
    "image_stem",
    "import_annotations",
    "import_roi_folder",
    "is_grey_rgb",
    "list_images",
    "object_table",
    "open_image",
    "pair_folder",
    "pixel_size",
    "read_header",
    "read_image",
    "read_label",
    "rois_to_labels",
    "to_canonical",
    "validate_axes",
    "write_image",
    "write_object_table",
    "write_object_tables",
    "write_ome_tiff",
    "write_prediction_tables",
]
