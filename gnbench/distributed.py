"""Multi-process start-up: ``jax.distributed`` from the environment, before any other JAX call.

``gnbench train`` calls :func:`initialize_from_environment` first thing. One code path serves a
laptop, a SLURM cluster and a TPU VM slice; which one is taken is decided from environment
variables, in this order:

1. **Explicit** (``explicit``): ``GNBENCH_COORDINATOR=host:port``, ``GNBENCH_NUM_PROCESSES=N``
   and ``GNBENCH_PROCESS_ID=i`` (all three, or none) -> ``jax.distributed.initialize(host:port,
   N, i)``. Optional ``GNBENCH_LOCAL_DEVICE_IDS=0,1`` restricts the devices of this process
   (GPUs; ignored on CPU). Use it anywhere, e.g. two processes on loopback in tests.
2. **SLURM step** (``slurm``): inside ``srun`` (``SLURM_STEP_ID`` set) with more than one task
   in the step -> ``jax.distributed.initialize()``; JAX reads coordinator (first node of the
   step, port derived from the job id), process count (``SLURM_NTASKS``), rank
   (``SLURM_PROCID``) and local GPU (``SLURM_LOCALID``) from SLURM. A one-task step, or a batch
   script run without ``srun``, stays single-process.
3. **TPU VM slice** (``tpu``): ``TPU_WORKER_HOSTNAMES`` lists more than one host (a multi-host
   slice started with ``gcloud compute tpus tpu-vm ssh --worker=all``) ->
   ``jax.distributed.initialize()``; JAX's TPU cluster detection fills in everything.
4. **Forced auto-detection** (``auto``): ``GNBENCH_DISTRIBUTED=auto`` ->
   ``jax.distributed.initialize()`` with JAX's own detection (MPI via mpi4py, GKE, ...).
   ``GNBENCH_DISTRIBUTED=off`` disables every path above.
5. Otherwise **single process** (``single``): nothing is called.

Failure detection: a peer that dies makes the others abort once its heartbeats stop for
``GNBENCH_HEARTBEAT_TIMEOUT`` seconds (JAX's default is 100 s). ``GNBENCH_INIT_TIMEOUT`` bounds
the wait for all processes to connect (default 300 s) and ``GNBENCH_SHUTDOWN_TIMEOUT`` the
barrier at exit (default 300 s). Tests set them to a few seconds so nothing hangs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

COORDINATOR = "GNBENCH_COORDINATOR"
NUM_PROCESSES = "GNBENCH_NUM_PROCESSES"
PROCESS_ID = "GNBENCH_PROCESS_ID"
LOCAL_DEVICE_IDS = "GNBENCH_LOCAL_DEVICE_IDS"
MODE = "GNBENCH_DISTRIBUTED"
TIMEOUTS = {
    "GNBENCH_HEARTBEAT_TIMEOUT": "heartbeat_timeout_seconds",
    "GNBENCH_INIT_TIMEOUT": "initialization_timeout",
    "GNBENCH_SHUTDOWN_TIMEOUT": "shutdown_timeout_seconds",
}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process starts: ``how`` names the path, ``kwargs`` go to
    ``jax.distributed.initialize`` (``None`` for a single process)."""

    how: str
    kwargs: dict[str, Any] | None


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"{name}={environ[name]!r} must be an integer") from None


def _timeouts(environ: Mapping[str, str]) -> dict[str, int]:
    return {arg: _int(environ, var) for var, arg in TIMEOUTS.items() if environ.get(var)}


def detect(environ: Mapping[str, str] | None = None) -> Launch:
    """Decides how to start from ``environ`` (default ``os.environ``); calls nothing.

    Example:
      >>> detect({}).how
      'single'
      >>> env = {"GNBENCH_COORDINATOR": "127.0.0.1:4000", "GNBENCH_NUM_PROCESSES": "2",
      ...        "GNBENCH_PROCESS_ID": "1", "GNBENCH_HEARTBEAT_TIMEOUT": "5"}
      >>> launch = detect(env)
      >>> launch.how, launch.kwargs["process_id"], launch.kwargs["heartbeat_timeout_seconds"]
      ('explicit', 1, 5)

    Raises:
      ValueError: a partial explicit setting, a non-integer value, or an unknown mode.
    """
    environ = os.environ if environ is None else environ
    mode = environ.get(MODE, "")
    if mode not in ("", "auto", "off"):
        raise ValueError(f"{MODE}={mode!r}; valid: auto, off (or unset)")
    if mode == "off":
        return Launch("single", None)
    timeouts = _timeouts(environ)
    explicit = {v: environ.get(v) for v in (COORDINATOR, NUM_PROCESSES, PROCESS_ID)}
    if any(explicit.values()):
        if not all(explicit.values()):
            raise ValueError(f"set all of {', '.join(explicit)} or none of them (got {explicit})")
        kwargs: dict[str, Any] = dict(
            coordinator_address=environ[COORDINATOR],
            num_processes=_int(environ, NUM_PROCESSES),
            process_id=_int(environ, PROCESS_ID),
            **timeouts,
        )
        if environ.get(LOCAL_DEVICE_IDS):
            kwargs["local_device_ids"] = [
                int(x) for x in environ[LOCAL_DEVICE_IDS].split(",") if x.strip()
            ]
        return Launch("explicit", kwargs)
    step_tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    if "SLURM_STEP_ID" in environ and int(step_tasks) > 1:
        return Launch("slurm", dict(timeouts))
    hosts = [h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return Launch("tpu", dict(timeouts))
    if mode == "auto":
        return Launch("auto", dict(timeouts))
    return Launch("single", None)


def initialize_from_environment(environ: Mapping[str, str] | None = None) -> Launch:
    """Starts ``jax.distributed`` as :func:`detect` decides; call before any other JAX call.

    Returns the :class:`Launch` taken (``how == "single"``: nothing was called).

    Example:
      >>> initialize_from_environment({}).how   # a laptop: single process
      'single'
    """
    launch = detect(environ)
    if launch.kwargs is not None:
        import jax

        jax.distributed.initialize(**launch.kwargs)
    return launch


def first_process_first(fn: Callable[[], T], name: str) -> T:
    """Runs ``fn`` on process 0, then (after a barrier) on the others; returns its result.

    For idempotent set-up that writes files, e.g. preparing a corpus: on a shared file system
    the others find process 0's result; on per-host disks each host makes its own copy.
    Single-process: just ``fn()``.

    Example:
      >>> first_process_first(lambda: 3, "doc")
      3
    """
    import jax

    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    out = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(f"gnbench:{name}")
    return fn() if jax.process_index() != 0 else out
