"""Real annotated microscopy images: microseg's prepare → train → evaluate on a fixed split,
and the same scores for any tool's label images of the same held-out images.

Data sets (folders with ``images/<stem>.tif`` and ``labels/<stem>.tif``, read only):

``usiigaci_phase``
    50 phase-contrast images of 1022×1024 (Usiigaci, Tsai et al. 2019). Test: the authors' own
    ``val_*`` images (5). The 45 ``train_*`` images: 40 training, 5 validation
    (:data:`SPLITS`). Labels are instances, but 360 of the 3225 cell ids have more than one
    8-connected piece (mostly stray specks: median 0.16 % of the cell's area, 14 ids above
    5 %). Every id keeps its largest 8-connected piece; the other pieces become background,
    in training and test labels alike (:func:`keep_largest_piece`). A predicted object is one
    connected region, so a detached speck could never be matched anyway.
``isbi2012_em``
    30 EM slices of 512×512 (ISBI 2012). Test: slices 25–29; slices 0–24: 22 training,
    3 validation. Labels are binary (255 cell interior, 0 membrane): the objects are the
    4-connected components of the interior (:func:`interior_instances`); membrane pixels are
    background. 4-connectivity because a membrane drawn one pixel wide along a diagonal is
    8-connected: only 4-connectivity keeps the two cells it separates apart. Every component
    counts, even the smallest (49 of 3431 have under 10 pixels).

``dsb2018_stage1_train`` / ``dsb2018_grey`` (``--dataset``; data folder
``dsb2018_stage1_train``)
    664 nuclei images of 256×256 to 1040×1388 (Data Science Bowl 2018 stage 1 training set,
    BBBC038v1; CC0). No test part is given: :func:`dsb_split` draws 80 / 10 / 10 % per image,
    stratified by image shape and colour, by hashing each stem (:func:`hashed_split`; no
    random generator, so nothing can move it). ``dsb2018_grey`` is the same split restricted
    to the 557 grey (fluorescence-like) images, ``dsb2018_colour`` to the 107 colour ones
    (H&E, bright-field). Labels: every id keeps its largest 8-connected piece (a few nuclei lost
    pixels where masks overlapped).

The validation images were drawn once with :func:`draw_validation` (seed 0, the same draw as
``microseg.data.split.split_pairs``) and are frozen in :data:`SPLITS`, so later changes to the
library or to NumPy cannot move them.

What the script writes (never into the data folder or the repository)::

    WORK/split.json                    the fixed split, conversion rules and counts
    WORK/data/trainval/{images,labels} training + validation images (symlinks) and labels
    WORK/data/test/{images,labels}     held-out test images (symlinks) and labels
    WORK/runs/<label>/                 microseg run folder: data/, models/<label>/, eval/
    WORK/runs/<label>/predictions/     predicted label TIFFs of the test images
    WORK/results/<label>.json          the row: scores, seconds, steps, machine, command

How the split reaches microseg: ``prepare_data`` gets the train+val folder with fractions
(n_train/n, n_val/n, 0), so it computes the normalization and the manifest as usual; then
:func:`enforce_split` moves manifest entries so that the validation set is the fixed one (the
counts already agree; with today's library it changes nothing). ``prepare_data`` has no
parameter for a given split. The test images never enter the manifest: ``evaluate_models``
reads them with ``data_dir=WORK/data/test``.

Scores (:func:`score_folders`, one code path for every tool): objects matched one-to-one by
``microseg.metrics.instance.match_instances``; F1, precision, recall and panoptic quality at IoU
0.5 pooled over the test images (TP, FP, FN and matched IoU summed first); the Data Science
Bowl 2018 score: per image, the mean over IoU 0.5, 0.55, …, 0.95 of TP/(TP+FP+FN), then the
mean over images.

Why one module of about 860 lines: one command line that every BENCHMARKS.md row of the real
data sets names, so a row's command is one file to read; the peers' runners are apart
(``benchmarks/peers/``, their own environments).

Usage::

    .venv/bin/python benchmarks/real_data.py --data ../shared/realdata/usiigaci_phase \\
        --work-dir /work/bench/usiigaci --label baseline
    # any train_model / evaluate_models / prepare_data keyword, parsed as a Python literal:
    ... --label longer --train epochs=120 --eval tile_shape=256
    # stop training after the first epoch past a budget (wall minutes or process CPU seconds):
    ... --label capped --budget-minutes 30
    # score another tool's label images (WORK/peers/<tool>/predictions/<stem>.tif, run.json):
    ... --score-peer /work/bench/usiigaci/peers/stardist --label StarDist
    # evaluate a row's trained model again with other settings (a new row, the same training):
    ... --evaluate-again "defaults 30min" --label "defaults 30min, TTA" --eval tta=True
    # the scale test: that model on the test images resampled by 0.5, 2, 3 or 5:
    ... --evaluate-again "defaults 30min" --label "defaults 30min, test x3" --test-scale 3
    # only write the split and the data layout (what the peer runners read):
    ... --layout-only
    # the Markdown table of every row in WORK/results:
    .venv/bin/python benchmarks/real_data.py --work-dir /work/bench/usiigaci --table
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DSB_SALT",
    "DSB_THRESHOLDS",
    "SCALES",
    "SPLITS",
    "LoadSampler",
    "TrainingBudget",
    "draw_validation",
    "dsb_split",
    "enforce_split",
    "hashed_split",
    "interior_instances",
    "keep_largest_piece",
    "parse_settings",
    "print_worst",
    "score_folders",
    "score_instances",
    "worst_images",
    "write_scaled_test",
    "write_layout",
]

DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""IoU 0.5, 0.55, ..., 0.95: the thresholds of the Data Science Bowl 2018 score."""

