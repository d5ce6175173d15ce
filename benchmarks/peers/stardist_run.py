"""StarDist 2D trained from scratch on the benchmark's training images, under a CPU budget.

Settings of StarDist's own 2D training example (``examples/2D/2_training.ipynb``, StarDist
0.9): 32 rays, grid (2, 2), the default U-Net (depth 3, 32 base filters), patches of 256²,
batch 4, 100 steps per epoch, learning rate 3e-4 with ReduceLROnPlateau; images normalized to
the 1st/99.8th percentile per image, label holes filled; augmentation by random flips and 90°
rotations and a random intensity change (x·U(0.6, 2) + U(−0.2, 0.2)); the weights of the best
validation loss are kept; probability and NMS thresholds optimized on the validation images.
TensorBoard logging is off (it costs CPU and changes nothing else).

The budget is process CPU time (all threads) from the start of data loading: a Keras callback
stops training after the first step past ``--budget-cpu-seconds`` (that epoch's validation
still runs). Threshold optimization and test prediction are timed separately.

    benchmarks/peers/.venv-stardist/bin/python benchmarks/peers/stardist_run.py \\
        --work-dir /work/bench/usiigaci
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TOOL = "stardist"
SETTINGS = {"n_rays": 32, "grid": (2, 2), "train_patch_size": (256, 256),
            "train_batch_size": 4, "train_epochs": 400, "train_steps_per_epoch": 100,
            "train_tensorboard": False, "normalize_percentiles": (1, 99.8)}


def normalized(image: np.ndarray) -> np.ndarray:
    """Image scaled so that its 1st/99.8th percentiles become 0/1 (StarDist's example)."""
    from csbdeep.utils import normalize

    low, high = SETTINGS["normalize_percentiles"]
    return normalize(image, low, high, axis=(0, 1))


def augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90° rotations of image and labels, and an intensity change."""
    k = np.random.randint(4)
    x, y = np.rot90(x, k), np.rot90(y, k)
    for axis in (0, 1):
        if np.random.rand() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def budget_callback(clock: common.Clock, budget: float) -> Any:
    """A Keras callback counting steps and stopping training once ``budget`` CPU s are spent."""
    from csbdeep.utils.tf import keras_import

    callback_base = keras_import("callbacks", "Callback")

    class CpuBudget(callback_base):
        steps, stopped_at = 0, None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.steps += 1
            if clock.cpu() >= budget and self.stopped_at is None:
                self.stopped_at = self.steps
                self.model.stop_training = True

    return CpuBudget()


def training_data(work: Path, split: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """Normalized images and hole-filled labels of the training and validation stems."""
    from stardist import fill_label_holes

    data = {}
    for subset in ("train", "val"):
        images, labels = common.load_images(work, split[subset])
        data[f"x_{subset}"] = [normalized(x) for x in images]
        data[f"y_{subset}"] = [fill_label_holes(y) for y in labels]
    return data


def train(model: Any, data: dict[str, list[np.ndarray]], seed: int, callback: Any) -> Any:
    """StarDist's own training loop with the budget callback added."""
    model.prepare_for_training()
    model.callbacks.append(callback)
    return model.train(data["x_train"], data["y_train"],
                       validation_data=(data["x_val"], data["y_val"]), augmenter=augment,
                       seed=seed, epochs=SETTINGS["train_epochs"],
                       steps_per_epoch=SETTINGS["train_steps_per_epoch"])


def build_model(out: Path, seed: int) -> Any:
    """A fresh StarDist2D in ``out/model`` with :data:`SETTINGS`."""
    from stardist.models import Config2D, StarDist2D

    keys = ("n_rays", "grid", "train_patch_size", "train_batch_size", "train_epochs",
            "train_steps_per_epoch", "train_tensorboard")
    config = Config2D(n_channel_in=1, **{k: SETTINGS[k] for k in keys})
    import tensorflow as tf

    tf.random.set_seed(seed)
    return StarDist2D(config, name="model", basedir=str(out))


def predict_test(model: Any, work: Path, split: dict[str, Any], out: Path,
                 scale: float = 1.0) -> None:
    """Label images of every test image into ``out/predictions`` (of the test images resampled
    by ``scale``, ``data/test_x<scale>``, into ``out/predictions_x<scale>``)."""
    folder, target = common.test_folders(scale)
    images, _ = common.load_images(work, split["test"], folder, labels=False)
    for stem, image in zip(split["test"], images, strict=True):
        x = normalized(image)
        labels, _ = model.predict_instances(x, n_tiles=model._guess_n_tiles(x),
                                            show_tile_progress=False)
        common.write_label(out / target / f"{stem}.tif", labels)


def predict_scaled(args: Any) -> None:
    """``--predict-scaled F``: the trained model of ``--out`` (default WORK/peers/stardist)
    predicts the test images resampled by F (StarDist has no size estimate: as they are)."""
    from stardist.models import StarDist2D

    work = args.work_dir.resolve()
    out = (args.out or work / "peers" / TOOL).resolve()
    model = StarDist2D(None, name="model", basedir=str(out))
    predict_test(model, work, common.read_split(work), out, args.predict_scaled)
    print(f"written: {out / common.test_folders(args.predict_scaled)[1]}")


def field_of_view(model: Any, labels: list[np.ndarray]) -> dict[str, Any]:
    """Median object extent against the network's field of view (the example's check)."""
    from stardist import calculate_extents

    return {"median_object_extent": [float(v) for v in calculate_extents(labels, np.median)],
            "field_of_view": [int(v) for v in model._axes_tile_overlap("YX")]}


def versions() -> dict[str, str]:
    """Versions of the packages that matter."""
    from importlib.metadata import version

    return {name: version(name) for name in ("stardist", "csbdeep", "tensorflow-cpu", "numpy")}


def run(args: Any) -> dict[str, Any]:
    """Train, tune, predict; return the run record."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = args.work_dir.resolve()
    split, out = common.read_split(work), common.output_dir(work, TOOL, args.out)
    clock = common.Clock()
    with common.LoadSampler() as load:
        data = training_data(work, split)
        model = build_model(out, args.seed)
        callback = budget_callback(clock, args.budget_cpu_seconds)
        history = train(model, data, args.seed, callback)
    training = {**clock.seconds(), "load": load.summary()}
    tuning = common.Clock()
    model.optimize_thresholds(data["x_val"], data["y_val"])
    tuned = tuning.seconds()
    predicting = common.Clock()
    predict_test(model, work, split, out)
    return {"tool": "StarDist", "versions": versions(),
            "settings": SETTINGS, "budget_cpu_seconds": args.budget_cpu_seconds,
            "steps": callback.steps, "epochs": len(history.history["loss"]),
            "stopped_by_budget": callback.stopped_at is not None, "training": training,
            "threshold_tuning": tuned, "prediction": predicting.seconds(),
            "thresholds": dict(model.thresholds._asdict()),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            **field_of_view(model, data["y_train"]), "out": str(out)}


def main() -> None:
    """Command line (see the module docstring)."""
    args = common.arguments(__doc__.splitlines()[0], extra=[common.PREDICT_SCALED])
    common.limit_threads(args.threads)
    if args.predict_scaled is not None:
        return predict_scaled(args)
    record = run(args)
    record.update(common.provenance(args.threads))
    path = common.write_json(Path(record["out"]) / "run.json", record)
    print(f"written: {path}; {record['steps']} steps in {record['epochs']} epochs, "
          f"{record['training']['cpu_seconds']} CPU s, {record['training']['wall_seconds']} s")


if __name__ == "__main__":
    main()
