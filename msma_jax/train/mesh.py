"""The training device mesh: a `data` axis and an optional `fsdp` axis.

Batches are split over both axes (every device sees different images); parameters and optimizer
state are replicated, or sharded along `fsdp` (`config.model.sharding.params = "fsdp"`), in which
case XLA all-gathers each kernel where it is used (ZeRO-3 style). The axes are `Auto`: shardings of
intermediate values are left to XLA's propagation, which inserts those all-gathers and the
all-reduces of batch-norm statistics and gradients.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from configs.errors import ConfigError

DATA_AXES = ("data", "fsdp")




def make_mesh(mesh_config) -> Mesh:
  """config.mesh: `data` (-1 = all devices not used by fsdp) and `fsdp` (default 1) sizes."""
  n = jax.device_count()
  fsdp = int(mesh_config.get("fsdp", 1))
  data = int(mesh_config.get("data", -1))
  if fsdp < 1 or n % fsdp:
    raise ConfigError(f"config.mesh.fsdp={fsdp} does not divide the {n} devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ConfigError(f"config.mesh: data={data} x fsdp={fsdp} != {n} devices")
  return jax.make_mesh((data, fsdp), DATA_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, everything else replicated."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