LAYOUT_VERSION = 1
SPLIT_SEED = 0


@dataclass(frozen=True)
class DataRules:
    """The fixed split and the label conversion of one data set."""

    test: Callable[[str], bool] | None
    n_val: int
    val: tuple[str, ...]
    labels: str
    draw: Callable[[Path, Sequence[str]], dict[str, list[str]]] | None = None
    """For sets without a given test part: the whole split from the data folder and stems."""


SPLITS: dict[str, DataRules] = {
    "usiigaci_phase": DataRules(
        test=lambda stem: stem.startswith("val_"), n_val=5,
        val=("train_set23", "train_set36", "train_set38", "train_set4", "train_set6"),
        labels="largest-8-connected-piece-per-id"),
    "isbi2012_em": DataRules(
        test=lambda stem: int(stem.rsplit("_", 1)[1]) >= 25, n_val=3,
        val=("slice_01", "slice_09", "slice_15"),
        labels="4-connected-components-of-interior"),
    "dsb2018_stage1_train": DataRules(
        test=None, n_val=0, val=(), labels="largest-8-connected-piece-per-id",
        draw=lambda data, stems: dsb_split(data, stems)),
    "dsb2018_grey": DataRules(
        test=None, n_val=0, val=(), labels="largest-8-connected-piece-per-id",
        draw=lambda data, stems: dsb_split(data, stems, grey_only=True)),
    "dsb2018_colour": DataRules(
        test=None, n_val=0, val=(), labels="largest-8-connected-piece-per-id",
        draw=lambda data, stems: dsb_split(data, stems, colour_only=True)),
}
"""Data set name (the data folder's name, or ``--dataset``) → split and label rules; ``val``
from :func:`draw_validation` of the non-test stems with seed 0, or the whole split from ``draw``
(:func:`dsb_split`)."""

DSB_SALT = "microseg-dsb2018-split-v1"
"""Mixed into each stem before hashing: changing it draws another DSB split."""


# ----------------------------------------------------------------------------- split, labels

def draw_validation(stems: Sequence[str], n_val: int, seed: int = SPLIT_SEED) -> list[str]:
    """The ``n_val`` validation stems drawn from ``stems`` (sorted first), sorted.

    The draw of ``microseg.data.split.split_pairs`` with fractions (n−n_val, n_val, 0)/n: a
    permutation by ``numpy.random.default_rng(seed)``, whose last ``n_val`` are validation.
    """
    ordered = sorted(stems)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    return sorted(shuffled[len(ordered) - n_val:])


def hashed_split(strata: dict[str, str], fractions: tuple[float, float] = (0.1, 0.1),
                 salt: str = DSB_SALT) -> dict[str, list[str]]:
    """Train / val / test stems, stratified, with no random generator: within each stratum
    (``strata``: stem → stratum name) stems are ordered by the SHA-256 of ``salt + stem``;
    the first ``round(fractions[1] * n)`` are test, the next ``round(fractions[0] * n)``
    validation, the rest training. The same stems give the same split on every machine and
    NumPy version; adding images to a stratum moves at most a few of its stems.

    >>> split = hashed_split({f"s{i}": "a" for i in range(20)})
    >>> [len(split[k]) for k in ("train", "val", "test")]
    [16, 2, 2]
    """
    import hashlib

    groups: dict[str, list[str]] = {}
    for stem, stratum in strata.items():
        groups.setdefault(stratum, []).append(stem)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for stems in groups.values():
        ordered = sorted(stems, key=lambda s: hashlib.sha256((salt + s).encode()).hexdigest())
        n_test, n_val = round(fractions[1] * len(stems)), round(fractions[0] * len(stems))
        split["test"] += ordered[:n_test]
        split["val"] += ordered[n_test:n_test + n_val]
        split["train"] += ordered[n_test + n_val:]
    return {key: sorted(value) for key, value in split.items()}


