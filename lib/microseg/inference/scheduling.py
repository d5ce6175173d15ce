"""Where out-of-core work runs: Dask's local schedulers, a LocalCluster, or a running cluster.

Block prediction (:mod:`microseg.inference.ooc`), label stitching
(:mod:`microseg.inference.stitching`) and deployment (notebook 07) hand their Dask tasks to
:func:`run_tasks`; :func:`dask_scheduler` opens (and closes) what a deployment's ``scheduler``
names. An address that does not answer stops within :data:`CONNECT_TIMEOUT` seconds with a
message saying what to check, instead of a bare network error.

Example
-------
>>> with dask_scheduler("synchronous") as scheduler:
...     scheduler
'synchronous'
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from microseg.errors import MicrosegError

__all__ = [
    "CONNECT_TIMEOUT",
    "LOCAL_CLUSTER",
    "LOCAL_SCHEDULERS",
    "connect",
    "dask_scheduler",
    "peak_memory_mb",
    "progress_bar",
    "run_tasks",
    "worker_peak_memory",
]

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "synchronous", "processes")
"""Dask's schedulers in this process (threads) or its own local processes."""
LOCAL_CLUSTER = "local-cluster"
"""A ``dask.distributed`` LocalCluster made for one call."""
CONNECT_TIMEOUT = 10
"""Seconds to wait for a Dask scheduler to answer."""


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A ``dask.distributed.Client`` connected to the scheduler at ``address``, closed after.

    Raises
    ------
    MicrosegError
        If the scheduler does not answer within :data:`CONNECT_TIMEOUT` seconds (naming the
        address and what to check).
    """
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise MicrosegError(
            f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT} s ({err}); "
            f"check that it runs (dask scheduler), that the address and port are right and "
            f"reachable from here, or use scheduler=None (this machine's threads) or "
            f"'local-cluster'") from None
    with client:
        yield client


@contextlib.contextmanager
def dask_scheduler(scheduler: str | None, n_workers: int | None = None) -> Iterator[Any]:
    """What :func:`~microseg.inference.ooc.predict_volume_to_zarr` takes as its scheduler.

    ``"local-cluster"`` starts a ``dask.distributed`` LocalCluster of ``n_workers`` processes
    (default: the CPU count, at most 4) with one thread each and yields a Client connected to
    it; a scheduler address (``"tcp://host:8786"``) yields a Client connected to that running
    scheduler. Both are closed afterwards (a LocalCluster also shut down). None or a local
    scheduler name is passed through unchanged.
    """
    if scheduler is None or scheduler in LOCAL_SCHEDULERS:
        yield scheduler
        return
    from distributed import LocalCluster

    if scheduler != LOCAL_CLUSTER:
        with connect(scheduler) as client:
            log.info("connected to the Dask scheduler at %s", scheduler)
            yield client
        return

    workers = n_workers or min(4, os.cpu_count() or 1)
    from distributed import Client

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        log.info("started a LocalCluster of %d single-threaded worker processes", workers)
        yield client


@contextlib.contextmanager
def progress_bar(progress: bool, scheduler: Any) -> Iterator[None]:
    """Dask's text progress bar, for local schedulers (clusters have their dashboard)."""
    if not progress or not (scheduler is None or scheduler in LOCAL_SCHEDULERS):
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0, dt=1.0):  # a redraw a second, not ten
        yield


def worker_peak_memory(scheduler: Any) -> dict[str, float] | None:
    """Peak resident memory (MiB) of every worker of a distributed Client, else None."""
    if not hasattr(scheduler, "run"):
        return None
    return {str(k): float(v) for k, v in scheduler.run(peak_memory_mb).items()}


def run_tasks(tasks: list[Any], scheduler: Any = None) -> list[Any]:
    """Compute Dask ``tasks`` on ``scheduler``: None or a local scheduler's name (Dask's
    ``"threads"``, ``"synchronous"``, ``"processes"``), a ``dask.distributed.Client``, or a
    scheduler address (``"tcp://host:8786"``)."""
    import dask

    if scheduler is None or scheduler in LOCAL_SCHEDULERS:
        return list(dask.compute(*tasks, scheduler=scheduler or "threads"))
    if isinstance(scheduler, str):
        with connect(scheduler) as client:
            return list(dask.compute(*tasks, scheduler=client))
    return list(dask.compute(*tasks, scheduler=scheduler))


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage`` ru_maxrss)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
