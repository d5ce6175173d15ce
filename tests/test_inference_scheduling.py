"""microseg.inference.scheduling: a scheduler address that does not answer stops in time."""

from __future__ import annotations

import socket

import pytest

from microseg.errors import MicrosegError
from microseg.inference import scheduling


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_scheduler_stops_with_the_address_and_what_to_check(monkeypatch):
    monkeypatch.setattr(scheduling, "CONNECT_TIMEOUT", 1)
    address = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(MicrosegError) as caught, scheduling.dask_scheduler(address):
        pass
    message = str(caught.value)
    assert message.startswith(f"no Dask scheduler answered at {address} within 1 s")
    assert "scheduler=None" in message and "'local-cluster'" in message


def test_local_schedulers_pass_through():
    with scheduling.dask_scheduler(None) as chosen:
        assert chosen is None
    with scheduling.dask_scheduler("synchronous") as chosen:
        assert chosen == "synchronous"
