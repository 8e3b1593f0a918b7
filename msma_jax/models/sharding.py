"""Placing the encoder on a device mesh from its partition annotations.

Parameters carry `nnx.with_partitioning` annotations made by `layers.Policy`: all `None`
(replicated) or the `fsdp` axis on the output channels of convolutions / the input features of
dense layers (`config.model.sharding.params = "fsdp"`). Batch statistics, norms and scales are
replicated. An annotated axis whose size the mesh axis does not divide (e.g. a 3-channel stem
input, a head with 27 outputs) is replicated instead, so any mesh works.

Batches are sharded along their first axis over the data axes of the mesh (`data_sharding`).
Typical use::

    mesh = jax.make_mesh((n_devices,), ("fsdp",))
    model = build_model(config.model, face_model, mesh=mesh)   # or shard_model(model, mesh)
    images = jax.device_put(images, data_sharding(mesh))
    coeffs = nnx.jit(lambda m, x: m(x))(model, images)
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes that are absent from `mesh` or do not divide the annotated dimension."""
  out = []
  for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axis,) if isinstance(axis, str) else tuple(axis or ())
    if not names or any(n not in mesh.shape for n in names):
      out.append(None)
      continue
    size = 1
    for n in names:
      size *= mesh.shape[n]
    out.append(axis if dim % size == 0 else None)
  return PartitionSpec(*out)


def state_shardings(state, mesh: Mesh):
  """`NamedSharding` for every leaf of an NNX State (model or model + optimizer) from the partition
  annotations its variables carry (optimizer moments inherit their parameter's annotation)."""
  specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda spec, v: NamedSharding(mesh, _fit(spec, v.shape, mesh)), specs, state)


def param_shardings(model: nnx.Module, mesh: Mesh):
  """`NamedSharding` for every variable of `model` (a State tree), from its annotations."""
  state = nnx.state(model)
  specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda spec, v: NamedSharding(mesh, _fit(spec, v.shape, mesh)),
                      specs, state)


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
  """Moves `model`'s variables onto `mesh` by their annotations, in place; returns `model`."""
  state = nnx.state(model)
  nnx.update(model, jax.device_put(state, param_shardings(model, mesh)))
  return model


def data_sharding(mesh: Mesh, axes: Sequence[str] | None = None) -> NamedSharding:
  """Batch-axis sharding over `axes` (default: every mesh axis, e.g. ("data", "fsdp"))."""
  axes = tuple(mesh.axis_names) if axes is None else tuple(axes)
  missing = [a for a in axes if a not in mesh.shape]
  if missing:
    raise ValueError(f"data_sharding: mesh has axes {mesh.axis_names}, not {missing}")
  return NamedSharding(mesh, PartitionSpec(axes))
