"""Normalization comparison: the paper's qualitative findings hold structurally, even after a few steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.diagnostics.comparison import (
    NormComparisonConfig,
    compare_normalizations,
    synthetic_comparison_data,
)
from microseg.errors import ConfigError


@pytest.fixture(scope="module")
def comparison():
    torch.set_num_threads(1)
    config = NormComparisonConfig(
        configurations=(
            "batch/global",
            "batch/tile",
            "instance/global",
            "batchrenorm/global",
            "none/global",
        ),
        ndim=2,
        channels=(4, 8, 16),
        epochs=1,
        steps_per_epoch=5,
        patch_size=48,
        n_train=2,
        n_val=1,
        image_shape=(80, 96),
    )
    train, val = synthetic_comparison_data(config)
    return compare_normalizations(train, val, config, device="cpu"), train, val


def rows_by_name(result):
    return {row["configuration"]: row for row in result.rows}


def test_synthetic_data_is_globally_normalized_with_three_classes(comparison):
    _, train, val = comparison
    assert len(train) == 2 and len(val) == 1
    for sample in train + val:
        assert sample.image.shape == (1, 80, 96) and sample.image.dtype == np.float32
        assert set(np.unique(sample.target)) == {0, 1, 2}
        assert np.percentile(sample.image, 1) == pytest.approx(0.0, abs=1e-5)
        assert np.percentile(sample.image, 99.8) == pytest.approx(1.0, abs=1e-5)


def test_mismatch_only_where_statistics_are_tile_wise(comparison):
    rows = rows_by_name(comparison[0])
    for name in ("batch/global", "batchrenorm/global", "none/global"):
        assert rows[name]["mismatch"] == 0.0 and not rows[name]["mismatch_any"], name
        assert rows[name]["max_abs_diff"] <= 1e-6
        assert comparison[0].examples[name]["seams"].sum() == 0, name
    for name in ("batch/tile", "instance/global"):
        assert rows[name]["mismatch_any"] and rows[name]["max_abs_diff"] > 1e-4, name
        assert comparison[0].examples[name]["seams"].sum() > 0, name


def test_disparity_zero_without_batch_statistics(comparison):
    rows = rows_by_name(comparison[0])
    assert rows["instance/global"]["disparity"] == 0.0 and rows["none/global"]["disparity"] == 0.0
    assert rows["batch/global"]["disparity"] > 0.0
    assert rows["instance/global"]["dice_train"] == rows["instance/global"]["dice_eval"]


def test_every_model_gets_the_same_budget_and_batchrenorm_its_whole_schedule(comparison):
    rows = comparison[0].rows
    assert {row["steps"] for row in rows} == {5}
    assert rows_by_name(comparison[0])["batchrenorm/global"]["renorm_limits"] == [3.0, 5.0]
    for row in rows:
        assert len(row["dice_eval"]) == 3 and all(
            d is None or 0 <= d <= 1 for d in row["dice_eval"]
        )


def test_settings_table_and_examples(comparison):
    result = comparison[0]
    assert result.settings["halo"] == 12 and result.settings["tile"] == 24, (
        "radius 10 of the UNet, patch 48"
    )
    assert result.settings["mismatch_tile"] == [64, 64]
    table = result.table()
    assert list(table["configuration"]) == [row["configuration"] for row in result.rows]
    assert {"dice_eval_1", "dice_train_2", "mismatch_per_class_2"} <= set(table.columns)
    example = result.examples["none/global"]
    assert example["prediction"].shape == example["truth"].shape == (80, 96)
    assert example["tile_starts"] == [[0, 24, 48, 72], [0, 24, 48, 72]]


def test_identical_initial_weights_across_norms():
    from microseg.diagnostics.comparison import _model_config
    from microseg.models import build_model
    from microseg.training.trainer import seed_everything

    config = NormComparisonConfig(ndim=2, channels=(4, 8, 16))
    weights = []
    for norm in ("batch", "instance", "none"):
        seed_everything(config.seed)
        model = build_model(_model_config(config, norm, 1, 3))
        weights.append([p for name, p in model.named_parameters() if p.dim() > 1])
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other, strict=True))


def test_invalid_configurations_are_explained():
    with pytest.raises(ConfigError, match="'batch/local' must be '<feature_norm>/<input_norm>'"):
        NormComparisonConfig(configurations=("batch/local",))
    quick = NormComparisonConfig(quick=True).effective()
    assert (
        quick.ndim == 3
        and quick.image_shape == (48, 64, 64)
        and quick.epochs * quick.steps_per_epoch == 10
    )
