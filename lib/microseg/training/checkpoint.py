"""Random number generator states as plain data, so a resumed training continues exactly.

Checkpoints hold only plain data and tensors (read with ``torch.load(weights_only=True)``, see
:mod:`microseg.models.checkpoint`), so the states of Python's, NumPy's and torch's generators
are stored as tensors and lists.

Example
-------
>>> states = rng_states()
>>> sorted(states)
['cuda', 'numpy', 'python', 'torch']
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["restore_rng_states", "rng_states"]


def rng_states() -> dict[str, Any]:
    """States of Python's, NumPy's global and torch's (CPU and CUDA) generators, as plain data."""
    import torch

    version, words, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": list(words), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every generator to the states :func:`rng_states` returned."""
    import torch

    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy_state = states["numpy"]
    np.random.set_state({
        "bit_generator": numpy_state["bit_generator"],
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
