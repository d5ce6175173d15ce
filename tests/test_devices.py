"""microseg.devices: every stage's ``device`` value checked once, before any work."""

from __future__ import annotations

import pytest
import torch

from microseg.devices import resolve_device
from microseg.errors import ConfigError


@pytest.mark.parametrize(("given", "expected"), [
    ("cpu", torch.device("cpu")), (" CPU ", torch.device("cpu")),
    (torch.device("cpu"), torch.device("cpu")),
])
def test_known_names_give_the_torch_device(given, expected):
    assert resolve_device(given) == expected


def test_auto_takes_a_gpu_only_when_torch_finds_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected


@pytest.mark.parametrize("given", ["gpu0", "gpu", "cuda0", "cuda:x", "tpu", 0, ""])
def test_unknown_devices_name_the_value_and_the_choices(given):
    with pytest.raises(ConfigError) as caught:
        resolve_device(given)
    message = str(caught.value)
    assert message.startswith(f"device {given!r} is not known: use \"auto\"")
    assert '"cpu", "cuda" or "cuda:N"' in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_on_a_machine_without_a_gpu_says_what_to_use():
    with pytest.raises(ConfigError, match="torch finds no CUDA GPU on this machine .*"
                                          "use device='auto' or 'cpu'"):
        resolve_device("cuda:0")
