"""Cellpose 3 (its residual U-Net, ``CPnet``) trained from scratch on the benchmark's training
images, under a CPU budget. No pretrained weights: ``pretrained_model=False``.

Settings of Cellpose's own command line for training (``python -m cellpose --train``, 3.1):
SGD with learning rate 0.2, momentum 0.9, weight decay 1e-5, batch 8 of 224² patches, its
learning-rate schedule (warm-up over 10 epochs, halvings at the end), random rotation, flips
and rescaling, images normalized to their 1st/99th percentile. From scratch, the diameter the
objects are rescaled to during training (``diam_mean``) is the median of the training label
images' diameters (``cellpose.utils.diameters``, per image, then the median over images), as
the training docs describe for models not started from pretrained weights; prediction uses
that diameter (no rescaling at test time). Cellpose keeps the weights of the last epoch.

The budget is process CPU time (all threads) from the start of data loading. Cellpose's
``train_seg`` has no stop hook and its schedule depends on the number of epochs, so the run is
planned: flows are computed once; a throw-away network trained on
:data:`CALIBRATION_IMAGES` images (one short epoch after a warm-up one, no validation) measures
the CPU seconds per training image; the real run gets the epochs that fit into what is left,
counting the validation passes ``train_seg`` makes at epochs 0, 5, 10, 20, … (a forward pass
over the validation images, taken as a third of a training pass; calibration included in the
budget). When fewer than :data:`MIN_EPOCHS` epochs over every image would fit, each epoch draws
fewer images (``nimg_per_epoch``, Cellpose's own option): its learning rate starts at 0 and rises
over 10 epochs, so two epochs over 447 images (what 3600 CPU seconds hold here) barely train. The flow and cell-probability thresholds are then chosen on the
validation images (a 3 × 3 grid around Cellpose's defaults 0.4 and 0.0, mean
TP/(TP+FP+FN) at IoU 0.5 by ``cellpose.metrics``), as Cellpose's docs advise adjusting them.

    benchmarks/peers/.venv-cellpose/bin/python benchmarks/peers/cellpose_run.py \\
        --work-dir /work/bench/usiigaci
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TOOL = "cellpose"
SETTINGS = {"SGD": True, "learning_rate": 0.2, "weight_decay": 1e-5, "batch_size": 8,
            "bsize": 224, "rescale": True, "min_train_masks": 5, "channels": [0, 0]}
FLOW_THRESHOLDS = (0.3, 0.4, 0.6)
CELLPROB_THRESHOLDS = (-1.0, 0.0, 1.0)
CALIBRATION_IMAGES = 32
"""Training images of the calibration run (4 batches of 8)."""
MIN_EPOCHS = 30
"""Fewest epochs planned: Cellpose's learning rate rises from 0 over its first 10 epochs, so a
run of a few epochs never trains at its full rate (2 epochs: 0, then a ninth of it)."""
FORWARD_SHARE = 1 / 3
"""CPU time of a forward pass (validation) against a training pass (forward and backward)."""
SAFETY = 0.95


def training_data(work: Path, split: dict[str, Any]) -> dict[str, Any]:
    """Images, flows (computed once) and the median diameter of the training labels."""
    from cellpose import dynamics, utils

    data: dict[str, Any] = {}
    for subset in ("train", "val"):
        images, labels = common.load_images(work, split[subset])
        data[f"x_{subset}"] = images
        data[f"labels_{subset}"] = labels
        data[f"flows_{subset}"] = dynamics.labels_to_flows([y.astype(np.int32) for y in labels],
                                                           device=_cpu())
    data["diameter"] = float(np.median([utils.diameters(y)[0] for y in data["labels_train"]]))
    return data


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def new_network(diameter: float, seed: int) -> Any:
    """A randomly initialized Cellpose model (no weights loaded) rescaling to ``diameter``."""
    import torch
    from cellpose import models

    torch.manual_seed(seed)
    return models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
                                diam_mean=diameter)


def train(model: Any, data: dict[str, Any], epochs: int, folder: Path, name: str,
          images_per_epoch: int | None = None, validate: bool = True) -> Path:
    """Cellpose's ``train_seg`` for ``epochs``; returns the saved weights' path.
    ``images_per_epoch``: None (all), else a random draw per epoch; ``validate``: pass the
    validation images (train_seg computes their loss at epochs 0, 5, 10, 20, …)."""
    from cellpose import train as cellpose_train

    keys = ("SGD", "learning_rate", "weight_decay", "batch_size", "bsize", "rescale",
            "min_train_masks", "channels")
    path = cellpose_train.train_seg(
        model.net, train_data=data["x_train"], train_labels=data["flows_train"],
        test_data=data["x_val"] if validate else None,
        test_labels=data["flows_val"] if validate else None, n_epochs=epochs,
        nimg_per_epoch=images_per_epoch, save_path=str(folder), model_name=name,
        **{k: SETTINGS[k] for k in keys})[0]
    return Path(path)


def planned_epochs(data: dict[str, Any], clock: common.Clock, budget: float,
                   seed: int) -> dict[str, Any]:
    """Epochs (and images per epoch) that fit into the rest of the budget, from a short timed
    throw-away run: one warm-up epoch of 16 images, then one timed epoch of
    :data:`CALIBRATION_IMAGES`. When fewer than :data:`MIN_EPOCHS` whole epochs fit, each epoch
    draws fewer images (``nimg_per_epoch``, Cellpose's own option) so that they do."""
    with tempfile.TemporaryDirectory(prefix="cellpose-calibration-") as folder:
        network = new_network(data["diameter"], seed + 1)
        train(network, data, 1, Path(folder), "warm-up", images_per_epoch=16, validate=False)
        before = clock.cpu()
        train(network, data, 1, Path(folder), "calibration",
              images_per_epoch=CALIBRATION_IMAGES, validate=False)
    per_image = (clock.cpu() - before) / CALIBRATION_IMAGES
    per_validation = per_image * len(data["x_val"]) * FORWARD_SHARE
    left = SAFETY * (budget - clock.cpu())
    n_train, batch = len(data["x_train"]), SETTINGS["batch_size"]
    images = n_train
    if left / (per_image * n_train) < MIN_EPOCHS:
        images = max(batch, int(left / (MIN_EPOCHS * per_image)) // batch * batch)
    per_epoch = per_image * images
    epochs = max(1, math.floor(left / per_epoch))
    while epochs > 1 and epochs * per_epoch + validation_passes(epochs) * per_validation > left:
        epochs -= 1
    return {"epochs": epochs, "images_per_epoch": images,
            "cpu_seconds_per_epoch": round(per_epoch, 2),
            "cpu_seconds_per_validation": round(per_validation, 2),
            "calibration_images": CALIBRATION_IMAGES,
            "calibration_cpu_seconds": round(per_image * CALIBRATION_IMAGES, 1)}


def validation_passes(epochs: int) -> int:
    """How often ``train_seg`` computes the validation loss in ``epochs`` epochs."""
    return sum(1 for e in range(epochs) if e == 5 or e % 10 == 0)


def flows_of(model: Any, image: np.ndarray, diameter: float) -> tuple[np.ndarray, np.ndarray]:
    """(flow field dP (2, Y, X), cell probability (Y, X)) of one image at its own size."""
    _, flows, _ = model.eval(image, channels=SETTINGS["channels"], diameter=diameter,
                             compute_masks=False)
    return flows[1], flows[2]


def masks_from(flows: tuple[np.ndarray, np.ndarray], flow: float, cellprob: float) -> np.ndarray:
    """Cellpose's mask computation (as in ``CellposeModel.eval`` without rescaling)."""
    from cellpose import dynamics

    return dynamics.resize_and_compute_masks(flows[0], flows[1], niter=200,
                                             cellprob_threshold=cellprob, flow_threshold=flow,
                                             min_size=15, max_size_fraction=0.4, device=_cpu())


def tune_thresholds(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The flow and cell-probability thresholds with the best mean AP@0.5 on validation."""
    from cellpose import metrics

    flows = [flows_of(model, x, data["diameter"]) for x in data["x_val"]]
    table = []
    for flow, cellprob in itertools.product(FLOW_THRESHOLDS, CELLPROB_THRESHOLDS):
        predicted = [masks_from(f, flow, cellprob) for f in flows]
        ap = metrics.average_precision(data["labels_val"], predicted, threshold=[0.5])[0]
        table.append({"flow_threshold": flow, "cellprob_threshold": cellprob,
                      "mean_ap@0.5": float(np.mean(ap))})
    best = max(table, key=lambda row: row["mean_ap@0.5"])
    return {"best": best, "table": table}


def predict_test(model: Any, work: Path, split: dict[str, Any], out: Path,
                 diameter: float, best: dict[str, float], scale: float = 1.0) -> None:
    """Label images of every test image into ``out/predictions`` (of the test images resampled
    by ``scale``, ``data/test_x<scale>``, into ``out/predictions_x<scale>``)."""
    folder, target = common.test_folders(scale)
    images, _ = common.load_images(work, split["test"], folder, labels=False)
    for stem, image in zip(split["test"], images, strict=True):
        labels = masks_from(flows_of(model, image, diameter), best["flow_threshold"],
                            best["cellprob_threshold"])
        common.write_label(out / target / f"{stem}.tif", np.asarray(labels))


def predict_scaled(args: Any) -> None:
    """``--predict-scaled F``: the trained model of ``--out`` (default WORK/peers/cellpose)
    predicts the test images resampled by F, told their diameter (its training median times
    F: what a user who knows the magnification sets), with the thresholds tuned before."""
    from cellpose import models

    work = args.work_dir.resolve()
    out = (args.out or work / "peers" / TOOL).resolve()
    record = json.loads((out / "run.json").read_text())
    model = models.CellposeModel(gpu=False, pretrained_model=record["weights"])
    predict_test(model, work, common.read_split(work), out,
                 record["diam_mean"] * args.predict_scaled,
                 record["threshold_tuning"]["best"], args.predict_scaled)
    print(f"written: {out / common.test_folders(args.predict_scaled)[1]}")


def versions() -> dict[str, str]:
    """Versions of the packages that matter."""
    from importlib.metadata import version

    return {name: version(name) for name in ("cellpose", "torch", "numpy")}


def run(args: Any) -> dict[str, Any]:
    """Train within the budget, tune the thresholds, predict; return the run record."""
    import torch
    from cellpose import models

    torch.set_num_threads(args.threads)
    work = args.work_dir.resolve()
    split, out = common.read_split(work), common.output_dir(work, TOOL, args.out)
    clock = common.Clock()
    with common.LoadSampler() as load:
        data = training_data(work, split)
        plan = planned_epochs(data, clock, args.budget_cpu_seconds, args.seed)
        weights = train(new_network(data["diameter"], args.seed), data, plan["epochs"], out,
                        "model", images_per_epoch=plan["images_per_epoch"])
    training = {**clock.seconds(), "load": load.summary()}
    model = models.CellposeModel(gpu=False, pretrained_model=str(weights))
    tuning = common.Clock()
    tuned = tune_thresholds(model, data)
    tuned_seconds, predicting = tuning.seconds(), common.Clock()
    predict_test(model, work, split, out, data["diameter"], tuned["best"])
    return {"tool": "Cellpose", "versions": versions(),
            "settings": SETTINGS, "budget_cpu_seconds": args.budget_cpu_seconds,
            "diam_mean": data["diameter"], "plan": plan, "epochs": plan["epochs"],
            "steps": plan["epochs"] * math.ceil(plan["images_per_epoch"] / SETTINGS["batch_size"]),
            "training": training,
            "threshold_tuning": {**tuned_seconds, **tuned}, "prediction": predicting.seconds(),
            "weights": str(weights), "out": str(out)}


def main() -> None:
    """Command line (see the module docstring)."""
    args = common.arguments(__doc__.splitlines()[0], extra=[common.PREDICT_SCALED])
    common.limit_threads(args.threads)
    if args.predict_scaled is not None:
        return predict_scaled(args)
    record = run(args)
    record.update(common.provenance(args.threads))
    path = common.write_json(Path(record["out"]) / "run.json", record)
    print(f"written: {path}; {record['epochs']} epochs, {record['training']['cpu_seconds']} "
          f"CPU s, {record['training']['wall_seconds']} s wall")


if __name__ == "__main__":
    main()
