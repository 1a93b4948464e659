"""Test set-up: fake CPU devices (set before jax is imported), a shared compilation cache, and
the ``multidevice`` tier.

XLA fixes the device count once per process, so the suite runs in two pytest processes
(``make test``): ``-m "not multidevice"`` on 1 device (the default, ``GNBENCH_TEST_DEVICES=1``)
and ``-m multidevice`` on 8 (``GNBENCH_TEST_DEVICES=8``): the tests of sharding, data-parallel
equivalence and device-count errors. A ``multidevice`` test collected in a process with fewer
than 8 devices is skipped with the command that runs it.
"""

import os

import pytest

DEVICES = int(os.environ.get("GNBENCH_TEST_DEVICES", "1"))
MULTIDEVICE = 8  # Devices the multidevice tier runs on (its tests' meshes assume 8).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
).strip()
os.environ.setdefault("WANDB_MODE", "disabled")
# Persistent compilation cache: the suite compiles the same tiny steps many times (also in the
# subprocesses it starts, which inherit this environment).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/gnbench-test-jax-cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items):
    if DEVICES >= MULTIDEVICE:
        return
    skip = pytest.mark.skip(
        reason=f"needs {MULTIDEVICE} fake devices: GNBENCH_TEST_DEVICES={MULTIDEVICE} "
        "pytest -m multidevice tests (make test runs it)"
    )
    for item in items:
        if "multidevice" in item.keywords:
            item.add_marker(skip)
