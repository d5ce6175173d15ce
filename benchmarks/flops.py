"""FLOPs and memory traffic per output voxel of microseg's networks, counted by PyTorch.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: convolutions (also
transposed), matrix products and attention, 2 FLOPs per multiply-add, for a forward pass and for
a training pass (forward and backward: the gradients of the inputs and of the weights; the input
image needs none). Element-wise work (normalization, activations, loss, optimizer) is not
counted: it is small in FLOPs and limited by memory bandwidth instead. That is what the second
count measures: the bytes every PyTorch operation reads and writes (tensor arguments and
results; views are free), as eager PyTorch runs them, without fusion or caches.

Everything runs on PyTorch's ``meta`` device: shapes only, no arithmetic, so the paper's 96³
patch is counted in a moment. For these fully convolutional networks both counts grow exactly
with the number of voxels, so the values per voxel hold for every patch size. A hand count of
the classic U-Net (``paper3d``), layer by layer, checks the counter.

    .venv/bin/python benchmarks/flops.py            # default2d (128², batch 8), paper3d (96³)
    .venv/bin/python benchmarks/flops.py --quick    # the same networks at small sizes

Prints a table and writes JSON to benchmarks/results/flops[_quick]-<date>.json.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

NETWORKS = {
    # name: (model preset, batch, patch, quick patch), the training benchmark's settings
    "default2d": ("default2d", 8, (128, 128), (64, 64)),
    "paper3d": ("paper3d", 1, (96, 96, 96), (32, 32, 32)),
}


def model_config(name: str, ndim: int | None = None):
    """The ModelConfig of a network this benchmark counts.

    ``name``: a model preset (``default2d``, ``paper3d`` ...) or ``tiled-inference``, the network
    of ``benchmarks/tiled_inference.py`` (MONAI UNet 32/64/128, 2 residual units, BatchNorm,
    PReLU) in ``ndim`` dimensions.
    """
    from microseg.models import ModelConfig, model_preset

    if name == "tiled-inference":
        return ModelConfig(architecture="unet", ndim=ndim or 2, channels=(32, 64, 128),
                           strides=(2, 2), num_res_units=2, norm="batch", act="prelu")
    config = model_preset(name)
    return config if ndim is None else config.replace(ndim=ndim)


def meta_network(config):
    """The network of ``config`` on the meta device, in training mode."""
    import torch

    from microseg.models import build_model

    torch.manual_seed(0)
    return build_model(config).to("meta").train()


def _run(model, input_shape: Sequence[int], backward: bool) -> None:
    import torch

    images = torch.empty(tuple(input_shape), device="meta")
    logits = model(images)
    if backward:
        logits.backward(torch.empty_like(logits))


def count_flops(model, input_shape: Sequence[int], backward: bool = False) -> int:
    """FLOPs of one forward pass (``backward``: forward and backward) for ``input_shape``.

    ``input_shape``: (N, C, *spatial). Counted by FlopCounterMode on the model's device (use
    the meta device for speed).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _run(model, input_shape, backward)
    return int(counter.get_total_flops())


