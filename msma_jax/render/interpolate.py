"""Attribute interpolation over rasterized fragments (differentiable in attributes and barycentrics)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from msma_jax.render.rasterize import Fragments


def interpolate(attributes: jax.Array, fragments: Fragments, triangles: jax.Array) -> jax.Array:
  """Per-pixel attribute values.

  attributes: [B, V, C] per-vertex attributes (or [V, C], shared by the batch).
  fragments: from `rasterize`; triangles [F, 3].
  Returns [B, H, W, C]: Σ_i barycentric_i · attribute(vertex_i) on covered pixels, 0 elsewhere.
  """
  ids = fragments.triangle_id
  covered = ids >= 0
  tri = triangles[jnp.maximum(ids, 0)]                                # [B, H, W, 3]
  if attributes.ndim == 2:
    values = attributes[tri]                                          # [B, H, W, 3, C]
  elif attributes.ndim == 3 and attributes.shape[0] == ids.shape[0]:
    values = attributes[jnp.arange(ids.shape[0])[:, None, None, None], tri]
  else:
    raise ValueError(f"interpolate: attributes must be [B, V, C] with B = {ids.shape[0]} or [V, C], "
                     f"got {attributes.shape}")
  out = jnp.einsum("bhwk,bhwkc->bhwc", fragments.barycentric.astype(values.dtype), values)
  return jnp.where(covered[..., None], out, jnp.zeros((), out.dtype))


def coverage(fragments: Fragments, dtype=jnp.float32) -> jax.Array:
  """[B, H, W, 1] 1 where a triangle covers the pixel centre, else 0 (no gradient; see antialias)."""
  return fragments.mask[..., None].astype(dtype)
