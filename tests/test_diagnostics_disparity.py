"""Train/eval disparity: positive for BatchNorm, zero without batch statistics; the model untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from microseg.diagnostics.disparity import held_out_tiles, train_eval_disparity, train_mode_model
from microseg.errors import DataError
from microseg.models import ModelConfig, build_model, set_renorm_limits


def unet(norm: str, dropout: float = 0.0):
    torch.manual_seed(0)
    config = ModelConfig(
        ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm=norm, dropout=dropout
    )
    model = build_model(config)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 32, 32) * 0.5 + 1.0)
    return model.eval()


@pytest.fixture
def images(rng):
    return [rng.normal(size=(1, 64, 64)).astype(np.float32) * scale for scale in (1.0, 3.0)]


def brute_force_disparity(model, tiles, batch_size):
    """Reference: a deep copy in plain train() mode, one fresh copy per batch, Dice by counting."""
    per_tile = []
    for start in range(0, len(tiles), batch_size):
        batch = torch.from_numpy(np.stack(tiles[start : start + batch_size]))
        trained = copy.deepcopy(model).train()
        with torch.no_grad():
            in_train = trained(batch).argmax(1).numpy()
            in_eval = model.eval()(batch).argmax(1).numpy()
        for a, b in zip(in_train, in_eval, strict=True):
            row = []
            for c in range(3):
                both, total = np.sum((a == c) & (b == c)), np.sum(a == c) + np.sum(b == c)
                row.append(np.nan if total == 0 else 1 - 2 * both / total)
            per_tile.append(row)
    return np.nanmean(np.array(per_tile), axis=0)


def test_batchnorm_disparity_matches_a_brute_force_reference(images):
    model = unet("batch")
    result = train_eval_disparity(model, images, batch_size=2, tile_shape=32)
    expected = brute_force_disparity(model, held_out_tiles(images, 32), 2)
    np.testing.assert_allclose(result["per_channel"], expected)
    assert (
        result["disparity"] == pytest.approx(float(np.mean(expected)))
        and result["disparity"] > 0.05
    )
    assert result["n_tiles"] == 8
    assert result["batch"]["size"] == 2 and result["batch"]["n_batches"] == 4
    assert (
        result["batch"]["tile_shape"] == [32, 32]
        and "consecutive" in result["batch"]["composition"]
    )


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_no_batch_statistics_no_disparity(norm, images):
    result = train_eval_disparity(unet(norm), images, batch_size=2, tile_shape=32)
    assert result["disparity"] == 0.0 and result["per_channel"] == [0.0, 0.0, 0.0]


def test_unclipped_batchrenorm_predicts_alike_in_train_and_eval(images):
    """With limits never reached, r and d undo the batch statistics exactly: train = eval."""
    model = unet("batchrenorm").double()
    set_renorm_limits(model, 1e6, 1e6)
    tiles = [t.astype(np.float64) for t in images]
    assert train_eval_disparity(model, tiles, batch_size=2, tile_shape=32)["disparity"] == 0.0
    set_renorm_limits(model, 1.0, 0.0)
    assert train_eval_disparity(model, tiles, batch_size=2, tile_shape=32)["disparity"] > 0.0


def test_model_mode_and_running_statistics_are_untouched(images):
    model = unet("batch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = train_eval_disparity(model, images, batch_size=2, tile_shape=32)
    second = train_eval_disparity(model, images, batch_size=2, tile_shape=32)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert first["per_channel"] == second["per_channel"], "the measurement does not drift"


def test_train_mode_model_keeps_batch_statistics_after_eval_and_no_dropout():
    model = unet("batch", dropout=0.5)
    trained = train_mode_model(model).eval()
    batchnorms = [m for m in trained.modules() if isinstance(m, nn.BatchNorm2d)]
    dropouts = [m for m in trained.modules() if isinstance(m, nn.Dropout)]
    assert batchnorms and all(m.training for m in batchnorms)
    assert dropouts and not any(m.training for m in dropouts)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trained(x), trained(x))
        reference = copy.deepcopy(model).train()
        for m in reference.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        torch.testing.assert_close(trained(x), reference(x))
    frozen = {k: v for k, v in trained.inner.state_dict().items() if "running" in k}
    assert frozen and all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


def test_incomplete_last_batch_is_left_out(images):
    result = train_eval_disparity(unet("batch"), images + images[:1], batch_size=4, tile_shape=32)
    assert result["n_tiles"] == 12 and result["batch"]["n_batches"] == 3


def test_held_out_tiles_and_their_errors(rng):
    image = rng.normal(size=(1, 40, 70)).astype(np.float32)
    tiles = held_out_tiles([image], (16, 32))
    assert len(tiles) == 2 * 2 and all(t.shape == (1, 16, 32) for t in tiles)
    np.testing.assert_array_equal(tiles[3], image[:, 16:32, 32:64])
    with pytest.raises(DataError, match="pass tile_shape"):
        held_out_tiles([image, image[:, :20]], None)
    with pytest.raises(DataError, match="use a smaller tile_shape"):
        held_out_tiles([image], 64)
