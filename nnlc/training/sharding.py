"""Data parallelism with explicit shardings: batch split over a 1-D 'data' mesh, state replicated.

Works on one device, on all local devices, and across hosts (`jax.distributed.initialize()` first,
done by `maybe_initialize_distributed`): every host builds the same global batch and places the rows
of its own devices. `config.batch_size` is the global batch, whatever the number of devices and hosts.
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


def is_batch_array(array: Any, batch_size: int | None) -> bool:
    """Whether a batch leaf is split over devices (and into gradient groups): its leading dimension
    is the batch size. Other leaves (scalars, fixed recurrent states, ...) are replicated."""
    shape = np.shape(array)
    return bool(shape) and batch_size is not None and shape[0] == batch_size


def shard_batch(batch: Any, mesh: Mesh, batch_size: int | None = None) -> Any:
    """Places a global batch: arrays with `batch_size` rows (any leading dimension if None) are split
    on axis 0 over the 'data' axis when the device count divides it; other arrays are replicated.

    Every host passes the same global batch (batches are indexed by step) and places only the rows
    of its own devices, so the data each device sees does not depend on how many hosts there are.
    """
    devices = mesh.devices.size

    def place(array):
        array = np.asarray(array)
        split = (batch_size is None or is_batch_array(array, batch_size)) and bool(array.ndim) \
            and array.shape[0] % devices == 0
        target = batch_sharding(mesh) if split else replicated(mesh)
        if jax.process_count() > 1:
            return jax.make_array_from_callback(array.shape, target, lambda index: array[index])
        return jax.device_put(array, target)

    return jax.tree.map(place, batch)
