"""Human in the loop: predict new images, let a person correct the labels, retrain on them.

One round (``k`` = 1, 2, ...):

1. :func:`write_correction_round` predicts unlabelled images with the current model and writes,
   into a NEW folder ``run_dir/corrections/round_<k>/``::

       images/<name>        copies of the images (the originals are never touched)
       labels/<stem>.tif    the predictions as editable label images: objects 1..n (instance
                            task) or class ids (binary/semantic), uint16
       qupath/<stem>.geojson  the same objects for QuPath (drag onto the image, edit, export
                            over the file: File > Export objects as GeoJSON)
       fiji/<stem>.zip      the same objects as a Fiji ROI set (ROI Manager: edit, then
                            More > Save... over the file)
       predicted/<stem>.tif the same predictions, kept to measure how much was corrected
       README.txt           how to correct the labels in napari, Fiji or QuPath
       round.json           which images, from where, predicted by which model, and a
                            fingerprint of every file written, to tell which one was corrected

2. A person corrects one of the three per image (or :func:`simulate_corrections` copies the true
   labels into ``labels/``, for headless runs and tests).
3. :func:`read_corrections` takes, per image, the file that changed (a corrected GeoJSON or ROI
   set is turned into ``corrected/<stem>.tif``), pairs the images with them
   (:func:`microseg.io.pair_folder`) and measures the share of pixels changed;
   :func:`add_corrections_to_split` returns a split
   manifest whose training set also holds the corrected images (saved as the round's
   ``split.json``); retraining (fine-tuning) on it is the recipe's job.

Rounds are recorded as dicts (images added, quality before and after) and written to
``run_dir/corrections/rounds.csv`` by :func:`write_rounds_csv`.

Example
-------
>>> round_ = write_correction_round("runs/demo", 1, model, config, image_paths,
...                                 task="instance", normalization=norm)      # doctest: +SKIP
>>> simulate_corrections(round_, "data/pool/labels")                           # doctest: +SKIP
>>> pairs, changed = read_corrections(round_)                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import DataError

__all__ = [
    "CorrectionRound",
    "README_TEXT",
    "add_corrections_to_split",
    "correction_round_dir",
    "read_corrections",
    "simulate_corrections",
    "write_correction_round",
    "write_rounds_csv",
]

log = logging.getLogger(__name__)

README_TEXT = """\
{title}
{underline}

The model predicted the {count} image(s) in images/; its labels are in labels/, one file per
image with the same name: {what}.
Correct the files in labels/ in place, save them under the same names, then continue the
notebook (notebooks/04_fine_tune.ipynb). The originals of your images were not changed;
predicted/ keeps the uncorrected predictions.

In napari
  1. Drag an image from images/ into napari, then its file from labels/ ("Labels" layer).
  2. Select the labels layer. Paint (brush, "P") with a new label id to add or extend an object,
     erase ("E", or paint with 0) to remove pixels, fill ("F") to relabel a whole object.
     Press "M" to pick an unused id for a new object.
  3. Fix merged objects by painting one part with a new id; fix split objects by filling both
     parts with one id. Every object needs its own id; 0 is background.
  4. File > Save Selected Layer(s)... over the same labels/<name>.tif.

In QuPath (instance labels)
  1. Open the image from images/, then drag qupath/<name>.geojson onto it: one annotation per
     object, named "object <id>".
  2. Edit, add (brush, wand, polygon) or delete annotations; every annotation is one object.
  3. File > Export objects as GeoJSON (all objects) over qupath/<name>.geojson. Leave
     labels/<name>.tif unchanged.

In Fiji with ROIs (instance labels)
  1. Open the image, then fiji/<name>.zip (File > Open): the ROI Manager lists one ROI per
     object.
  2. Edit, add (Add [t]) or delete ROIs; every area ROI is one object (in a stack, ROIs named
     "object <id> z<k>" on several slices are one object).
  3. ROI Manager > More > Save... over fiji/<name>.zip. Leave labels/<name>.tif unchanged.

In Fiji with the label image
  1. Open the image, then labels/<name>.tif (Image > Lookup Tables > glasbey to see objects).
  2. Edit the label image with the pencil/brush using a new value per object (set the value
     with the colour picker or Edit > Options > Colors), or draw ROIs and fill them
     (Edit > Fill) with an unused id; fill with 0 to delete.
  3. Keep it 16-bit, one channel (Image > Type > 16-bit), same size as the image, and save it
     as TIFF over labels/<name>.tif.

