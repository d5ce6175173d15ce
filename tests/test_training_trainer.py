"""Trainer: learning, model folder, BatchRenorm schedule by optimizer steps, accumulation,
validation leaving running statistics alone, early stopping, out-of-memory and NaN messages."""

import logging
import math

import numpy as np
import pytest
import torch

from microseg.errors import ConfigError, MicrosegError, OutputExistsError
from microseg.models import ModelConfig, build_model
from microseg.models.batchrenorm import _BatchRenorm
from microseg.training import trainer as trainer_module
from microseg.training.config import TrainConfig
from microseg.training.history import read_history_csv
from microseg.training.trainer import Trainer, find_max_batch_size, out_of_memory_message
from microseg.training.validation import dice_from_confusion


def tiny_pairs(n, shape=(32, 32), seed=0):
    """Bright disks (class 1) on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    pairs = []
    for _ in range(n):
        target = np.zeros(shape, np.int64)
        for _ in range(3):
            cy, cx = rng.integers(4, shape[0] - 4), rng.integers(4, shape[1] - 4)
            target[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 6) ** 2] = 1
        image = (target + 0.3 * rng.standard_normal(shape)).astype(np.float32)[None]
        pairs.append((image, target))
    return pairs


def tiny_model(norm="batchrenorm", out_classes=2):
    config = ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                         out_classes=out_classes, norm=norm)
    torch.manual_seed(0)
    return build_model(config), config


def tiny_config(**changes):
    values = dict(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=(16, 16), amp="none",
                  val_tile=32, patience=0)
    values.update(changes)
    return TrainConfig(**values)


def make_trainer(tmp_path=None, norm="batchrenorm", config=None, **options):
    model, model_config = tiny_model(norm)
    return Trainer(model, config or tiny_config(), tiny_pairs(3), tiny_pairs(2, seed=1),
                   model_config=model_config,
                   model_dir=None if tmp_path is None else tmp_path / "model",
                   progress=False, **options)


def test_fit_learns_and_writes_the_model_folder(tmp_path):
    trainer = make_trainer(tmp_path, config=tiny_config(epochs=6, steps_per_epoch=5,
                                                        learning_rate=1e-2))
    result = trainer.fit()
    folder = tmp_path / "model"
    for name in ("config.json", "train_config.json", "best.pt", "latest.pt", "history.csv",
                 "environment.json"):
        assert (folder / name).is_file(), name
    assert result.epochs_run == 6 and result.steps == 30 and not result.stopped_early
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.best_val_loss == min(r["val_loss"] for r in history)
    assert result.best_val_dice > 0.5
    assert [r["epoch"] for r in history] == list(range(1, 7))
    on_disk = read_history_csv(folder / "history.csv")
    assert on_disk == history  # CSV round trip is exact (floats written with repr)


def test_renorm_schedule_counts_optimizer_steps_only():
    config = tiny_config(epochs=2, steps_per_epoch=3, grad_accumulation=3,
                         renorm_warmup_steps=2, renorm_ramp_steps=8)
    trainer = make_trainer(config=config)
    trainer.fit()
    assert trainer.step == 6 and trainer.renorm.step == 6
    r_max, d_max = trainer.renorm.limits(6)
    assert (r_max, d_max) == pytest.approx((1.0 + 4 / 8 * 2.0, 4 / 8 * 5.0))
    layers = [m for m in trainer.module.modules() if isinstance(m, _BatchRenorm)]
    assert layers and all(float(m.r_max) == pytest.approx(r_max) for m in layers)
    assert all(float(m.d_max) == pytest.approx(d_max) for m in layers)
    assert [r["renorm_r_max"] for r in trainer.history] == pytest.approx([1.25, 2.0])


def test_validation_leaves_running_statistics_and_step_alone():
    trainer = make_trainer()
    trainer.fit()
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    step = trainer.step
    first = trainer.validate()
    second = trainer.validate()
    assert first == second
    assert trainer.step == step
    for key, value in trainer.module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_validation_dice_matches_a_direct_count():
    trainer = make_trainer(norm="none")
    result = trainer.validate()
    truth, predicted = [], []
    trainer.module.eval()
    with torch.no_grad():
        for image, target in tiny_pairs(2, seed=1):
            logits = trainer.module(torch.from_numpy(image)[None])
            predicted.append(logits.argmax(1)[0].numpy().ravel())
            truth.append(target.ravel())
    p, t = np.concatenate(predicted) == 1, np.concatenate(truth) == 1
    expected = 2 * (p & t).sum() / (p.sum() + t.sum())
    assert result["val_dice"] == pytest.approx(expected)
    assert result["val_foreground_dice"] == pytest.approx(expected)


def test_dice_from_confusion_against_masks():
    rng = np.random.default_rng(3)
    truth, prediction = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (truth, prediction), 1)
    out = dice_from_confusion(confusion)
    for k in (1, 2):
        t, p = truth == k, prediction == k
        assert out[f"val_dice_class{k}"] == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()))
    t, p = truth > 0, prediction > 0
    assert out["val_foreground_dice"] == pytest.approx(2 * (t & p).sum() / (t.sum() + p.sum()))
    assert out["val_dice"] == pytest.approx((out["val_dice_class1"] + out["val_dice_class2"]) / 2)
    absent = dice_from_confusion(np.array([[4, 0, 0], [0, 3, 0], [0, 0, 0]]))
    assert math.isnan(absent["val_dice_class2"]) and absent["val_dice"] == 1.0


def test_gradient_accumulation_equals_one_large_batch():
    images = torch.randn(4, 1, 16, 16)
    targets = torch.randint(0, 2, (4, 16, 16))
    weights = []
    for accumulation, chunks in ((1, [(images, targets)]),
                                 (2, [(images[:2], targets[:2]), (images[2:], targets[2:])])):
        config = tiny_config(grad_accumulation=accumulation, loss="ce", optimizer="sgd",
                             momentum=0.0, learning_rate=0.1)
        trainer = make_trainer(norm="none", config=config)
        trainer.module.train()
        trainer._optimizer_step(iter(chunks))
        weights.append(torch.cat([p.detach().flatten() for p in trainer.module.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)


def test_early_stopping_waits_for_patience_and_the_renorm_ramp(monkeypatch):
    losses = iter(np.linspace(1.0, 2.0, 20))
    monkeypatch.setattr(Trainer, "validate",
                        lambda self: {"val_loss": float(next(losses)), "val_dice": 0.5})
    plain = make_trainer(norm="batch", config=tiny_config(epochs=10, patience=2))
    result = plain.fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    losses = iter(np.linspace(1.0, 2.0, 20))
    renorm = make_trainer(config=tiny_config(epochs=10, patience=2, renorm_warmup_steps=9,
                                             renorm_ramp_steps=6))
    result = renorm.fit()
    # the ramp ends at step 15 = epoch 5: patience is counted from there
    assert result.stopped_early and result.epochs_run == 7 and result.best_epoch == 1


def test_existing_model_folder_is_not_overwritten(tmp_path):
    make_trainer(tmp_path).fit()
    with pytest.raises(OutputExistsError, match="resume=True"):
        make_trainer(tmp_path)
    make_trainer(tmp_path, overwrite=True)


def test_resume_refuses_other_settings(tmp_path):
    make_trainer(tmp_path).fit()
    with pytest.raises(ConfigError, match="batch_size: saved 2, now 4"):
        make_trainer(tmp_path, config=tiny_config(batch_size=4), resume=True)
    resumed = make_trainer(tmp_path, config=tiny_config(epochs=3), resume=True)
    assert resumed.epoch == 2
    assert resumed.fit().epochs_run == 3


def test_callbacks_see_every_record():
    seen = []
    trainer = make_trainer(callbacks=[lambda t, record: seen.append((t.epoch, record["epoch"]))])
    trainer.fit()
    assert seen == [(1, 1), (2, 2)]


def test_out_of_memory_names_what_to_reduce(monkeypatch):
    trainer = make_trainer(config=tiny_config(batch_size=8, grad_accumulation=2))

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.module, "forward", out_of_memory)
    with pytest.raises(MicrosegError) as error:
        trainer.fit()
    message = str(error.value)
    assert "ran out of memory" in message and "batch_size to 4" in message
    assert "grad_accumulation=4" in message and "effective batch of 16" in message


def test_out_of_memory_with_batch_one_suggests_a_smaller_patch():
    config = TrainConfig(batch_size=1, patch_size=(96, 96, 96))
    message = out_of_memory_message(config, "cpu", divisor=4)
    assert "patch_size to (72, 72, 72)" in message and "about 42% of the memory" in message


def test_nan_loss_says_to_lower_the_learning_rate():
    trainer = make_trainer(config=tiny_config(learning_rate=0.5))
    trainer.loss_function = lambda logits, target: logits.sum() * float("nan")
    with pytest.raises(MicrosegError, match="lower the learning rate .* try 0.05"):
        trainer.fit()


def test_find_max_batch_size(monkeypatch, caplog):
    model, _ = tiny_model()
    config = tiny_config(batch_size=6)
    with caplog.at_level(logging.INFO, logger="microseg.training.trainer"):
        assert find_max_batch_size(model, config, in_channels=1, device="cpu") == 6
    assert "no GPU" in caplog.text
    monkeypatch.setattr(trainer_module, "_is_cuda", lambda device: True)
    tried = []

    def fits(model, config, in_channels, batch_size, device):
        tried.append(batch_size)
        return batch_size <= 20

    monkeypatch.setattr(trainer_module, "_batch_fits", fits)
    assert find_max_batch_size(model, config, in_channels=1, device="cpu") == 16
    assert tried == [1, 2, 4, 8, 16, 32]
    monkeypatch.setattr(trainer_module, "_batch_fits", lambda *args: False)
    with pytest.raises(MicrosegError, match="ran out of memory"):
        find_max_batch_size(model, config, in_channels=1, device="cpu")


def test_batch_fits_reports_out_of_memory_as_false(monkeypatch):
    model, _ = tiny_model()
    assert trainer_module._batch_fits(model, tiny_config(), 1, 2, torch.device("cpu"))

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "forward", out_of_memory)
    assert not trainer_module._batch_fits(model, tiny_config(), 1, 2, torch.device("cpu"))


def test_mixed_precision_falls_back_to_float32_on_cpu(caplog):
    with caplog.at_level(logging.INFO, logger="microseg.training.trainer"):
        trainer = make_trainer(config=tiny_config(amp="fp16"))
    assert trainer.amp_dtype is None and trainer.scaler is None
    assert "only on a GPU" in caplog.text


def test_large_validation_images_use_fixed_patches():
    model, model_config = tiny_model()
    config = tiny_config(val_tile=16, val_max_patches=3)
    trainer = Trainer(model, config, tiny_pairs(2), tiny_pairs(1, shape=(40, 40), seed=2),
                      model_config=model_config, progress=False)
    shapes = [item.target.shape for item in trainer.validation_items]
    assert shapes == [(16, 16)] * 3
    again = Trainer(model, config, tiny_pairs(2), tiny_pairs(1, shape=(40, 40), seed=2),
                    model_config=model_config, progress=False)
    for a, b in zip(trainer.validation_items, again.validation_items, strict=True):
        assert np.array_equal(a.image, b.image)


def test_deterministic_mode_is_restored_after_fit():
    assert not torch.are_deterministic_algorithms_enabled()
    make_trainer(config=tiny_config(deterministic=True, epochs=1)).fit()
    assert not torch.are_deterministic_algorithms_enabled()


def test_channels_last_trains_like_the_default_layout():
    # two input channels: with one, both layouts have the same strides
    pairs = [(np.concatenate([image, -image]), target) for image, target in tiny_pairs(3)]
    model_config = ModelConfig(ndim=2, in_channels=2, out_classes=2, channels=(4, 8, 16),
                               strides=(2, 2), num_res_units=1)
    losses, weights, layouts = {}, {}, {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        # SGD: Adam would turn the rounding noise in the vanishing gradients of the biases
        # before BatchRenorm into full steps
        config = tiny_config(channels_last=channels_last, optimizer="sgd", learning_rate=0.1)
        trainer = Trainer(build_model(model_config), config, pairs, pairs[:1],
                          model_config=model_config, progress=False)
        seen = layouts[channels_last] = []
        trainer.module.register_forward_pre_hook(lambda module, inputs, seen=seen: seen.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)))
        batches = iter([trainer.sampler.batch(0, index) for index in range(3)])
        losses[channels_last] = [float(trainer._optimizer_step(batches)[0]) for _ in range(3)]
        weights[channels_last] = trainer.module.state_dict()
    conv = next(m for m in trainer.module.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert layouts == {False: [False] * 3, True: [True] * 3}
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    for name, value in weights[False].items():
        np.testing.assert_allclose(weights[True][name].float().numpy(), value.float().numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)


def test_channels_last_in_3d_uses_the_3d_layout():
    config = tiny_config(channels_last=True, patch_size=(8, 8, 8))
    assert trainer_module._memory_format(config, ModelConfig(ndim=3)) == torch.channels_last_3d
    assert trainer_module._memory_format(config, None) == torch.channels_last_3d
    assert trainer_module._memory_format(tiny_config(), None) == torch.preserve_format


def test_compile_wraps_the_training_network_only(monkeypatch):
    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.calls = 0

        def forward(self, images):
            self.calls += 1
            return self.inner(images)

    monkeypatch.setattr(torch, "compile", Counting)
    trainer = make_trainer(config=tiny_config(compile=True, epochs=2, steps_per_epoch=3))
    assert isinstance(trainer.network, Counting) and trainer.network.inner is trainer.module
    trainer.fit()
    assert trainer.network.calls == 2 * 3
    assert set(trainer.state_dict()["model"]) == set(trainer.module.state_dict())


def test_a_time_budget_plans_the_epochs_and_the_schedules(tmp_path, monkeypatch):
    """A clock that advances at every reading: epochs take seconds of a 1-minute budget."""
    clock = iter(np.arange(0.0, 10_000.0, 0.5))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    config = tiny_config(epochs=50, steps_per_epoch=2, max_minutes=1.0, patience=0)
    trainer = make_trainer(tmp_path, config=config)
    result = trainer.fit()
    seconds = [r["seconds"] for r in result.history]
    assert 1 < result.epochs_run < 50 and trainer.config.epochs == result.epochs_run
    assert sum(seconds) <= 60.0 + max(seconds)
    total = trainer.config.epochs * trainer.config.steps_per_epoch
    assert trainer.renorm.warmup_steps == round(0.4 * total)
    assert trainer.scheduler.T_max == trainer.config.epochs
    saved = TrainConfig.load(tmp_path / "model" / "train_config.json")
    assert saved.epochs == result.epochs_run and saved.max_minutes == 1.0
