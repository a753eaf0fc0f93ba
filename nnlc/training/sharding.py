"""Data parallelism with explicit shardings: batch split over a 1-D 'data' mesh, state replicated.

Works on one device, on all local devices, and across hosts (`jax.distributed.initialize()` first,
done by `maybe_initialize_distributed`): each host feeds its own slice of the global batch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def maybe_initialize_distributed(enabled: bool) -> None:
    """Multi-host GPU/TPU jobs: connect the processes (coordinator from the environment)."""
    if enabled and jax.process_count() == 1 and os.environ.get("JAX_COORDINATOR_ADDRESS", "") != "":
        jax.distributed.initialize()
    elif enabled and jax.process_count() == 1:
        try:
            jax.distributed.initialize()  # TPU pods and SLURM clusters configure themselves
        except (ValueError, RuntimeError):
            pass


def data_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places this host's part of a batch: arrays split on axis 0 over the 'data' axis; arrays
    whose leading dimension is not divisible by the device count (and scalars) are replicated."""
    devices = mesh.devices.size

    def place(array):
        array = np.asarray(array)
        if array.ndim and array.shape[0] % devices == 0:
            if jax.process_count() > 1:
                return jax.make_array_from_process_local_data(batch_sharding(mesh), array)
            return jax.device_put(array, batch_sharding(mesh))
        return jax.device_put(array, replicated(mesh))

    return jax.tree.map(place, batch)
