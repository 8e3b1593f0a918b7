"""Vertex normals and spherical-harmonics (SH) shading, exactly as in Deep3DFaceRecon (DESIGN.md).

Two vertex-normal definitions: `vertex_normals` weights each adjacent triangle's normal by its area
(the embedded models); `point_buf_normals` is Deep3DFaceRecon's: the renormalised sum of the *unit*
normals of the triangles a model's `point_buf` lists per vertex (BFM files carry that table).
`FaceModel.vertex_normals` picks the one its model carries.

Irradiance per vertex and colour channel c: E_c(n) = sum_k Y_k(n) · gamma[c, k], with 0.8 added to
each channel's first (ambient) coefficient so that gamma = 0 is a uniformly lit face; the shaded
colour is E ⊙ albedo. `gamma` is flat [..., 27] with the 9 red bands first, then green, then blue.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
AMBIENT_OFFSET = 0.8


def _safe_normalize(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  # The sqrt of (|v|² + eps) keeps the gradient finite for zero-area triangles / isolated vertices.
  return v * jax.lax.rsqrt(jnp.sum(v * v, axis=-1, keepdims=True) + eps)


def face_normals(vertices: jax.Array, triangles: jax.Array, normalize: bool = True) -> jax.Array:
  """[..., V, 3], [F, 3] -> [..., F, 3] triangle normals (CCW winding points outward)."""
  v0, v1, v2 = (jnp.take(vertices, triangles[:, i], axis=-2) for i in range(3))
  n = jnp.cross(v1 - v0, v2 - v0)
  return _safe_normalize(n) if normalize else n


def vertex_normals(vertices: jax.Array, triangles: jax.Array) -> jax.Array:
  """[..., V, 3], [F, 3] -> [..., V, 3] unit normals: area-weighted sum of adjacent face normals."""
  n = face_normals(vertices, triangles, normalize=False)  # length = 2·area, hence area weighting
  acc = jnp.zeros_like(vertices)
  for i in range(3):
    acc = acc.at[..., triangles[:, i], :].add(n)
  return _safe_normalize(acc)


def point_buf_normals(vertices: jax.Array, triangles: jax.Array, point_buf: jax.Array) -> jax.Array:
  """[..., V, 3], [F, 3], [V, K] -> [..., V, 3] unit normals: the sum of the unit normals of the
  triangles point_buf[v] lists (0-based; -1 pads, contributing nothing), renormalised."""
  n = face_normals(vertices, triangles)                              # [..., F, 3] unit
  # Deep3DFaceRecon appends a zero normal and points the padding at it: the same here.
  n = jnp.concatenate([n, jnp.zeros_like(n[..., :1, :])], axis=-2)
  idx = jnp.where(point_buf < 0, triangles.shape[0], point_buf)
  return _safe_normalize(jnp.take(n, idx, axis=-2).sum(axis=-2))


def sh_basis(normals: jax.Array) -> jax.Array:
  """[..., 3] unit normals -> [..., 9] the SH basis of DESIGN.md (constants a_k·c_k folded in)."""
  x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
  a0c0 = SH_A[0] * SH_C[0]
  a1c1 = SH_A[1] * SH_C[1]
  a2c2 = SH_A[2] * SH_C[2]
  return jnp.stack([
      jnp.full_like(x, a0c0),
      -a1c1 * y,
      a1c1 * z,
      -a1c1 * x,
      a2c2 * x * y,
      -a2c2 * y * z,
      0.5 * a2c2 / math.sqrt(3.0) * (3.0 * z * z - 1.0),
      -a2c2 * x * z,
      0.5 * a2c2 * (x * x - y * y),
  ], -1)


def sh_irradiance(normals: jax.Array, gamma: jax.Array) -> jax.Array:
  """normals [..., N, 3], gamma [..., 27] -> [..., N, 3] per-channel irradiance."""
  g = gamma.reshape(*gamma.shape[:-1], 3, 9)
  g = g.at[..., 0].add(AMBIENT_OFFSET)
  return jnp.einsum("...nk,...ck->...nc", sh_basis(normals), g)


def shade(albedo: jax.Array, normals: jax.Array, gamma: jax.Array) -> jax.Array:
  """[..., N, 3] colours = SH irradiance(normals, gamma) ⊙ albedo (linear RGB, not clipped)."""
  return sh_irradiance(normals, gamma) * albedo
