"""Silhouette antialiasing with visibility gradients, in the spirit of nvdiffrast's `antialias`.

Point-sampled rasterization is piecewise constant in the vertex positions, so a mask or image loss has
no gradient with respect to where a silhouette lies. `antialias` looks at every pair of horizontally
or vertically adjacent pixels showing different triangles. When the nearer triangle's edge between
the two pixel centres is a silhouette edge (a mesh boundary, or its neighbour across the edge faces
away), the crossing position t ∈ [0, 1] along the segment is computed analytically from the clip-space
vertices and the two pixel colours are blended by how far the edge is past the midpoint:

    t > 0.5: far pixel  += (t - 0.5) · (near colour - far colour)
    t < 0.5: near pixel += (0.5 - t) · (far colour - near colour)

The blend is continuous in t (zero at 0.5), so the output stays continuous as the edge moves between
pixel centres, and d(output)/d(vertices) flows through t: this is the silhouette gradient. Edges
inside the surface (both neighbours front-facing) are left alone since colours are continuous there.
As in nvdiffrast, an edge is handled only by the pair direction closer to its normal (horizontal
pairs for mostly vertical edges), so the summed coverage changes by the edge's extent when it moves.

Cost: O(B·H·W) gathers and a few dozen flops per pixel pair, independent of the triangle count; on
the CPU it adds roughly the cost of one `interpolate` call (see docs/BENCHMARKS.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msma_jax.render.rasterize import Fragments, _edge_planes, _pixel_homogeneous


def triangle_neighbors(triangles) -> np.ndarray:
  """[F, 3] int32: for each triangle and vertex i, the triangle across the edge opposite vertex i
  (the edge (v[i+1], v[i+2])), or -1 on a mesh boundary. Host-side NumPy (topology is static)."""
  tri = np.asarray(triangles, np.int64)
  f = tri.shape[0]
  a = tri[:, [1, 2, 0]].reshape(-1)                                    # edge opposite vertex i
  b = tri[:, [2, 0, 1]].reshape(-1)
  key_lo, key_hi = np.minimum(a, b), np.maximum(a, b)
  order = np.lexsort((key_hi, key_lo))
  lo, hi = key_lo[order], key_hi[order]
  same_next = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
  nbr = np.full(3 * f, -1, np.int64)
  owner = order // 3
  # Pair consecutive equal edges (manifold edges appear exactly twice).
  i = np.nonzero(same_next)[0]
  nbr[order[i]] = owner[i + 1]
  nbr[order[i + 1]] = owner[i]
  return nbr.reshape(f, 3).astype(np.int32)


def _front_facing(clip: jax.Array, triangles: jax.Array) -> jax.Array:
  """[B, V, 4] -> [B, F] bool: counter-clockwise in NDC (the sign of det[x; y; w] of the vertices)."""
  c = clip[:, triangles][..., (0, 1, 3)]                                # [B, F, 3, 3]
  det = jnp.sum(c[..., 0, :] * jnp.cross(c[..., 1, :], c[..., 2, :]), axis=-1)
  return det > 0


def _pair_deltas(image, ids, depth, clip, triangles, neighbors, facing, image_size, axis):
  """Colour changes from the pixel pairs (p, p + 1 along `axis`: 2 = x, 1 = y)."""
  h, w = image_size
  n = ids.shape[1] - 1 if axis == 1 else ids.shape[2] - 1
  sl_a = (slice(None), slice(0, n), slice(None)) if axis == 1 else (slice(None), slice(None),
                                                                    slice(0, n))
  sl_b = (slice(None), slice(1, n + 1), slice(None)) if axis == 1 else (slice(None), slice(None),
                                                                        slice(1, n + 1))
  id_a, id_b = ids[sl_a], ids[sl_b]
  cov_a, cov_b = id_a >= 0, id_b >= 0
  a_front = cov_a & (~cov_b | (depth[sl_a] <= depth[sl_b]))
  front_id = jnp.where(a_front, id_a, id_b)
  candidate = (id_a != id_b) & (cov_a | cov_b)
  # Edge functions of the front triangle, with the front pixel as reference: at the other pixel
  # the offset is +1 (a front) or -1 (b front) along the axis.
  b_idx = jnp.arange(ids.shape[0])[:, None, None]
  tri = triangles[jnp.maximum(front_id, 0)]                             # [B, h', w', 3]
  tri_clip = clip[b_idx[..., None], tri]                               # [B, h', w', 3, 4]
  ys, xs = jnp.meshgrid(jnp.arange(ids.shape[1]), jnp.arange(ids.shape[2]), indexing="ij")
  pix = jnp.stack([xs, ys], -1)[sl_a[1:]]                               # pixel a
  step = jnp.array([1, 0] if axis == 2 else [0, 1], jnp.int32)
  ref = jnp.where(a_front[..., None], pix, pix + step)                  # the front pixel
  hom = _pixel_homogeneous(tri_clip, image_size, ref)
  lam, _, _, _ = _edge_planes(hom, tri_clip[..., 3])  # (only the edges are used)
  sgn = jnp.where(a_front, 1.0, -1.0)[..., None]
  off = step.astype(lam.dtype)
  l_ref = lam[..., 2]                                                   # [B, h', w', 3]
  l_oth = lam[..., 2] + sgn * (lam[..., 0] * off[0] + lam[..., 1] * off[1])
  # The edge is crossed on the way to the other pixel; l_ref > l_oth also keeps the division below
  # away from 0 for pairs that are not candidates (where the reference pixel is not inside).
  crosses = (l_oth < 0) & (l_ref > l_oth)
  t_all = l_ref / jnp.where(crosses, l_ref - l_oth, 1.0)
  t_all = jnp.where(crosses, t_all, jnp.inf)
  edge = jnp.argmin(jax.lax.stop_gradient(t_all), axis=-1)              # first edge crossed
  t = jnp.take_along_axis(t_all, edge[..., None], -1)[..., 0]
  # Each edge is handled by the pair direction closer to its normal (horizontal pairs for edges
  # that are more vertical than horizontal), so shifting an edge changes the summed coverage by its
  # extent across that direction, not twice for diagonal edges. The edge normal is the (constant)
  # screen gradient of its edge function.
  grad = jnp.take_along_axis(lam[..., :2], edge[..., None, None], -2)[..., 0, :]
  along = jnp.abs(grad[..., 0]) >= jnp.abs(grad[..., 1])
  owned = along if axis == 2 else ~along
  nbr = jnp.take_along_axis(neighbors[jnp.maximum(front_id, 0)], edge[..., None], -1)[..., 0]
  nbr_front = jnp.where(nbr >= 0, jnp.take_along_axis(facing, jnp.maximum(nbr, 0).reshape(
      facing.shape[0], -1), 1).reshape(nbr.shape), False)
  silhouette = candidate & jnp.any(crosses, -1) & (~nbr_front) & owned
  t = jnp.where(silhouette, jnp.clip(t, 0.0, 1.0), 0.5)
  c_a, c_b = image[sl_a], image[sl_b]
  c_front = jnp.where(a_front[..., None], c_a, c_b)
  c_back = jnp.where(a_front[..., None], c_b, c_a)
  spill = jnp.maximum(t - 0.5, 0.0)[..., None] * (c_front - c_back)    # added to the back pixel
  retreat = jnp.maximum(0.5 - t, 0.0)[..., None] * (c_back - c_front)  # added to the front pixel
  delta_a = jnp.where(a_front[..., None], retreat, spill)
  delta_b = jnp.where(a_front[..., None], spill, retreat)
  pad_a = [(0, 0)] * 4
  pad_b = [(0, 0)] * 4
  pad_a[axis] = (0, 1)
  pad_b[axis] = (1, 0)
  return jnp.pad(delta_a, pad_a) + jnp.pad(delta_b, pad_b)


def antialias(image: jax.Array, fragments: Fragments, clip_vertices: jax.Array,
              triangles: jax.Array, neighbors: jax.Array) -> jax.Array:
  """Blends colours across silhouette edges; gradients reach the vertices through edge positions.

  image: [B, H, W, C] shaded image already composited over its background (append a coverage
  channel to antialias the mask as well). fragments: from `rasterize` for the same clip vertices
  [B, V, 4] and triangles [F, 3]. neighbors: `triangle_neighbors(triangles)` [F, 3].
  Returns [B, H, W, C].
  """
  b, h, w = fragments.triangle_id.shape
  if image.shape[:3] != (b, h, w):
    raise ValueError(f"antialias: image {image.shape} does not match fragments {(b, h, w)}")
  ids = fragments.triangle_id
  depth = jax.lax.stop_gradient(fragments.depth)
  facing = jax.lax.stop_gradient(_front_facing(clip_vertices, triangles))
  neighbors = jnp.asarray(neighbors, jnp.int32)
  out = image
  for axis in (2, 1):
    out = out + _pair_deltas(image, ids, depth, clip_vertices, triangles, neighbors, facing,
                             (h, w), axis)
  return out
