"""Stage 01, prepare the data: what ``notebooks/01_prepare_data.ipynb`` calls.

:func:`prepare_data` pairs ``images/`` with ``labels/``, splits per image, computes the
normalization statistics of every image, and writes ``run_dir/data/split.json`` and
``run_dir/data/summary.json``. Without a data folder it first writes the built-in synthetic
data into ``run_dir/data/synthetic/``. The user's data folder is only read. The pixel size of
the images (from their metadata, or given) is recorded in the summary and the split manifest.

Data from other tools is brought into the run folder first: :func:`import_annotations`
(QuPath, Cellpose, one mask per object, Cell Tracking Challenge, COCO, Fiji ROIs) and
:func:`convert_vendor_images` (CZI, ND2, LIF through bioio).

Running it again with the same parameters on unchanged files reuses the existing split (so
re-running a notebook, or a later notebook calling it, is harmless); anything else that would
replace an existing split raises :class:`~microseg.errors.OutputExistsError` unless
``overwrite=True``, because models trained on the old split would silently stop matching it.

Why one module of about 690 lines: it is notebook 01's whole recipe (data found, annotations
converted, checks, split, normalization, summary, figures), one function per step, as each
recipe module is one notebook's.

Example
-------
>>> summary = prepare_data("runs/demo", quick=True)        # doctest: +SKIP
>>> summary.n_images, summary.n_train                     # doctest: +SKIP
(8, 6)
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, MissingFileError, OutputExistsError
from microseg.logs import file_note, progress, summarises
from microseg.recipes.results import AnnotationImport, ConvertedImages, DataSummary, InitialLabels
from microseg.runs import RunFolder, read_json, require_folder, write_summary

__all__ = [
    "SPLIT_BY",
    "check_data",
    "convert_vendor_images",
    "data_fingerprint",
    "default_synthetic_size",
    "describe_pixel_size",
    "image_scale",
    "import_annotations",
    "import_roi_labels",
    "initial_labels_for_run",
    "object_size_summary",
    "pairs_table",
    "prepare_data",
    "reusable_folder",
    "synthetic_data_folder",
]

log = logging.getLogger(__name__)

SPLIT_BY = ("image", "region")


def default_synthetic_size(ndim: int, quick: bool = False) -> tuple[int, tuple[int, ...]]:
    """(number of images, spatial shape) of the built-in synthetic data.

    2D: 24 images of 256² (quick: 8 of 128²). 3D: 8 volumes of 48×96×96 (quick: 6 of 32×64×64).
    """
    if ndim not in (2, 3):
        raise ConfigError(f"ndim = {ndim!r}: choose 2 (images) or 3 (volumes)")
    if ndim == 2:
        return (8, (128, 128)) if quick else (24, (256, 256))
    return (6, (32, 64, 64)) if quick else (8, (48, 96, 96))


def synthetic_data_folder(run_dir: str | Path, ndim: int = 2, quick: bool = False,
                          n_synthetic: int | None = None,
                          synthetic_shape: Sequence[int] | None = None,
                          domain: str = "source", seed: int = 0) -> Path:
    """The run's built-in synthetic data folder, written if no identical one exists yet.

    Looks in ``run_dir/data/`` for a ``synthetic*`` folder made with the same parameters (its
    ``synthetic.json``) and returns it; otherwise writes a new one: ``synthetic``, or
    ``synthetic-2``, ... when that name holds other data (nothing is overwritten). Sizes default
    to :func:`default_synthetic_size`. Raises :class:`ConfigError` when ``synthetic_shape`` does
    not have ``ndim`` axes.
    """
    from microseg.data.synthetic import synthetic_record, write_synthetic_dataset

    n_default, shape_default = default_synthetic_size(ndim, quick)
    n_images = n_synthetic or n_default
    shape = tuple(int(s) for s in (synthetic_shape or shape_default))
    if len(shape) != ndim:
        raise ConfigError(f"synthetic_shape {shape} has {len(shape)} axes but ndim = {ndim}; "
                          f"give (Y, X) for 2D or (Z, Y, X) for 3D")
    record = synthetic_record(n_images, shape, domain, seed)
    folder, made_before = reusable_folder(RunFolder(run_dir).data_dir, "synthetic",
                                          "synthetic.json", record)
    if made_before:
        return folder
    return write_synthetic_dataset(folder, n_images, shape, domain=domain, seed=seed)


def reusable_folder(parent: Path, name: str, record_file: str,
                    record: dict[str, Any]) -> tuple[Path, bool]:
    """A folder ``parent/name*`` whose ``record_file`` equals ``record``, to reuse: (path, True).

    Otherwise a free folder name for new results: ``name``, else ``name-2``, ``name-3``, ...
    (path, False); nothing existing is ever overwritten. Whoever fills a new folder writes its
    record file last, so a half-written folder is never reused.
    """
    from microseg.runs import unique_name

    for folder in sorted(parent.glob(f"{name}*")):
        path = folder / record_file
        if path.is_file() and read_json(path) == record:
            log.info("reusing %s (made earlier with the same parameters)", folder)
            return folder, True
    return parent / unique_name(parent, name), False


def import_roi_labels(run_dir: str | Path, roi_dir: str | Path, images_dir: str | Path,
                      ndim: int | None = None, axes: str | None = None) -> Path:
    """Turn Fiji ROI files into label images inside the run folder; returns the label folder.

    Writes ``run_dir/data/roi_import/labels/<stem>.tif`` with
    :func:`microseg.io.import_roi_folder` (one ``<stem>.zip``/``<stem>.roi`` per image) and
    records the source in ``roi_import/source.json``; unchanged ROI files reuse earlier labels,
    changed ones go to ``roi_import-2``, ... The ROI and image folders are only read.
    """
    from microseg.io import import_roi_folder
    from microseg.runs import atomic_write_json, check_outside_inputs

    check_outside_inputs(run_dir, {"roi_dir": roi_dir, "images_dir": images_dir})
    record = {"roi_dir": str(Path(roi_dir).resolve()), "images_dir": str(Path(images_dir).resolve()),
              "ndim": ndim, "axes": axes, "roi_files": data_fingerprint(Path(roi_dir))}
    folder, made_before = reusable_folder(RunFolder(run_dir).data_dir, "roi_import",
                                          "source.json", record)
    if not made_before:
        import_roi_folder(roi_dir, images_dir, folder / "labels", ndim=ndim, axes=axes)
        atomic_write_json(folder / "source.json", record)
    return folder / "labels"


def import_annotations(run_dir: str | Path, annotation_dir: str | Path,
                       images_dir: str | Path | None = None, annotation_format: str = "auto",
                       ndim: int | None = None, axes: str | None = None) -> AnnotationImport:
    """Turn annotations made in another tool into label images inside the run folder.

    Writes ``run_dir/data/annotation_import/`` with :func:`microseg.io.import_annotations`
    (``labels/``, and ``images/`` copies for formats that hold the images) and records the
    source; unchanged annotations reuse the earlier import, changed ones go to
    ``annotation_import-2``, ... ``annotation_format``: ``"auto"`` guesses (an ambiguous folder
    raises :class:`DataError` naming the candidates) or one of
    :data:`microseg.io.ANNOTATION_FORMATS`. ``images_dir``: the images the shapes were drawn
    on (Fiji, QuPath; COCO file names). The annotation and image folders are only read.

    Returns an :class:`~microseg.recipes.results.AnnotationImport` (the fields of
    :class:`microseg.io.ImportedAnnotations`: ``format``,
    ``data_dir`` to pass to :func:`prepare_data`, ``labels_dir``, ``class_labels_dir``,
    ``class_names``, ``n_images``, ``n_objects``, ``notes``) plus ``folder`` and ``reused``.
    """
    from microseg.io import guess_annotation_format
    from microseg.io import import_annotations as import_files
    from microseg.io.annotations import NEEDS_IMAGES_DIR
    from microseg.runs import atomic_write_json, check_outside_inputs

    check_outside_inputs(run_dir, {"annotation_dir": annotation_dir, "images_dir": images_dir})
    fmt = guess_annotation_format(annotation_dir) if annotation_format == "auto" \
        else annotation_format
    if fmt in NEEDS_IMAGES_DIR and images_dir is None:
        raise ConfigError(f"{annotation_dir}: {fmt} annotations hold shapes only; set data_dir "
                          f"to the folder whose images/ they were drawn on")
    sources = [Path(annotation_dir)] + ([Path(images_dir)] if images_dir is not None else [])
    record = {"annotation_dir": str(Path(annotation_dir).resolve()), "format": fmt,
              "images_dir": None if images_dir is None else str(Path(images_dir).resolve()),
              "ndim": ndim, "axes": axes, "files": data_fingerprint(*sources)}
    folder, made_before = reusable_folder(RunFolder(run_dir).data_dir, "annotation_import",
                                          "source.json", record)
    if not made_before:
        import_files(annotation_dir, folder, fmt, images_dir=images_dir, ndim=ndim, axes=axes)
        atomic_write_json(folder / "source.json", record)
    found = read_json(folder / "import.json")
    return AnnotationImport.from_dict({**found, "folder": str(folder), "reused": made_before})


def convert_vendor_images(run_dir: str | Path, images_dir: str | Path) -> ConvertedImages | None:
    """OME-TIFF copies of vendor files (CZI, ND2, LIF, ...) in ``images_dir``, in the run folder.

    None when ``images_dir`` holds no vendor file. Else writes
    ``run_dir/data/vendor_import/images/``: every scene and time point of each vendor file as
    ``<stem>.ome.tif`` (pixel size and channel names kept, see
    :func:`microseg.io.vendor.convert_vendor_images`) and copies of the other images, so that
    the folder replaces ``images_dir``. Reused while the files are unchanged. Returns
    :class:`~microseg.recipes.results.ConvertedImages` (``data_dir``, ``images_dir``,
    ``converted``: one record per file, with the bioio reader used; ``reused``). Raises :class:`~microseg.io.vendor.FormatsExtraMissing` naming
    ``pip install 'microseg[formats]'`` when bioio is not installed.
    """
    from microseg.io import list_images
    from microseg.io.vendor import convert_vendor_images as convert
    from microseg.io.vendor import vendor_files
    from microseg.runs import atomic_write_json, check_outside_inputs

    images_dir = Path(images_dir)
    check_outside_inputs(run_dir, {"images_dir": images_dir})
    if not vendor_files(images_dir):
        return None
    record = {"images_dir": str(images_dir.resolve()), "files": data_fingerprint(images_dir)}
    folder, made_before = reusable_folder(RunFolder(run_dir).data_dir, "vendor_import",
                                          "source.json", record)
    if not made_before:
        converted = convert(images_dir, folder / "images")
        for path in list_images(images_dir):
            if path.is_dir():
                shutil.copytree(path, folder / "images" / path.name)
            else:
                shutil.copy2(path, folder / "images" / path.name)
        atomic_write_json(folder / "conversion.json", converted)
        atomic_write_json(folder / "source.json", record)
    return ConvertedImages(data_dir=str(folder), images_dir=str(folder / "images"),
                           converted=read_json(folder / "conversion.json"), reused=made_before)


def initial_labels_for_run(run_dir: str | Path, images_dir: str | Path, ndim: int | None = None,
                           axes: str | None = None,
                           labels_dir: str | Path | None = None) -> InitialLabels:
    """Automatic initial labels of every image, written into the run folder to correct by hand.

    Writes ``run_dir/data/initial_labels/labels/<stem>.tif`` with
    :func:`microseg.data.initial_labels.write_initial_labels` (reused while the images are
    unchanged; else ``initial_labels-2``, ...). When ``labels_dir`` holds annotations for the
    same stems, reports how well the initial labels cover them.

    Returns :class:`~microseg.recipes.results.InitialLabels` (``folder``, ``n_images``,
    ``reused``, ``foreground_dice``): the label folder, the
    number of label images, whether they were made earlier, and the mean foreground Dice
    against ``labels_dir`` (None without annotations).
    """
    from microseg.data.initial_labels import write_initial_labels
    from microseg.runs import atomic_write_json, check_outside_inputs

    check_outside_inputs(run_dir, {"images_dir": images_dir, "labels_dir": labels_dir})
    record = {"images_dir": str(Path(images_dir).resolve()), "ndim": ndim, "axes": axes,
              "images": data_fingerprint(Path(images_dir))}
    folder, made_before = reusable_folder(RunFolder(run_dir).data_dir, "initial_labels",
                                          "source.json", record)
    if not made_before:
        write_initial_labels(images_dir, folder / "labels", ndim=ndim, axes=axes)
        atomic_write_json(folder / "source.json", record)
    written = sorted((folder / "labels").glob("*.tif"))
    return InitialLabels(folder=str(folder / "labels"), n_images=len(written), reused=made_before,
                         foreground_dice=_mean_foreground_dice(written, labels_dir, ndim))


def _mean_foreground_dice(initial: list[Path], labels_dir: str | Path | None,
                          ndim: int | None) -> float | None:
    from microseg.io import image_stem, list_images, read_label
    from microseg.metrics import pixel_metrics

    if labels_dir is None or not Path(labels_dir).is_dir():
        return None
    truth = {image_stem(p): p for p in list_images(labels_dir)}
    scores = []
    for path in (p for p in initial if image_stem(p) in truth):
        found = read_label(path, ndim=ndim) > 0
        wanted = read_label(truth[image_stem(path)], ndim=ndim) > 0
        dice = pixel_metrics(found.astype(np.uint8), wanted.astype(np.uint8), 2)[1].dice
        scores.append(1.0 if dice is None else dice)
    return round(float(np.mean(scores)), 4) if scores else None


@summarises(lambda a: Path(a["run_dir"]) / "data")
def prepare_data(run_dir: str | Path, data_dir: str | Path | None = None, ndim: int = 2,
                 task: str = "instance", axes: str | None = None,
                 fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                 quick: bool = False, normalization: Any = None, n_synthetic: int | None = None,
                 synthetic_shape: Sequence[int] | None = None, domain: str = "source",
                 overwrite: bool = False, labels_dir: str | Path | None = None,
                 split_by: str = "image",
                 pixel_size: float | Sequence[float] | None = None,
                 allow_empty_labels: bool = False,
                 n_classes: int | None = None) -> DataSummary:
    """Pair, split and normalize a dataset; write the split manifest and the data summary.

    Parameters
    ----------
    run_dir: the experiment's run folder; writes ``data/split.json`` and ``data/summary.json``.
    data_dir: folder with ``images/`` and ``labels/`` (same file names); None: built-in
        synthetic data (see :func:`synthetic_data_folder`), written into the run folder.
    ndim: 2 (images) or 3 (volumes).
    task: ``"instance"``, ``"binary"`` or ``"semantic"`` (label values are class ids).
    axes: axes of the image files as stored, e.g. ``"YXC"``; None: metadata or a guess.
    fractions: (train, val, test) shares, summing to 1.
    seed: seeds the split and the synthetic data.
    quick: smaller synthetic data (a smoke run); no effect on user data.
    normalization: a :class:`~microseg.transforms.normalization.PercentileNormalization` (or
        its dict); None: defaults (1st and 99.8th percentile of each whole image).
    n_synthetic, synthetic_shape, domain: size and appearance (``"source"``/``"target"``) of
        the synthetic data.
    overwrite: replace an existing split made with other parameters or from changed files.
    labels_dir: the label folder if not ``data_dir/labels`` (e.g. labels imported from ROIs).
    split_by: ``"image"`` (whole images to each set) or ``"region"`` (every image cut into
        training, validation and test regions along its longest axis; for 1–2 large images).
    pixel_size: µm per pixel, one number or one per spatial axis (ZYX order); None: from the
        images' metadata (OME-TIFF, ImageJ, OME-Zarr; see :func:`microseg.io.pixel_size`).
    allow_empty_labels: accept label images that hold no object (images known to show none);
        by default they stop the split, as they usually are missing annotations.
    n_classes: for ``task="semantic"``, the number of classes, background included (label
        values 0..n_classes-1); None: from the labels, which then must not look like instance
        labels nor leave more class ids unused than used (see :mod:`microseg.data.checks`).

    Returns a :class:`~microseg.recipes.results.DataSummary` (``run_dir/data/summary.json``
    holds its dict): ``n_images``, ``n_train``,
    ``n_val``, ``n_test`` (entries), ``ndim``, ``task``, ``axes``, ``n_channels``,
    ``split_manifest``, ``n_classes``, ``class_names``, ``class_frequencies`` (pixel share of
    each class over all labels), ``data_dir``, ``labels_dir``, ``synthetic``, ``split_by``,
    ``spatial_shapes``, ``empty_label_images``, ``normalization``, ``pixel_size`` (µm per
    pixel, ZYX order, or None), ``pixel_size_unit``, ``pixel_size_source`` (``"parameter"``,
    the metadata kind, or None), ``pixel_size_notes``, ``channel_names``, ``parameters``,
    ``data_fingerprint``, ``seconds``, and ``reused`` (True when an identical earlier split was
    kept).

    Raises
    ------
    OutputExistsError: a split exists that was made with other parameters or other files, and
        ``overwrite`` is false. ConfigError: invalid parameters, or ``run_dir`` inside the data
        folder. DataError: problems with the data (every problem listed: unreadable or
        unpaired files, NaN or infinite pixels, label images without objects, semantic class
        ids with gaps, labels of the wrong kind for ``task``; see :mod:`microseg.data.checks`),
        or a split whose summary is damaged (pass ``overwrite=True``).
    """
    parameters = _parameters(locals())
    start = time.perf_counter()
    run = RunFolder(run_dir)
    previous = _previous_summary(run, parameters, overwrite)
    if data_dir is None:
        folder = synthetic_data_folder(run_dir, ndim, quick, n_synthetic, synthetic_shape,
                                       domain, seed)
    else:
        folder = Path(data_dir)
    labels = Path(labels_dir) if labels_dir is not None else folder / "labels"
    fingerprint = data_fingerprint(folder / "images", labels)
    if previous is not None and previous.get("data_fingerprint") == fingerprint:
        log.info("%s already holds this split; reusing it", run.split_manifest)
        return DataSummary.from_dict({**previous, "reused": True})
    if previous is not None and not overwrite:
        raise OutputExistsError(f"{run.split_manifest} was made from files that have changed "
                                f"since in {folder}; pass overwrite=True to split again")
    summary = _split_and_save(run, folder, labels, parameters)
    summary.update(data_fingerprint=fingerprint, seconds=round(time.perf_counter() - start, 3))
    write_summary(run.data_dir, summary)
    return DataSummary.from_dict({**summary, "reused": False})


def _parameters(given: dict[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`prepare_data`, checked and JSON-ready (paths resolved)."""
    from microseg.data.split import check_fractions
    from microseg.transforms.targets import check_task

    run = RunFolder(require_folder(given["run_dir"]))
    check_task(given["task"])
    seed = given["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed = {given['seed']!r}: expected a whole number ≥ 0")
    default_synthetic_size(given["ndim"], given["quick"])
    if given["split_by"] not in SPLIT_BY:
        raise ConfigError(f"split_by = {given['split_by']!r}; choose one of {SPLIT_BY}")
    folders = {key: None if given[key] is None else str(Path(given[key]).resolve())
               for key in ("data_dir", "labels_dir")}
    for folder in folders.values():
        if folder is not None:
            _refuse_run_inside(run, Path(folder))
    shape = given["synthetic_shape"]
    size = _pixel_size_parameter(given["pixel_size"], given["ndim"])
    # only when given, so that splits made before this parameter existed stay reusable
    extra = {} if size is None else {"pixel_size": size}
    if given["allow_empty_labels"]:
        extra["allow_empty_labels"] = True
    if given["n_classes"] is not None:
        extra["n_classes"] = _n_classes_parameter(given["n_classes"], given["task"])
    return {**folders, **extra, "ndim": given["ndim"], "task": given["task"],
            "axes": given["axes"],
            "fractions": list(check_fractions(given["fractions"])), "seed": given["seed"],
            "quick": given["quick"], "normalization": _normalization(given["normalization"]),
            "n_synthetic": given["n_synthetic"], "domain": given["domain"],
            "synthetic_shape": None if shape is None else [int(s) for s in shape],
            "split_by": given["split_by"]}


