"""Triangle rasterization in pure JAX: exact z-buffer visibility, then differentiable barycentrics.

The rasterizer is split the way differentiable renderers are (diffren, nvdiffrast):

1. `visibility` (no gradients): which triangle is nearest at every pixel centre. Every triangle
   enumerates the pixel centres of its screen bounding box; fragments are reduced per pixel by two
   scatter-min passes (depth, then the lowest triangle id among fragments at that depth), so
   visibility is exact and deterministic. Memory and work grow with B·(F + covered pixels), never
   with B·F·H·W.
2. `barycentrics` (differentiable): for the triangle found at each pixel, perspective-correct
   barycentrics and depth are recomputed from the clip-space vertices, so gradients reach the
   vertices through anything interpolated with them.

Capacities. Triangles are sorted into levels by bounding-box size (1, 2, 4, ... pixels on a side up
to the image size); a level enumerates K×K candidate pixels per triangle and is processed in chunks
inside a `while_loop` until all of its triangles are done. No capacity can overflow: a triangle of
any size lands in some level and every chunk of every level is processed.

Geometry. Tests use homogeneous (2D-homogeneous / Olano-Greer) edge functions on clip-space (x, y, w),
which are valid for vertices behind the camera, so triangles crossing the near plane are rasterized
exactly where they are in front of it (per-pixel near/far test on NDC depth) without splitting
them; their bounding boxes come from the triangle clipped against the near plane. To keep float32
accurate for small distant triangles, each vertex's homogeneous pixel coordinates are taken
relative to a nearby pixel centre and scaled to unit length (a positive per-vertex scale, undone
exactly afterwards).

Conventions (DESIGN.md): clip space is OpenGL's; NDC y = +1 is the top row; pixel (x, y) has its
centre at (x + 0.5, y + 0.5); front faces are counter-clockwise in NDC.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

BACKGROUND = -1
_INT_MAX = jnp.iinfo(jnp.int32).max
# Fragments enumerated per chunk of a level (per image); bounds the memory of one loop iteration.
DEFAULT_CHUNK_FRAGMENTS = 1 << 17
# Pixel-centre slack when turning a float bounding box into candidate pixels (a candidate too many
# is harmless: the edge test rejects it).
_BBOX_EPS = 1e-3


@struct.dataclass
class Fragments:
  """Per-pixel rasterization result for a batch of images.

  triangle_id: [B, H, W] int32, index into `triangles`, -1 where no triangle covers the pixel centre.
  barycentric: [B, H, W, 3] float32 perspective-correct barycentrics (0 on background).
  depth:       [B, H, W] float32 window depth (z_ndc + 1) / 2 in [0, 1] (1 on background), the value
               the z-test compares (OpenGL's depth buffer).
  """
  triangle_id: jax.Array
  barycentric: jax.Array
  depth: jax.Array

  @property
  def mask(self) -> jax.Array:
    """[B, H, W] bool coverage."""
    return self.triangle_id >= 0


class _Setup(NamedTuple):
  """Per-triangle rasterization data (one image)."""
  origin: jax.Array   # [F, 2] int32 bounding-box corner pixel (x0, y0)
  extent: jax.Array   # [F, 2] int32 number of candidate pixel centres along x, y (0 = nothing)
  lam: jax.Array      # [F, 3, 3] edge planes: λ_i(dx, dy) = lam[i] · (dx, dy, 1), inside iff all ≥ 0
  zplane: jax.Array   # [F, 3] window depth plane d(dx, dy) = zplane · (dx, dy, 1), d in [0, 1]


def _pixel_homogeneous(clip: jax.Array, image_size, origin: jax.Array) -> jax.Array:
  """[..., 3 vertices, 4] clip -> [..., 3, 3] homogeneous pixel coords relative to pixel centre
  `origin` [..., 2] (int pixel index, one per triangle) (i.e. (w·(X - ox - 0.5), w·(Y - oy - 0.5), w) for pixel coords X right, Y down).
  """
  h, w = image_size
  x, y, ww = clip[..., 0], clip[..., 1], clip[..., 3]
  ox = origin[..., 0, None].astype(clip.dtype) + 0.5                  # [..., 1] over vertices
  oy = origin[..., 1, None].astype(clip.dtype) + 0.5
  return jnp.stack([(x + ww) * (w / 2) - ox * ww, (ww - y) * (h / 2) - oy * ww, ww], -1)


def _edge_planes(hom: jax.Array, z: jax.Array):
  """Edge functions of a triangle from homogeneous pixel coordinates relative to a pixel centre.

  hom: [..., 3, 3] (vertex, (X, Y, W)); z: [..., 3] the per-vertex clip-space quantity whose
  perspective-divided value is wanted (we pass (z + w) / 2, whose divided value is window depth).
  Returns (lam [..., 3, 3], zplane [..., 3], det [...], scale [..., 3]) where, for a pixel centre at
  offset (dx, dy) from the reference pixel: λ_i = lam[i]·(dx, dy, 1) / scale_i are the homogeneous
  barycentrics (Σ λ_i w_i = 1; perspective-correct barycentrics are λ / Σλ), and z / w at the pixel
  is zplane·(dx, dy, 1). `lam` is already divided by the determinant, so the inside test is simply
  all(lam·p ≥ 0) for either winding. det's sign is opposite to the NDC facing (pixel y points down).
  """
  # +1e-30 keeps sqrt differentiable for a (degenerate) vertex at the reference pixel's eye ray.
  scale = jnp.sqrt(jnp.sum(hom * hom, axis=-1) + 1e-30)               # [..., 3] positive
  unit = hom / jnp.where(scale > 0, scale, 1.0)[..., None]
  e = jnp.stack([jnp.cross(unit[..., 1, :], unit[..., 2, :]),
                 jnp.cross(unit[..., 2, :], unit[..., 0, :]),
                 jnp.cross(unit[..., 0, :], unit[..., 1, :])], -2)     # [..., 3 (i), 3 (coef)]
  det = jnp.sum(unit[..., 0, :] * e[..., 0, :], axis=-1)
  safe_det = jnp.where(det != 0, det, 1.0)
  lam = e / safe_det[..., None, None]
  zplane = jnp.sum(lam * (z / jnp.where(scale > 0, scale, 1.0))[..., None], axis=-2)
  return lam, zplane, det, scale


def _clipped_bbox(tri_clip: jax.Array, image_size):
  """Pixel bounding box of each triangle clipped against the near plane (z_ndc >= -1).

  tri_clip: [F, 3, 4]. Returns (origin [F, 2] int32, extent [F, 2] int32) of candidate pixel
  centres inside the image; extent 0 when the triangle is entirely behind the near plane or off-screen.
  """
  h, w = image_size
  d = tri_clip[..., 2] + tri_clip[..., 3]                              # >= 0: in front of near
  nxt = jnp.roll(tri_clip, -1, axis=1)
  d_next = jnp.roll(d, -1, axis=1)
  t = d / jnp.where(d != d_next, d - d_next, 1.0)
  cross_pts = tri_clip + t[..., None] * (nxt - tri_clip)              # edge ∩ near plane
  pts = jnp.concatenate([tri_clip, cross_pts], axis=1)                # [F, 6, 4]
  ok = jnp.concatenate([d >= 0, (d >= 0) != (d_next >= 0)], axis=1)
  ok &= pts[..., 3] > 0
  pw = jnp.where(ok, pts[..., 3], 1.0)
  px = (pts[..., 0] / pw + 1.0) * (w / 2)
  py = (1.0 - pts[..., 1] / pw) * (h / 2)
  big = jnp.float32(1e9)
  xmin = jnp.min(jnp.where(ok, px, big), axis=1)
  xmax = jnp.max(jnp.where(ok, px, -big), axis=1)
  ymin = jnp.min(jnp.where(ok, py, big), axis=1)
  ymax = jnp.max(jnp.where(ok, py, -big), axis=1)
  finite = jnp.isfinite(xmin) & jnp.isfinite(xmax) & jnp.isfinite(ymin) & jnp.isfinite(ymax)
  x0 = jnp.ceil(jnp.clip(xmin, -1.0, w + 1.0) - 0.5 - _BBOX_EPS).astype(jnp.int32)
  x1 = jnp.floor(jnp.clip(xmax, -1.0, w + 1.0) - 0.5 + _BBOX_EPS).astype(jnp.int32)
  y0 = jnp.ceil(jnp.clip(ymin, -1.0, h + 1.0) - 0.5 - _BBOX_EPS).astype(jnp.int32)
  y1 = jnp.floor(jnp.clip(ymax, -1.0, h + 1.0) - 0.5 + _BBOX_EPS).astype(jnp.int32)
  x0, y0 = jnp.maximum(x0, 0), jnp.maximum(y0, 0)
  x1, y1 = jnp.minimum(x1, w - 1), jnp.minimum(y1, h - 1)
  nx = jnp.where(finite & ok.any(axis=1), jnp.maximum(x1 - x0 + 1, 0), 0)
  ny = jnp.where(finite & ok.any(axis=1), jnp.maximum(y1 - y0 + 1, 0), 0)
  return jnp.stack([x0, y0], -1), jnp.stack([nx, ny], -1)


def _window_z(clip: jax.Array) -> jax.Array:
  """(z + w) / 2 per vertex: divided by w it is window depth (z_ndc + 1) / 2, computed without the
  cancellation of forming z_ndc ≈ -1 first (depth keeps full relative precision near the near plane).
  """
  return 0.5 * (clip[..., 2] + clip[..., 3])


def _setup(clip: jax.Array, triangles: jax.Array, image_size, cull_backfaces: bool) -> _Setup:
  tri_clip = clip[triangles]                                          # [F, 3, 4]
  origin, extent = _clipped_bbox(tri_clip, image_size)
  hom = _pixel_homogeneous(tri_clip, image_size, origin)
  lam, zplane, det, _ = _edge_planes(hom, _window_z(tri_clip))
  good = (det != 0) & jnp.all(jnp.isfinite(lam), axis=(1, 2)) & jnp.all(jnp.isfinite(zplane), 1)
  if cull_backfaces:
    good &= det < 0                                                   # front-facing (see above)
  extent = jnp.where(good[:, None], extent, 0)
  return _Setup(origin, extent, lam, zplane)


def _levels(image_size) -> list[int]:
  """Candidate window sizes: 1, 2, 4, ... up to the first power of two covering the image."""
  ks, k = [1], 1
  while k < max(image_size):
    k *= 2
    ks.append(k)
  return ks


def _fragments(setup: _Setup, tri_idx: jax.Array, valid: jax.Array, k: int, image_size):
  """Fragments of a chunk of triangles with K×K candidate windows.

  Returns (pixel [M·K²] int32 flat index or H·W for rejected, depth [M·K²], tri [M·K²]).
  """
  h, w = image_size
  dy, dx = jnp.divmod(jnp.arange(k * k, dtype=jnp.int32), k)
  origin = setup.origin[tri_idx]                                      # [M, 2]
  extent = setup.extent[tri_idx]
  lam = setup.lam[tri_idx]                                            # [M, 3, 3]
  zp = setup.zplane[tri_idx]                                          # [M, 3]
  fdx, fdy = dx.astype(jnp.float32), dy.astype(jnp.float32)
  l = (lam[:, :, 0, None] * fdx + lam[:, :, 1, None] * fdy + lam[:, :, 2, None])  # [M, 3, K²]
  z = zp[:, 0, None] * fdx + zp[:, 1, None] * fdy + zp[:, 2, None]                # [M, K²]
  inside = (jnp.all(l >= 0, axis=1) & (z >= 0.0) & (z <= 1.0)
            & (dx < extent[:, 0, None]) & (dy < extent[:, 1, None]) & valid[:, None])
  pix = (origin[:, 1, None] + dy) * w + origin[:, 0, None] + dx
  pix = jnp.where(inside, pix, h * w)
  tri = jnp.broadcast_to(tri_idx[:, None], pix.shape)
  return pix.reshape(-1), z.reshape(-1), tri.reshape(-1)


def _visibility_one(clip, triangles, image_size, cull_backfaces, chunk_fragments):
  """[V, 4] clip -> [H·W] int32 nearest triangle id per pixel (-1 background), one image."""
  h, w = image_size
  n_tri = triangles.shape[0]
  setup = _setup(clip, triangles, image_size, cull_backfaces)
  ks = _levels(image_size)
  size = jnp.max(setup.extent, axis=1)                                # [F]
  active = size > 0
  level = jnp.searchsorted(jnp.asarray(ks, jnp.int32), size, side="left").astype(jnp.int32)
  level = jnp.where(active, level, len(ks))                           # inactive: past the last
  # Counting sort of triangles by level: order[start[L]:start[L] + count[L]] are level L's triangles.
  onehot = level[:, None] == jnp.arange(len(ks) + 1, dtype=jnp.int32)
  count = jnp.sum(onehot, axis=0, dtype=jnp.int32)
  start = jnp.cumsum(count) - count
  rank = jnp.sum(jnp.where(onehot, jnp.cumsum(onehot, axis=0, dtype=jnp.int32) - 1, 0), axis=1)
  order = jnp.zeros((n_tri,), jnp.int32).at[start[level] + rank].set(
      jnp.arange(n_tri, dtype=jnp.int32))

  def run_levels(init, reduce_fn):
    buf = init
    for li, k in enumerate(ks):
      m = max(1, min(n_tri, chunk_fragments // (k * k)))
      padded = jnp.concatenate([order, jnp.zeros((m,), jnp.int32)])
      n_chunks = (count[li] + m - 1) // m

      def body(c, buf, li=li, k=k, m=m, padded=padded):
        pos = c * m + jnp.arange(m, dtype=jnp.int32)
        idx = jax.lax.dynamic_slice(padded, (start[li] + c * m,), (m,))
        valid = pos < count[li]
        return reduce_fn(buf, *_fragments(setup, idx, valid, k, image_size))

      buf = jax.lax.fori_loop(0, n_chunks, body, buf)
    return buf

  zbuf = run_levels(jnp.full((h * w,), jnp.inf, jnp.float32),
                    lambda zb, pix, z, tri: zb.at[pix].min(z, mode="drop"))

  def id_reduce(ib, pix, z, tri):
    at_front = z == zbuf.at[pix].get(mode="fill", fill_value=jnp.nan)
    return ib.at[pix].min(jnp.where(at_front, tri, _INT_MAX), mode="drop")

  ids = run_levels(jnp.full((h * w,), _INT_MAX, jnp.int32), id_reduce)
  return jnp.where(ids == _INT_MAX, BACKGROUND, ids)


def visibility(clip_vertices: jax.Array, triangles: jax.Array, image_size: tuple[int, int], *,
               cull_backfaces: bool = False,
               chunk_fragments: int = DEFAULT_CHUNK_FRAGMENTS) -> jax.Array:
  """Nearest triangle per pixel centre, without gradients.

  clip_vertices [B, V, 4], triangles [F, 3] int -> triangle_id [B, H, W] int32 (-1 background).
  """
  h, w = image_size
  clip = jax.lax.stop_gradient(clip_vertices).astype(jnp.float32)
  fn = lambda c: _visibility_one(c, triangles.astype(jnp.int32), (h, w), cull_backfaces,
                                 chunk_fragments)
  return jax.vmap(fn)(clip).reshape(clip.shape[0], h, w)


def pixel_centres(image_size: tuple[int, int]) -> jax.Array:
  """[H, W, 2] int32 (x, y) pixel indices (centres at +0.5)."""
  h, w = image_size
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.int32), jnp.arange(w, dtype=jnp.int32),
                        indexing="ij")
  return jnp.stack([xs, ys], -1)


def barycentrics(clip_vertices: jax.Array, triangles: jax.Array, triangle_id: jax.Array,
                 image_size: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """Differentiable perspective-correct barycentrics and window depth of the given triangles.

  clip_vertices [B, V, 4], triangles [F, 3], triangle_id [B, H, W] -> (barycentric [B, H, W, 3],
  depth [B, H, W] in [0, 1]); background pixels get zeros / 1.
  """
  covered = triangle_id >= 0
  tri = triangles[jnp.maximum(triangle_id, 0)]                         # [B, H, W, 3]
  b_idx = jnp.arange(clip_vertices.shape[0])[:, None, None, None]
  tri_clip = clip_vertices[b_idx, tri]                                  # [B, H, W, 3, 4]
  origin = jnp.broadcast_to(pixel_centres(image_size), triangle_id.shape + (2,))
  hom = _pixel_homogeneous(tri_clip, image_size, origin)
  lam, zplane, _, scale = _edge_planes(hom, _window_z(tri_clip))
  l = lam[..., 2] / jnp.where(covered[..., None], scale, 1.0)          # at the pixel: (0, 0, 1)
  total = jnp.sum(l, axis=-1, keepdims=True)
  bary = jnp.where(covered[..., None], l / jnp.where(covered[..., None], total, 1.0), 0.0)
  depth = jnp.where(covered, zplane[..., 2], 1.0)
  return bary, depth


def rasterize(clip_vertices: jax.Array, triangles: jax.Array, image_size: tuple[int, int], *,
              cull_backfaces: bool = False,
              chunk_fragments: int = DEFAULT_CHUNK_FRAGMENTS) -> Fragments:
  """Rasterizes triangles given in clip space.

  clip_vertices: [B, V, 4] OpenGL clip coordinates (before the perspective divide).
  triangles: [F, 3] int vertex indices, counter-clockwise when front-facing.
  image_size: (H, W) in pixels.
  cull_backfaces: drop triangles that are clockwise in NDC (facing away from the camera).
  Returns `Fragments`; gradients flow into `barycentric` and `depth` (not into visibility).
  """
  if clip_vertices.ndim != 3 or clip_vertices.shape[-1] != 4:
    raise ValueError(f"rasterize: clip_vertices must be [B, V, 4], got {clip_vertices.shape}")
  if triangles.ndim != 2 or triangles.shape[-1] != 3:
    raise ValueError(f"rasterize: triangles must be [F, 3], got {triangles.shape}")
  h, w = (int(image_size[0]), int(image_size[1]))
  if h <= 0 or w <= 0:
    raise ValueError(f"rasterize: image_size must be positive (H, W), got {image_size}")
  b = clip_vertices.shape[0]
  if triangles.shape[0] == 0 or clip_vertices.shape[1] == 0:          # nothing to draw
    return Fragments(jnp.full((b, h, w), BACKGROUND, jnp.int32),
                     jnp.zeros((b, h, w, 3), clip_vertices.dtype),
                     jnp.ones((b, h, w), clip_vertices.dtype))
  ids = visibility(clip_vertices, triangles, (h, w), cull_backfaces=cull_backfaces,
                   chunk_fragments=chunk_fragments)
  bary, depth = barycentrics(clip_vertices, triangles, ids, (h, w))
  return Fragments(ids, bary, depth)
