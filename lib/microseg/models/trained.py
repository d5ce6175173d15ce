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

Why one module of about 680 lines: :class:`TrainedModel` is the one object every stage
predicts through (loading, settings, normalization, the object-size search, tiling, labels);
the size search itself (:mod:`microseg.inference.scale_search`), tiling and post-processing
live in their own modules, and what stays here is the glue each method needs.

Example
-------
>>> import numpy as np
>>> from microseg.models import ModelConfig, build_model
>>> config = ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
>>> model = TrainedModel.from_network(build_model(config).eval(), config)
>>> image = np.random.default_rng(0).random((1, 96, 80)).astype(np.float32)
>>> probabilities = model.predict(image, device="cpu")            # (K, Y, X) float32
>>> probabilities.shape, model.labels(probabilities).dtype        # doctest: +ELLIPSIS
((3, 96, 80), dtype('int32'))
>>> TrainedModel.load("runs/demo/models/unet").predict_labels(image[0], axes="YX")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, MicrosegError
from microseg.inference.tiling import per_axis
from microseg.logs import said_once
from microseg.models.prediction import (
    DEFAULT_TILE,
    Prediction,
    PredictionPlan,
    PredictionSettings,
    check_task,
    class_names_for,
    normalization_dict,
    receptive_field_halo,
    saved_settings,
)
from microseg.runs import POSTPROCESSING_FILE, PREDICTION_FILE
from microseg.transforms.scale import resize_to

__all__ = ["TrainedModel"]

log = logging.getLogger(__name__)

SEARCH_SIDE = {2: 2048, 3: 192}
"""The object-size search predicts at most this many pixels per side (a central crop of larger
images; a quarter of it per side when it enlarges): enough objects to measure, and a large
image does not need many GB to search."""

