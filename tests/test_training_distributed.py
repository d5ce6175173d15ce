"""DDP under torchrun: two CPU processes (Gloo) end with identical weights; rank 0 writes."""

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from microseg.training.distributed import DistributedContext, init_distributed

SCRIPT = textwrap.dedent("""
    import hashlib
    import sys
    from pathlib import Path
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from microseg.models import ModelConfig, build_model
    from microseg.training.config import TrainConfig
    from microseg.training.distributed import close_distributed, init_distributed
    from microseg.training.trainer import Trainer, seed_everything

    out = Path(sys.argv[1])
    context = init_distributed()
    rng = np.random.default_rng(0)
    target = (rng.random((4, 32, 32)) > 0.6).astype(np.int64)
    image = (target + 0.3 * rng.standard_normal((4, 32, 32))).astype(np.float32)[:, None]
    pairs = list(zip(image, target))
    seed_everything(context.rank)  # different initial weights: DDP must copy rank 0's
    model_config = ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                               out_classes=2, norm="batchrenorm")
    config = TrainConfig(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=(16, 16),
                         amp="none", val_tile=32, patience=0, grad_accumulation=2)
    trainer = Trainer(build_model(model_config), config, pairs[:3], pairs[3:],
                      model_config=model_config, model_dir=out / "model", progress=False,
                      distributed=context)
    first_batch = trainer.sampler.batch(0, 0)[0]
    result = trainer.fit()
    digest = hashlib.sha256()
    for key, value in sorted(trainer.module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    (out / f"rank{context.rank}.txt").write_text(
        f"{digest.hexdigest()} {result.history[-1]['val_loss']!r} {float(first_batch.sum())!r}")
    close_distributed(context)
""")


def test_single_process_context():
    context = init_distributed()
    assert context == DistributedContext()
    assert not context.enabled and context.is_main and str(context.device()) == "cpu"


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(script), str(tmp_path)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = (tmp_path / "rank0.txt").read_text().split()
    rank1 = (tmp_path / "rank1.txt").read_text().split()
    assert rank0[0] == rank1[0]  # weights and buffers
    assert rank0[1] == rank1[1]  # the validation loss every process agreed on
    assert rank0[2] != rank1[2]  # each process drew its own patches
    saved = torch.load(tmp_path / "model" / "latest.pt", weights_only=True)["model"]
    digest = hashlib.sha256()
    for key, value in sorted(saved.items()):
        digest.update(key.encode())
        digest.update(value.contiguous().numpy().tobytes())
    assert digest.hexdigest() == rank0[0]  # rank 0 wrote the model every process holds