def _n_classes_parameter(value: Any, task: str) -> int:
    if task != "semantic" or isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigError(f"n_classes = {value!r}: give it only for task='semantic', as a whole "
                          f"number of at least 2 (background included); task is {task!r}")
    return value


def _pixel_size_parameter(value: Any, ndim: int) -> list[float] | None:
    if value is None:
        return None
    values = [float(value)] * ndim if isinstance(value, (int, float)) else \
        [float(v) for v in value]
    if len(values) != ndim or min(values) <= 0:
        raise ConfigError(f"pixel_size = {value!r}: give µm per pixel as one positive number or "
                          f"{ndim} (ZYX order), or None to read it from the images")
    return values


def _normalization(value: Any) -> dict[str, Any]:
    from microseg.transforms.normalization import PercentileNormalization

    if value is None:
        value = PercentileNormalization()
    elif isinstance(value, dict):
        value = PercentileNormalization.from_dict(value)
    if not isinstance(value, PercentileNormalization):
        raise ConfigError(f"normalization: expected a PercentileNormalization, a dict or None, "
                          f"found {type(value).__name__}")
    return value.to_dict()


def _refuse_run_inside(run: RunFolder, folder: Path) -> None:
    root = run.root.resolve()
    if root == folder or folder in root.parents:
        raise ConfigError(f"run folder {run.root} is inside the data folder {folder}, which is "
                          f"never written to; choose a run folder elsewhere, e.g. runs/<name>")


