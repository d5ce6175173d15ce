"""Quality measures of adapted models against known answers and brute-force counts.

Also holds the oracle network and small labelled images the other transfer tests import.
"""

import numpy as np
import pytest
import torch

from microseg.data.dataset import Sample
from microseg.errors import DataError
from microseg.inference.instances import InstancePostprocessing
from microseg.models import TrainedModel
from microseg.transfer.quality import measure_quality
from microseg.transforms.targets import labels_to_target


def trained(network, task="instance"):
    """``network`` with a 4-pixel halo and the default instance post-processing."""
    return TrainedModel.from_network(network, task=task, halo=(4, 4),
                                     postprocessing=InstancePostprocessing())


class ClassValueOracle(torch.nn.Module):
    """Reads the class id off the input: input value v/scale → logits peaked at class v.

    An image whose pixels hold the class map (0, 1, 2) divided by ``scale`` is segmented
    perfectly, so predictions can be checked against known answers.
    """

    def __init__(self, scale: float = 1.0, n_classes: int = 3):
        super().__init__()
        self.scale = scale
        self.register_buffer("classes", torch.arange(n_classes, dtype=torch.float32))
        self.size_divisor = 1

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return -10.0 * (x * self.scale - self.classes.view(shape)) ** 2


def disc_labels(shape=(48, 40), centres=((12, 10), (30, 28), (12, 30)), radius=6):
    """Separate discs with ids 1, 2, ... (int32)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


def class_map_sample(stem, labels, task="instance"):
    """A Sample whose image is the target class map itself (what the oracle reads)."""
    target = labels_to_target(labels, task)
    return Sample(stem, target[None].astype(np.float32), labels, target)


class AllForeground(torch.nn.Module):
    size_divisor = 1

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 1] = 1.0
        return logits


def samples():
    first = disc_labels()
    second = disc_labels(shape=(40, 56), centres=((20, 14), (20, 40)), radius=8)
    return [class_map_sample("a", first), class_map_sample("b", second)]


def test_tiled_prediction_of_the_oracle_is_the_target():
    sample = samples()[1]
    probabilities = trained(ClassValueOracle()).predict(sample.image, normalized=True,
                                                        tile_shape=32, device="cpu")
    assert probabilities.shape == (3, 40, 56)
    assert np.array_equal(probabilities.argmax(0), sample.target)
    assert np.allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_perfect_model_scores_one_and_recovers_every_object():
    quality = measure_quality(trained(ClassValueOracle()), samples(), "oracle")
    assert quality.foreground_dice == 1.0 and quality.object_f1 == 1.0
    assert [r["stem"] for r in quality.per_image] == ["a", "b"]
    for sample, predicted in zip(samples(), quality.predictions, strict=True):
        assert predicted.dtype == np.int32
        pairs = set(zip(sample.label.ravel(), predicted.ravel(), strict=True))
        assert len(pairs) == len(np.unique(sample.label)), "objects map one to one"


def test_pooled_foreground_dice_matches_brute_force():
    data = samples()
    quality = measure_quality(trained(AllForeground()), data, "everything")
    truth = [int((s.target > 0).sum()) for s in data]
    pixels = [s.target.size for s in data]
    pooled = 2 * sum(truth) / (sum(truth) + sum(pixels))
    assert quality.foreground_dice == pytest.approx(pooled, abs=1e-12)
    per_image = [2 * t / (t + p) for t, p in zip(truth, pixels, strict=True)]
    assert [r["foreground_dice"] for r in quality.per_image] == pytest.approx(per_image)
    assert quality.object_f1 == 0.0
    assert quality.to_dict()["name"] == "everything" and "predictions" not in quality.to_dict()


def test_binary_task_has_no_objects_and_class_maps():
    labels = disc_labels()
    sample = class_map_sample("a", labels, task="binary")
    quality = measure_quality(trained(ClassValueOracle(n_classes=2), "binary"), [sample],
                              "binary")
    assert quality.object_f1 is None and quality.foreground_dice == 1.0
    assert np.array_equal(quality.predictions[0], (labels > 0).astype(np.int32))


def test_unlabelled_images_are_refused():
    sample = samples()[0]
    sample.label = sample.target = None
    with pytest.raises(DataError, match="has no labels"):
        measure_quality(trained(ClassValueOracle()), [sample], "x")
