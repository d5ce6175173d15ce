"""The tiling paper's experiment: identical U-Nets that differ only in their normalization, compared.

Each configuration ``"<feature_norm>/<input_norm>"`` (feature norm: batch, instance,
batchrenorm, none; input norm: global, tile) trains the same network from the same initial
weights, on the same data, for the same number of optimizer steps, with random flips as the only
augmentation; tile-wise input normalization normalizes every training patch and every inference
window with its own percentiles. Training never stops early and the final weights are measured,
so every BatchRenorm model goes through its whole schedule (warm-up as BatchNorm, then the ramp
to its final limits) first. Measured on the validation images, per configuration:

- ``dice_eval``, ``dice_train``: median Dice per class over images of the stitched tiled
  prediction (tiles of the training patch size, halo from the receptive field), in eval mode and
  in train mode (normalization layers using the statistics of each batch of tiles);
- ``disparity``: :func:`~microseg.diagnostics.disparity.train_eval_disparity` on patch-sized
  tiles, batches of the training batch size;
- ``mismatch``: :func:`~microseg.diagnostics.mismatch.tile_mismatch` averaged over images, 0
  where the tiles agree exactly (the tiling paper's "no").

Expected (the tiling paper's Table 1): mismatch 0 for batch, batchrenorm and none with global input
norm, > 0 for instance and for tile-wise input norm; disparity > 0 only for batch.

Example
-------
>>> train, val = synthetic_comparison_data(NormComparisonConfig(quick=True))  # doctest: +SKIP
>>> result = compare_normalizations(train, val, NormComparisonConfig(quick=True))  # doctest: +SKIP
>>> [(r["configuration"], r["mismatch"], r["disparity"]) for r in result.rows]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError

__all__ = [
    "FEATURE_NORMS",
    "INPUT_NORMS",
    "NormComparison",
    "NormComparisonConfig",
    "compare_normalizations",
    "measure_configuration",
    "synthetic_comparison_data",
    "tile_normalizer",
    "train_configuration",
]

FEATURE_NORMS = ("batch", "instance", "batchrenorm", "none")
INPUT_NORMS = ("global", "tile")
PAPER_CONFIGURATIONS = (
    "batch/global",
    "batch/tile",
    "instance/global",
    "instance/tile",
    "batchrenorm/global",
    "none/global",
)


@dataclasses.dataclass
class NormComparisonConfig(StageConfig):
    """Settings of the normalization comparison; everything but the norms is shared.

    Fields
    ------
    configurations : ``"<feature_norm>/<input_norm>"`` entries, e.g. ``"batchrenorm/global"``;
        default the tiling paper's six (Table 1).
    ndim : 2 or 3 (the built-in data: volumes, as in the tiling paper).
    architecture : ``"unet"`` (MONAI UNet; cheap on a CPU) or ``"classic_unet"`` (the tiling paper's
        two conv blocks per level; several times slower).
    channels, strides, num_res_units : network size (see ``ModelConfig``).
    norm_momentum : running-average momentum of batch and batchrenorm (the tiling paper: 0.01).
    epochs, steps_per_epoch : training length in optimizer steps, the same for every model.
    batch_size, grad_accumulation : patches per forward pass, passes per optimizer step.
    patch_size : training patch side (every axis); also the network input in inference.
    learning_rate : Adam's learning rate (the tiling paper: 1e-3).
    halo : halo of the tiled inference and border of the mismatch comparison; None: the
        recommended halo of the network's receptive field.
    mismatch_tile : tile side of the mismatch pairs; None: 64, at most each image side.
    n_train, n_val : built-in synthetic images for training and validation.
    image_shape : spatial shape of the built-in images; None: (48, 112, 112) or (160, 160).
    seed : data, initial weights and patch sampling.
    quick : a smoke run: tiny network (4/8/16 features), 10 optimizer steps, 2 training and 1
        validation image of 96² (3D: 48×64×64); about a minute in 2D on a CPU.
    """

    configurations: tuple[str, ...] = PAPER_CONFIGURATIONS
    ndim: int = 3
    architecture: Literal["unet", "classic_unet"] = "unet"
    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 0
    norm_momentum: float = 0.01
    epochs: int = 10
    steps_per_epoch: int = 20
    batch_size: int = 2
    grad_accumulation: int = 1
    patch_size: int = 48
    learning_rate: float = 1e-3
    halo: int | None = None
    mismatch_tile: int | None = None
    n_train: int = 4
    n_val: int = 2
    image_shape: tuple[int, ...] | None = None
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = [
            f"configuration {c!r} must be '<feature_norm>/<input_norm>' with feature norm in "
            f"{FEATURE_NORMS} and input norm in {INPUT_NORMS}, e.g. 'batchrenorm/global'"
            for c in self.configurations
            if _split_configuration(c) is None
        ]
        if self.ndim not in (2, 3):
            problems.append(f"ndim must be 2 or 3, found {self.ndim}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.n_train, self.n_val) < 1:
            problems.append("epochs, steps_per_epoch, batch_size, n_train and n_val must be >= 1")
        if problems:
            raise ConfigError(
                "NormComparisonConfig is not valid:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    def effective(self) -> NormComparisonConfig:
        """This config, shrunk to a smoke run when ``quick`` is set."""
        if not self.quick:
            return self
        return self.replace(
            channels=(4, 8, 16),
            epochs=2,
            steps_per_epoch=5,
            patch_size=48,
            n_train=2,
            n_val=1,
            image_shape=self.image_shape or ((96, 96) if self.ndim == 2 else (48, 64, 64)),
        )

    def spatial_shape(self) -> tuple[int, ...]:
        if self.image_shape is not None:
            return self.image_shape
        return (48, 112, 112) if self.ndim == 3 else (160, 160)


def _split_configuration(configuration: str) -> tuple[str, str] | None:
    parts = configuration.split("/")
    if len(parts) != 2 or parts[0] not in FEATURE_NORMS or parts[1] not in INPUT_NORMS:
        return None
    return parts[0], parts[1]


@dataclasses.dataclass
class NormComparison:
    """Result of :func:`compare_normalizations`.

    rows : one JSON-ready dict per configuration (see :func:`measure_configuration`).
    examples : per configuration, 2D arrays for the artifact figure: ``image``, ``truth``,
        ``prediction`` (stitched, eval mode), ``seams`` (where the stitched prediction differs
        from the whole-image prediction) and ``tile_starts`` (inner tile starts per axis).
    settings : the effective config as a dict, the halo and the tile sizes used.
    """

    rows: list[dict[str, Any]]
    examples: dict[str, dict[str, Any]]
    settings: dict[str, Any]

    def table(self) -> Any:
        """The rows as a pandas DataFrame, per-class lists spread into columns."""
        import pandas as pd

        flat = []
        for row in self.rows:
            entry = {k: v for k, v in row.items() if not isinstance(v, (list, dict))}
            for key in ("dice_eval", "dice_train", "mismatch_per_class"):
                entry.update({f"{key}_{c}": v for c, v in enumerate(row[key])})
            flat.append(entry)
        return pd.DataFrame(flat)


def synthetic_comparison_data(config: NormComparisonConfig) -> tuple[list[Any], list[Any]]:
    """Built-in synthetic nuclei (instance task: background, foreground, boundary) for the comparison.

    Returns (train, val) lists of :class:`microseg.data.dataset.Sample`, each image normalized
    globally with its own percentiles (1, 99.8), targets with three classes.
    """
    from microseg.data.dataset import Sample
    from microseg.data.synthetic import synthetic_sample
    from microseg.transforms.normalization import normalize, percentile_statistics
    from microseg.transforms.targets import labels_to_target

    config = config.effective()
    samples = []
    for index in range(config.n_train + config.n_val):
        image, label = synthetic_sample(config.spatial_shape(), seed=[config.seed, index])
        low, high = percentile_statistics(image)
        samples.append(
            Sample(
                f"synthetic_{index:02d}",
                normalize(image, low, high),
                label,
                labels_to_target(label, "instance"),
            )
        )
    return samples[: config.n_train], samples[config.n_train :]


def _model_config(
    config: NormComparisonConfig, norm: str, in_channels: int, out_classes: int
) -> Any:
    from microseg.models import ModelConfig

    return ModelConfig(
        architecture=config.architecture,
        ndim=config.ndim,
        in_channels=in_channels,
        out_classes=out_classes,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=norm,
        norm_momentum=config.norm_momentum,
    )


def _train_config(config: NormComparisonConfig) -> Any:
    from microseg.training.config import TrainConfig

    return TrainConfig(
        optimizer="adam",
        learning_rate=config.learning_rate,
        scheduler="none",
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        batch_size=config.batch_size,
        grad_accumulation=config.grad_accumulation,
        patch_size=(config.patch_size,) * config.ndim,
        patience=0,
        loss="dice",
        seed=config.seed,
    )


def tile_normalizer() -> Callable[[np.ndarray], np.ndarray]:
    """Tile-wise input normalization: percentiles (1, 99.8) of each tile on its own."""
    from microseg.transforms.normalization import normalize_tilewise

    return normalize_tilewise


def _augment_factory(ndim: int, input_norm: str) -> Callable[[int], Any]:
    """Random flips only (the tiling paper), then tile-wise normalization of the patch if asked."""
    from microseg.transforms.augment import AugmentConfig, Augmenter

    normalizer = tile_normalizer() if input_norm == "tile" else None

    def make(seed: int) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        flips = Augmenter(AugmentConfig.flips_only(), ndim, seed=seed)

        def augment(image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            image, target = flips(image, target)
            return (image if normalizer is None else normalizer(image)), target

        return augment

    return make


def train_configuration(
    configuration: str,
    train: Sequence[Any],
    val: Sequence[Any],
    config: NormComparisonConfig,
    device: Any = "auto",
) -> tuple[Any, dict[str, Any]]:
    """Train one configuration from the shared initial weights; (model, training record).

    The model is trained in memory (nothing written), for exactly ``epochs·steps_per_epoch``
    optimizer steps (validation, on the first validation image as a whole, is only logged); the
    record holds the steps, seconds, final training loss and, for
    BatchRenorm, the final limits (r_max, d_max).
    """
    from microseg.models import build_model
    from microseg.training.trainer import Trainer, seed_everything

    feature_norm, input_norm = _split_configuration(configuration)
    in_channels, out_classes = int(train[0].image.shape[0]), _n_classes(train, val)
    model_config = _model_config(config, feature_norm, in_channels, out_classes)
    seed_everything(config.seed)
    model = build_model(model_config)
    trainer = Trainer(
        model,
        _train_config(config),
        train,
        val[:1],
        model_config=model_config,
        device=device,
        augment_factory=_augment_factory(config.ndim, input_norm),
        progress=False,
    )
    result = trainer.fit()
    record = {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "final_train_loss": result.history[-1]["train_loss"],
    }
    if feature_norm == "batchrenorm":
        record["renorm_limits"] = [
            result.history[-1]["renorm_r_max"],
            result.history[-1]["renorm_d_max"],
        ]
    return model.eval(), record


def _n_classes(*subsets: Sequence[Any]) -> int:
    return max(3, 1 + max(int(np.max(s.target)) for subset in subsets for s in subset))


def measure_configuration(
    model: Any,
    val: Sequence[Any],
    input_norm: str,
    halo: int,
    tile: int,
    mismatch_tile: Sequence[int],
    batch_size: int,
    device: Any = "auto",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Dice in eval and train mode, disparity and mismatch of a trained model; (row, example).

    ``tile`` is the inner tile of the tiled prediction (network input ``tile + 2·halo``);
    ``mismatch_tile`` the tile of the mismatch pairs; ``batch_size`` the training batch size
    (train-mode statistics come from batches of that many tiles). See the module docstring.
    """
    from microseg.diagnostics.disparity import (
        held_out_tiles,
        train_eval_disparity,
        train_mode_model,
    )
    from microseg.diagnostics.sweep import dice_per_class, median_dice
    from microseg.inference.tiling import predict_tiled

    normalizer = tile_normalizer() if input_norm == "tile" else None
    trained = train_mode_model(model)
    eval_dice, train_dice, stitched = [], [], []
    for sample in val:
        options = {"batch_size": batch_size, "device": device, "tile_transform": normalizer}
        probabilities = predict_tiled(model, sample.image, tile, halo, **options)
        in_train = predict_tiled(trained, sample.image, tile, halo, **options)
        eval_dice.append(dice_per_class(probabilities, sample.target))
        train_dice.append(dice_per_class(in_train, sample.target))
        stitched.append(probabilities)
    side = tile + 2 * halo
    tiles = held_out_tiles([s.image for s in val], side)
    tiles = tiles if normalizer is None else [normalizer(t) for t in tiles]
    disparity = train_eval_disparity(model, tiles, batch_size, device=device)
    row = {
        "dice_eval": median_dice(eval_dice),
        "dice_train": median_dice(train_dice),
        "disparity": disparity["disparity"],
        "disparity_per_class": disparity["per_channel"],
        **_mismatch_over_images(
            model, val, mismatch_tile, halo, input_norm, normalizer, batch_size, device
        ),
    }
    example = _example(model, val[0], stitched[0], tile, halo, normalizer, device)
    return row, example


