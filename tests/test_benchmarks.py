"""Benchmark logic: FLOP counts against hand counts, fractions of the measured ceilings, and
error rows of the training benchmark's switch matrix."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import flops  # noqa: E402
import gpu_ceilings  # noqa: E402
import train_throughput  # noqa: E402

from microseg.models import ModelConfig, model_preset  # noqa: E402


def test_one_convolution_counts_as_a_hand_count():
    # 2 FLOPs x batch 2 x 5 output channels x 6*7*8 voxels x 3 input channels x 27 taps
    expected = 2 * 2 * 5 * 336 * 3 * 27
    conv = torch.nn.Conv3d(3, 5, kernel_size=3, padding=1).to("meta")
    assert flops.count_flops(conv, (2, 3, 6, 7, 8)) == expected == 544_320
    assert flops.conv_flops(3, 5, (3, 3, 3), (6, 7, 8), batch=2) == expected
    # the input needs no gradient: backward computes the weight gradient only, as many FLOPs
    assert flops.count_flops(conv, (2, 3, 6, 7, 8), backward=True) == 2 * expected


def test_one_transposed_convolution_counts_as_a_hand_count():
    # every one of 4 * 5*6 input values meets a 2x2 kernel for each of 2 output channels
    expected = 2 * 4 * 30 * 2 * 4
    up = torch.nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2).to("meta")
    assert flops.count_flops(up, (1, 4, 5, 6)) == expected == 1920
    assert flops.transposed_conv_flops(4, 2, (2, 2), (5, 6)) == expected


@pytest.mark.parametrize("config, patch, batch", [
    (model_preset("paper3d"), (96, 96, 96), 1),
    (ModelConfig(architecture="classic_unet", ndim=2, in_channels=2, out_classes=4,
                 channels=(4, 8, 16, 8), strides=(2, 2, 2)), (16, 24), 3),
])
def test_classic_unet_hand_count_equals_the_counter(config, patch, batch):
    model = flops.meta_network(config)
    counted = flops.count_flops(model, (batch, config.in_channels, *patch))
    assert counted == flops.classic_unet_flops(config, patch, batch)


def test_flops_per_voxel_do_not_depend_on_the_patch():
    small = flops.network_costs("default2d", 1, (32, 32))
    large = flops.network_costs("default2d", 2, (64, 96))
    for key in ("forward_flops_per_voxel", "training_flops_per_voxel"):
        assert small[key] == pytest.approx(large[key], rel=1e-12)
    assert large["training_flops"] > 2 * large["forward_flops"]
    assert large["training_bytes"] > large["forward_bytes"] > 0


CEILINGS = {"device_type": "cuda", "fp32_flops_per_s": 5e13, "tf32_flops_per_s": 4e14,
            "bf16_flops_per_s": 8e14, "copy_bytes_per_s": 3e12, "cudnn_allow_tf32": True}


def train_row(**changes):
    row = {"setting": "3d-paper", "model": "paper3d", "patch": [96, 96, 96], "batch": 1,
           "accumulation": 8, "precision": "bf16", "compute_dtype": "bfloat16",
           "channels_last": False, "compile": True, "device_type": "cuda", "status": "ok",
           "patches_per_second": 4.0, "data_wait_fraction": 0.01}
    return row | changes


def costs(work):
    return {"flops_per_voxel": 1e6 if work["pass"] == "training" else 5e5,
            "bytes_per_voxel": 2e4}


def test_fraction_of_the_ceiling_per_row():
    tiled = {"method": "microseg", "ndim": 2, "tile": 256, "windows": 400, "seconds": 10.0,
             "valid_pixels_per_s": 1.0, "device": "cuda"}
    rows = gpu_ceilings.fraction_rows(
        [train_row(), train_row(precision="fp32", compute_dtype="float32"), tiled,
         train_row(status="error"), train_row(device_type="cpu")], CEILINGS, costs)
    assert len(rows) == 4
    bf16, fp32, inference, other_device = rows
    voxels = 4.0 * 96**3
    assert bf16["voxels_per_second"] == voxels
    assert bf16["ceiling"] == "bf16"
    assert bf16["achieved_flops_per_s"] == pytest.approx(voxels * 1e6)
    assert bf16["compute_fraction"] == pytest.approx(3_538_944e6 / 8e14)
    assert bf16["memory_fraction"] == pytest.approx(3_538_944 * 2e4 / 3e12)
    assert bf16["bottleneck"] == "overhead"
    assert fp32["ceiling"] == "tf32"
    assert fp32["compute_fraction"] == pytest.approx(3_538_944e6 / 4e14)
    assert bf16["label"] == "train 3d-paper bf16 compile"
    # 400 windows of 256² per 10 s, forward FLOPs
    assert inference["voxels_per_second"] == pytest.approx(400 * 65536 / 10)
    assert inference["compute_fraction"] == pytest.approx(2_621_440 * 5e5 / 4e14)
    assert inference["memory_fraction"] == pytest.approx(2_621_440 * 2e4 / 3e12)
    assert inference["bottleneck"] == "overhead"
    assert "no fraction" in other_device["note"] and "compute_fraction" not in other_device


def test_float32_on_the_cpu_is_bounded_by_the_float32_rate():
    ceilings = CEILINGS | {"device_type": "cpu", "tf32_flops_per_s": None,
                           "cudnn_allow_tf32": None}
    assert gpu_ceilings.ceiling_for("float32", ceilings) == ("fp32", 5e13)
    assert gpu_ceilings.ceiling_for("bfloat16", ceilings) == ("bf16", 8e14)
    no_tf32 = CEILINGS | {"cudnn_allow_tf32": False}
    assert gpu_ceilings.ceiling_for("float32", no_tf32) == ("fp32", 5e13)


@pytest.mark.parametrize("compute, memory, data_wait, expected", [
    (0.6, 0.3, 0.01, "compute"),
    (0.3, 0.7, None, "memory bandwidth"),
    (0.1, 0.2, 0.1, "overhead"),
    (0.9, 0.1, 0.5, "data loading"),
])
def test_bottleneck(compute, memory, data_wait, expected):
    assert gpu_ceilings.bottleneck(compute, memory, data_wait) == expected


def test_a_failing_combination_becomes_an_error_row():
    stub = {"setting": "2d-default", "precision": "bf16", "compile": True}
    failed = train_throughput.run_worker(
        [sys.executable, "-c", "import sys; sys.exit('torch.compile: no C++ compiler')"],
        stub, timeout=60)
    assert failed == stub | {"status": "error",
                             "error": "exit status 1: torch.compile: no C++ compiler"}
    ran = train_throughput.run_worker(
        [sys.executable, "-c", "print('warming up'); print('{\"status\": \"ok\", \"x\": 2}')"],
        stub, timeout=60)
    assert ran == {"status": "ok", "x": 2}
    slow = train_throughput.run_worker([sys.executable, "-c", "import time; time.sleep(5)"],
                                       stub, timeout=0.5)
    assert slow["status"] == "error" and slow["error"].startswith("timed out")