def dsb_split(data: Path, stems: Sequence[str], grey_only: bool = False,
              colour_only: bool = False) -> dict[str, list[str]]:
    """The Data Science Bowl 2018 split: 80 / 10 / 10 % per image, stratified by image shape
    and colour (``index.csv``: shape, grayscale), by :func:`hashed_split`. ``grey_only``
    (``colour_only``): the same split restricted to the grey, fluorescence-like (the colour,
    H&E and bright-field) images, so its test part is a subset of the full set's and no test
    image is ever trained on by any variant."""
    import csv

    with open(data / "index.csv", newline="") as handle:
        index = {row["id"]: row for row in csv.DictReader(handle)}
    missing = sorted(set(stems) - set(index))
    if missing:
        raise SystemExit(f"{data / 'index.csv'}: no row for {missing[:3]} ({len(missing)} "
                         f"images); expected one row per image (id, shape, n_nuclei, grayscale)")
    split = hashed_split({s: f"{index[s]['shape']}|{index[s]['grayscale']}" for s in stems})
    if grey_only or colour_only:
        wanted = "True" if grey_only else "False"
        split = {k: [s for s in v if index[s]["grayscale"] == wanted] for k, v in split.items()}
    return split


def keep_largest_piece(labels: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Each object id keeps its largest 8-connected piece; the other pieces become 0.

    ``labels``: (Y, X) integer instance labels, 0 background. Returns the cleaned labels (same
    shape and dtype) and counts ``{"ids", "ids_in_pieces", "pixels_removed"}``. Ties between
    equally large pieces keep the first in raster order.
    """
    from scipy import ndimage as ndi

    cleaned = labels.copy()
    counts = {"ids": 0, "ids_in_pieces": 0, "pixels_removed": 0}
    for object_id, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        counts["ids"] += 1
        mask = labels[box] == object_id
        pieces, n = ndi.label(mask, structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            drop = mask & (pieces != 1 + int(np.argmax(sizes)))
            cleaned[box][drop] = 0
            counts["ids_in_pieces"] += 1
            counts["pixels_removed"] += int(drop.sum())
    return cleaned, counts


def interior_instances(binary: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Objects of a binary label image: 4-connected components of the non-zero pixels.

    ``binary``: (Y, X), non-zero = object interior, 0 = membrane/background. Returns int32
    labels 1..n (raster order of each component's first pixel) and ``{"objects": n}``.
    """
    from scipy import ndimage as ndi

    labels, n = ndi.label(binary != 0, structure=ndi.generate_binary_structure(2, 1))
    return labels.astype(np.int32), {"objects": int(n)}


def _convert(rules: DataRules, label: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    if rules.labels == "largest-8-connected-piece-per-id":
        return keep_largest_piece(label)
    return interior_instances(label)


def _fixed_split(name: str, data: Path, stems: Sequence[str]) -> dict[str, list[str]]:
    rules = SPLITS[name]
    if rules.draw is not None:
        return rules.draw(data, stems)
    test = sorted(s for s in stems if rules.test(s))
    pool = sorted(s for s in stems if not rules.test(s))
    missing = sorted(set(rules.val) - set(pool))
    if missing:
        raise SystemExit(f"{name}: the fixed validation images {missing} are not among the "
                         f"data's non-test images; is this the right data folder?")
    val = sorted(rules.val)
    return {"train": [s for s in pool if s not in val], "val": val, "test": test}


# ----------------------------------------------------------------------------- layout

def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tifffile.imwrite(tmp, array, compression="zlib")
    os.replace(tmp, path)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    link.symlink_to(target.resolve())


def _place_pair(rules: DataRules, data: Path, stem: str, folder: Path) -> dict[str, int]:
    import tifffile

    _link(data / "images" / f"{stem}.tif", folder / "images" / f"{stem}.tif")
    label, counts = _convert(rules, tifffile.imread(data / "labels" / f"{stem}.tif"))
    dtype = np.uint16 if label.max() < 2 ** 16 else np.int32
    _write_tiff(folder / "labels" / f"{stem}.tif", label.astype(dtype))
    return counts


def _layout_record(name: str, data: Path, split: dict[str, list[str]]) -> dict[str, Any]:
    rules = SPLITS[name]
    return {"version": LAYOUT_VERSION, "dataset": name, "data": str(data.resolve()),
            "split_seed": SPLIT_SEED, "labels": rules.labels, **split}


def write_layout(data: str | Path, work_dir: str | Path,
                 dataset: str | None = None) -> dict[str, Any]:
    """Write the fixed split and the scratch data layout into ``work_dir``; returns split.json.

    ``data``: a folder of :data:`SPLITS` (its name, or ``dataset``, picks the rules). Images are
    symlinked, labels converted and written as zlib TIFFs. An existing identical layout is
    reused; a ``split.json`` with another split raises SystemExit (use another work folder).
    """
    data, work = Path(data), Path(work_dir)
    name = dataset or data.name
    if name not in SPLITS:
        raise SystemExit(f"{data}: unknown data set {name!r}; expected one of {sorted(SPLITS)} "
                         f"(pass --dataset)")
    stems = sorted(p.stem for p in (data / "images").glob("*.tif"))
    record = _layout_record(name, data, _fixed_split(name, data, stems))
    path = work / "split.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if {k: previous.get(k) for k in record} != record:
            raise SystemExit(f"{path} holds another split or data set; use another --work-dir")
        return previous
    counts = {subset: _place_subset(name, data, record[subset], work, subset)
              for subset in ("train", "val", "test")}
    _atomic_json(path, {**record, "label_counts": counts})
    return json.loads(path.read_text())


def _place_subset(name: str, data: Path, stems: list[str], work: Path,
                  subset: str) -> dict[str, int]:
    folder = work / "data" / ("test" if subset == "test" else "trainval")
    totals: dict[str, int] = {}
    for stem in stems:
        for key, value in _place_pair(SPLITS[name], data, stem, folder).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def write_scores(out: Path, scores: dict[str, dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """Write the pooled ``scores`` of a side benchmark (per-image rows dropped) with ``facts``,
    the date, command, machine and load into ``out``; return the record."""
    for found in scores.values():
        found.pop("per_image", None)
    record = {**facts, "scores": scores, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": _command(), "machine": _machine(),
              "load_average_at_end": list(os.getloadavg())}
    _atomic_json(out, record)
    return record


def _atomic_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ----------------------------------------------------------------------------- scores

def score_instances(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Scores of predicted against true instance labels, pooled and per image.

    ``pairs``: (stem, predicted labels, true labels), each (Y, X) integers, 0 background.
    Returns ``f1``, ``precision``, ``recall``, ``panoptic_quality`` and ``mean_matched_iou``
    at IoU 0.5 pooled over the images, ``dsb_score`` (mean over images of the mean over
    :data:`DSB_THRESHOLDS` of TP/(TP+FP+FN)), ``tp``/``fp``/``fn`` at 0.5, ``n_images`` and
    ``per_image`` rows. A ratio whose denominator is 0 is None.
    """
    from microseg.metrics.instance import aggregate, match_instances

    matchings = [match_instances(pred, truth, DSB_THRESHOLDS) for _, pred, truth in pairs]
    pooled = aggregate(matchings)["pooled"]
    at_half = {key: pooled[key][0] for key in ("tp", "fp", "fn", "precision", "recall", "f1",
                                               "panoptic_quality", "mean_matched_iou")}
    rows = [_image_row(stem, m) for (stem, _, _), m in zip(pairs, matchings, strict=True)]
    dsb = [r["dsb_score"] for r in rows if r["dsb_score"] is not None]
    return {**at_half, "dsb_score": float(np.mean(dsb)) if dsb else None,
            "n_images": len(rows), "per_image": rows}


def _image_row(stem: str, matching: Any) -> dict[str, Any]:
    first = matching.scores[0]
    values = [s.average_precision for s in matching.scores]
    return {"stem": stem, "n_true": first.n_true, "n_pred": first.n_pred, "f1": first.f1,
            "dsb_score": None if None in values else float(np.mean(values))}


def score_folders(pred_dir: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """:func:`score_instances` of ``pred_dir/<stem>.tif`` against ``truth_dir/<stem>.tif``.

    Every truth stem needs a prediction (SystemExit naming the missing ones); extra
    predictions are ignored. Predictions are read as integers (0 background).
    """
    import tifffile

    truths = sorted(Path(truth_dir).glob("*.tif"))
    missing = [p.stem for p in truths if not (Path(pred_dir) / p.name).is_file()]
    if missing:
        raise SystemExit(f"{pred_dir}: no predicted labels for {missing}; expected "
                         f"<stem>.tif for every image of {truth_dir}")
    pairs = [(p.stem, np.asarray(tifffile.imread(Path(pred_dir) / p.name)).astype(np.int64),
              np.asarray(tifffile.imread(p)).astype(np.int64)) for p in truths]
    return score_instances(pairs)


# ----------------------------------------------------------------------------- training helpers

def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """``["epochs=40", "norm=batch"]`` → ``{"epochs": 40, "norm": "batch"}``.

    Values are Python literals (numbers, True/False/None, tuples, quoted strings); anything
    else stays a string. SystemExit for an item without ``=``.
    """
    settings: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"setting {item!r}: expected KEY=VALUE, e.g. epochs=40")
        try:
            settings[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            settings[key.strip()] = text
    return settings


class TrainingBudget:
    """Epoch callback of microseg's Trainer: stop after the first epoch past a budget.

    ``wall_seconds`` and ``cpu_seconds`` (process CPU time, all threads) count from
    :meth:`start`; None: no limit. Stopping sets the Trainer's ``stopped_early`` flag, so the
    schedules planned for the full length are cut where they are.
    """

    def __init__(self, wall_seconds: float | None = None, cpu_seconds: float | None = None):
        self.wall_seconds, self.cpu_seconds = wall_seconds, cpu_seconds
        self.stopped_at_epoch: int | None = None
        self.start()

    def start(self) -> None:
        """Start counting now."""
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def spent(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) since :meth:`start`."""
        return time.perf_counter() - self._wall, time.process_time() - self._cpu

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        wall, cpu = self.spent()
        over = ((self.wall_seconds is not None and wall >= self.wall_seconds)
                or (self.cpu_seconds is not None and cpu >= self.cpu_seconds))
        if over and self.stopped_at_epoch is None:
            self.stopped_at_epoch = int(record["epoch"])
            trainer.stopped_early = True
            print(f"budget reached after epoch {record['epoch']}: {wall:.0f} s wall, "
                  f"{cpu:.0f} s CPU", flush=True)


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a background thread."""

    def __init__(self, every: float = 15.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        """Mean, min and max of the samples (1-minute load average)."""
        values = np.asarray(self.samples)
        return {"mean": round(float(values.mean()), 2), "min": round(float(values.min()), 2),
                "max": round(float(values.max()), 2), "samples": int(values.size)}


def _timed(function: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, {"wall_seconds": round(time.perf_counter() - wall, 1),
                    "cpu_seconds": round(time.process_time() - cpu, 1)}


# ----------------------------------------------------------------------------- microseg run

def enforce_split(run_dir: str | Path, split: dict[str, list[str]]) -> bool:
    """Make the run's split manifest's train/val sets the fixed ones; True if it changed.

    The manifest (written by ``prepare_data``) must hold exactly the train + val stems with
    the same counts; its entries (paths, normalization statistics) are moved, not recomputed,
    and saved with ``SplitManifest.save``. SystemExit when the stems or counts differ.
    """
    from microseg.data.split import load_manifest
    from microseg.runs import RunFolder

    manifest = load_manifest(run_dir)
    entries = {e["stem"]: e for subset in ("train", "val", "test")
               for e in manifest.entries(subset)}
    wanted = {subset: sorted(split[subset]) for subset in ("train", "val")}
    if sorted(entries) != sorted(wanted["train"] + wanted["val"]) or manifest.test:
        raise SystemExit(f"{run_dir}: the split manifest's images differ from the fixed "
                         f"train + val images of split.json")
    if all(manifest.stems(s) == wanted[s] for s in wanted):
        return False
    manifest.train = [entries[s] for s in wanted["train"]]
    manifest.val = [entries[s] for s in wanted["val"]]
    manifest.save(RunFolder(run_dir).split_manifest)
    return True


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def _prepare(run_dir: Path, work: Path, layout: dict[str, Any],
             settings: dict[str, Any]) -> dict[str, Any]:
    from microseg.recipes.prepare import prepare_data

    n_train, n_val = len(layout["train"]), len(layout["val"])
    n = n_train + n_val
    summary = prepare_data(run_dir, data_dir=work / "data" / "trainval", task="instance",
                           fractions=(n_train / n, n_val / n, 0.0), seed=SPLIT_SEED, **settings)
    return {"prepare": summary, "split_adjusted": enforce_split(run_dir, layout)}


def _write_predictions(results: Sequence[Any], folder: Path) -> Path:
    for result in results:
        _write_tiff(folder / f"{result.stem}.tif", np.asarray(result.instances, np.int32))
    return folder


def run_microseg(work: Path, layout: dict[str, Any], label: str,
                 settings: dict[str, dict[str, Any]], budget: TrainingBudget) -> dict[str, Any]:
    """prepare_data → train_model → evaluate_models in ``work/runs/<label>``; the row."""
    from microseg.recipes.evaluate import evaluate_models
    from microseg.recipes.train import train_model

    name = _slug(label)
    run_dir = work / "runs" / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} already holds a run; choose another --label")
    prepared, prepare_time = _timed(lambda: _prepare(run_dir, work, layout, settings["prepare"]))
    budget.start()
    with LoadSampler() as load:
        trained, train_time = _timed(lambda: train_model(
            run_dir, model_name=name, callbacks=[budget], **settings["train"]))
    evaluated, eval_time = _timed(lambda: evaluate_models(
        run_dir, model_names=[name], data_dir=work / "data" / "test", **settings["eval"]))
    predictions = _write_predictions(evaluated.results[name], run_dir / "predictions")
    scores = score_folders(predictions, work / "data" / "test" / "labels")
    library = evaluated.models[name].at_threshold
    return {"tool": "microseg", "scores": scores, "steps": trained.steps,
            "epochs": trained.epochs_run, "training": {**train_time, "load": load.summary()},
            "prepare": prepare_time, "evaluate": eval_time, "train_summary": _brief(trained),
            "budget_stop_epoch": budget.stopped_at_epoch,
            "split_adjusted": prepared["split_adjusted"], "run_dir": str(run_dir),
            "library_check": {"f1": library["f1"], "precision": library["precision"],
                              "recall": library["recall"]},
            "postprocessing": evaluated.models[name].postprocessing}


def _brief(trained: Any) -> dict[str, Any]:
    keys = ("best_epoch", "epochs_run", "stopped_early", "best_val_loss", "best_val_dice",
            "best_val_foreground_dice", "steps", "parameters", "seconds")
    return {**{k: trained.get(k) for k in keys},
            "fit_verdict": (trained.get("fit_diagnosis") or {}).get("verdict")}


SCALES: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0)
"""Factors of the scale test: the test images at half, once, twice, 3 and 5 times their size."""


def _resize(array: np.ndarray, factor: float, order: int) -> np.ndarray:
    """``array`` (Y, X) or (Y, X, C) resampled by ``factor`` in Y and X (scikit-image, an
    implementation independent of microseg's): order 1 with anti-aliasing for images, order 0
    for labels; the dtype is kept (images rounded and clipped)."""
    from skimage.transform import resize

    shape = tuple(max(1, round(side * factor)) for side in array.shape[:2]) + array.shape[2:]
    out = resize(array, shape, order=order, preserve_range=True,
                 anti_aliasing=order > 0 and factor < 1, mode="edge")
    if np.issubdtype(array.dtype, np.integer) and order > 0:
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(array.dtype)


def write_scaled_test(work: Path, factor: float) -> Path:
    """``WORK/data/test_x<factor>/``: every test image resampled by ``factor`` (linear) and its
    labels (nearest neighbour), for the scale test; written once, reused after."""
    import tifffile

    source = work / "data" / "test"
    folder = work / "data" / f"test_x{factor:g}"
    if (folder / "labels").is_dir():
        return folder
    for path in sorted((source / "images").glob("*.tif")):
        _write_tiff(folder / "images" / path.name, _resize(tifffile.imread(path), factor, 1))
        label = tifffile.imread(source / "labels" / path.name)
        _write_tiff(folder / "labels" / path.name, _resize(label, factor, 0))
    return folder


def evaluate_again(work: Path, row_label: str, label: str,
                   eval_settings: dict[str, Any], test_scale: float = 1.0,
                   model: str | None = None) -> dict[str, Any]:
    """The model a microseg row trained, evaluated again with ``eval_settings`` (e.g. TTA) on
    the same test images — or on them resampled by ``test_scale`` (:func:`write_scaled_test`);
    the new row keeps the original training's length and seconds. Predictions go to
    ``WORK/runs/<row>/predictions-<label>/``. ``model``: evaluate this model instead (a
    built-in model's name or a model folder, e.g. the row's model packed as built-in), in the
    row's run folder."""
    from microseg.recipes.evaluate import evaluate_models
    from microseg.runs import RunFolder

    name = _slug(row_label)
    rows = [json.loads(p.read_text()) for p in (work / "results").glob("*.json")]
    original = next((r for r in rows if r.get("tool") == "microseg"
                     and Path(r.get("run_dir", "")).name == name), None)
    if original is None:
        raise SystemExit(f"no microseg row {row_label!r} in {work / 'results'}")
    run_dir = Path(original["run_dir"])
    test = work / "data" / "test" if test_scale == 1.0 else write_scaled_test(work, test_scale)
    chosen = model or name
    evaluated, eval_time = _timed(lambda: evaluate_models(
        run_dir, model_names=[chosen], data_dir=test, overwrite=True, **eval_settings))
    name = RunFolder.model_key(chosen)
    predictions = _write_predictions(evaluated.results[name],
                                     run_dir / f"predictions-{_slug(label)}")
    scores = score_folders(predictions, test / "labels")
    kept = ("tool", "steps", "epochs", "training", "prepare", "train_summary",
            "budget_stop_epoch", "split_adjusted", "run_dir")
    return {**{k: original.get(k) for k in kept}, "scores": scores, "evaluate": eval_time,
            "evaluated_again_from": original["label"], "test_scale": test_scale,
            "model": chosen,
            "postprocessing": evaluated.models[name].postprocessing}


def score_peer(work: Path, peer_dir: Path, test_scale: float = 1.0) -> dict[str, Any]:
    """The row of another tool: its ``run.json`` and the scores of its ``predictions/`` (of
    ``predictions_x<F>/`` against the test images resampled by ``test_scale`` F)."""
    record = json.loads((peer_dir / "run.json").read_text())
    if test_scale == 1.0:
        predictions, truth = peer_dir / "predictions", work / "data" / "test" / "labels"
    else:
        predictions = peer_dir / f"predictions_x{test_scale:g}"
        truth = write_scaled_test(work, test_scale) / "labels"
    scores = score_folders(predictions, truth)
    return {**record, "scores": scores, "peer_dir": str(peer_dir), "test_scale": test_scale}


# ----------------------------------------------------------------------------- records

def _git(folder: Path) -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=20, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = run("status", "--porcelain", "--", ".")
    return {"commit": run("rev-parse", "HEAD"), "path": str(folder),
            "changed_files": None if status is None else len(status.splitlines())}


def _machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    return {"node": platform.node(), "cpu": model, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def _command() -> str:
    """The command line as typed from the current folder, PYTHONPATH included."""
    python = os.path.relpath(sys.executable)
    words = [python if not python.startswith("../..") else sys.executable, *sys.argv]
    path = os.environ.get("PYTHONPATH")
    return (f"PYTHONPATH={shlex.quote(path)} " if path else "") + shlex.join(words)


def _provenance(args: argparse.Namespace) -> dict[str, Any]:
    import microseg

    library = Path(microseg.__file__).resolve().parent
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": _command(), "pythonpath": os.environ.get("PYTHONPATH"),
            "threads": args.threads,
            "machine": _machine(), "microseg": str(library),
            "library_git": _git(library), "benchmark_git": _git(Path(__file__).resolve().parent),
            "load_average_at_end": list(os.getloadavg())}


def _result_path(work: Path, label: str) -> Path:
    folder, name = work / "results", _slug(label)
    path, k = folder / f"{name}.json", 1
    while path.exists():
        k += 1
        path = folder / f"{name}-{k}.json"
    return path


def table_row(row: dict[str, Any]) -> str:
    """One Markdown row: label, F1, precision, recall, DSB, PQ, training CPU s, wall s, mean
    load average during training, steps/epochs, command."""
    s, training = row["scores"], row.get("training", {})

    def number(value: Any, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    length = (f"{row['steps']} steps" if row.get("steps") is not None else "") + \
        (f" / {row['epochs']} epochs" if row.get("epochs") is not None else "")
    return (f"| {row['label']} | {number(s['f1'])} | {number(s['precision'])} | "
            f"{number(s['recall'])} | {number(s['dsb_score'])} | "
            f"{number(s['panoptic_quality'])} | {number(training.get('cpu_seconds'), 0)} | "
            f"{number(training.get('wall_seconds'), 0)} | "
            f"{number(training.get('load', {}).get('mean'), 1)} | {length.strip(' /')} | "
            f"`{row['command']}` |")


def print_table(work: Path) -> None:
    """Print the Markdown table of every row in ``work/results``, oldest first."""
    rows = sorted((json.loads(p.read_text()) for p in (work / "results").glob("*.json")),
                  key=lambda r: r["date"])
    print("| row | F1@0.5 | precision | recall | DSB score | PQ | CPU s | wall s | load "
          "| length | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(table_row(row))


def worst_images(row: dict[str, Any], n: int = 8) -> list[dict[str, Any]]:
    """The ``n`` test images of a row with the lowest F1 at IoU 0.5 (then the most objects),
    each with its true and predicted object counts: where a method fails."""
    images = [r for r in row["scores"]["per_image"] if r["f1"] is not None]
    return sorted(images, key=lambda r: (r["f1"], -r["n_true"]))[:n]


def print_worst(work: Path, label: str, n: int = 8) -> None:
    """Markdown table of :func:`worst_images` of row ``label`` (the image names shortened)."""
    rows = [json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))]
    row = next((r for r in rows if r.get("label") == label), None)
    if row is None:
        raise SystemExit(f"no row {label!r} in {work / 'results'}")
    print(f"| image ({label}) | true objects | predicted | F1@0.5 | DSB score |")
    print("|---|---|---|---|---|")
    for image in worst_images(row, n):
        dsb = "–" if image["dsb_score"] is None else f"{image['dsb_score']:.3f}"
        print(f"| {image['stem'][:12]} | {image['n_true']} | {image['n_pred']} | "
              f"{image['f1']:.3f} | {dsb} |")


# ----------------------------------------------------------------------------- command line

def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data folder (images/, labels/)")
    parser.add_argument("--dataset", choices=sorted(SPLITS), help="default: the folder's name")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--label", default="microseg", help="row name (and model name)")
    for stage in ("train", "eval", "prepare"):
        parser.add_argument(f"--{stage}", action="append", metavar="KEY=VALUE",
                            help=f"keyword of the {stage} recipe (repeatable)")
    parser.add_argument("--budget-minutes", type=float, help="stop training after this wall time")
    parser.add_argument("--budget-cpu-seconds", type=float,
                        help="stop training after this process CPU time")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--score-peer", type=Path, help="score a peer folder instead of training")
    parser.add_argument("--evaluate-again", metavar="ROW",
                        help="evaluate the model of microseg row ROW again (with --eval)")
    parser.add_argument("--test-scale", type=float, default=1.0,
                        help="with --evaluate-again: the test images resampled by this factor")
    parser.add_argument("--model", help="with --evaluate-again: evaluate this model (a built-in "
                        "model's name or a model folder) instead of the row's")
    parser.add_argument("--layout-only", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the rows of WORK/results")
    parser.add_argument("--worst", metavar="ROW", help="print the worst test images of row ROW")
    return parser.parse_args(argv)


def _report(row: dict[str, Any]) -> None:
    s = row["scores"]
    for image in s["per_image"]:
        print(f"  {image['stem']:<14} objects {image['n_true']:>4} true {image['n_pred']:>5} "
              f"predicted  F1@0.5 {image['f1'] or 0:.3f}  DSB {image['dsb_score'] or 0:.3f}")
    shown = {key: "–" if s[key] is None else f"{s[key]:.3f}"
             for key in ("f1", "precision", "recall", "dsb_score", "panoptic_quality")}
    print(f"{row['label']}: F1@0.5 {shown['f1']} (precision {shown['precision']}, recall "
          f"{shown['recall']}), DSB score {shown['dsb_score']}, PQ {shown['panoptic_quality']}")
    print(table_row(row))


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Command line (see the module docstring)."""
    args = _arguments(argv)
    work = args.work_dir.resolve()
    if args.table:
        print_table(work)
        return None
    if args.worst:
        print_worst(work, args.worst)
        return None
    if args.data is None and not (work / "split.json").is_file():
        raise SystemExit("--data is needed to write the split the first time")
    layout = (write_layout(args.data, work, args.dataset) if args.data is not None
              else json.loads((work / "split.json").read_text()))
    shown = layout["val"] if len(layout["val"]) <= 10 else "(listed in split.json)"
    print(f"split: {len(layout['train'])} training, {len(layout['val'])} validation "
          f"{shown}, {len(layout['test'])} test images -> {work}")
    if args.layout_only:
        return layout
    import torch

    torch.set_num_threads(args.threads)
    if args.score_peer is not None:
        row = score_peer(work, args.score_peer.resolve(), args.test_scale)
    elif args.evaluate_again is not None:
        settings = {"train": {}, "eval": parse_settings(args.eval), "prepare": {}}
        row = {**evaluate_again(work, args.evaluate_again, args.label, settings["eval"],
                                args.test_scale, args.model), "settings": settings}
    else:
        settings = {stage: parse_settings(getattr(args, stage))
                    for stage in ("train", "eval", "prepare")}
        budget = TrainingBudget(None if args.budget_minutes is None else 60 * args.budget_minutes,
                                args.budget_cpu_seconds)
        row = run_microseg(work, layout, args.label, settings, budget)
        row["settings"] = settings
    provenance = _provenance(args)
    if args.score_peer is not None:
        row = {**row, "scored_by": provenance}
    else:
        row = {**row, **provenance}
    row = {"label": args.label, "dataset": layout["dataset"], **row}
    print(f"written: {_atomic_json(_result_path(work, args.label), row)}")
    _report(row)
    return row


if __name__ == "__main__":
    main()
