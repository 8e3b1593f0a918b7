"""Attribute interpolation over rasterized fragments (differentiable in attributes and barycentrics)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from msma_jax.render.rasterize import BatchMode, Fragments, over_batch


def interpolate(attributes: jax.Array, fragments: Fragments, triangles: jax.Array, *,
                batch_mode: BatchMode = "auto", batch_axes=None) -> jax.Array:
  """Per-pixel attribute values.

  attributes: [B, V, C] per-vertex attributes (or [V, C], shared by the batch).
  fragments: from `rasterize`; triangles [F, 3].
  Returns [B, H, W, C]: Σ_i barycentric_i · attribute(vertex_i) on covered pixels, 0 elsewhere.
  """
  ids = fragments.triangle_id
  if attributes.ndim == 2:
    fn = lambda i, b: _interpolate_one(attributes, i, b, triangles)
    return over_batch(fn, ids, fragments.barycentric, batch_mode=batch_mode,
                      batch_axes=batch_axes, cpu_mode="vmap")
  if attributes.ndim == 3 and attributes.shape[0] == ids.shape[0]:
    fn = lambda a, i, b: _interpolate_one(a, i, b, triangles)
    return over_batch(fn, attributes, ids, fragments.barycentric, batch_mode=batch_mode,
                      batch_axes=batch_axes, cpu_mode="vmap")
  raise ValueError(f"interpolate: attributes must be [B, V, C] with B = {ids.shape[0]} or [V, C], "
                   f"got {attributes.shape}")


def _interpolate_one(attributes, ids, bary, triangles):
  """[V, C], [H, W], [H, W, 3] -> [H, W, C]."""
  tri = triangles[jnp.maximum(ids, 0)]                                # [H, W, 3]
  out = sum(bary[..., i, None].astype(attributes.dtype) * attributes[tri[..., i]] for i in range(3))
  return jnp.where((ids >= 0)[..., None], out, jnp.zeros((), out.dtype))


def coverage(fragments: Fragments, dtype=jnp.float32) -> jax.Array:
  """[B, H, W, 1] 1 where a triangle covers the pixel centre, else 0 (no gradient; see antialias)."""
  return fragments.mask[..., None].astype(dtype)
