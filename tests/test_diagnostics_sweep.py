"""Tile-size sweep: seamless models score the same at every tile size; Dice checked by counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.diagnostics.sweep import dice_per_class, median_dice, tile_size_sweep
from microseg.errors import ConfigError
from microseg.models import ModelConfig, build_model


def unet(norm: str):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm=norm)
    )
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32) + 0.5)
    return model.double().eval()


@pytest.fixture
def samples(rng):
    pairs = []
    for _ in range(2):
        image = rng.normal(size=(1, 96, 112))
        image[:, 20:50, 30:70] += 2.5
        target = np.zeros((96, 112), dtype=np.uint8)
        target[20:50, 30:70] = 1
        target[20:50, 30] = 2
        pairs.append((image, target))
    return pairs


def test_dice_per_class_equals_counting(rng):
    probabilities = rng.random((3, 20, 30))
    target = rng.integers(0, 3, size=(20, 30))
    hard = probabilities.argmax(0)
    expected = [
        2 * np.sum((hard == c) & (target == c)) / (np.sum(hard == c) + np.sum(target == c))
        for c in range(3)
    ]
    assert dice_per_class(probabilities, target) == pytest.approx(expected)


def test_median_dice_leaves_out_absent_classes():
    assert median_dice([[1.0, None, 0.2], [0.5, None, 0.4], [0.0, None, 0.9]]) == [0.5, None, 0.4]


def test_seamless_model_scores_the_same_at_every_tile_size(samples):
    table = tile_size_sweep(unet("batch"), samples, [8, 16, 40, 88], halo=12)
    assert list(table["tile_size"]) == [8, 16, 40, 88] and list(table["input_side"]) == [
        32,
        40,
        64,
        112,
    ]
    # a pair needs tile > offset + 2·halo = tile/2 + 24 (so not 32, 40)
    # and 1.5 tiles in the image (not 112)
    assert table["mismatch"].isna().tolist() == [True, True, False, True]
    for column in ("dice_class0", "dice_class1", "dice_class2"):
        assert table[column].nunique() == 1, column
    model = unet("batch")
    with torch.no_grad():
        per_image = []
        for image, target in samples:
            logits = model(torch.from_numpy(image[None]))[0].numpy()  # sides divisible by 4
            per_image.append(dice_per_class(logits, target))
    assert table.loc[0, "dice_class1"] == pytest.approx(np.median([d[1] for d in per_image]))
    measured = table.dropna(subset=["mismatch"])
    assert (measured["mismatch"] == 0).all() and not measured["mismatch_any"].any()


def test_instance_norm_depends_on_the_tile_size(samples):
    table = tile_size_sweep(unet("instance"), samples, [8, 40], halo=12)
    assert table["dice_class1"].nunique() == 2 or table["mismatch_any"].any()
    assert table.loc[1, "mismatch"] > 0


def test_mismatch_is_none_where_no_pair_fits(samples):
    table = tile_size_sweep(unet("batch"), samples, [112], halo=12)
    assert table.loc[0, "mismatch"] is None and table.loc[0, "mismatch_any"] is None


def test_empty_inputs_are_refused(samples):
    with pytest.raises(ConfigError, match="at least one sample and one tile size"):
        tile_size_sweep(unet("batch"), samples, [], halo=12)
