"""Out-of-core prediction: images larger than memory, block by block with Dask, resumable.

How it works
------------
The volume is covered by *blocks* of a few tiles each (``block_shape``, a multiple of the tile).
Every block is one Dask task: it reads the windows that predict it (tile plus ``halo`` of real
neighbouring voxels on every side, laid out by :func:`microseg.inference.tiling.window_layout`
with the block as the region to keep, read by :func:`~microseg.inference.tiling.read_window`),
normalizes them with *global* statistics computed once for the whole volume, predicts them in
batches (:func:`~microseg.inference.tiling.predict_windows`), keeps what each window predicts
with full context and writes the block into a Zarr array whose chunks are the blocks, so
concurrent writers never share a chunk. Windows obey the same rules as in
:func:`~microseg.inference.tiling.predict_tiled` (stride grid, halo, ``border``), so the result
equals the in-memory prediction.

Blocks are written by ``dask.delayed`` tasks rather than ``dask.array.map_overlap``: each task
reads only its own windows straight from the file (a memory-mapped TIFF, a TIFF opened as Zarr,
or a Zarr/OME-Zarr array), so no task holds more than one block and its halo, the graph stays
one task per block, and a finished block can be recorded and skipped when a run is resumed.
The same tasks run on Dask's local threaded scheduler or on a ``dask.distributed`` cluster.

Instance labels are made in a second pass over the probabilities
(:func:`microseg.inference.stitching.stitch_block_labels`): each block is labelled with an
overlap into its neighbours, objects seen by two blocks in the overlap are merged (union of
overlapping ids), and ids are made unique and consecutive. Dask's schedulers are handled by
:mod:`microseg.inference.scheduling`.

The output folder::

    probabilities.zarr   (K, *spatial) float32 class probabilities   (output "probabilities"/"both")
    labels.zarr          (*spatial) int32 labels                      (output "labels"/"both")
    prediction.json      what was predicted, how, and the normalization statistics
    _INCOMPLETE          present until every block is written
    _progress/           one marker per finished block, label work files; removed at the end

Why one module of about 620 lines: the volume plan, the output folder with its resumable
progress record and the block tasks share one private layout (which blocks exist, where each is
written, what a resumed run may skip); stitching and scheduling are already their own modules.

Example
-------
>>> import tempfile, zarr
>>> from microseg.models import ModelConfig, build_model
>>> network = build_model(ModelConfig(ndim=3, channels=(4, 8, 16), num_res_units=1)).eval()
>>> volume = np.random.default_rng(0).random((1, 32, 32, 64)).astype(np.float32)  # or a file
>>> with tempfile.TemporaryDirectory() as folder:
...     result = predict_volume_to_zarr(network, volume, Path(folder) / "huge", tile_shape=32,
...                                     halo=8, axes="CZYX", block_shape=32)
...     probabilities = zarr.open_array(result["probabilities"], mode="r")
...     probabilities.shape, probabilities.dtype.name
((3, 32, 32, 64), 'float32')
>>> result["complete"], result["blocks_total"], result["blocks_predicted"]
(True, 2, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.inference.scheduling import peak_memory_mb, run_tasks
from microseg.inference.stitching import stitch_block_labels
from microseg.inference.tiling import check_border, per_axis
from microseg.runs import atomic_write_json, read_json

__all__ = [
    "INCOMPLETE_MARKER",
    "OUTPUTS",
    "PROGRESS_DIR",
    "RECORD_FILE",
    "VolumePlan",
    "VolumeSource",
    "predict_volume_to_zarr",
]

log = logging.getLogger(__name__)

OUTPUTS = ("probabilities", "labels", "both")
INCOMPLETE_MARKER = "_INCOMPLETE"
PROGRESS_DIR = "_progress"
RECORD_FILE = "prediction.json"


class VolumeSource:
    """A channel-first view (C, *spatial) of an image file or array, read one region at a time.

    ``volume[c, z0:z1, y0:y1, x0:x1]`` (any channel index, spatial slices, steps allowed) reads
    only that region from the file as stored and reorders it to channel-first; nothing else is
    loaded. The view pickles as its path and axes, so Dask workers reopen the file themselves.

    Parameters
    ----------
    source : an image file (TIFF, Zarr/OME-Zarr, .npy, ...; see :func:`microseg.io.open_image`)
        or an array-like (NumPy, Zarr, memory map) with ``shape``, ``dtype`` and slicing.
    axes : axes of the file or array as stored (e.g. ``"ZYX"``, ``"ZCYX"``); None: the file's
        metadata or a guess for files, channel-first ``"CYX"``/``"CZYX"`` for arrays.

    Raises
    ------
    DataError for a missing or unreadable file or axes that do not fit its shape.
    """

    def __init__(self, source: str | Path | Any, axes: str | None = None):
        from microseg.io import canonical_shape, open_image, validate_axes

        if isinstance(source, (str, Path)):
            self.path: Path | None = Path(source)
            self._stored, self.axes = open_image(self.path, axes)
        else:
            self.path = None
            self._stored = source
            default = {3: "CYX", 4: "CZYX"}.get(len(source.shape), "")
            try:
                self.axes = validate_axes(axes or default, source.shape)
            except ValueError as err:
                raise DataError(f"array of shape {tuple(source.shape)}: {err}; pass axes, "
                                f"e.g. axes='ZYX' for a single-channel volume") from None
        channels, spatial = canonical_shape(self._stored.shape, self.axes)
        self.shape = (channels, *spatial)
        self.dtype = np.dtype(self._stored.dtype)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(Y, X)`` or ``(Z, Y, X)``."""
        return self.shape[1:]

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        from microseg.io import to_canonical

        channel, *spatial = key if isinstance(key, tuple) else (key,)
        spatial += [slice(None)] * (len(self.shape) - 1 - len(spatial))
        by_axis = dict(zip("ZYX"[-len(spatial):], spatial, strict=True))
        index = tuple(by_axis.get(a, slice(0, 1) if a == "T" else slice(None)) for a in self.axes)
        return to_canonical(np.asarray(self._stored[index]), self.axes)[channel]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_stored"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from microseg.io import open_image

        self.__dict__.update(state)
        if self.path is not None:
            self._stored, _ = open_image(self.path, self.axes)