def _mismatch_over_images(
    model: Any,
    val: Sequence[Any],
    mismatch_tile: Sequence[int],
    halo: int,
    input_norm: str,
    normalizer: Callable[[np.ndarray], np.ndarray] | None,
    batch_size: int,
    device: Any,
) -> dict[str, Any]:
    from microseg.diagnostics.mismatch import tile_mismatch

    results = [
        tile_mismatch(
            model,
            s.image,
            mismatch_tile,
            halo,
            input_norm=input_norm,
            tile_normalizer=normalizer,
            batch_size=batch_size,
            device=device,
        )
        for s in val
    ]
    per_class = []
    for c in range(len(results[0]["per_channel"])):
        values = [r["per_channel"][c] for r in results if r["per_channel"][c] is not None]
        per_class.append(float(np.mean(values)) if values else None)
    measured = [v for v in per_class if v is not None]
    return {
        "mismatch": float(np.mean(measured)) if measured else 0.0,
        "mismatch_per_class": per_class,
        "mismatch_any": any(r["any"] for r in results),
        "max_abs_diff": max(r["max_abs_diff"] for r in results),
        "mismatch_pairs": sum(r["n_pairs"] for r in results),
    }


def _example(
    model: Any,
    sample: Any,
    stitched: np.ndarray,
    tile: int,
    halo: int,
    normalizer: Callable[[np.ndarray], np.ndarray] | None,
    device: Any,
) -> dict[str, Any]:
    """Central slice of the first validation image: prediction and where tiling changed it."""
    from microseg.inference.tiling import predict_whole

    whole = predict_whole(model, sample.image, halo=halo, device=device, tile_transform=normalizer)
    hard, whole_hard = np.argmax(stitched, axis=0), np.argmax(whole, axis=0)
    centre = (hard.shape[0] // 2,) if hard.ndim == 3 else ()
    return {
        "image": sample.image[0][centre],
        "truth": np.asarray(sample.target)[centre],
        "prediction": hard[centre],
        "seams": (hard != whole_hard)[centre],
        "tile_starts": [list(range(0, n, tile)) for n in hard.shape[-2:]],
    }


def _geometry(
    config: NormComparisonConfig, val: Sequence[Any], example_model: Any
) -> dict[str, Any]:
    """Halo (from the receptive field unless given), inner tile and mismatch tile."""
    from microseg.inference.receptive_field import recommended_halo, theoretical_receptive_field

    divisor = int(getattr(example_model, "size_divisor", 1))
    halo = config.halo
    if halo is None:
        rf = theoretical_receptive_field(example_model, config.ndim, int(val[0].image.shape[0]))
        halo = max(recommended_halo(rf, divisor))
    tile = max(divisor, (config.patch_size - 2 * halo) // divisor * divisor)
    wanted = config.mismatch_tile or 64
    smallest = [min(s.image.shape[1 + a] for s in val) for a in range(config.ndim)]
    mismatch_tile = [min(wanted, n // divisor * divisor) for n in smallest]
    return {
        "halo": int(halo),
        "tile": int(tile),
        "mismatch_tile": mismatch_tile,
        "divisor": divisor,
    }


def compare_normalizations(
    train: Sequence[Any],
    val: Sequence[Any],
    config: NormComparisonConfig | None = None,
    device: Any = "auto",
    progress: Callable[[str], None] | None = None,
) -> NormComparison:
    """Train and measure every configuration of ``config`` (module docstring).

    Parameters
    ----------
    train, val : ``Sample`` objects (``.image`` (C, *spatial) float32 globally normalized,
        ``.target`` class map), e.g. from :func:`synthetic_comparison_data` or the run's split.
    config : the comparison settings (``quick`` shrinks them); default :class:`NormComparisonConfig`.
    device : where to train and predict (``"auto"``: GPU if available).
    progress : called with a line of text after each configuration (e.g. ``print``).

    Returns
    -------
    NormComparison
    """
    from microseg.models import build_model

    config = (config or NormComparisonConfig()).effective()
    in_channels, out_classes = int(train[0].image.shape[0]), _n_classes(train, val)
    geometry = _geometry(
        config, val, build_model(_model_config(config, "batch", in_channels, out_classes))
    )
    rows, examples = [], {}
    for configuration in config.configurations:
        started = time.perf_counter()
        model, record = train_configuration(configuration, train, val, config, device)
        feature_norm, input_norm = _split_configuration(configuration)
        measured, examples[configuration] = measure_configuration(
            model,
            val,
            input_norm,
            geometry["halo"],
            geometry["tile"],
            geometry["mismatch_tile"],
            config.batch_size,
            device,
        )
        rows.append(
            {
                "configuration": configuration,
                "feature_norm": feature_norm,
                "input_norm": input_norm,
                **measured,
                **record,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        if progress is not None:
            progress(_progress_line(rows[-1]))
    settings = {"config": config.to_dict(), **geometry}
    return NormComparison(rows, examples, settings)


def _progress_line(row: dict[str, Any]) -> str:
    dice = ", ".join("-" if d is None else f"{d:.2f}" for d in row["dice_eval"][1:])
    return (
        f"{row['configuration']:<20} Dice (eval) {dice}; disparity {row['disparity']:.3f}; "
        f"mismatch {row['mismatch']:.3f}; {row['seconds']:.0f} s"
    )
