"""Data parallelism over all local devices with ``jax.sharding``.

Taught in chapter 5.1 (05a_vae_in_practice). The batch is split along its first axis over a
one-dimensional device mesh named ``"data"``; parameters and optimizer state are replicated.
With one device the same code path runs, so nothing here is CPU- or GPU-specific.

Multi-host use: call ``jax.distributed.initialize()`` at the top of the program on every host
(one process per host), then build the mesh from ``jax.devices()`` (all hosts) instead of
``jax.local_devices()`` and feed each process its own slice of the global batch with
``jax.make_array_from_process_local_data``. XLA inserts the gradient all-reduce either way.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with the axis ``"data"``."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Place every leaf of ``tree`` (e.g. an ``nnx.State``) on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch, mesh: Mesh):
    """Split every array in ``batch`` along axis 0 over the mesh's ``"data"`` axis.

    On a one-device mesh there is nothing to split: the host batch is returned as it is, and the
    jitted step that takes it copies it to the device within its call (a ``device_put`` of its
    own costs ~0.1 ms a step, as much as a tiny model's update; benchmarks.fit_overhead).
    """
    n_devices = mesh.devices.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % n_devices:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not divisible by the {n_devices} devices of the "
                f"mesh; choose a batch size that is a multiple of {n_devices}"
            )
    if n_devices == 1:
        return batch
    return jax.device_put(batch, batch_sharded(mesh))
