"""A trained model: one object that loads a model folder, predicts images and makes labels.

Every stage that uses a trained network — evaluation (notebook 05), transfer quality checks and
correction rounds (03, 04), diagnostics (06), folder and out-of-core prediction and export (07) —
goes through :class:`TrainedModel`, so the decisions prediction needs are made in one place:

- **input normalization**: percentiles of each whole image (the run's normalization settings),
  computed once per image and applied tile by tile, so tiles agree at their borders;
- **how an image is cut** (:meth:`TrainedModel.plan_prediction`): images whose sides all fit
  :data:`DEFAULT_TILE` are predicted whole, larger ones in tiles that read ``halo`` pixels of real
  context and keep their centre (the stitched result equals the whole-image one); networks with
  a fixed input shape (UNETR's ``img_size``) are run on windows of exactly that shape, a quarter
  of each side being context, blended with Gaussian weights (global attention cannot be
  stitched exactly);
- **the halo**: the network's theoretical receptive-field radius rounded up to its size divisor,
  measured once (at the end of training, saved in ``prediction.json``) or given;
- **labels** (:meth:`TrainedModel.labels`): objects by seeded watershed with the post-processing
  tuned on validation images (instance models), else the class of highest probability.

A model folder holds, besides the network's ``config.json`` and weights, ``prediction.json``
(:class:`PredictionSettings`) and, for instance models, ``instance_postprocessing.json``.
Folders written before ``prediction.json`` existed take the task, normalization and input axes
from the split manifest of the run folder they are in.

Example
-------
>>> model = TrainedModel.load("runs/demo/models/unet")            # doctest: +SKIP
>>> probabilities = model.predict(image)                          # (K, Y, X) float32
>>> labels = model.labels(probabilities)                          # (Y, X) int32 objects
>>> model.predict_labels(image, axes="YX").max()                  # doctest: +SKIP
57
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError
from microseg.inference.tiling import per_axis
from microseg.runs import POSTPROCESSING_FILE, PREDICTION_FILE

__all__ = [
    "DEFAULT_TILE",
    "PredictionPlan",
    "PredictionSettings",
    "TrainedModel",
    "receptive_field_halo",
]

log = logging.getLogger(__name__)

DEFAULT_TILE = MappingProxyType({2: 512, 3: 128})
"""Images whose sides are all at most this are predicted whole; larger ones in such tiles."""

TASKS = ("binary", "semantic", "instance")


@dataclasses.dataclass
class PredictionSettings(StageConfig):
    """How to predict with a model, saved as ``prediction.json`` in its model folder.

    Fields
    ------
    task : ``"binary"``, ``"semantic"`` or ``"instance"`` — what the outputs mean.
    class_names : names of the output classes, background first.
    normalization : the :class:`~microseg.transforms.normalization.PercentileNormalization` of
        the training data, as a dict: new images are normalized the same way.
    input_axes : axes the training images were read with (``"YX"``, ``"YXC"``...); None: the
        files' metadata or the guess.
    halo : context per spatial axis for tiled prediction: the receptive-field radius rounded up
        to the size divisor; None: measured when first needed.
    """

    task: Literal["binary", "semantic", "instance"] = "instance"
    class_names: tuple[str, ...] | None = None
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_axes: str | None = None
    halo: tuple[int, ...] | None = None

    def normalization_config(self) -> Any:
        """The normalization as a :class:`PercentileNormalization` object."""
        from microseg.transforms.normalization import PercentileNormalization

        return PercentileNormalization.from_dict(self.normalization)


@dataclasses.dataclass(frozen=True)
class PredictionPlan:
    """How one image is predicted (:meth:`TrainedModel.plan_prediction`).

    kind : ``"whole"`` (one forward pass), ``"tiled"`` (exact stitching with a halo) or
        ``"fixed"`` (windows of the network's fixed input shape, blended).
    tile : inner tile per axis (None when whole).
    halo : context per axis.
    """

    kind: Literal["whole", "tiled", "fixed"]
    tile: tuple[int, ...] | None
    halo: tuple[int, ...]

    def describe(self) -> str:
        """One line for a summary, e.g. ``"in tiles of (512, 512) pixels with a halo of ..."``."""
        if self.kind == "whole":
            return "on whole images"
        if self.kind == "tiled":
            return f"in tiles of {self.tile} pixels with a halo of {self.halo}"
        window = tuple(t + 2 * h for t, h in zip(self.tile, self.halo, strict=True))
        return f"in windows of the model's fixed input shape {window}, with Gaussian blending"


def receptive_field_halo(network: Any, config: Any, quick: bool = False
                         ) -> tuple[tuple[int, ...], str]:
    """The halo a network needs for seamless tiles, and a sentence saying why.

    U-Nets: the theoretical receptive-field radius (:mod:`microseg.inference.receptive_field`,
    4 random inputs, 1 when ``quick``) rounded up to the size divisor. Networks with a fixed
    input shape (UNETR) are not measured (their attention reaches every input pixel): a quarter
    of each side of ``img_size``, rounded down to the divisor.

    Returns
    -------
    (halo per spatial axis, description)
    """
    from microseg.models.factory import required_input_shape, size_divisor

    divisor = size_divisor(config)
    fixed = required_input_shape(config)
    if fixed is not None:
        halo = tuple(side // 4 // divisor * divisor for side in fixed)
        return halo, (f"fixed input shape {tuple(fixed)} (global attention: every output "
                      f"depends on the whole window); a quarter of each side, {halo}, is context")
    from microseg.inference.receptive_field import recommended_halo, theoretical_receptive_field

    field = theoretical_receptive_field(network, config.ndim, config.in_channels,
                                        n_trials=1 if quick else 4)
    halo = recommended_halo(field, divisor)
    text = f"receptive field {field.extent} pixels -> halo {halo} for tiled prediction"
    if field.whole_input:
        log.warning("every output of this model depends on the whole tile (tile-wise "
                    "normalization): tiled predictions will show seams whatever the halo; use "
                    "a model trained with norm='batchrenorm' for seamless tiles")
        text += " (outputs also depend on the whole tile: tiles will not stitch exactly)"
    return halo, text


@dataclasses.dataclass(eq=False)
class TrainedModel:
    """A trained network with everything prediction needs (module docstring).

    Build it with :meth:`load` (a model folder) or :meth:`from_network` (a network in memory).

    network : the torch module mapping (N, C, *spatial) to logits (N, K, *spatial).
    config : its :class:`~microseg.models.ModelConfig`; None for a TorchScript network (size
        divisor then 16, halo 32, no fixed input shape).
    settings : :class:`PredictionSettings` (task, normalization, input axes, halo).
    postprocessing : :class:`~microseg.inference.instances.InstancePostprocessing` for
        instance models (None: defaults), unused otherwise.
    folder : the model folder it was loaded from, if any.
    checkpoint : what the checkpoint says besides the weights (epoch, best_epoch, history...).
    """

    network: Any
    config: Any
    settings: PredictionSettings
    postprocessing: Any = None
    folder: Path | None = None
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path, which: str = "best", device: Any = "cpu") -> TrainedModel:
        """Load a model folder (``runs/<experiment>/models/<name>``).

        ``which``: ``"best"`` (lowest validation loss), ``"latest"`` or a checkpoint file name
        in the folder. ``device``: where the network goes.

        Raises
        ------
        RunOrderError
            The folder holds no trained model (naming notebook 02).
        DataError, ConfigError, MicrosegError
            A damaged or mismatched ``config.json``, checkpoint or ``prediction.json``.
        """
        from microseg.models.checkpoint import load_network

        folder = Path(folder)
        network, config, extra = load_network(folder, which, device)
        settings = _saved_settings(folder, config)
        postprocessing = None
        if settings.task == "instance" and (folder / POSTPROCESSING_FILE).is_file():
            from microseg.inference.instances import InstancePostprocessing

            postprocessing = InstancePostprocessing.load(folder / POSTPROCESSING_FILE)
        return cls(network, config, settings, postprocessing, folder, extra)

    @classmethod
    def from_network(cls, network: Any, config: Any = None, *, task: str = "instance",
                     normalization: Any = None, postprocessing: Any = None,
                     halo: int | Sequence[int] | None = None,
                     input_axes: str | None = None) -> TrainedModel:
        """Wrap a network in memory (e.g. just trained or adapted) with its prediction settings.

        ``normalization``: a PercentileNormalization or its dict (None: defaults). ``halo``:
        one value or one per axis (None: measured when first needed).
        """
        settings = PredictionSettings(
            task=_check_task(task), class_names=_class_names(task, config),
            normalization=_normalization_dict(normalization), input_axes=input_axes,
            halo=None if halo is None else _halo_list(halo, _ndim(network, config)))
        return cls(network, config, settings, postprocessing)

    @classmethod
    def finish(cls, folder: str | Path, *, task: str, normalization: Any = None,
               input_axes: str | None = None, quick: bool = False,
               device: Any = "cpu") -> TrainedModel:
        """Complete a model folder training has just written (``config.json``, ``best.pt``):
        measure the halo of the best network and write ``prediction.json``; returns the model.

        ``task``, ``normalization``, ``input_axes``: of the training data (its split manifest).
        ``quick``: measure the receptive field on one random input instead of four.
        """
        from microseg.models.checkpoint import load_network

        folder = Path(folder)
        network, config, extra = load_network(folder, "best", device)
        model = cls.from_network(network, config, task=task, normalization=normalization,
                                 input_axes=input_axes)
        model.folder, model.checkpoint = folder, extra
        halo = receptive_field_halo(network, config, quick)[0]
        model.settings = model.settings.replace(halo=list(halo))
        model.settings.save(folder / PREDICTION_FILE)
        return model

    def save(self, folder: str | Path) -> Path:
        """Write ``prediction.json`` (and the tuned post-processing) into ``folder``.

        The network's config and weights are written by training (``config.json``,
        ``best.pt``); a model folder is complete with both.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.settings.save(folder / PREDICTION_FILE)
        if self.postprocessing is not None and self.task == "instance":
            self.postprocessing.save(folder / POSTPROCESSING_FILE)
        return folder

    @property
    def name(self) -> str:
        """The model folder's name, or ``"model"`` for a network in memory."""
        return self.folder.name if self.folder is not None else "model"

    @property
    def task(self) -> str:
        return self.settings.task

    @property
    def ndim(self) -> int | None:
        """Spatial dimensions (2 or 3); None for a network that does not tell."""
        return _ndim(self.network, self.config)

    @property
    def normalization(self) -> Any:
        """The input normalization (:class:`PercentileNormalization`)."""
        return self.settings.normalization_config()

    @property
    def size_divisor(self) -> int:
        """Every network input side must be a multiple of this (16 for TorchScript)."""
        if self.config is not None:
            from microseg.models.factory import size_divisor

            return size_divisor(self.config)
        return int(getattr(self.network, "size_divisor", 16))

    @property
    def device(self) -> Any:
        """The torch device the network's parameters are on (CPU for a network without any)."""
        import torch

        parameter = next(iter(self.network.parameters()), None)
        return torch.device("cpu") if parameter is None else parameter.device

    @property
    def fixed_input_shape(self) -> tuple[int, ...] | None:
        """The only input shape the network accepts (UNETR's ``img_size``), else None."""
        if self.config is None:
            return None
        from microseg.models.factory import required_input_shape

        fixed = required_input_shape(self.config)
        return None if fixed is None else tuple(fixed)

    @property
    def halo(self) -> tuple[int, ...]:
        """Context per spatial axis for tiled prediction (module docstring); measured once."""
        return self._halo(self.ndim)

    def _halo(self, ndim: int | None) -> tuple[int, ...]:
        if self.settings.halo is None:
            if self.config is not None:
                halo = receptive_field_halo(self.network, self.config)[0]
            elif ndim is not None:
                halo = (32,) * ndim
            else:
                raise ConfigError("this network has no ModelConfig and no convolution, so its "
                                  "dimensions are unknown: pass halo= to from_network")
            self.settings = self.settings.replace(halo=list(halo))
        return tuple(self.settings.halo)

    def plan_prediction(self, spatial_shape: Sequence[int],
                        tile_shape: int | Sequence[int] | None = None,
                        halo: int | Sequence[int] | None = None) -> PredictionPlan:
        """How an image of ``spatial_shape`` is predicted (module docstring).

        ``tile_shape``: inner tile (one side or one per axis); None: whole when every side fits
        :data:`DEFAULT_TILE`, else tiles of that side. ``halo``: None: :attr:`halo`.
        """
        spatial = tuple(int(s) for s in spatial_shape)
        fixed = self.fixed_input_shape
        if fixed is not None:
            context = receptive_field_halo(self.network, self.config)[0]
            tile = tuple(side - 2 * h for side, h in zip(fixed, context, strict=True))
            return PredictionPlan("fixed", tile, context)
        context = self._halo(len(spatial)) if halo is None else self._given_halo(halo, len(spatial))
        if tile_shape is None:
            default = DEFAULT_TILE[len(spatial)]
            if all(s <= default for s in spatial):
                return PredictionPlan("whole", None, context)
            tile_shape = default
        tile = per_axis(tile_shape, len(spatial), "tile_shape")
        if min(tile) < self.size_divisor:
            raise ConfigError(f"tile_shape {tile_shape!r} is smaller than the model's size "
                              f"divisor {self.size_divisor}: give tiles of at least "
                              f"{max(self.size_divisor, 2 * max(context))} pixels per side, or "
                              f"None for the default {DEFAULT_TILE[len(spatial)]}")
        return PredictionPlan("tiled", tile, context)

    def _given_halo(self, halo: int | Sequence[int], ndim: int) -> tuple[int, ...]:
        """A halo given by the caller; a warning when it is below the measured one."""
        given = per_axis(halo, ndim, "halo")
        measured = self.settings.halo
        if measured is not None and any(g < m for g, m in zip(given, measured, strict=True)):
            log.warning("halo %s is smaller than this model's receptive-field radius %s: tiles "
                        "will not stitch seamlessly", given, tuple(measured))
        return given

    def predict(self, image: Any, *, axes: str | None = None, normalized: bool = False,
                tile_shape: int | Sequence[int] | None = None,
                halo: int | Sequence[int] | None = None, batch_size: int = 4,
                device: Any = None, amp: str | None = None, progress: bool = False
                ) -> np.ndarray:
        """Class probabilities of one image: (K, *spatial) float32 (softmax over K classes).

        Parameters
        ----------
        image : (C, Y, X) or (C, Z, Y, X) array of any real dtype (or in ``axes``).
        axes : the image's axes when not channel-first, e.g. ``"YX"``, ``"YXC"``, ``"ZYX"``.
        normalized : the image is already normalized (as the split's samples are); otherwise
            percentiles of the whole image are computed once and applied to every tile.
        tile_shape, halo : see :meth:`plan_prediction`.
        batch_size : windows per forward pass (halved on GPU out-of-memory).
        device : None (where the network is, :attr:`device`), ``"auto"`` (a GPU if there is
            one), ``"cpu"``, ``"cuda"``...
        amp : ``"bf16"`` or ``"fp16"`` on CUDA.
        progress : a progress bar over tile batches.

        Raises
        ------
        DataError
            An image that does not fit the network (dimensions, channels) or whose intensities
            are not finite (NaN or infinite pixels).
        """
        from microseg.inference.tiling import predict_tiled, predict_whole

        image = self._channel_first(image, axes)
        normalizer = None if normalized else self._normalizer(image)
        plan = self.plan_prediction(image.shape[1:], tile_shape, halo)
        common = dict(device=self.device if device is None else device, amp=amp,
                      size_divisor=self.size_divisor, tile_transform=normalizer)
        if plan.kind == "whole":
            return predict_whole(self.network, image, **common)
        if plan.kind == "tiled":
            return predict_tiled(self.network, image, plan.tile, plan.halo,
                                 batch_size=batch_size, progress=progress, **common)
        return self._predict_fixed(image, plan, batch_size, progress, common)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """int32 labels (*spatial) from :meth:`predict`'s probabilities.

        Instance models: objects 1..n by seeded watershed with :attr:`postprocessing`
        (:func:`~microseg.inference.instances.probabilities_to_instances`); other tasks: the
        class of highest probability.
        """
        if self.task == "instance" and probabilities.shape[0] == 3:
            from microseg.inference.instances import probabilities_to_instances

            return probabilities_to_instances(probabilities, self.instance_postprocessing())
        return probabilities.argmax(axis=0).astype(np.int32)

    def instance_postprocessing(self) -> Any:
        """:attr:`postprocessing`, or the defaults (said once) when it was never tuned."""
        if self.postprocessing is None:
            from microseg.inference.instances import InstancePostprocessing

            log.warning("model %r has no tuned instance post-processing (%s): using the "
                        "defaults; notebook 05 tunes it on the validation images",
                        self.name, POSTPROCESSING_FILE)
            self.postprocessing = InstancePostprocessing()
        return self.postprocessing

    def predict_labels(self, image: Any, **options: Any) -> np.ndarray:
        """:meth:`labels` of :meth:`predict` (same options): int32 (*spatial)."""
        return self.labels(self.predict(image, **options))

    def predict_volume(self, source: Any, output_path: str | Path, *,
                       tile_shape: int | Sequence[int], halo: int | Sequence[int] | None = None,
                       **options: Any) -> dict[str, Any]:
        """Predict an image or volume larger than memory into Zarr, block by block.

        ``source``: a file (TIFF, Zarr, OME-Zarr...) or a :class:`~microseg.inference.ooc.
        VolumeSource`; normalized with statistics of the whole input, computed once. Other
        options (``output``, ``scheduler``, ``batch_size``, ``device``, ``overwrite``,
        ``block_shape``, ``normalization_stats`` ...) as
        :func:`microseg.inference.ooc.predict_volume_to_zarr`; instance labels are this model's
        :meth:`labels`, stitched across blocks. Returns that function's result.
        """
        from microseg.inference.ooc import predict_volume_to_zarr

        options.setdefault("axes", self.settings.input_axes)
        if self.task == "instance":
            self.instance_postprocessing()
        return predict_volume_to_zarr(
            self.network, source, output_path, tile_shape, self.halo if halo is None else halo,
            normalization=self.normalization,
            instance_labels=self.labels if self.task == "instance" else None, **options)

    def predict_folder(self, input_path: str | Path, output_dir: str | Path,
                       **options: Any) -> dict[str, Any]:
        """Predict every image of a folder (or one image file) into a new folder of label
        (and/or probability) images: :func:`microseg.inference.folder.predict_folder` with this
        model; ``options`` as there (``tile_shape``, ``halo``, ``output``, ``format``...)."""
        from microseg.inference.folder import predict_folder

        return predict_folder(self, input_path, output_dir, **options)

    def check_fits(self, n_channels: int, ndim: int, source: str = "the image") -> None:
        """Raise :class:`DataError` when images of ``n_channels`` and ``ndim`` do not fit."""
        problems = []
        if self.ndim is not None and ndim != self.ndim:
            problems.append(f"{source} is {ndim}D, the model is {self.ndim}D; check the axes")
        expected = _in_channels(self.network, self.config)
        if expected is not None and n_channels != expected:
            problems.append(f"{source} has {n_channels} channel(s), the model takes {expected}; "
                            f"check the axes (a channel axis read as Z?)")
        if problems:
            raise DataError(f"{source} does not fit model {self.name!r}", problems)

    def _channel_first(self, image: Any, axes: str | None) -> Any:
        if axes is not None:
            from microseg.io.images import to_canonical

            image = to_canonical(image, axes)
        shape = tuple(int(s) for s in image.shape)
        if len(shape) not in (3, 4):
            raise DataError("cannot predict this image", [
                f"image of shape {shape} must be channel-first (C, Y, X) or (C, Z, Y, X); "
                f"give its axes, e.g. predict(image, axes='YX')"])
        self.check_fits(shape[0], len(shape) - 1)
        return image

    def normalization_statistics(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel low and high percentiles of a whole image (C, *spatial), read on a
        regular grid for large or out-of-core images: what every tile is normalized with.

        Raises
        ------
        DataError
            If they are not finite: the image has NaN or infinite pixels.
        """
        from microseg.transforms.normalization import percentile_statistics

        normalization = self.normalization
        low, high = percentile_statistics(image, normalization)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise DataError("the image has NaN or infinite pixels, so it cannot be normalized", [
                f"percentiles {normalization.low}/{normalization.high} per channel: {list(low)} "
                f"/ {list(high)}", "replace those pixels (e.g. by 0 or the median) before "
                "predicting; microseg never guesses values for them"])
        return low, high

    def _normalizer(self, image: Any) -> Any:
        """Normalize each window with percentiles of the whole image (computed here, once)."""
        from microseg.transforms.normalization import normalize

        low, high = self.normalization_statistics(image)
        return functools.partial(normalize, low=low, high=high, clip=self.normalization.clip)

    def _predict_fixed(self, image: Any, plan: PredictionPlan, batch_size: int, progress: bool,
                       common: dict[str, Any]) -> np.ndarray:
        """Windows of exactly the fixed input shape; small images are reflected and cropped."""
        from microseg.inference.tiling import predict_tiled

        spatial = tuple(image.shape[1:])
        padding = [(0, 0)] + [(0, max(0, t - s)) for s, t in zip(spatial, plan.tile, strict=True)]
        if any(after for _, after in padding):
            image = np.pad(np.asarray(image), padding,
                           mode="reflect" if min(spatial) > 1 else "edge")
        probabilities = predict_tiled(self.network, image, plan.tile, plan.halo,
                                      batch_size=batch_size, progress=progress,
                                      blending="gaussian", **common)
        return probabilities[(slice(None),) + tuple(slice(0, s) for s in spatial)]


def _saved_settings(folder: Path, config: Any) -> PredictionSettings:
    """``prediction.json``, or for older folders the settings of the run's split manifest."""
    path = folder / PREDICTION_FILE
    if path.is_file():
        return PredictionSettings.load(path)
    manifest_path = folder.resolve().parent.parent / "data" / "split.json"
    if not manifest_path.is_file():
        log.info("%s has no %s and is not inside a run folder with a split manifest: predicting "
                 "with the default normalization, task %s", folder, PREDICTION_FILE,
                 "instance" if config.out_classes == 3 else "semantic")
        task = "instance" if config.out_classes == 3 else (
            "binary" if config.out_classes == 2 else "semantic")
        return PredictionSettings(task=task, class_names=_class_names(task, config),
                                  normalization=_normalization_dict(None))
    from microseg.data.split import SplitManifest

    manifest = SplitManifest.load(manifest_path)
    task = manifest.task if config.out_classes == manifest.n_classes else (
        "instance" if config.out_classes == 3 else "semantic")
    return PredictionSettings(task=task, class_names=_class_names(task, config),
                              normalization=dict(manifest.normalization),
                              input_axes=manifest.input_axes)


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def _class_names(task: str, config: Any) -> tuple[str, ...] | None:
    if config is None:
        return None
    from microseg.transforms.targets import class_names

    return tuple(class_names(task, config.out_classes))


def _normalization_dict(normalization: Any) -> dict[str, Any]:
    from microseg.transforms.normalization import PercentileNormalization

    if normalization is None:
        return PercentileNormalization().to_dict()
    if isinstance(normalization, dict):
        return PercentileNormalization.from_dict(normalization).to_dict()
    return normalization.to_dict()


def _ndim(network: Any, config: Any) -> int | None:
    """Spatial dimensions from the config, else from the first convolution; None if unknown."""
    if config is not None:
        return int(config.ndim)
    convolution = _first_convolution(network)
    return None if convolution is None else len(convolution.kernel_size)


def _in_channels(network: Any, config: Any) -> int | None:
    if config is not None:
        return int(config.in_channels)
    convolution = _first_convolution(network)
    return None if convolution is None else int(convolution.in_channels)


def _first_convolution(network: Any) -> Any:
    import torch

    kinds = (torch.nn.Conv2d, torch.nn.Conv3d)
    return next((m for m in network.modules() if isinstance(m, kinds)), None)



def _halo_list(halo: int | Sequence[int], ndim: int | None) -> tuple[int, ...]:
    """A halo given to :meth:`TrainedModel.from_network`: one value per axis when ``ndim`` is
    known; one value for a network that does not tell its dimensions stays one value."""
    if ndim is None:
        if not np.isscalar(halo):
            return tuple(int(h) for h in halo)
        raise ConfigError("this network does not tell its dimensions: give the halo per axis, "
                          "e.g. halo=(16, 16)")
    return per_axis(halo, ndim, "halo")
