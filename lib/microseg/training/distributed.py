"""Training on several GPUs (or CPU processes) with DistributedDataParallel under ``torchrun``.

Start the same training once per device::

    torchrun --nproc_per_node=4 -m microseg.recipes.train --run-dir runs/exp1

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads
them and joins the process group (NCCL on GPUs, Gloo on the CPU). Every process trains on its
own random patches (the sampler's seed includes the rank), DDP averages the gradients, so the
weights stay identical everywhere; the first process (rank 0) writes checkpoints and files.
The effective batch is ``world_size · batch_size · grad_accumulation``. Without ``torchrun``
everything here is a no-op for a single process.

Example
-------
>>> context = init_distributed()
>>> context.world_size, context.is_main
(1, True)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = [
    "DistributedContext",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "close_distributed",
    "init_distributed",
    "wrap_model",
]


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a multi-process run.

    rank : 0 .. world_size-1; rank 0 writes files.
    world_size : number of processes (1 = not distributed).
    local_rank : index of this process on its machine (its GPU).
    backend : ``"nccl"``, ``"gloo"`` or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> Any:
        """This process's device: ``cuda:<local_rank>`` with NCCL, else the CPU."""
        import torch

        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def init_distributed(backend: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    ``backend`` None picks NCCL when CUDA is available, Gloo otherwise. Calling it again in a
    process that already joined returns the same context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    import torch
    import torch.distributed as dist

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def close_distributed(context: DistributedContext) -> None:
    """Leave the process group (at the end of a run)."""
    if context.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: Any, context: DistributedContext) -> Any:
    """``model`` wrapped in DistributedDataParallel when distributed, else ``model`` itself.

    The model must already be on this process's device. DDP copies rank 0's weights and
    buffers to every process at construction and broadcasts buffers at every forward.
    """
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.local_rank] if context.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(values: Any, context: DistributedContext) -> Any:
    """Sum a float64 CPU tensor over all processes (in place; returned for convenience)."""
    if context.enabled:
        import torch.distributed as dist

        moved = values.to(context.device())
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        values.copy_(moved.cpu())
    return values


def broadcast_buffers(module: Any, context: DistributedContext) -> None:
    """Copy rank 0's buffers (e.g. running statistics) to every process.

    Each process updates running statistics with its own batches; after this the processes
    hold identical models, so validation and checkpoints agree.
    """
    if context.enabled:
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(context: DistributedContext) -> None:
    """Wait until every process reaches this point."""
    if context.enabled:
        import torch.distributed as dist

        dist.barrier()
