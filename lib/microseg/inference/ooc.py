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

Instance labels are made in a second pass over the probabilities (:func:`stitch_block_labels`):
each block is labelled with an overlap into its neighbours, objects seen by two blocks in the
overlap are merged (union of overlapping ids), and ids are made unique and consecutive.

The output folder::

    probabilities.zarr   (K, *spatial) float32 class probabilities   (output "probabilities"/"both")
    labels.zarr          (*spatial) int32 labels                      (output "labels"/"both")
    prediction.json      what was predicted, how, and the normalization statistics
    _INCOMPLETE          present until every block is written
    _progress/           one marker per finished block, label work files; removed at the end

Example
-------
>>> result = predict_volume_to_zarr(model, "huge.tif", "runs/demo/predictions/unet/huge",
...                                 tile_shape=128, halo=16)            # doctest: +SKIP
>>> result["complete"], result["blocks_predicted"]                       # doctest: +SKIP
(True, 512)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
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
from microseg.inference.tiling import check_border, per_axis
from microseg.runs import atomic_write_json, read_json

logger = logging.getLogger(__name__)

OUTPUTS = ("probabilities", "labels", "both")
LOCAL_SCHEDULERS = ("threads", "synchronous", "processes")
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
    ``block`` is a multiple of ``tile``; ``low``/``high`` are the per-channel statistics.
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
    postprocessing: Any = None,
    block_shape: int | Sequence[int] | None = None,
    label_overlap: int | Sequence[int] | None = None,
    batch_size: int = 4,
    device: Any = None,
    scheduler: Any = None,
    pad_mode: str = "reflect",
    overwrite: bool = False,
    border: str = "inside",
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
    postprocessing : instance post-processing config for
        :func:`microseg.inference.instances.probabilities_to_instances`; labels are then
        instances stitched across blocks. None: labels are the class of highest probability.
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
    check_volume_fits_model(volume, model)
    plan = make_volume_plan(volume, model, tile_shape, halo, normalization_stats, normalization,
                            output, postprocessing is not None, block_shape, pad_mode, border)
    folder = _OutputFolder(Path(output_path))
    _refuse_output_inside_input(folder.root, volume)
    resumed = _prepare_output_folder(folder, plan, _source_record(volume, model), overwrite,
                                     lambda: output_channels(model, volume, plan, device))
    pending = [b for b in plan.blocks() if not folder.marker(plan, b).exists()]
    _predict_blocks(model, volume, plan, folder, pending, batch_size, device, scheduler)
    n_objects = None
    if plan.instances and plan.output != "probabilities":
        n_objects = _stitch_instances(folder, plan, postprocessing, label_overlap, scheduler)
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


def check_volume_fits_model(volume: Any, model: Any) -> None:
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


def make_volume_plan(
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
                      instances, low, high, bool(normalization.clip), border, divisor)


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
        "model": model_fingerprint(model),
    }


def model_fingerprint(model: Any) -> str:
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


def output_channels(model: Any, volume: Any, plan: VolumePlan, device: Any = None) -> int:
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
            logger.info("resuming the unfinished prediction in %s", root)
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
        predict = functools.partial(predict_block, plan=plan, folder=folder.root,
                                    batch_size=batch_size, device=device)
        tasks = [dask.delayed(predict, pure=False)(shared_model, shared_volume, block=b)
                 for b in blocks]
        run_tasks(tasks, scheduler)
    finally:
        model.train(was_training)


def predict_block(model: Any, volume: Any, block: tuple[slice, ...], plan: VolumePlan,
                  folder: str | Path, batch_size: int = 4, device: Any = None) -> None:
    """Predict one block of ``plan`` and write it into the output folder, then mark it done.

    Runs inside a Dask task; callable directly to predict or repair a single block.
    """
    import zarr

    folder = _OutputFolder(Path(folder))
    probabilities = block_probabilities(model, volume, block, plan, batch_size, device)
    target = _probabilities_path(folder, plan)
    if target is not None:
        zarr.open_array(str(target), mode="r+")[(slice(None), *block)] = probabilities
    if plan.output != "probabilities" and not plan.instances:
        labels = zarr.open_array(str(folder.labels), mode="r+")
        labels[block] = probabilities.argmax(axis=0).astype(np.int32)
    folder.marker(plan, block).touch()