def _previous_summary(run: RunFolder, parameters: dict[str, Any],
                      overwrite: bool) -> dict[str, Any] | None:
    """The summary of an existing split made with the same parameters; None if there is none.

    Raises OutputExistsError, listing what differs, for a split made with other parameters
    (unless ``overwrite``).
    """
    if not run.split_manifest.is_file():
        return None
    previous = _readable_summary(run, overwrite)
    if previous is None:
        return None
    old = previous.get("parameters", {})
    if old == parameters:
        return previous
    if not overwrite:
        changed = sorted(k for k in set(old) | set(parameters) if old.get(k) != parameters.get(k))
        details = ", ".join(f"{k}: {old.get(k)!r} → {parameters.get(k)!r}" for k in changed)
        raise OutputExistsError(
            f"{run.split_manifest} already holds a split made with other parameters "
            f"({details or 'unknown parameters'}); models trained on it would no longer match. "
            f"Use another run_dir, or pass overwrite=True to replace the split")
    return None


def _readable_summary(run: RunFolder, overwrite: bool) -> dict[str, Any] | None:
    """The summary beside an existing split; None when it is missing or damaged and
    ``overwrite`` (an interrupted preparation, e.g. a full disk: split again), else DataError."""
    path = run.data_dir / "summary.json"
    try:
        return read_json(path)
    except (DataError, MissingFileError) as err:
        if overwrite:
            log.warning("%s; splitting again (overwrite=True)", err)
            return None
        raise DataError(f"{run.split_manifest} has no readable summary beside it ({err}): an "
                        f"earlier preparation did not finish. Pass overwrite=True to split "
                        f"again, or use another run_dir") from None


