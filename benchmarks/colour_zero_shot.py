"""The built-in nuclei model (fluorescence, one channel) on colour nuclei images, three ways of
making them one channel: the grey value, the inverted grey value, and the haematoxylin stain
(:func:`microseg.transforms.colour.haematoxylin`); and the colour image given as it is, which a
model with ``colour_input="nuclei"`` (the built-in ``"nuclei"``) converts itself.

Data: the colour test images of the Data Science Bowl 2018 colour split (``real_data.py``,
``dsb2018_colour``: H&E and bright-field; the model never saw a colour image). Each image is
predicted as notebooks 05 and 07 do (object size searched, test-time augmentation) and scored
with :func:`real_data.score_instances`.

    .venv/bin/python benchmarks/colour_zero_shot.py --data ../shared/realdata/dsb2018_stage1_train \\
        --work-dir /work/bench/dsb_colour

Writes ``WORK/results/colour_zero_shot.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402

DATASET = "dsb2018_colour"


def conversions() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name → RGB (Y, X, 3) to one channel (Y, X)."""
    from skimage.color import rgb2gray

    from microseg.transforms.colour import haematoxylin

    return {"grey value (rgb2gray)": lambda rgb: rgb2gray(rgb),
            "inverted grey value": lambda rgb: 1.0 - rgb2gray(rgb),
            "haematoxylin": haematoxylin,
            "the colour image as it is (the model's colour_input)": lambda rgb: rgb}


def score_conversions(test: Path, model_name: str = "nuclei") -> dict[str, dict[str, Any]]:
    """Each conversion's scores on the images of ``test`` (``images/``, ``labels/``)."""
    import tifffile

    from microseg.models import TrainedModel

    model = TrainedModel.load(model_name)
    ways = conversions()
    pairs: dict[str, list[Any]] = {name: [] for name in ways}
    for path in sorted((test / "images").glob("*.tif")):
        rgb = np.asarray(tifffile.imread(path))[..., :3]
        truth = np.asarray(tifffile.imread(test / "labels" / path.name), np.int32)
        for name, way in ways.items():
            given = np.asarray(way(rgb))
            given = given.astype(np.float32) if given.ndim == 2 else given  # uint8 RGB as read
            info = model.predict_with_info(given, axes="YX" if given.ndim == 2 else "YXC",
                                           object_diameter="auto", tta=True)
            pairs[name].append((path.stem, model.labels(info.probabilities), truth))
    return {name: real_data.score_instances(found) for name, found in pairs.items()}


def table(scores: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per conversion."""
    lines = ["| one channel from | F1@0.5 | precision | recall | DSB score |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s['f1']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
              f"{s['dsb_score']:.3f} |" for name, s in scores.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line (see the module docstring)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the DSB 2018 data folder")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--model", default="nuclei", help="a built-in model or model folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work_dir.resolve()
    split = real_data.write_layout(args.data, work, DATASET)
    scores = score_conversions(work / "data" / "test", args.model)
    out = work / "results" / "colour_zero_shot.json"
    record = real_data.write_scores(out, scores, dataset=DATASET, n_test=len(split["test"]),
                                    model=args.model)
    print(table(scores))
    print(f"written: {out}")
    return record


if __name__ == "__main__":
    main()
