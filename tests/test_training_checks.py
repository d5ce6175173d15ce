"""Data and first-batch checks: every problem listed, class frequencies, imbalance warning."""

import logging

import numpy as np
import pytest
import torch

from microseg.errors import DataError
from microseg.training.checks import (
    check_first_batch,
    check_training_data,
    suggested_class_weights,
)


def pair(shape=(16, 16), channels=1, foreground=slice(4, 10)):
    target = np.zeros(shape, np.int64)
    target[foreground, foreground] = 1
    image = np.repeat(target[None].astype(np.float32), channels, axis=0)
    return image, target


def test_good_data_reports_class_frequencies():
    pairs = [pair(), pair(foreground=slice(0, 8))]
    report = check_training_data(pairs, in_channels=1, n_classes=2, patch_size=(8, 8))
    counts = np.bincount(np.concatenate([t.ravel() for _, t in pairs]), minlength=2)
    assert report.class_frequencies == pytest.approx((counts / counts.sum()).tolist())
    assert report.warnings == []
    assert (report.image_min, report.image_max) == (0.0, 1.0)
    assert "class 1: 19.5%" in report.describe()


def test_every_problem_is_listed_at_once():
    float_labels = (np.zeros((1, 16, 16), np.float32), np.full((16, 16), 0.5))
    samples = [pair(channels=2), float_labels, (pair()[0], pair()[1] * 3)]
    with pytest.raises(DataError) as error:
        check_training_data(samples, in_channels=1, n_classes=2, patch_size=(8, 8))
    problems = error.value.problems
    assert any("2 channel(s) but the model expects 1" in p for p in problems)
    assert any("labels are float64 (e.g. 0.5)" in p and "whole numbers" in p for p in problems)
    assert any("class values from 0 to 3, expected 0 to 1" in p for p in problems)


def test_no_foreground_anywhere():
    empty = (np.zeros((1, 16, 16), np.float32), np.zeros((16, 16), np.int64))
    with pytest.raises(DataError, match="no training image contains any object"):
        check_training_data([empty, empty], in_channels=1, n_classes=3, patch_size=(8, 8))


def test_patch_larger_than_every_image():
    with pytest.raises(DataError, match="larger than every training image"):
        check_training_data([pair()], in_channels=1, n_classes=2, patch_size=(32, 32))


def test_severe_imbalance_warns_with_suggestions(caplog):
    sparse = pair(shape=(64, 64), foreground=slice(0, 3))
    with caplog.at_level(logging.WARNING, logger="microseg.training.checks"):
        report = check_training_data([sparse], in_channels=1, n_classes=2, patch_size=(8, 8))
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "class 1 (0.2%)" in warning and "same class everywhere" in warning
    assert "min_foreground" in warning and "class_weights=(1.0, 450.0)" in warning
    assert warning in caplog.text


def test_unnormalized_images_warn():
    image, target = pair()
    report = check_training_data([(image * 4000, target)], in_channels=1, n_classes=2,
                                 patch_size=(8, 8))
    assert any("unnormalized" in w for w in report.warnings)


def test_suggested_class_weights():
    assert suggested_class_weights([0.9, 0.09, 0.01]) == (1.0, 10.0, 90.0)
    assert suggested_class_weights([0.5, 0.5, 0.0]) == (1.0, 1.0, 1.0)


def test_first_batch_checks():
    images = torch.rand(2, 1, 8, 8)
    targets = torch.randint(0, 3, (2, 8, 8))
    report = check_first_batch(images, targets, in_channels=1, n_classes=3)
    expected = np.bincount(targets.numpy().ravel(), minlength=3) / targets.numel()
    assert report.class_frequencies == pytest.approx(expected.tolist())
    bad_images = images.clone()
    bad_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError) as error:
        check_first_batch(bad_images.repeat(1, 2, 1, 1), targets.float() + 0.5, 1, 3)
    problems = error.value.problems
    assert any("2 channel(s) but the model expects 1" in p for p in problems)
    assert any("whole numbers" in p for p in problems)
    assert any("NaN" in p for p in problems)


def test_patch_sides_must_be_multiples_of_the_size_divisor():
    from microseg.errors import ConfigError
    from microseg.training.checks import check_patch_divisible

    check_patch_divisible((16, 32, 48), 16)
    with pytest.raises(ConfigError, match=r"\(20, 36, 48\) is not a multiple of the model's "
                       r"size divisor 16 .*use patch_size=\(16, 32, 48\) or \(32, 48, 48\)"):
        check_patch_divisible((20, 36, 48), 16)
    with pytest.raises(ConfigError, match="size divisor 4"):
        check_training_data([pair()], in_channels=1, n_classes=2, patch_size=(6, 8),
                            size_divisor=4)


def test_train_model_refuses_a_patch_size_that_is_not_a_multiple_of_the_size_divisor(tmp_path):
    from microseg.errors import ConfigError
    from microseg.recipes.prepare import prepare_data
    from microseg.recipes.train import train_model
    from microseg.runs import RunFolder

    prepare_data(tmp_path, quick=True, n_synthetic=4, synthetic_shape=(64, 64))
    with pytest.raises(ConfigError, match=r"patch_size \(30, 30\) is not a multiple of the "
                       r"model's size divisor 4 .*use patch_size=\(28, 28\) or \(32, 32\)"):
        train_model(tmp_path, model_name="odd", patch_size=30, quick=True)
    assert not RunFolder(tmp_path).model_dir("odd").exists()
