"""Host batches -> global `jax.Array`s sharded over the `data` axis of a device mesh.

Each JAX process loads its own share of the global batch (`pipeline.process_shard`); `to_device`
assembles the shares into global arrays with `jax.make_array_from_process_local_data`, the batch axis
split over the mesh's `data` axis (other axes replicated). On one host it is a sharded device put.
"""
from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over all devices (all processes), named `data`."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
  """Leading (batch) dimension split over `axis_name`, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(axis_name))


def to_device(batch: dict, sharding: NamedSharding | Mesh) -> dict:
  """This process's host batch (dict of numpy arrays [B_local, ...]) -> global jax.Arrays
  [B_local * process_count, ...] sharded along the batch axis. B_local must be divisible by the
  number of this process's devices in the mesh."""
  if isinstance(sharding, Mesh):
    sharding = batch_sharding(sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def device_batches(batches: Iterable[dict], sharding: NamedSharding | Mesh,
                   prefetch: int = 2) -> Iterator[dict]:
  """Puts host batches on the devices `prefetch` batches ahead (transfers overlap the step)."""
  queue = collections.deque()
  it = iter(batches)
  for batch in itertools.islice(it, prefetch):
    queue.append(to_device(batch, sharding))
  while queue:
    out = queue.popleft()
    for batch in itertools.islice(it, 1):
      queue.append(to_device(batch, sharding))
    yield out
