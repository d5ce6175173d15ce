"""Shared test setup: one thread per test process (the CI machine has two cores), fixed seeds."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_thread_and_seeded():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        yield
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def trained_like_unet():
    """Factory of a tiny U-Net (4/8/16 channels, one residual unit) in eval mode whose
    normalization layers hold non-trivial running statistics: ``make(norm, ndim)``."""
    import torch

    from microseg.models import ModelConfig, build_model, set_renorm_limits

    def make(norm: str, ndim: int) -> torch.nn.Module:
        config = ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                             norm=norm, norm_momentum=0.5)
        model = build_model(config)
        set_renorm_limits(model, 3.0, 5.0)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(3.0 * torch.randn((4, 1) + (16,) * ndim) + 1.0)
        return model.eval()

    return make


@pytest.fixture(scope="session")
def quick_chain(tmp_path_factory):
    """Every notebook in quick mode (2D) into one run folder, once per test session (minutes):
    ``(run_dir, [NotebookRun, ...])``. Shared by the notebook and the browser tests."""
    from microseg.notebook.chain import run_chain

    run_dir = tmp_path_factory.mktemp("chain") / "run"
    return run_dir, run_chain(run_dir, quick=True, html_export=False, log=lambda _: None)