SIZE_MARGIN = 1.15
"""An image is resampled only when its objects are this much larger than the largest, or
smaller than the smallest, size the network was trained on (estimates vary by a few percent)."""


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
        """Load a model folder (``runs/<experiment>/models/<name>``), or a built-in model by
        name (``"nuclei"``: :mod:`microseg.models.builtin`).

        ``which``: ``"best"`` (lowest validation loss), ``"latest"`` or a checkpoint file name
        in the folder. ``device``: where the network goes.

        Raises
        ------
        RunOrderError
            The folder holds no trained model (naming notebook 02).
        DataError, ConfigError, MicrosegError
            A damaged or mismatched ``config.json``, checkpoint or ``prediction.json``.
        """
        from microseg.models.builtin import model_folder
        from microseg.models.checkpoint import load_network
        from microseg.models.zoo import description_file

        folder = model_folder(folder)
        if folder.suffix == ".zip" or (folder.is_dir() and description_file(folder)):
            raise MicrosegError(
                f"{folder} is a bioimage.io package, not a model folder: it lacks what "
                f"prediction needs besides the weights (task, normalization, object size, "
                f"post-processing). Give it as pretrained_path to notebook 03 or 04: they "
                f"check it on your images and adapt it into a model folder, which 05 and 07 use")
        network, config, extra = load_network(folder, which, device)
        settings = saved_settings(folder, config)
        postprocessing = None
        if settings.task == "instance" and (folder / POSTPROCESSING_FILE).is_file():
            from microseg.inference.instances import InstancePostprocessing

            postprocessing = InstancePostprocessing.load(folder / POSTPROCESSING_FILE)
        return cls(network, config, settings, postprocessing, folder, extra)

    @classmethod
    def from_network(cls, network: Any, config: Any = None, *, task: str = "instance",
                     normalization: Any = None, postprocessing: Any = None,
                     halo: int | Sequence[int] | None = None, input_axes: str | None = None,
                     instance_head: str = "three_class", **scale: float | None
                     ) -> TrainedModel:
        """Wrap a network in memory (e.g. just trained or adapted) with its prediction settings.

        ``normalization``: a PercentileNormalization or its dict (None: defaults). ``halo``:
        one value or one per axis (None: measured when first needed). ``scale``:
        ``canonical_diameter`` and ``object_diameter`` of a model trained at a canonical
        object size (see :class:`PredictionSettings`).
        """
        settings = PredictionSettings(
            task=check_task(task), class_names=class_names_for(task, config, instance_head),
            normalization=normalization_dict(normalization), input_axes=input_axes,
            halo=None if halo is None else _halo_list(halo, _ndim(network, config)),
            instance_head=instance_head, **scale)
        return cls(network, config, settings, postprocessing)

    @classmethod
    def finish(cls, folder: str | Path, *, task: str, normalization: Any = None,
               input_axes: str | None = None, quick: bool = False, device: Any = "cpu",
               **settings: Any) -> TrainedModel:
        """Complete a model folder training has just written (``config.json``, ``best.pt``):
        measure the halo of the best network and write ``prediction.json``; returns the model.

        ``task``, ``normalization``, ``input_axes``: of the training data (its split manifest).
        ``quick``: measure the receptive field on one random input instead of four.
        ``settings``: other :class:`PredictionSettings` fields (``instance_head``,
        ``canonical_diameter``, ``object_diameter``).
        """
        from microseg.models.checkpoint import load_network

        folder = Path(folder)
        network, config, extra = load_network(folder, "best", device)
        halo = receptive_field_halo(network, config, quick)[0]
        model = cls.from_network(network, config, task=task, normalization=normalization,
                                 input_axes=input_axes, halo=halo, **settings)
        model.folder, model.checkpoint = folder, extra
        model.settings.save(folder / PREDICTION_FILE)
        return model

    def save_settings(self, folder: str | Path) -> Path:
        """Write ``prediction.json`` only (training writes it before it starts, so a model
        folder left by an interrupted training is read with the right task and scale)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return self.settings.save(folder / PREDICTION_FILE)

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
    def windowed_network(self) -> Any:
        """The network as a module that takes inputs of any shape: itself, or for a network of
        fixed input shape (UNETR) a wrapper that runs it on overlapping windows of that shape,
        blended with Gaussian weights and reflected where the input is smaller (for block-wise
        prediction, whose border blocks are smaller than the window)."""
        fixed = self.fixed_input_shape
        if fixed is None:
            return self.network
        return _fixed_shape_windows(self.network, fixed, self.size_divisor)

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

    def predict(self, image: Any, **options: Any) -> np.ndarray:
        """Class probabilities of one image: (K, *spatial) float32 (softmax over K classes).

        Options as :meth:`predict_with_info`, which also says which scale was used.
        """
        return self.predict_with_info(image, **options).probabilities

    def predict_with_info(self, image: Any, *, axes: str | None = None,
                          normalized: bool = False,
                          object_diameter: float | str | None = None, tta: bool = False,
                          tile_shape: int | Sequence[int] | None = None,
                          halo: int | Sequence[int] | None = None, batch_size: int = 4,
                          device: Any = None, amp: str | None = None, progress: bool = False
                          ) -> Prediction:
        """Predict one image: its probabilities and how they were made (:class:`Prediction`).

        Parameters
        ----------
        image : (C, Y, X) or (C, Z, Y, X) array of any real dtype (or in ``axes``).
        axes : the image's axes when not channel-first, e.g. ``"YX"``, ``"YXC"``, ``"ZYX"``.
        normalized : the image is already normalized (as the split's samples are); otherwise
            percentiles of the whole image are computed once and applied to every tile.
        object_diameter : for a model trained at a canonical object size: the median object
            diameter of this image in pixels; None: the training images' (same magnification);
            ``"auto"``: estimated by predicting the image at several scales and taking the
            diameter that stays the same from one scale to the next
            (:mod:`microseg.inference.scale_search`; fragments of objects too large for the
            network cannot fake it), then predicted once more at that size. Ignored by other
            models.
        tta : average over flips and 90° rotations (:mod:`microseg.inference.tta`; 8 times the
            work; tiles still stitch exactly).
        tile_shape, halo : see :meth:`plan_prediction` (on the resampled image).
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
        ConfigError
            An ``object_diameter`` that is not positive, a number, None or ``"auto"``.
        """
        image = self._channel_first(image, axes)
        normalizer = None if normalized else self._normalizer(image)
        options = dict(tile_shape=tile_shape, halo=halo, batch_size=batch_size,
                       device=self.device if device is None else device, amp=amp,
                       progress=progress)

        def at_scale(factor: float, with_tta: bool = tta, region: Any = image) -> np.ndarray:
            return self._predict_scaled(region, normalizer, factor, with_tta, options)

        if object_diameter == "auto" and self.settings.canonical_diameter is not None:
            return self._predict_auto_scale(at_scale, image, tta)
        diameter = self.assumed_diameter(object_diameter)
        factor = self.scale_factor(diameter)
        probabilities = resize_to(at_scale(factor), image.shape[1:])
        return Prediction(probabilities, diameter, factor, tta, 1)

    def scale_factor(self, object_diameter: float | None) -> float:
        """How images whose objects have ``object_diameter`` pixels are resampled: to the
        median size the network was trained on (:attr:`trained_diameters`) when they are
        larger than the largest it was trained on or smaller than the median, by more than
        :data:`SIZE_MARGIN`, else 1.0; 1.0 for models that work at the image's own scale.

        Shrinking to the median rather than to the largest size: at the largest, the bigger
        nuclei of an image lie beyond what the network saw and come out in pieces (DSB test
        images enlarged 5x, no TTA: F1 0.901 shrunk to the median, 0.865 to the largest;
        BENCHMARKS.md, the scale test)."""
        from microseg.transforms.scale import scale_factor

        if self.trained_diameters is None:
            return 1.0
        median, largest = self.trained_diameters
        return scale_factor(object_diameter, largest, median, tolerance=SIZE_MARGIN,
                            shrink_to=median)

    @property
    def trained_diameters(self) -> tuple[float, float] | None:
        """``(smallest, largest)`` object diameter (pixels) the network handles: the settings'
        ``trained_diameters`` (at most the canonical diameter), or, for models saved without
        them, the training objects' median up to the canonical diameter; None for models
        that work at the image's own scale."""
        canonical = self.settings.canonical_diameter
        if canonical is None:
            return None
        if self.settings.trained_diameters is not None:
            low, high = self.settings.trained_diameters
            return min(low, canonical), min(high, canonical)
        trained = self.settings.object_diameter or canonical
        return min(trained, canonical), canonical

    def assumed_diameter(self, given: float | str | None) -> float | None:
        """The object diameter (pixels) an image is taken to have: ``given`` if a number, else
        the training images' median (``"auto"`` starts there); None for a model that works
        at the image's own scale.

        Raises :class:`ConfigError` for a value that is not None, ``"auto"`` or positive.
        """
        if self.settings.canonical_diameter is None:
            return None
        if given is None or given == "auto":
            return self.settings.object_diameter or self.settings.canonical_diameter
        if isinstance(given, str) or not given > 0:
            raise ConfigError(f"object_diameter {given!r}: give the median object diameter in "
                              f"pixels (a positive number), None (the training images') or "
                              f"'auto' (estimated from a first prediction)")
        return float(given)

    def _predict_scaled(self, image: Any, normalizer: Any, factor: float, tta: bool,
                        options: dict[str, Any]) -> np.ndarray:
        """Probabilities on the grid of ``image`` resampled by ``factor``."""
        from microseg.transforms.scale import rescale_image

        scaled = image if factor == 1.0 else rescale_image(np.asarray(image), factor)
        return self._predict_grid(scaled, normalizer, tta=tta, **options)

    def _predict_grid(self, image: Any, normalizer: Any, *, tile_shape: Any, halo: Any,
                      batch_size: int, device: Any, amp: str | None, progress: bool,
                      tta: bool) -> np.ndarray:
        """One image as the network sees it: whole, tiled or in fixed-shape windows."""
        from microseg.inference.tiling import predict_tiled, predict_whole

        plan = self.plan_prediction(image.shape[1:], tile_shape, halo)
        common = dict(device=device, amp=amp, size_divisor=self.size_divisor,
                      tile_transform=normalizer, tta=tta)
        if plan.kind == "whole":
            probabilities = predict_whole(self.network, image, **common)
        elif plan.kind == "tiled":
            probabilities = predict_tiled(self.network, image, plan.tile, plan.halo,
                                          batch_size=batch_size, progress=progress, **common)
        else:
            probabilities = self._predict_fixed(image, plan, batch_size, progress, common)
        if tuple(probabilities.shape[1:]) != tuple(image.shape[1:]):
            raise DataError(f"the prediction has spatial shape {tuple(probabilities.shape[1:])} "
                            f"but the image has {tuple(image.shape[1:])}: check the model's "
                            f"input size (size divisor {self.size_divisor}) and the tiling")
        return probabilities

    def _predict_auto_scale(self, at_scale: Any, image: Any, tta: bool) -> Prediction:
        """Estimate the object diameter by the scale search (predictions without TTA; on a
        central crop of :data:`SEARCH_SIDE` pixels per side for larger images), then predict
        at the factor it calls for (reusing the search's prediction when it is the same)."""
        from microseg.inference.scale_search import (
            MIN_SEARCH_SIDE,
            Measurement,
            measure_objects,
            search_object_diameter,
        )
        from microseg.transforms.scale import MAX_FACTOR, MIN_FACTOR

        spatial = image.shape[1:]
        crop = _central_crop(image, SEARCH_SIDE[len(spatial)])
        searched: dict[float, np.ndarray] = {}  # reused only without TTA on the whole image

        def measure(factor: float) -> Measurement | None:
            # enlarged, a smaller crop: it has many of the small objects enlarging is for
            region = crop if factor <= 1 else _central_crop(crop, SEARCH_SIDE[len(spatial)] // 4)
            probabilities = at_scale(factor, False, region)
            if not tta and region is image:
                searched[factor] = probabilities
            return measure_objects(self._objects_for_scale(probabilities))

        start = self.scale_factor(self.assumed_diameter(None))
        smallest = max(MIN_FACTOR / 2, MIN_SEARCH_SIDE / max(1, min(crop.shape[1:])))
        estimate = search_object_diameter(measure, start, smallest=min(start, smallest),
                                          largest=start * MAX_FACTOR)
        diameter = estimate.diameter or self.assumed_diameter(None)
        factor = self.scale_factor(diameter)
        passes = len(estimate.trials)
        if not tta and factor in searched:
            probabilities = searched[factor]
        else:
            probabilities, passes = at_scale(factor), passes + 1
        return Prediction(resize_to(probabilities, spatial), diameter, factor, tta, passes,
                          estimate)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """int32 labels (*spatial) from :meth:`predict`'s probabilities.

        Instance models: objects 1..n by seeded watershed with :attr:`postprocessing`
        (:func:`~microseg.inference.instances.probabilities_to_instances`); other tasks: the
        class of highest probability.
        """
        if self.task == "instance" and probabilities.shape[0] >= 3:
            from microseg.inference.instances import probabilities_to_instances

            return probabilities_to_instances(probabilities, self.instance_postprocessing())
        return probabilities.argmax(axis=0).astype(np.int32)

    def _objects_for_scale(self, probabilities: np.ndarray) -> np.ndarray:
        """Objects to measure the scale on: :meth:`labels`, with the default post-processing
        (said nowhere) when none is tuned yet."""
        if self.task != "instance" or self.postprocessing is not None:
            return self.labels(probabilities)
        from microseg.inference.instances import InstancePostprocessing, probabilities_to_instances

        return probabilities_to_instances(
            probabilities, InstancePostprocessing(head=self.settings.instance_head))

    def instance_postprocessing(self) -> Any:
        """:attr:`postprocessing`, or the defaults (said once) when it was never tuned."""
        if self.postprocessing is None:
            from microseg.inference.instances import InstancePostprocessing

            log.warning("model %r has no tuned instance post-processing (%s): using the "
                        "defaults; notebook 05 tunes it on the validation images",
                        self.name, POSTPROCESSING_FILE)
            self.postprocessing = InstancePostprocessing(head=self.settings.instance_head)
        return self.postprocessing

    def tune_postprocessing(self, samples: Sequence[Any], quick: bool = False) -> Any:
        """Tune the watershed thresholds on labelled ``samples`` (normalized ``image``,
        ``label``), predicted as evaluation and deployment predict by default (object size
        measured per image, test-time augmentation), as StarDist's ``optimize_thresholds``.
        Sets :attr:`postprocessing`, saves it in the model folder when there is one
        (``instance_postprocessing.json`` and the search beside it), and returns the search
        table, best first. ``quick``: a 2-value grid."""
        from microseg.inference.instances import tune_on_samples

        def predict(image: np.ndarray) -> np.ndarray:
            return self.predict_with_info(image, normalized=True, object_diameter="auto",
                                          tta=True).probabilities

        self.postprocessing, table = tune_on_samples(predict, samples,
                                                     self.settings.instance_head, quick,
                                                     save_to=self.folder)
        return table

    def predict_labels(self, image: Any, **options: Any) -> np.ndarray:
        """:meth:`labels` of :meth:`predict` (same options): int32 (*spatial)."""
        return self.labels(self.predict(image, **options))

    def target(self, label: np.ndarray) -> np.ndarray:
        """The class map this model is trained to predict for an instance or class label image
        (its task and instance head; :func:`microseg.transforms.targets.labels_to_target`)."""
        from microseg.transforms.targets import labels_to_target

        levels = max(2, int(self.config.out_classes) - 1) if self.config is not None else 2
        return labels_to_target(label, self.task, self.settings.instance_head, levels)

    def predict_volume(self, source: Any, output_path: str | Path, *,
                       tile_shape: int | Sequence[int], halo: int | Sequence[int] | None = None,
                       **options: Any) -> dict[str, Any]:
        """Predict an image or volume larger than memory into Zarr, block by block
        (:mod:`microseg.models.volume`; resampled block by block for a model trained at a
        canonical object size).

        ``source``: a file (TIFF, Zarr, OME-Zarr...) or a :class:`~microseg.inference.ooc.
        VolumeSource`; normalized with statistics of the whole input, computed once.
        ``object_diameter``: as :meth:`predict_with_info`. Other options (``output``,
        ``scheduler``, ``batch_size``, ``device``, ``overwrite``, ``block_shape``,
        ``normalization_stats``, ``tta`` ...) as
        :func:`microseg.inference.ooc.predict_volume_to_zarr`; instance labels are this model's
        :meth:`labels`, stitched across blocks. Returns that function's result with
        ``object_diameter`` and ``scale_factor``.
        """
        from microseg.models.volume import predict_volume

        return predict_volume(self, source, output_path, tile_shape, halo, **options)

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
            hint = ("a colour image for a model of grey images: make it one channel first — "
                    "for stained tissue (H&E) or bright-field, the haematoxylin stain "
                    "(microseg.transforms.colour.haematoxylin: nuclei bright on dark, as in "
                    "fluorescence; the grey value makes them dark on bright) — or use a model "
                    "trained on colour images" if (n_channels, expected) in
                    ((3, 1), (4, 1)) else "check the axes (a channel axis read as Z?)")
            problems.append(f"{source} has {n_channels} channel(s), the model takes {expected}; "
                            f"{hint}")
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
        if (self.settings.colour_input == "nuclei" and shape[0] in (3, 4)
                and _in_channels(self.network, self.config) == 1):
            from microseg.transforms.colour import nuclei_channel

            image = nuclei_channel(np.asarray(image), channel_axis=0)[None]
            said_once(log, f"model {self.name!r} reads colour images as their haematoxylin "
                           f"stain (colour_input='nuclei' in its {PREDICTION_FILE})")
            shape = (1, *shape[1:])
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


def _fixed_shape_windows(network: Any, shape: tuple[int, ...], divisor: int) -> Any:
    """A torch module running ``network`` (fixed input ``shape``) on windows of any input."""
    import torch
    from monai.inferers import sliding_window_inference

    class FixedShapeWindows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            self.size_divisor = divisor

        def forward(self, x: Any) -> Any:
            if tuple(x.shape[2:]) == tuple(shape):
                return self.network(x)
            return sliding_window_inference(x, shape, 4, self.network, overlap=0.5,
                                            mode="gaussian", padding_mode="reflect")

    return FixedShapeWindows()


def _central_crop(image: Any, side: int) -> Any:
    """``image`` (C, *spatial) itself when no side exceeds ``side``, else its central crop of at
    most ``side`` per axis."""
    from microseg.inference.tiling import central_box

    if max(image.shape[1:]) <= side:
        return image
    return image[(slice(None), *central_box(image.shape[1:], side))]
