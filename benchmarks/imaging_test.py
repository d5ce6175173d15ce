"""A nuclei model on the held-out images as other microscopes would have taken them.

The scale test (``real_data.py --test-scale``) asks what a model does with another
magnification; this asks the same of the other ways images of the same nuclei differ between
labs and microscopes. Each test image of a work folder (``real_data.py``'s layout, e.g. the DSB
grey split) is changed one way, predicted as notebooks 05 and 07 do (object size searched,
test-time augmentation) and scored with :func:`real_data.score_instances` against its own labels:

- ``as acquired``: unchanged (the reference row);
- ``16-bit, dim``: the intensities put at 1 % of a 16-bit range above an offset of 100 (a
  camera's dark level): the percentile normalization should make this the reference exactly;
- ``gamma 0.5`` / ``gamma 2``: a non-linear detector response or display curve;
- ``low light, 30 photons`` / ``10 photons``: Poisson noise at that many photons in the
  brightest pixel (the background keeps its share);
- ``defocus``: a Gaussian blur of 2 pixels;
- ``uneven illumination``: the image multiplied by a shading that falls from 1 to 0.4 across
  it (vignetting, a tilted lamp).

    .venv/bin/python benchmarks/imaging_test.py --work-dir /work/bench/dsb_grey --model nuclei

Writes ``WORK/results/imaging_test-<model>.json`` and prints a Markdown table.
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

SEED = 0


def _unit(image: np.ndarray) -> np.ndarray:
    """The image as float64 in [0, 1] (its own minimum and maximum)."""
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _photons(peak: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def change(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(_unit(image) * peak).astype(np.float32)
    return change


def _shading(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = np.linspace(1.0, 0.4, image.shape[1])
    return (image.astype(np.float64) * x[None, :]).astype(np.float32)


def _defocus(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image.astype(np.float32), 2.0)


def changes() -> dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]:
    """Name → (grey image (Y, X), generator) to the changed image."""
    return {
        "as acquired": lambda image, rng: image,
        "16-bit, dim": lambda image, rng: np.round(
            100 + _unit(image) * 0.01 * 65535).astype(np.uint16),
        "gamma 0.5": lambda image, rng: (_unit(image) ** 0.5).astype(np.float32),
        "gamma 2": lambda image, rng: (_unit(image) ** 2.0).astype(np.float32),
        "low light, 30 photons": _photons(30.0),
        "low light, 10 photons": _photons(10.0),
        "defocus": _defocus,
        "uneven illumination": _shading,
    }


def score_changes(test: Path, model_name: str,
                  names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each change's scores on the images of ``test`` (``images/``, ``labels/``)."""
    import tifffile

    from microseg.models import TrainedModel

    model = TrainedModel.load(model_name)
    ways = {k: v for k, v in changes().items() if names is None or k in names}
    pairs: dict[str, list[Any]] = {name: [] for name in ways}
    for index, path in enumerate(sorted((test / "images").glob("*.tif"))):
        image = np.asarray(tifffile.imread(path))
        image = image[..., 0] if image.ndim == 3 else image
        truth = np.asarray(tifffile.imread(test / "labels" / path.name), np.int32)
        for name, way in ways.items():
            changed = way(image, np.random.default_rng([SEED, index]))
            info = model.predict_with_info(changed, axes="YX", object_diameter="auto", tta=True)
            pairs[name].append((path.stem, model.labels(info.probabilities), truth))
    return {name: real_data.score_instances(found) for name, found in pairs.items()}


def table(scores: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per change."""
    lines = ["| images | F1@0.5 | precision | recall | DSB score | PQ |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {s['f1']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
              f"{s['dsb_score']:.3f} | {s['panoptic_quality']:.3f} |"
              for name, s in scores.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line (see the module docstring)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True,
                        help="a real_data.py work folder (its data/test is used)")
    parser.add_argument("--model", default="nuclei", help="a built-in model or model folder")
    parser.add_argument("--only", action="append", help="run only these changes (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work_dir.resolve()
    scores = score_changes(work / "data" / "test", args.model, args.only)
    out = work / "results" / f"imaging_test-{Path(args.model).name}.json"
    record = real_data.write_scores(out, scores, model=args.model)
    print(table(scores))
    print(f"written: {out}")
    return record


if __name__ == "__main__":
    main()