def block_probabilities(model: Any, volume: Any, block: tuple[slice, ...], plan: VolumePlan,
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
        predictions = predict_windows(model, inputs, device=device, tile_transform=normalizer)
        if out is None:
            out = np.zeros((predictions.shape[1], *extent), dtype=np.float32)
        for window, prediction in zip(group, predictions, strict=True):
            where = tuple(slice(k.start - b.start, k.stop - b.start)
                          for k, b in zip(window.kept, block, strict=True))
            out[(slice(None), *where)] = prediction[(slice(None), *window.crop)]
    return out


def run_tasks(tasks: list[Any], scheduler: Any = None) -> list[Any]:
    """Compute Dask ``tasks`` on ``scheduler`` (see :func:`predict_volume_to_zarr`)."""
    import dask

    if scheduler is None or scheduler in LOCAL_SCHEDULERS:
        return list(dask.compute(*tasks, scheduler=scheduler or "threads"))
    if isinstance(scheduler, str):
        from distributed import Client

        with Client(scheduler) as client:
            return list(dask.compute(*tasks, scheduler=client))
    return list(dask.compute(*tasks, scheduler=scheduler))


def _stitch_instances(folder: _OutputFolder, plan: VolumePlan, postprocessing: Any,
                      label_overlap: int | Sequence[int] | None, scheduler: Any) -> int:
    import zarr

    from microseg.inference.instances import probabilities_to_instances

    source = zarr.open_array(str(_probabilities_path(folder, plan)), mode="r")
    out = zarr.open_array(str(folder.labels), mode="r+")
    label_region = functools.partial(probabilities_to_instances, config=postprocessing)
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


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage`` ru_maxrss)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def stitch_block_labels(
    source: Any,
    out: Any,
    block_shape: Sequence[int],
    overlap: int | Sequence[int],
    label_region: Callable[[np.ndarray], np.ndarray],
    work_dir: str | Path,
    scheduler: Any = None,
    min_overlap: float = 0.5,
) -> int:
    """Label a large array block by block and stitch the labels into unique, merged objects.

    Each block is labelled on its region grown by ``overlap`` on every side (cut at the array
    border) by ``label_region``; ids are made unique across blocks. Two neighbouring blocks
    (diagonal ones included) both see the voxels around their shared face; there, within half
    the overlap on either side (where each block still sees half the overlap beyond), an id of
    one and an id of the other are merged when they share at least ``min_overlap`` of the
    smaller one's voxels (union-find over all such pairs). Every merged object then gets one id,
    1..n in order of its first block. Finished blocks are kept in ``work_dir`` (one ``.npz``
    each), so an interrupted run resumes; ``work_dir`` may be deleted afterwards.

    With an exact per-block labelling (connected components of a label image) the result equals
    the whole-array labelling object by object. A learned labelling (watershed of predicted
    probabilities) is reliable for objects up to about half the overlap across.

    Parameters
    ----------
    source : array-like (..., *spatial) (NumPy, Zarr), e.g. probabilities (K, *spatial); the
        spatial axes are the last ``len(block_shape)``.
    out : array-like (*spatial) integer (NumPy or Zarr int32) receiving the labels; with a
        multi-process scheduler it must be a Zarr array.
    block_shape : block per spatial axis (the Zarr chunk shape of ``out`` is best).
    overlap : voxels shared with each neighbour, per axis or one value, at least 1.
    label_region : maps a region of ``source`` (..., *region) to int labels (*region), 0 =
        background; ids need not be consecutive.
    work_dir : folder for per-block files.
    scheduler : as for :func:`predict_volume_to_zarr`.
    min_overlap : fraction of the smaller object's overlap voxels two ids must share to merge.

    Returns
    -------
    The number of objects.

    Raises
    ------
    ConfigError for an overlap below 1 or a block smaller than twice the overlap.
    """
    spatial = tuple(int(s) for s in out.shape)
    geometry = _LabelGeometry.make(spatial, block_shape, overlap)
    work = Path(work_dir)
    (work / "blocks").mkdir(parents=True, exist_ok=True)
    import dask

    todo = [i for i in range(len(geometry.blocks)) if not _block_file(work, i).exists()]
    shared_source = dask.delayed(source, name=f"source-{uuid.uuid4().hex}")
    label = dask.delayed(_label_block, pure=False)
    run_tasks([label(shared_source, geometry, i, label_region, work) for i in todo], scheduler)
    counts = [int(np.load(_block_file(work, i))["count"]) for i in range(len(geometry.blocks))]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    found = run_tasks([dask.delayed(_touching_ids, pure=False)(geometry, i, offsets, work,
                                                               min_overlap)
                       for i in range(len(geometry.blocks))], scheduler)
    mapping = merged_id_mapping(int(offsets[-1]), [pairs for pairs, _ in found],
                                np.concatenate([present for _, present in found]))
    shared_mapping = dask.delayed(mapping, name=f"mapping-{uuid.uuid4().hex}")
    shared_out = dask.delayed(out, name=f"out-{uuid.uuid4().hex}")
    run_tasks([dask.delayed(_write_final_block, pure=False)(shared_out, geometry, i, offsets,
                                                           shared_mapping, work)
               for i in range(len(geometry.blocks))], scheduler)
    return int(mapping.max(initial=0))


