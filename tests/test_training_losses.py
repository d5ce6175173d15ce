"""Soft Dice (empty channels left out), cross-entropy and their sum, against float64 references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from microseg.training.losses import SegmentationLoss, cross_entropy_loss, make_loss, soft_dice_loss


def brute_force_dice_loss(logits, target, exclude_empty=True):
    """1 − mean Dice over (sample, channel) pairs, by loops in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    scores = []
    for n in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            truth = (np.asarray(target[n]) == c).astype(np.float64)
            if exclude_empty and truth.sum() == 0:
                continue
            p = probabilities[n, c]
            scores.append(2 * (p * truth).sum() / (p.sum() + truth.sum()))
    return 1 - np.mean(scores)


@pytest.fixture
def batch(rng):
    logits = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    target = rng.integers(0, 3, size=(3, 5, 6))  # class 3 is empty everywhere
    target[1] = np.where(target[1] == 2, 0, target[1])  # class 2 empty in sample 1
    return logits, target


def test_soft_dice_matches_brute_force(batch):
    logits, target = batch
    got = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(target))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(brute_force_dice_loss(logits, target), abs=1e-6)


def test_soft_dice_float64_is_exact(batch):
    logits, target = batch
    got = soft_dice_loss(torch.from_numpy(logits.astype(np.float64)), torch.from_numpy(target))
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(brute_force_dice_loss(logits, target), abs=1e-12)


def test_soft_dice_without_exclusion_matches_brute_force(batch):
    logits, target = batch
    got = soft_dice_loss(torch.from_numpy(logits).double(), torch.from_numpy(target),
                         exclude_empty=False)
    expected = brute_force_dice_loss(logits, target, exclude_empty=False)
    assert float(got) == pytest.approx(expected, abs=1e-12)
    assert expected != pytest.approx(brute_force_dice_loss(logits, target))


def test_empty_channel_is_left_out():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1  # class 2 never present
    perfect = 100.0 * F.one_hot(target, 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # counted, the empty channel would have Dice 0 and cost one third
    assert float(soft_dice_loss(perfect, target, exclude_empty=False)) == pytest.approx(1 / 3,
                                                                                       abs=1e-6)


def test_soft_dice_3d_and_gradient(rng):
    logits = torch.tensor(rng.normal(size=(2, 3, 4, 5, 6)), requires_grad=True)
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 4, 5, 6)))
    loss = soft_dice_loss(logits, target)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(brute_force_dice_loss(logits.detach(), target),
                                                 abs=1e-12)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_cross_entropy_with_class_weights_matches_float64(rng):
    logits = rng.normal(size=(2, 3, 4, 4))
    target = rng.integers(0, 3, size=(2, 4, 4))
    weights = (0.5, 2.0, 4.0)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(log_p, target[:, None], axis=1)[:, 0]
    w = np.asarray(weights)[target]
    expected = -(w * picked).sum() / w.sum()
    got = cross_entropy_loss(torch.from_numpy(logits), torch.from_numpy(target), weights)
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_weighted_sum_and_named_losses(rng):
    logits = torch.from_numpy(rng.normal(size=(2, 3, 6, 6)))
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 6, 6)))
    dice, ce = soft_dice_loss(logits, target), cross_entropy_loss(logits, target)
    combined = SegmentationLoss(dice_weight=0.3, ce_weight=2.0)(logits, target)
    assert float(combined) == pytest.approx(0.3 * float(dice) + 2.0 * float(ce), abs=1e-12)
    assert float(make_loss("dice")(logits, target)) == pytest.approx(float(dice), abs=1e-12)
    assert float(make_loss("ce")(logits, target)) == pytest.approx(float(ce), abs=1e-12)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")
