"""Fine-tuning the built-in nuclei model against training from scratch, with few annotated images
of another kind of nuclei image: the curve that tells a user whether to annotate more.

Data: the colour images of the Data Science Bowl 2018 set (H&E and bright-field: nuclei dark on
a bright background, unlike the fluorescence images the built-in model was trained on), on the
fixed ``dsb2018_colour`` split of ``real_data.py`` (:func:`real_data.write_layout`). The built-in
model reads one channel, so every image is made one channel first (``--one-channel``: the
haematoxylin stain, :func:`microseg.transforms.colour.haematoxylin`, as the message a colour image
gets from the model recommends; or ``grey``, the luminance of ``skimage.color.rgb2gray``), written
into the work folder (the data folder is only read).

For each ``N`` of ``--images``: a target folder with ``N`` training images of the split, its
validation images and one more image (notebook 04's recipe keeps at least one test image of its
own; it is not scored). Notebook 04's recipe then, as a user would run it
(:func:`microseg.recipes.transfer.prepare_transfer` with ``n_target_train=N``): the built-in
model fine-tuned (every layer, ``AdaptConfig(mode="finetune")``) and a network trained from
scratch with the same :class:`~microseg.training.config.TrainConfig` (``--epochs`` epochs of the
recipe's 20 steps, batch 8, 128² patches, its early stop after 6 epochs without progress). Both, and the built-in model as it is
(zero-shot), are evaluated by ``evaluate_models`` on the split's colour test images and scored by
:func:`real_data.score_folders`.

    .venv/bin/python benchmarks/fine_tune_curve.py --data ../shared/realdata/dsb2018_stage1_train \\
        --work-dir /work/bench/dsb_colour --images 5 20 all --epochs 15

Writes ``WORK/curve-<way>/n<N>/`` (run folders) and ``WORK/results/fine_tune_curve-<way>.json``
(one entry per N and arm: scores, steps, seconds, machine, command), and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402

DATASET = "dsb2018_colour"
BUILTIN = "nuclei"


ONE_CHANNEL = ("haematoxylin", "grey")
"""Ways of making a colour image one channel (``--one-channel``)."""


def grey_folder(work: Path, subset: str, stems: Sequence[str], way: str = "grey") -> Path:
    """``WORK/<way>/<subset>/{images,labels}``: the layout's images made one channel (labels
    linked): ``grey`` as uint8 luminance, ``haematoxylin`` as the float32 stain; reused when
    present."""
    import tifffile
    from skimage.color import rgb2gray

    from microseg.transforms.colour import haematoxylin

    source = work / "data" / ("test" if subset == "test" else "trainval")
    folder = work / way / subset
    for stem in stems:
        image_path, label_path = folder / "images" / f"{stem}.tif", folder / "labels" / f"{stem}.tif"
        if not image_path.is_file():
            image = np.asarray(tifffile.imread(source / "images" / f"{stem}.tif"))
            if image.ndim == 2:
                one = image / max(1, image.max())
            else:
                one = haematoxylin(image) if way == "haematoxylin" else rgb2gray(image[..., :3])
            real_data._write_tiff(image_path, np.round(one * 255).astype(np.uint8)
                                  if way == "grey" else one.astype(np.float32))
        if not label_path.exists():
            real_data._link((source / "labels" / f"{stem}.tif").resolve(), label_path)
    return folder


def target_folder(work: Path, split: dict[str, Any], n_train: int,
                  way: str = "grey") -> tuple[Path, int]:
    """``WORK/targets/n<N>`` (``<way>-n<N>`` but for grey): N training images (the split's
    order), the validation images and one more training image for the recipe's own test part;
    (folder, number of val images)."""
    train, val = list(split["train"]), list(split["val"])
    chosen = train[: n_train + 1] + val
    grey = grey_folder(work, "trainval", chosen, way)
    folder = work / "targets" / (f"n{n_train}" if way == "grey" else f"{way}-n{n_train}")
    for stem in chosen:
        for sub in ("images", "labels"):
            link = folder / sub / f"{stem}.tif"
            if not link.exists():
                real_data._link((grey / sub / f"{stem}.tif").resolve(), link)
    return folder, len(val)


def scored(run_dir: Path, model: str | Path, test: Path, label: str) -> dict[str, Any]:
    """``model`` evaluated on the grey test images (notebook 05's recipe), scored."""
    from microseg.recipes.evaluate import evaluate_models

    start = time.perf_counter()
    evaluated = evaluate_models(run_dir, model_names=[str(model)], data_dir=test, task="instance")
    name = next(iter(evaluated.results))
    predictions = real_data._write_predictions(evaluated.results[name],
                                               run_dir / "predictions" / label)
    scores = real_data.score_folders(predictions, test / "labels")
    scores.pop("per_image", None)
    return {"scores": scores, "evaluate_seconds": round(time.perf_counter() - start, 1)}


def run_curve(work: Path, n_train: int, epochs: int, seed: int, way: str) -> dict[str, Any]:
    """Fine-tuned and from-scratch models for ``n_train`` training images; their scores."""
    from microseg.recipes.transfer import adapt_pretrained, prepare_transfer, train_scratch
    from microseg.transfer.adapt import AdaptConfig

    split = json.loads((work / "split.json").read_text())
    test = grey_folder(work, "test", split["test"], way)
    folder, n_val = target_folder(work, split, n_train, way)
    run_dir = work / f"curve-{way}" / f"n{n_train}"
    setup = prepare_transfer(run_dir, BUILTIN, folder, n_target_train=n_train,
                             n_target_val=n_val, seed=seed)
    rows = {}
    for arm, train in (("fine-tuned", lambda: adapt_pretrained(
            setup, "finetune", AdaptConfig(mode="finetune"), epochs=epochs)),
                       ("from scratch", lambda: train_scratch(setup, "scratch", epochs=epochs))):
        start = time.perf_counter()
        adapted = train()
        rows[arm] = {"train_seconds": round(time.perf_counter() - start, 1),
                     "epochs_run": adapted.fit.epochs_run, "steps": adapted.fit.steps,
                     **scored(run_dir, adapted.model_dir, test, arm.replace(" ", "-"))}
    return {"n_train": n_train, "n_val": n_val, "n_test": len(split["test"]), **rows}


def table(rows: Sequence[dict[str, Any]], zero: dict[str, Any]) -> str:
    """Markdown: one line per N, F1 and DSB score of each arm."""
    head = ("| training images | fine-tuned F1 / DSB | from scratch F1 / DSB | built-in as it is "
            "F1 / DSB |\n|---|---|---|---|")
    z = zero["scores"]
    lines = [f"| {r['n_train']} | {r['fine-tuned']['scores']['f1']:.3f} / "
             f"{r['fine-tuned']['scores']['dsb_score']:.3f} | "
             f"{r['from scratch']['scores']['f1']:.3f} / "
             f"{r['from scratch']['scores']['dsb_score']:.3f} | "
             f"{z['f1']:.3f} / {z['dsb_score']:.3f} |" for r in rows]
    return "\n".join([head, *lines])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line (see the module docstring)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 data folder")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--images", nargs="+", default=["5", "20", "all"],
                        help="training image counts ('all': every training image of the split)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of 20 steps, both arms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one-channel", choices=ONE_CHANNEL, default="haematoxylin",
                        help="how colour images are made one channel")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work_dir.resolve()
    split = real_data.write_layout(args.data, work, DATASET)
    counts = [len(split["train"]) - 1 if n == "all" else int(n) for n in args.images]
    test = grey_folder(work, "test", split["test"], args.one_channel)
    zero_run = work / f"curve-{args.one_channel}" / "zero-shot"
    zero = scored(zero_run, BUILTIN, test, "built-in")
    rows = [run_curve(work, n, args.epochs, args.seed, args.one_channel) for n in counts]
    record = {"dataset": DATASET, "one_channel": args.one_channel, "zero_shot": zero,
              "rows": rows, "epochs": args.epochs,
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": real_data._command(),
              "machine": real_data._machine(), "load_average_at_end": list(os.getloadavg())}
    out = work / "results" / f"fine_tune_curve-{args.one_channel}.json"
    real_data._atomic_json(out, record)
    print(table(rows, zero))
    print(f"written: {out}")
    return record


if __name__ == "__main__":
    main()
