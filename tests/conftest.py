"""Test set-up: 8 fake CPU devices for the whole suite (set before jax is imported)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("WANDB_MODE", "disabled")
# Persistent compilation cache: the suite compiles the same tiny steps many times (also in the
# subprocesses it starts, which inherit this environment).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/gnbench-test-jax-cache")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("WANDB_SILENT", "true")