@dataclasses.dataclass(frozen=True)
class _LabelGeometry:
    """Blocks of the label stitching and each block's region grown by the overlap."""

    spatial_shape: tuple[int, ...]
    block: tuple[int, ...]
    overlap: tuple[int, ...]
    blocks: tuple[tuple[slice, ...], ...]

    @classmethod
    def make(cls, spatial: tuple[int, ...], block_shape: Sequence[int] | int,
             overlap: Sequence[int] | int) -> _LabelGeometry:
        """Blocks of ``block_shape`` over ``spatial``; ConfigError for an unusable overlap."""
        from microseg.inference.tiling import tile_grid

        block = per_axis(block_shape, len(spatial), "block_shape")
        margin = per_axis(overlap, len(spatial), "overlap")
        if min(margin) < 1 or any(b < 2 * m for b, m in zip(block, margin, strict=True)):
            raise ConfigError(f"label stitching needs an overlap of at least 1 and blocks of at "
                              f"least twice the overlap, found block {block}, overlap {margin}")
        return cls(spatial, block, margin, tuple(tile_grid(spatial, block)))

    def grown(self, index: int, half: bool = False) -> tuple[slice, ...]:
        """Block ``index`` grown by the overlap (or half of it, at least 1), cut at the border."""
        margins = [max(1, m // 2) for m in self.overlap] if half else self.overlap
        sides = zip(self.blocks[index], margins, self.spatial_shape, strict=True)
        return tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in sides)

    def neighbours(self, index: int) -> list[int]:
        """Blocks after ``index`` (C order) that touch it, diagonal neighbours included."""
        grid = tuple(math.ceil(n / b) for n, b in zip(self.spatial_shape, self.block, strict=True))
        position = np.unravel_index(index, grid)
        found = []
        for step in itertools.product((-1, 0, 1), repeat=len(grid)):
            other = tuple(p + s for p, s in zip(position, step, strict=True))
            if all(0 <= o < g for o, g in zip(other, grid, strict=True)):
                flat = int(np.ravel_multi_index(other, grid))
                if flat > index:
                    found.append(flat)
        return found


def _block_file(work: Path, index: int) -> Path:
    return work / "blocks" / f"{index}.npz"


def _label_block(source: Any, geometry: _LabelGeometry, index: int,
                 label_region: Callable[[np.ndarray], np.ndarray], work: Path) -> None:
    """Label one grown block, number its objects 1..n, save them (atomically)."""
    from skimage.segmentation import relabel_sequential

    grown = geometry.grown(index)
    lead = (slice(None),) * (len(source.shape) - len(grown))
    labels = np.asarray(label_region(np.asarray(source[(*lead, *grown)])))
    local, _, _ = relabel_sequential(labels.astype(np.int64))
    target = _block_file(work, index)
    partial = target.with_name(f".{target.stem}.partial.npz")
    np.savez_compressed(partial, labels=local.astype(np.int32), count=int(local.max(initial=0)))
    partial.replace(target)


def _saved_labels(work: Path, index: int) -> np.ndarray:
    """Block ``index``'s labels on its grown region, ids 1..count."""
    return np.load(_block_file(work, index))["labels"].astype(np.int64)


def _crop(labels: np.ndarray, grown: tuple[slice, ...], region: tuple[slice, ...]) -> np.ndarray:
    """The part ``region`` of ``labels``, which cover ``grown``."""
    return labels[tuple(slice(r.start - g.start, r.stop - g.start)
                        for r, g in zip(region, grown, strict=True))]


def _touching_ids(geometry: _LabelGeometry, index: int, offsets: np.ndarray, work: Path,
                  min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (global ids) of objects that block ``index`` and a later neighbour both see, and
    the global ids present inside block ``index`` itself."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    mine = _saved_labels(work, index)
    inside = np.unique(_crop(mine, geometry.grown(index), geometry.blocks[index]))
    for other in geometry.neighbours(index):
        # Compare around the shared face only, where both blocks still see half the overlap
        # beyond it: near the edge of its grown region a block sees objects cut off, and
        # labels them badly (a seed missing, a neighbour flooding in).
        region = _intersection(geometry.grown(index, half=True), geometry.grown(other, half=True))
        if region is None:
            continue
        theirs = _saved_labels(work, other)
        pairs = overlapping_pairs(_crop(mine, geometry.grown(index), region),
                                  _crop(theirs, geometry.grown(other), region), min_overlap)
        found.append(pairs + np.array([offsets[index], offsets[other]]))
    return np.concatenate(found), inside[inside > 0] + offsets[index]


def _intersection(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    region = tuple(slice(max(x.start, y.start), min(x.stop, y.stop))
                   for x, y in zip(a, b, strict=True))
    return region if all(r.stop > r.start for r in region) else None


def overlapping_pairs(first: np.ndarray, second: np.ndarray, min_overlap: float = 0.5
                      ) -> np.ndarray:
    """Pairs ``(a, b)`` of non-zero ids of two labellings of the same voxels that share at least
    ``min_overlap`` of the voxels of the smaller of the two (within these voxels).

    Returns an int64 array (n, 2).

    Example
    -------
    >>> overlapping_pairs(np.array([1, 1, 2, 0]), np.array([5, 5, 5, 7]))
    array([[1, 5],
           [2, 5]])
    """
    first, second = np.ravel(first).astype(np.int64), np.ravel(second).astype(np.int64)
    both = (first > 0) & (second > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs, shared = np.unique(np.stack([first[both], second[both]], axis=1), axis=0,
                              return_counts=True)
    size_first = dict(zip(*np.unique(first[first > 0], return_counts=True), strict=True))
    size_second = dict(zip(*np.unique(second[second > 0], return_counts=True), strict=True))
    smaller = np.array([min(size_first[a], size_second[b]) for a, b in pairs])
    return pairs[shared >= min_overlap * smaller]


def merged_id_mapping(n_ids: int, pairs: Sequence[np.ndarray],
                      present: np.ndarray | None = None) -> np.ndarray:
    """Final id of every id 0..n_ids after merging ``pairs``: 0 stays 0, every group of merged
    ids holding an id of ``present`` (the ids that appear in the output; None: all) gets one id,
    numbered 1..m in order of its smallest present member; the other groups map to 0.
    Returns int32 (n_ids + 1,).

    Example
    -------
    >>> merged_id_mapping(4, [np.array([[3, 1]])]).tolist()
    [0, 1, 2, 1, 3]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([np.zeros((0, 2), dtype=np.int64), *pairs]).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                       shape=(n_ids + 1, n_ids + 1))
    _, component = connected_components(graph, directed=False)
    present = np.arange(1, n_ids + 1) if present is None else np.unique(present[present > 0])
    groups, first_member = np.unique(component[present], return_index=True)
    rank = np.zeros(component.max(initial=0) + 1, dtype=np.int64)
    rank[groups[np.argsort(first_member)]] = np.arange(1, len(groups) + 1)
    mapping = rank[component]
    mapping[0] = 0
    if mapping.max(initial=0) > np.iinfo(np.int32).max:
        raise DataError(f"{mapping.max()} objects do not fit int32 labels")
    return mapping.astype(np.int32)


def _write_final_block(out: Any, geometry: _LabelGeometry, index: int, offsets: np.ndarray,
                       mapping: np.ndarray, work: Path) -> None:
    block = geometry.blocks[index]
    local = _crop(_saved_labels(work, index), geometry.grown(index), block)
    out[block] = np.where(local > 0, mapping[local + offsets[index]], 0).astype(out.dtype)