def count_bytes(model, input_shape: Sequence[int], backward: bool = False) -> int:
    """Bytes read and written by every operation of a forward (and backward) pass, unfused."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class ByteCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                leaves = tree_flatten((args, kwargs, out))[0]
                self.total += sum(t.numel() * t.element_size() for t in leaves
                                  if isinstance(t, torch.Tensor))
            return out

    counter = ByteCounter()
    with counter:
        _run(model, input_shape, backward)
    return counter.total


def network_costs(name: str, batch: int, patch: Sequence[int], ndim: int | None = None
                  ) -> dict:
    """FLOPs and bytes of network ``name`` for a batch of ``patch``, total and per voxel.

    Per voxel means per output voxel: divided by ``batch * prod(patch)``.
    """
    config = model_config(name, ndim or len(patch))
    model = meta_network(config)
    shape = (batch, config.in_channels, *patch)
    voxels = batch * math.prod(patch)
    costs = {
        "network": name, "ndim": config.ndim, "batch": batch, "patch": list(patch),
        "forward_flops": count_flops(model, shape),
        "training_flops": count_flops(model, shape, backward=True),
        "forward_bytes": count_bytes(model, shape),
        "training_bytes": count_bytes(model, shape, backward=True),
    }
    for key in ("forward_flops", "training_flops", "forward_bytes", "training_bytes"):
        costs[f"{key}_per_voxel"] = costs[key] / voxels
    return costs


def conv_flops(in_channels: int, out_channels: int, kernel: Sequence[int],
               output_shape: Sequence[int], batch: int = 1) -> int:
    """Hand count of one convolution (groups 1, bias not counted): 2 FLOPs per multiply-add.

    Every output value of every output channel sums ``in_channels * prod(kernel)`` products.
    """
    return 2 * batch * out_channels * math.prod(output_shape) * in_channels * math.prod(kernel)


def transposed_conv_flops(in_channels: int, out_channels: int, kernel: Sequence[int],
                          input_shape: Sequence[int], batch: int = 1) -> int:
    """Hand count of one transposed convolution: every input value meets the whole kernel."""
    return 2 * batch * in_channels * math.prod(input_shape) * out_channels * math.prod(kernel)


def classic_unet_flops(config, patch: Sequence[int], batch: int = 1) -> int:
    """Hand count of a forward pass of :class:`~microseg.models.unet.ClassicUNet` (3×3 convs).

    Level ``i`` runs at ``patch / prod(strides[:i])``: two 3^d convolutions down, then (above the
    bottom) a transposed convolution up from the level below and two 3^d convolutions on the
    concatenation with the skip; a 1^d head maps the top level to the classes.
    """
    ndim, widths = config.ndim, list(config.channels)
    shapes = [tuple(patch)]
    for stride in config.strides:
        shapes.append(tuple(s // stride for s in shapes[-1]))
    three, one = (3,) * ndim, (1,) * ndim
    total = 0
    for level, (width, shape) in enumerate(zip(widths, shapes, strict=True)):
        before = config.in_channels if level == 0 else widths[level - 1]
        total += conv_flops(before, width, three, shape, batch)
        total += conv_flops(width, width, three, shape, batch)
    for level in reversed(range(len(config.strides))):
        stride = (config.strides[level],) * ndim
        total += transposed_conv_flops(widths[level + 1], widths[level], stride,
                                       shapes[level + 1], batch)
        total += conv_flops(2 * widths[level], widths[level], three, shapes[level], batch)
        total += conv_flops(widths[level], widths[level], three, shapes[level], batch)
    return total + conv_flops(widths[0], config.out_classes, one, shapes[0], batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small patches (same per voxel)")
    args = parser.parse_args()
    from train_throughput import run_record, write_record

    rows = []
    for preset, batch, patch, quick_patch in NETWORKS.values():
        patch = quick_patch if args.quick else patch
        row = network_costs(preset, batch, patch)
        config = model_config(preset)
        if config.architecture == "classic_unet":
            row["forward_flops_hand_count"] = classic_unet_flops(config, patch, batch)
        rows.append(row)
    print(f"{'network':<11}{'input':>18}{'GFLOP fwd':>11}{'GFLOP train':>13}"
          f"{'FLOP/vox fwd':>14}{'FLOP/vox train':>16}{'B/vox train':>13}{'hand count':>13}")
    for row in rows:
        shape = f"{row['batch']}x" + "x".join(map(str, row["patch"]))
        hand = row.get("forward_flops_hand_count")
        check = "-" if hand is None else ("equal" if hand == row["forward_flops"] else
                                          f"{hand / 1e9:.3f} G")
        print(f"{row['network']:<11}{shape:>18}{row['forward_flops'] / 1e9:>11.3f}"
              f"{row['training_flops'] / 1e9:>13.3f}{row['forward_flops_per_voxel']:>14,.0f}"
              f"{row['training_flops_per_voxel']:>16,.0f}"
              f"{row['training_bytes_per_voxel']:>13,.0f}{check:>13}")
    record = run_record("meta", quick=args.quick) | {"rows": rows}
    write_record(record, "flops_quick" if args.quick else "flops")


if __name__ == "__main__":
    main()