def data_fingerprint(*folders: Path) -> str:
    """A hash of the names, sizes and modification times of every file under ``folders``.

    Changes when a file is added, removed, replaced or edited; reading pixels is not needed.
    """
    digest = hashlib.sha256()
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else []
        for path in files:
            stat = path.stat()
            # fsencode: file names that are not UTF-8 hash as the bytes they are on disk.
            digest.update(os.fsencode(path.resolve()) + f"|{stat.st_size}|{stat.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()


def _split_and_save(run: RunFolder, folder: Path, labels: Path,
                    parameters: dict[str, Any]) -> dict[str, Any]:
    from microseg.transforms.targets import class_names

    ndim, task = parameters["ndim"], parameters["task"]
    pairs = check_data(folder, ndim=ndim, axes=parameters["axes"], labels_dir=labels)
    statistics = _image_statistics(pairs, parameters)
    scale = image_scale(pairs, parameters["axes"], ndim, parameters.get("pixel_size"))
    manifest = _manifest(folder, pairs, statistics, parameters)
    manifest.pixel_size = scale["pixel_size"]
    manifest.save(run.split_manifest)
    counts = statistics["class_counts"]
    names = class_names(task, manifest.n_classes)
    return {
        "n_images": len(pairs), "n_train": len(manifest.train), "n_val": len(manifest.val),
        "n_test": len(manifest.test), "ndim": ndim, "task": task, "axes": manifest.axes,
        "n_channels": manifest.n_channels, "split_manifest": str(run.split_manifest.resolve()),
        "n_classes": manifest.n_classes, "class_names": names,
        "class_frequencies": {n: round(float(c) / max(1.0, float(counts.sum())), 6)
                              for n, c in zip(names, counts, strict=True)},
        "data_dir": str(folder.resolve()), "labels_dir": str(labels.resolve()),
        "synthetic": parameters["data_dir"] is None, "split_by": parameters["split_by"],
        "spatial_shapes": sorted({tuple(p.spatial_shape) for p in pairs}),
        "empty_label_images": statistics["empty"], **scale, **statistics["object_sizes"],
        "normalization": parameters["normalization"], "parameters": parameters,
    }


def image_scale(pairs: Sequence[Any], axes: str | None, ndim: int | None,
                given: Sequence[float] | None = None) -> dict[str, Any]:
    """The pixel size of a data set: ``given``, else the one all images' metadata agree on.

    Returns ``{"pixel_size": [µm, ...] (ZYX order) or None, "pixel_size_unit": "µm",
    "pixel_size_source": "parameter", the metadata kind or None, "pixel_size_notes": [...],
    "channel_names": [...]}``; images that disagree or lack a size give None and a note.
    """
    from microseg.io import image_metadata

    found = [image_metadata(pair.image, axes=axes, ndim=ndim) for pair in pairs]
    names = list(found[0].channel_names) if found else []
    sizes = {f.pixel_size for f in found}
    notes = sorted({note for f in found for note in f.notes})
    if given is not None:
        size, source = [float(v) for v in given], "parameter"
    elif len(sizes) == 1 and None not in sizes:
        size, source = list(next(iter(sizes))), found[0].source
    else:
        size, source = None, None
        if len(sizes - {None}) > 1:
            notes.append(f"the images have different pixel sizes: "
                         f"{', '.join(str(s) for s in sorted(sizes - {None}))[:200]}")
        elif None in sizes and len(sizes) > 1:
            notes.append("some images have a pixel size in their metadata, others not")
    return {"pixel_size": size, "pixel_size_unit": "µm", "pixel_size_source": source,
            "pixel_size_notes": notes, "channel_names": names}


def describe_pixel_size(summary: dict[str, Any]) -> str:
    """One line for a person: the pixel size a data summary holds, and where it came from."""
    size = summary.get("pixel_size")
    if not size:
        notes = "; ".join(summary.get("pixel_size_notes") or [])
        return ("pixel size: not found in the image files" + (f" ({notes})" if notes else "")
                + "; object sizes stay in pixels. Set pixel_size (µm per pixel) in the "
                  "parameters to give it")
    names = "ZYX"[-len(size):]
    source = summary.get("pixel_size_source")
    origin = "given as a parameter" if source == "parameter" else f"from the image metadata " \
        f"({source})"
    return (f"pixel size: {' × '.join(f'{v:g}' for v in size)} µm ({' × '.join(names)}), "
            f"{origin}")


def _image_statistics(pairs: list[Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Per image: normalization statistics; over all: class pixel counts, empty label images.

    Raises one DataError listing images with NaN or infinite pixels and label images that do
    not fit the task (see :mod:`microseg.data.checks`).
    """
    from microseg.data.checks import check_labels, nonfinite_problem, summarize_label
    from microseg.io import read_image, read_label
    from microseg.transforms.normalization import PercentileNormalization, percentile_statistics
    from microseg.transforms.scale import object_diameters
    from microseg.transforms.targets import class_counts, labels_to_target

    config = PercentileNormalization.from_dict(parameters["normalization"])
    task = parameters["task"]
    low_high, summaries, counts, problems, diameters = {}, [], [], [], {}
    for pair in progress(pairs, "checking images and labels", "image"):
        image = read_image(pair.image, axes=parameters["axes"], ndim=parameters["ndim"])
        problems += [p for p in [nonfinite_problem(image, pair.image)] if p]
        low_high[pair.stem] = percentile_statistics(image, config)
        label = read_label(pair.label, ndim=parameters["ndim"])
        summaries.append(summarize_label(pair.stem, pair.label, label))
        if task == "instance":
            diameters[pair.stem] = object_diameters(label)
        if task != "semantic":
            target = labels_to_target(label, task)
            counts.append(class_counts(target, int(target.max()) + 1 if target.size else 1))
    check_labels(summaries, task, parameters.get("allow_empty_labels", False), problems,
                 parameters.get("n_classes"))
    empty = [s.stem for s in summaries if s.ids.size == 0]
    for stem in empty:
        file_note(log, "empty-labels", stem, "its label image holds no object (allowed)",
                  "label images without any object (allowed)", level=logging.WARNING)
    total = (_semantic_counts(summaries, parameters.get("n_classes")) if task == "semantic"
             else _summed(counts, task))
    return {"low_high": low_high, "n_classes": int(total.size), "class_counts": total,
            "empty": empty, "object_sizes": object_size_summary(diameters)}


def object_size_summary(diameters: dict[str, np.ndarray]) -> dict[str, Any]:
    """Median equivalent diameter (pixels) over all objects, its 10th and 90th percentiles,
    and the median of every image: what notebook 01 shows and training resamples by
    (:mod:`microseg.transforms.scale`). Empty for data without instance labels.

    >>> object_size_summary({"a": np.array([10.0, 20.0]), "b": np.array([30.0])})
    {'object_diameter': 20.0, 'object_diameter_p10': 12.0, 'object_diameter_p90': 28.0, \
'object_diameter_per_image': {'a': 15.0, 'b': 30.0}}
    """
    every = np.concatenate(list(diameters.values())) if diameters else np.zeros(0)
    if not every.size:
        return {}
    return {"object_diameter": float(np.median(every)),
            "object_diameter_p10": float(np.percentile(every, 10)),
            "object_diameter_p90": float(np.percentile(every, 90)),
            "object_diameter_per_image": {stem: float(np.median(d)) for stem, d in
                                          diameters.items() if d.size}}


def _summed(counts: list[np.ndarray], task: str) -> np.ndarray:
    from microseg.transforms.targets import n_classes_for

    total = np.zeros(n_classes_for(task), np.int64)
    for c in counts:
        total[: c.size] += c
    return total


def _semantic_counts(summaries: list[Any], n_classes: int | None) -> np.ndarray:
    """Pixels per class id 0..K-1 (at least 2 classes, or ``n_classes``), from the summaries."""
    largest = max((int(s.ids[-1]) for s in summaries if s.ids.size), default=0)
    total = np.zeros(n_classes or max(2, largest + 1), np.int64)
    for s in summaries:
        np.add.at(total, s.ids, s.counts)
        total[0] += s.pixels - int(s.counts.sum())
    return total


def _manifest(folder: Path, pairs: list[Any], statistics: dict[str, Any],
              parameters: dict[str, Any]) -> Any:
    from microseg.data.split import SplitManifest, manifest_entry

    by_stem = {pair.stem: pair for pair in pairs}
    entries = {subset: [manifest_entry(stem, by_stem[stem].image, by_stem[stem].label,
                                       *statistics["low_high"][stem], region)
                        for stem, region in chosen]
               for subset, chosen in _subsets(pairs, parameters).items()}
    ndim = parameters["ndim"]
    return SplitManifest(
        data_dir=str(folder.resolve()), ndim=ndim, axes="CZYX" if ndim == 3 else "CYX",
        n_channels=pairs[0].n_channels, task=parameters["task"],
        n_classes=statistics["n_classes"], normalization=parameters["normalization"],
        input_axes=parameters["axes"], **entries)


def _subsets(pairs: list[Any], parameters: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    """(stem, region) per subset: whole images (region None), or regions of every image."""
    from microseg.data.split import SUBSETS, split_pairs, split_regions

    fractions = parameters["fractions"]
    if parameters["split_by"] == "image":
        sets = split_pairs([pair.stem for pair in pairs], fractions, parameters["seed"])
        return {subset: [(stem, None) for stem in sets[subset]] for subset in SUBSETS}
    chosen: dict[str, list[tuple[str, Any]]] = {subset: [] for subset in SUBSETS}
    for pair in pairs:
        for subset, regions in split_regions(pair.spatial_shape, fractions).items():
            chosen[subset] += [(pair.stem, region) for region in regions]
    return chosen


def pairs_table(pairs: Sequence[Any]) -> Any:
    """A ``pandas.DataFrame`` of image/label pairs: stem, files, spatial shape, channels, dtype."""
    import pandas as pd

    return pd.DataFrame([{"stem": p.stem, "image": p.image.name,
                          "label": p.label.name if p.label is not None else None,
                          "spatial_shape": tuple(p.spatial_shape), "n_channels": p.n_channels,
                          "dtype": p.dtype} for p in pairs])


def check_data(data_dir: str | Path, ndim: int | None = None, axes: str | None = None,
               labels_dir: str | Path | None = None) -> list[Any]:
    """Pair ``data_dir/images`` with its labels and check every pair (nothing is written).

    Returns the :class:`~microseg.io.ImagePair` list; raises one
    :class:`~microseg.errors.DataError` listing every problem (see
    :func:`microseg.io.pair_folder`).
    """
    from microseg.io import pair_folder

    labels = Path(labels_dir if labels_dir is not None else Path(data_dir) / "labels").resolve()
    pairs = pair_folder(data_dir, ndim=ndim, axes=axes, labels=str(labels))
    if not pairs:
        raise DataError(f"{data_dir}: no image/label pairs found")
    return pairs