@dataclasses.dataclass(frozen=True)
class VolumePlan:
    """Geometry and settings of one out-of-core prediction (saved in ``prediction.json``).

    ``tile`` and ``halo`` are aligned to the model's size divisor like
    :func:`~microseg.inference.tiling.predict_tiled` does (tile rounded down, halo up);
    ``block`` is a multiple of ``tile``; ``low``/``high`` are the per-channel statistics;
    ``tta``: every window is predicted under the flips and rotations of test-time
    augmentation (:mod:`microseg.inference.tta`).
    """

    spatial_shape: tuple[int, ...]
    channels: int
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    block: tuple[int, ...]
    pad_mode: str
    output: str
    instances: bool
    low: tuple[float, ...]
    high: tuple[float, ...]
    clip: bool
    border: str = "inside"
    divisor: int = 1
    tta: bool = False

    def blocks(self) -> list[tuple[slice, ...]]:
        """The blocks covering the volume, C order (see :func:`tile_grid`)."""
        from microseg.inference.tiling import tile_grid

        return tile_grid(self.spatial_shape, self.block)

    def block_name(self, block: tuple[slice, ...]) -> str:
        """A file-name-safe name of a block: its grid index, e.g. ``"0_3_1"``."""
        return "_".join(str(s.start // b) for s, b in zip(block, self.block, strict=True))

    def record(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class _OutputFolder:
    """The paths inside an out-of-core output folder."""

    root: Path

    @property
    def probabilities(self) -> Path:
        return self.root / "probabilities.zarr"

    @property
    def labels(self) -> Path:
        return self.root / "labels.zarr"

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS_DIR

    @property
    def work_probabilities(self) -> Path:
        """Probabilities kept only to make instance labels (output "labels")."""
        return self.progress / "probabilities.zarr"

    def marker(self, plan: VolumePlan, block: tuple[slice, ...]) -> Path:
        """The file whose existence records that ``block`` is written."""
        return self.progress / "blocks" / f"{plan.block_name(block)}.done"


def predict_volume_to_zarr(
    model: Any,
    source: str | Path | Any,
    output_path: str | Path,
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    normalization_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    axes: str | None = None,
    normalization: Any = None,
    output: Literal["probabilities", "labels", "both"] = "probabilities",
    instance_labels: Callable[[np.ndarray], np.ndarray] | None = None,
    block_shape: int | Sequence[int] | None = None,
    label_overlap: int | Sequence[int] | None = None,
    batch_size: int = 4,
    device: Any = None,
    scheduler: Any = None,
    pad_mode: str = "reflect",
    overwrite: bool = False,
    border: str = "inside",
    tta: bool = False,
) -> dict[str, Any]:
    """Predict a volume larger than memory into Zarr, block by block with Dask; resumable.

    Parameters
    ----------
    model : torch module mapping (N, C, *spatial) to logits (N, K, *spatial); its
        ``size_divisor`` attribute (as set by :func:`microseg.models.build_model`) aligns tiles.
    source : image file (TIFF, Zarr/OME-Zarr, ...) or array-like (C, *spatial) (see
        :class:`VolumeSource`); only regions are read.
    output_path : a new (or empty) folder for the results (layout in the module docstring).
    tile_shape, halo : inner tile and context per side, per axis or one value, as for
        :func:`~microseg.inference.tiling.predict_tiled`; the tile must be at least twice the halo.
    normalization_stats : per-channel ``(low, high)`` (e.g. from the split manifest); None:
        computed once from the whole volume (regularly subsampled when large) with
        ``normalization`` — never per block.
    axes : axes of ``source`` as stored, when its metadata or the guess is wrong.
    normalization : :class:`~microseg.transforms.normalization.PercentileNormalization` giving
        the percentiles, the sample cap and ``clip``; None: its defaults. Its ``mode`` is not
        used: out-of-core prediction always normalizes globally.
    output : "probabilities", "labels" or "both".
    instance_labels : maps probabilities of a region (K, *region) to int object labels
        (*region), e.g. :meth:`microseg.models.TrainedModel.labels`; labels are then instances
        stitched across blocks. None: labels are the class of highest probability.
    block_shape : voxels per Dask task and Zarr chunk, rounded to a multiple of the tile; None:
        two tiles along every axis. Memory per task grows with it.
    label_overlap : instance labels only: voxels each block is labelled beyond its border
        (per axis or one value); objects up to about half of it across are stitched reliably.
        None: twice the halo, at least 8, at most half a block.
    batch_size : tiles per forward pass.
    device : torch device for the model (None: CUDA if available, else CPU).
    scheduler : None (Dask's local threaded scheduler), ``"synchronous"``, ``"threads"``,
        ``"processes"``, a ``dask.distributed.Client``, or a scheduler address
        (``"tcp://host:8786"``).
    pad_mode : how windows are filled beyond the volume border (as predict_tiled).
    overwrite : replace complete (or differently started) results in ``output_path``.
    border : ``"inside"`` (windows stay in the volume) or ``"extend"`` (the volume is extended
        by the halo), as for predict_tiled; the result equals predict_tiled's with the same one.
    tta : test-time augmentation (flips and rotations of every window, averaged), as for
        predict_tiled.

    Returns
    -------
    dict with ``output_path``, ``probabilities`` and ``labels`` (Zarr paths or None),
    ``complete``, ``resumed``, ``blocks_total``, ``blocks_predicted`` (this call),
    ``n_objects`` (instance labels), ``low``/``high``, ``seconds``, ``voxels_per_second`` and
    ``peak_memory_mb`` (peak resident memory of this process).

    Raises
    ------
    DataError if the volume's dimensionality or channels do not fit the model; ConfigError for
    a tile smaller than twice the halo or an unknown output; OutputExistsError if
    ``output_path`` holds complete results, results of other settings, or other files.
    """
    started = time.perf_counter()
    if output not in OUTPUTS:
        raise ConfigError(f"output {output!r} is not known; choose one of {', '.join(OUTPUTS)}")
    volume = source if isinstance(source, VolumeSource) else VolumeSource(source, axes)
    _check_volume_fits_model(volume, model)
    plan = _make_volume_plan(volume, model, tile_shape, halo, normalization_stats, normalization,
                             output, instance_labels is not None, block_shape, pad_mode, border,
                             tta)
    folder = _OutputFolder(Path(output_path))
    _refuse_output_inside_input(folder.root, volume)
    resumed = _prepare_output_folder(folder, plan, _source_record(volume, model), overwrite,
                                     lambda: _output_channels(model, volume, plan, device))
    pending = [b for b in plan.blocks() if not folder.marker(plan, b).exists()]
    _predict_blocks(model, volume, plan, folder, pending, batch_size, device, scheduler)
    n_objects = None
    if plan.instances and plan.output != "probabilities":
        n_objects = _stitch_instances(folder, plan, instance_labels, label_overlap, scheduler)
    _finish(folder)
    seconds = time.perf_counter() - started
    return {
        "output_path": str(folder.root),
        "probabilities": str(folder.probabilities) if plan.output != "labels" else None,
        "labels": str(folder.labels) if plan.output != "probabilities" else None,
        "complete": True,
        "resumed": resumed,
        "blocks_total": len(plan.blocks()),
        "blocks_predicted": len(pending),
        "n_objects": n_objects,
        "low": list(plan.low),
        "high": list(plan.high),
        "seconds": seconds,
        "voxels_per_second": math.prod(plan.spatial_shape) / max(seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(),
    }


def _check_volume_fits_model(volume: Any, model: Any) -> None:
    """Raise :class:`DataError` if ``volume`` (C, *spatial) has the wrong spatial dimensionality
    or channel count for ``model`` (read from its first convolution; models without one pass)."""
    import torch

    convolutions = (torch.nn.Conv2d, torch.nn.Conv3d)
    first = next((m for m in model.modules() if isinstance(m, convolutions)), None)
    if first is None:
        return
    channels, ndim = volume.shape[0], len(volume.shape) - 1
    problems = []
    if ndim != len(first.kernel_size):
        problems.append(f"the image is {ndim}D (shape {tuple(volume.shape)} as (C, *spatial)), "
                        f"the model is {len(first.kernel_size)}D; check the axes of the input")
    if channels != first.in_channels:
        problems.append(f"the image has {channels} channel(s), the model takes "
                        f"{first.in_channels}; check the axes (a channel axis read as Z?)")
    if problems:
        name = getattr(volume, "path", None) or "the input array"
        raise DataError(f"{name} does not fit the model", problems)


def _make_volume_plan(
    volume: Any,
    model: Any,
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    normalization_stats: tuple[Sequence[float], Sequence[float]] | None,
    normalization: Any,
    output: str,
    instances: bool,
    block_shape: int | Sequence[int] | None,
    pad_mode: str,
    border: str = "inside",
    tta: bool = False,
) -> VolumePlan:
    """Align tile and halo to the model's size divisor, choose blocks, fix the statistics.

    Raises :class:`ConfigError` for a tile smaller than twice the halo or statistics whose
    length is not the number of channels.
    """
    from microseg.transforms.normalization import PercentileNormalization, percentile_statistics

    check_border(border)

    spatial = tuple(int(s) for s in volume.shape[1:])
    divisor = _size_divisor(model)
    tile, context = _aligned_tile_and_halo(spatial, tile_shape, halo, divisor)
    block = _block_shape(spatial, tile, block_shape)
    normalization = normalization or PercentileNormalization()
    if normalization_stats is None:
        normalization_stats = percentile_statistics(volume, normalization)
    low, high = (tuple(float(v) for v in np.ravel(s)) for s in normalization_stats)
    if len(low) != volume.shape[0] or len(high) != volume.shape[0]:
        raise ConfigError(f"normalization_stats hold {len(low)} low and {len(high)} high values; "
                          f"expected one per channel ({volume.shape[0]})")
    return VolumePlan(spatial, int(volume.shape[0]), tile, context, block, pad_mode, output,
                      instances, low, high, bool(normalization.clip), border, divisor, tta)


def _size_divisor(model: Any) -> int:
    return int(getattr(model, "size_divisor", 1))


def _aligned_tile_and_halo(spatial: tuple[int, ...], tile_shape: int | Sequence[int],
                           halo: int | Sequence[int], divisor: int
                           ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ndim = len(spatial)
    tiles = per_axis(tile_shape, ndim, "tile_shape")
    halos = per_axis(halo, ndim, "halo")
    if any(t < 2 * h for t, h in zip(tiles, halos, strict=True)):
        factor = math.prod((t + 2 * h) / max(t, 1) for t, h in zip(tiles, halos, strict=True))
        raise ConfigError(
            f"tile_shape {tiles} is smaller than twice the halo {halos}: every tile would read "
            f"{factor:.1f}x its own size; use tiles of at least {tuple(2 * h for h in halos)}"
        )
    tile = tuple(max(divisor, t // divisor * divisor) for t in tiles)
    context = tuple(math.ceil(h / divisor) * divisor for h in halos)
    padded = tuple(math.ceil(n / divisor) * divisor for n in spatial)
    return tuple(min(t, p) for t, p in zip(tile, padded, strict=True)), context


def _block_shape(spatial: tuple[int, ...], tile: tuple[int, ...],
                 block_shape: int | Sequence[int] | None) -> tuple[int, ...]:
    wanted = tuple(2 * t for t in tile) if block_shape is None else per_axis(
        block_shape, len(spatial), "block_shape")
    tiles_per_block = (max(1, w // t) for w, t in zip(wanted, tile, strict=True))
    return tuple(min(k * t, math.ceil(n / t) * t)
                 for k, t, n in zip(tiles_per_block, tile, spatial, strict=True))


def _source_record(volume: VolumeSource, model: Any) -> dict[str, Any]:
    return {
        "source": str(volume.path) if volume.path is not None else "array",
        "axes": volume.axes,
        "model": _model_fingerprint(model),
    }


def _model_fingerprint(model: Any) -> str:
    """A short hash of the model's state dict: a resumed prediction must use the same weights."""
    import hashlib

    import torch

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()[:16]


def _refuse_output_inside_input(output: Path, volume: VolumeSource) -> None:
    if volume.path is None:
        return
    source, target = volume.path.resolve(), output.resolve()
    if target == source or source in target.parents:
        raise OutputExistsError(f"the output {output} lies inside the input {volume.path}; "
                                f"inputs are never written to: choose a folder elsewhere")


def _output_channels(model: Any, volume: Any, plan: VolumePlan, device: Any = None) -> int:
    """K, the number of classes ``model`` predicts, from one forward pass on the first tile."""
    from microseg.inference.tiling import predict_windows, read_window, window_layout

    first = window_layout(plan.spatial_shape, plan.tile, plan.halo, plan.divisor, plan.border)[0]
    window = read_window(volume, first.lower, first.upper, plan.pad_mode).astype(np.float32)
    return int(predict_windows(model, [window], device=device).shape[1])


def _prepare_output_folder(folder: _OutputFolder, plan: VolumePlan, source: dict[str, Any],
                           overwrite: bool, n_classes: Callable[[], int]) -> bool:
    """Create the output folder, or check that an unfinished one can be resumed (True)."""
    record = {**source, "plan": plan.record()}
    root = folder.root
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root} is a file; expected a folder for the prediction")
    if root.is_dir() and any(root.iterdir()):
        if not (root / RECORD_FILE).is_file():
            raise OutputExistsError(f"{root} holds files that are not a microseg prediction; "
                                    f"choose a new or empty folder")
        if not overwrite and _resumable(root, record):
            log.info("resuming the unfinished prediction in %s", root)
            return True
        shutil.rmtree(root)
    _create_output_folder(folder, plan, record, n_classes())
    return False


def _resumable(root: Path, record: dict[str, Any]) -> bool:
    if not (root / INCOMPLETE_MARKER).exists():
        raise OutputExistsError(f"{root} already holds a complete prediction; choose another "
                                f"folder or pass overwrite=True to replace it")
    stored = read_json(root / RECORD_FILE)
    differing = sorted(k for k in set(stored["plan"]) | set(record["plan"])
                       if stored["plan"].get(k) != record["plan"].get(k))
    differing += [k for k in ("source", "axes", "model") if stored.get(k) != record[k]]
    if differing:
        raise OutputExistsError(
            f"{root} holds an unfinished prediction with other settings ({', '.join(differing)} "
            f"differ); resume it with the same settings, or pass overwrite=True to start again"
        )
    return True


def _create_output_folder(folder: _OutputFolder, plan: VolumePlan, record: dict[str, Any],
                          n_classes: int) -> None:
    import zarr

    folder.root.mkdir(parents=True, exist_ok=True)
    (folder.root / INCOMPLETE_MARKER).write_text("prediction in progress or interrupted; "
                                                 "run it again with the same settings to resume\n")
    (folder.progress / "blocks").mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder.root / RECORD_FILE, {**record, "complete": False})
    axes = "CZYX"[-len(plan.spatial_shape) - 1:]
    probabilities = _probabilities_path(folder, plan)
    if probabilities is not None:
        array = zarr.create_array(str(probabilities), shape=(n_classes, *plan.spatial_shape),
                                  chunks=(n_classes, *plan.block), dtype="float32")
        array.attrs["axes"] = axes
    if plan.output != "probabilities":
        array = zarr.create_array(str(folder.labels), shape=plan.spatial_shape,
                                  chunks=plan.block, dtype="int32", fill_value=0)
        array.attrs["axes"] = axes[1:]


def _probabilities_path(folder: _OutputFolder, plan: VolumePlan) -> Path | None:
    """Where the block tasks write probabilities (None: labels from argmax only)."""
    if plan.output != "labels":
        return folder.probabilities
    return folder.work_probabilities if plan.instances else None


def _predict_blocks(model: Any, volume: VolumeSource, plan: VolumePlan, folder: _OutputFolder,
                    blocks: list[tuple[slice, ...]], batch_size: int, device: Any,
                    scheduler: Any) -> None:
    """Run one Dask task per unfinished block (the model in eval mode throughout)."""
    import dask

    if not blocks:
        return
    was_training = model.training
    model.eval()
    try:
        shared_model = dask.delayed(model, name=f"model-{uuid.uuid4().hex}")
        shared_volume = dask.delayed(volume, name=f"volume-{uuid.uuid4().hex}")
        predict = functools.partial(_predict_block, plan=plan, folder=folder.root,
                                    batch_size=batch_size, device=device)
        tasks = [dask.delayed(predict, pure=False)(shared_model, shared_volume, block=b)
                 for b in blocks]
        run_tasks(tasks, scheduler)
    finally:
        model.train(was_training)


def _predict_block(model: Any, volume: Any, block: tuple[slice, ...], plan: VolumePlan,
                   folder: str | Path, batch_size: int = 4, device: Any = None) -> None:
    """Predict one block of ``plan`` and write it into the output folder, then mark it done.

    Runs inside a Dask task; callable directly to predict or repair a single block.
    """
    import zarr

    folder = _OutputFolder(Path(folder))
    probabilities = _block_probabilities(model, volume, block, plan, batch_size, device)
    target = _probabilities_path(folder, plan)
    if target is not None:
        zarr.open_array(str(target), mode="r+")[(slice(None), *block)] = probabilities
    if plan.output != "probabilities" and not plan.instances:
        labels = zarr.open_array(str(folder.labels), mode="r+")
        labels[block] = probabilities.argmax(axis=0).astype(np.int32)
    folder.marker(plan, block).touch()


def _block_probabilities(model: Any, volume: Any, block: tuple[slice, ...], plan: VolumePlan,
                         batch_size: int = 4, device: Any = None) -> np.ndarray:
    """Class probabilities (K, *block extent) float32 of one block, tile by tile with halo."""
    from microseg.inference.tiling import predict_windows, read_window, window_layout
    from microseg.transforms.normalization import normalize

    extent = tuple(s.stop - s.start for s in block)
    windows = window_layout(plan.spatial_shape, plan.tile, plan.halo, plan.divisor,
                            plan.border, region=block)
    normalizer = functools.partial(normalize, low=np.asarray(plan.low),
                                   high=np.asarray(plan.high), clip=plan.clip)
    out = None
    step = max(1, batch_size)
    for first in range(0, len(windows), step):
        group = windows[first:first + step]
        inputs = [read_window(volume, w.lower, w.upper, plan.pad_mode) for w in group]
        predictions = predict_windows(model, inputs, device=device, tile_transform=normalizer,
                                      tta=plan.tta)
        if out is None:
            out = np.zeros((predictions.shape[1], *extent), dtype=np.float32)
        for window, prediction in zip(group, predictions, strict=True):
            where = tuple(slice(k.start - b.start, k.stop - b.start)
                          for k, b in zip(window.kept, block, strict=True))
            out[(slice(None), *where)] = prediction[(slice(None), *window.crop)]
    return out


def _stitch_instances(folder: _OutputFolder, plan: VolumePlan,
                      label_region: Callable[[np.ndarray], np.ndarray],
                      label_overlap: int | Sequence[int] | None, scheduler: Any) -> int:
    import zarr

    source = zarr.open_array(str(_probabilities_path(folder, plan)), mode="r")
    out = zarr.open_array(str(folder.labels), mode="r+")
    ndim = len(plan.spatial_shape)
    if label_overlap is None:
        overlap = tuple(max(1, min(b // 2, max(8, 2 * h)))
                        for b, h in zip(plan.block, plan.halo, strict=True))
    else:
        overlap = per_axis(label_overlap, ndim, "label_overlap")
    return stitch_block_labels(source, out, plan.block, overlap, label_region,
                               folder.progress / "labels", scheduler)


def _finish(folder: _OutputFolder) -> None:
    record = read_json(folder.root / RECORD_FILE)
    atomic_write_json(folder.root / RECORD_FILE, {**record, "complete": True})
    shutil.rmtree(folder.progress, ignore_errors=True)
    (folder.root / INCOMPLETE_MARKER).unlink(missing_ok=True)