Correct each image in one place only: labels/, qupath/ or fiji/. Labels must stay whole
numbers >= 0 with the image's size. Images you cannot fix: delete both images/<name> and
labels/<name>.tif, and they are left out of training.
"""

_TASK_WHAT = {
    "instance": "0 background, 1, 2, ... one id per object",
    "binary": "0 background, 1 object",
    "semantic": "0 background, 1, 2, ... one id per class",
}


@dataclasses.dataclass(frozen=True)
class CorrectionRound:
    """One round's folder and what is in it.

    index: the round number k (from 1). folder: ``run_dir/corrections/round_<k>``.
    stems: the images' names. sources: the original image paths (read, never written).
    task: the data's task; it decides what the label values mean.
    """

    index: int
    folder: Path
    stems: tuple[str, ...]
    sources: tuple[str, ...]
    task: str

    @property
    def images_dir(self) -> Path:
        """Copies of the images to correct."""
        return self.folder / "images"

    @property
    def labels_dir(self) -> Path:
        """The label images to correct in place."""
        return self.folder / "labels"

    @property
    def predicted_dir(self) -> Path:
        """The uncorrected predictions, kept for comparison."""
        return self.folder / "predicted"

    @property
    def qupath_dir(self) -> Path:
        """The predictions as QuPath GeoJSON, ``<stem>.geojson``, to correct in QuPath."""
        return self.folder / "qupath"

    @property
    def fiji_dir(self) -> Path:
        """The predictions as Fiji ROI sets, ``<stem>.zip``, to correct in Fiji."""
        return self.folder / "fiji"

    @property
    def corrected_dir(self) -> Path:
        """Labels read back from corrected GeoJSON or ROI sets (with the unchanged others)."""
        return self.folder / "corrected"

    @property
    def readme(self) -> Path:
        """How to correct the labels."""
        return self.folder / "README.txt"


def correction_round_dir(run_dir: str | Path, index: int) -> Path:
    """``run_dir/corrections/round_<index>``."""
    return Path(run_dir) / "corrections" / f"round_{int(index)}"


def write_correction_round(
    run_dir: str | Path,
    index: int,
    model: Any,
    image_paths: Sequence[str | Path],
    ndim: int | None = None,
    axes: str | None = None,
    overwrite: bool = False,
) -> CorrectionRound:
    """Predict ``image_paths`` and write round ``index``'s folder (see the module docstring).

    Parameters
    ----------
    run_dir : the run folder; the round goes into ``run_dir/corrections/round_<index>/``.
    index : round number, from 1.
    model : the current :class:`~microseg.models.TrainedModel`: its task (``"instance"``:
        objects via seeded watershed; ``"binary"``/``"semantic"``: classes), its input
        normalization (percentiles of each whole image) and its post-processing are used.
    image_paths : unlabelled image files (any format :func:`microseg.io.read_image` reads).
    ndim, axes : how to read the images (as in :func:`microseg.io.read_image`); ``axes`` None:
        the model's input axes.
    overwrite : write into a round folder that already holds files (its files are replaced).

    Returns
    -------
    CorrectionRound.

    Raises
    ------
    OutputExistsError
        If the round folder already holds files and ``overwrite`` is false (earlier corrections
        are never replaced silently).
    DataError
        For no images, unreadable images, or two images with the same name.
    """
    from microseg.io import image_stem
    from microseg.runs import atomic_write_json, atomic_write_text, create_output_dir

    sources = [Path(p) for p in image_paths]
    stems = [image_stem(p) for p in sources]
    _check_names(stems, sources)
    folder = create_output_dir(correction_round_dir(run_dir, index), overwrite=overwrite)
    task = model.task
    round_ = CorrectionRound(int(index), folder, tuple(stems), tuple(str(p) for p in sources), task)
    written = {}
    for source, stem in zip(sources, stems, strict=True):
        labels = _predicted_labels(model, source, ndim, axes or model.settings.input_axes)
        _copy_image(source, round_.images_dir)
        _write_labels(round_.labels_dir / f"{stem}.tif", labels)
        _write_labels(round_.predicted_dir / f"{stem}.tif", labels)
        written[stem] = _write_exports(round_, stem, labels)
    title = f"Correcting round {index} of the human-in-the-loop training"
    atomic_write_text(round_.readme, README_TEXT.format(
        title=title, underline="=" * len(title), count=len(stems),
        what=_TASK_WHAT.get(task, "class ids")))
    atomic_write_json(folder / "round.json", {
        "index": int(index), "stems": stems, "sources": round_.sources, "task": task,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "written": written})
    log.info("round %d: predicted %d image(s); correct the labels in %s", index, len(stems),
             round_.labels_dir)
    return round_


def _write_exports(round_: CorrectionRound, stem: str, labels: np.ndarray) -> dict[str, str]:
    """QuPath and Fiji copies of one prediction; fingerprints of the three editable files."""
    from microseg.io.qupath import write_geojson
    from microseg.io.roi_export import write_roiset

    files = {"labels": round_.labels_dir / f"{stem}.tif"}
    if labels.any():
        files["geojson"] = write_geojson(round_.qupath_dir / f"{stem}.geojson", labels)
        files["roiset"] = write_roiset(round_.fiji_dir / f"{stem}.zip", labels, overwrite=True)
    return {kind: _fingerprint(path) for kind, path in files.items()}


def _fingerprint(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_names(stems: list[str], sources: list[Path]) -> None:
    if not sources:
        raise DataError("no images to predict for the correction round",
                        ["give at least one unlabelled image"])
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise DataError("images in one correction round need different names",
                        [f"{s!r}: {', '.join(str(p) for p, t in zip(sources, stems, strict=True) if t == s)}"
                         for s in repeated])


def _predicted_labels(model: Any, source: Path, ndim: int | None,
                      axes: str | None) -> np.ndarray:
    from microseg.io import read_image

    return model.predict_labels(read_image(source, axes=axes, ndim=ndim))


def _copy_image(source: Path, images_dir: Path) -> None:
    """Copy (never link: an editor saving through a link would change the user's file)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, images_dir / source.name, dirs_exist_ok=True)
    else:
        shutil.copy2(source, images_dir / source.name)


def _write_labels(path: Path, labels: np.ndarray) -> None:
    from microseg.io import write_image

    stored = labels.astype(np.uint16) if labels.max(initial=0) <= np.iinfo(np.uint16).max else labels
    write_image(path, stored, axes="ZYX" if labels.ndim == 3 else "YX", overwrite=True)


def simulate_corrections(round_: CorrectionRound, truth_labels_dir: str | Path) -> list[Path]:
    """Stand in for the person: replace each predicted label image by the true one.

    ``truth_labels_dir`` holds one label image per stem (any supported format). Used in
    headless runs and tests, where the "corrected" labels are the ground truth. Raises
    :class:`DataError` listing every stem without a true label image.
    """
    from microseg.io import image_stem, list_images, read_label

    truth = {image_stem(p): p for p in list_images(truth_labels_dir)}
    missing = [s for s in round_.stems if s not in truth]
    if missing:
        raise DataError(f"cannot simulate corrections: {truth_labels_dir} lacks labels",
                        [f"no label image for {s!r}" for s in missing])
    written = []
    for stem in round_.stems:
        path = round_.labels_dir / f"{stem}.tif"
        _write_labels(path, read_label(truth[stem]))
        written.append(path)
    return written


def read_corrections(round_: CorrectionRound, ndim: int | None = None,
                     axes: str | None = None) -> tuple[list[Any], dict[str, float]]:
    """The corrected pairs of a round, and the share of pixels the person changed per image.

    Per image, the corrections are the one file of ``labels/<stem>.tif``,
    ``qupath/<stem>.geojson`` and ``fiji/<stem>.zip`` that differs from what the round wrote
    (none changed: the prediction was right). Corrected GeoJSON and ROI sets are turned into
    label images in ``corrected/``; then ``images/`` are paired with the corrected labels
    (:func:`microseg.io.pair_folder`, every problem listed in one :class:`DataError`). The
    share changed counts pixels whose object/background status or class differs from
    ``predicted/`` (instance ids are renumbered freely, so only where objects are is compared,
    plus pixels that moved between objects). Raises :class:`DataError` naming the images
    corrected in more than one place.
    """
    from microseg.io import pair_folder, read_label

    labels_dir = _gather_corrections(round_, ndim, axes)
    pairs = pair_folder(round_.folder, ndim=ndim, axes=axes, labels=labels_dir.name)
    changed = {}
    for pair in pairs:
        predicted_path = round_.predicted_dir / f"{pair.stem}.tif"
        if predicted_path.is_file():
            changed[pair.stem] = _changed_share(read_label(predicted_path, ndim=ndim),
                                                read_label(pair.label, ndim=ndim), round_.task)
    return pairs, changed


def _gather_corrections(round_: CorrectionRound, ndim: int | None, axes: str | None) -> Path:
    """``labels/`` when only label images were corrected, else ``corrected/`` with every
    image's corrected labels (read from GeoJSON or ROI sets where those changed)."""
    from microseg.io import image_stem
    from microseg.runs import read_json

    written = read_json(round_.folder / "round.json").get("written", {})
    edited = {stem: _edited(round_, stem, found) for stem, found in written.items()}
    twice = [f"{stem}: changed {' and '.join(kinds)}; keep the corrections in one of them "
             f"(copy the other back from predicted/ or delete it)"
             for stem, kinds in edited.items() if len(kinds) > 1]
    if twice:
        raise DataError(f"{round_.folder}: images corrected in more than one place", twice)
    converted = {stem: kinds[0] for stem, kinds in edited.items()
                 if kinds and kinds[0] != "labels/"}
    if not converted:
        return round_.labels_dir
    present = {image_stem(p) for p in round_.images_dir.iterdir()}
    for stem in round_.stems:
        source = round_.labels_dir / f"{stem}.tif"
        target = round_.corrected_dir / f"{stem}.tif"
        if stem not in present:         # left out by the person: images/<name> deleted
            target.unlink(missing_ok=True)
        elif stem in converted:
            _write_labels(target, _labels_from_export(round_, stem, converted[stem], ndim, axes))
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return round_.corrected_dir


def _edited(round_: CorrectionRound, stem: str, written: dict[str, str]) -> list[str]:
    files = {"labels": (round_.labels_dir / f"{stem}.tif", "labels/"),
             "geojson": (round_.qupath_dir / f"{stem}.geojson", "qupath/"),
             "roiset": (round_.fiji_dir / f"{stem}.zip", "fiji/")}
    return [where for kind, (path, where) in files.items()
            if path.is_file() and _fingerprint(path) != written.get(kind)]


def _labels_from_export(round_: CorrectionRound, stem: str, where: str, ndim: int | None,
                        axes: str | None) -> np.ndarray:
    from microseg.io import image_stem, read_header
    from microseg.io.qupath import geojson_to_labels
    from microseg.io.roi import rois_to_labels

    image = next(p for p in round_.images_dir.iterdir() if image_stem(p) == stem)
    shape = read_header(image, axes=axes, ndim=ndim).spatial_shape
    if where == "qupath/":
        return geojson_to_labels(round_.qupath_dir / f"{stem}.geojson", shape).labels
    return rois_to_labels(round_.fiji_dir / f"{stem}.zip", shape, group_by_name=len(shape) == 3)


def _changed_share(predicted: np.ndarray, corrected: np.ndarray, task: str) -> float:
    if predicted.shape != corrected.shape:
        return 1.0
    if task != "instance":
        return float(np.mean(predicted != corrected))
    # ids are arbitrary: a pixel is unchanged when it stays in the corrected object that most of
    # its predicted object's pixels went to
    both = (predicted > 0) & (corrected > 0)
    pairs, counts = np.unique(np.stack([predicted[both], corrected[both]]), axis=1,
                              return_counts=True)
    by_count = np.argsort(-counts, kind="stable")
    _, first = np.unique(pairs[0][by_count], return_index=True)
    kept = int(counts[by_count][first].sum())
    flipped = int(np.sum((predicted > 0) != (corrected > 0)))
    return float((flipped + int(both.sum()) - kept) / predicted.size)


def add_corrections_to_split(manifest: Any, pairs: Sequence[Any], round_index: int) -> Any:
    """A copy of ``manifest`` whose training set also holds the corrected ``pairs``.

    Each new entry gets its own normalization statistics (percentiles of the whole image, as
    the manifest's normalization says) and the stem ``round<k>/<stem>``, so it cannot be
    confused with an image of the same name already in the split. Validation and test sets are
    unchanged. Raises :class:`DataError` when an image is already in the split (same file).
    """
    from microseg.data.split import SplitManifest, manifest_entry
    from microseg.io import read_image
    from microseg.transforms.normalization import percentile_statistics

    existing = {e["image"] for s in ("train", "val", "test") for e in manifest.entries(s)}
    config = manifest.normalization_config()
    added = []
    for pair in pairs:
        if str(Path(pair.image).resolve()) in existing:
            raise DataError(f"{pair.image} is already in the split; a corrected image must be new")
        low, high = percentile_statistics(read_image(pair.image, axes=manifest.input_axes,
                                                     ndim=manifest.ndim), config)
        added.append(manifest_entry(f"round{round_index}/{pair.stem}", pair.image, pair.label,
                                    low, high))
    data = manifest.to_dict()
    data["train"] = [*data["train"], *added]
    return SplitManifest.from_dict(data)


def write_rounds_csv(rounds: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write one row per round (its dict; lists joined with ';') as CSV, atomically."""
    import pandas as pd

    from microseg.runs import atomic_write_text

    rows = [{k: ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in r.items()}
            for r in rounds]
    return atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
