"""Mesh and sharding rules: one mesh with axes ``("data", "fsdp")``.

Batches split their batch axis over both axes (every device sees different sequences).
Parameters and every optimizer-state leaf follow one shape rule, so optimizer state (Adam
moments, SOAP factors, GN inner state) always shards like the parameters it belongs to: the
largest dimension divisible by the fsdp size is sharded over ``fsdp``; everything else (and all
arrays when fsdp is 1) is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


def make_mesh(data: int = -1, fsdp: int = 1, devices: list | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all, in ``jax.devices()`` order).

    ``data=-1`` takes every device left after ``fsdp``.

    Example:
      >>> make_mesh().axis_names
      ('data', 'fsdp')
    """
    devices = list(jax.devices()) if devices is None else list(devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices")
    if data == -1:
        data = n // fsdp
    if data * fsdp != n:
        raise ValueError(
            f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} but there are {n} devices; "
            f"use sizes whose product is {n} (or mesh.data=-1)"
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), (DATA, FSDP))


def param_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
    """FSDP rule: shard the largest dimension divisible by ``fsdp_size``; else replicate."""
    if fsdp_size <= 1 or not shape:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % fsdp_size == 0 and shape[i] >= fsdp_size:
            spec = [None] * len(shape)
            spec[i] = FSDP
            return P(*spec)
    return P()


def state_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a pytree of arrays or ShapeDtypeStructs (params or optimizer state)."""
    fsdp_size = mesh.shape[FSDP]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp_size)), abstract_tree
    )


def batch_sharding(mesh: Mesh, batch_axis: int, ndim: int) -> NamedSharding:
    """Sharding of a batch array whose axis ``batch_axis`` holds sequences."""
    spec = [None] * ndim
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))
